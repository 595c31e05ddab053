"""The rearm converges the mapping to the control state, whatever made them differ."""

from dataclasses import replace

from sluice import breaker
from sluice.breaker import CLOSED, HALF_OPEN, OPENED, ControlState
from sluice.mapping import DEFERRED
from sluice.rearm import rearm
from sluice_tools.memory import MemoryControl, MemoryMapping


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def rearm_now(control, mapping, clock):
    return rearm(stream_name="s", provider="p", control=control, mapping=mapping,
                 max_size=10, probe_lease_s=120, clock=clock, emit=lambda doc: None)


def test_a_disable_that_settles_after_the_probe_closed_the_breaker_is_repaired():
    """The stranding of issue 10: open -> disable settling -> half-open enable refused ->
    the probe closes the breaker -> the disable settles. The next rearm must enable."""
    clock, control = Clock(), MemoryControl()
    mapping = MemoryMapping(1, clock, update_delay_s=30.0)
    control.state = ControlState(breaker=OPENED, batch_size=1)
    assert mapping.apply(mapping.find(), enabled=False, batch_size=1) == "updated"
    clock.now += 5  # still Disabling when the rearm runs
    result = rearm_now(control, mapping, clock)
    assert control.state.breaker == HALF_OPEN and result["mapping_update"] == DEFERRED
    # The probe batch (delivered before the disable settled) was healthy: closed.
    control.state = replace(control.state, breaker=CLOSED, batch_size=2)
    clock.now += 60
    assert not mapping.effective().enabled  # the stale disable has landed: stranded?
    result = rearm_now(control, mapping, clock)
    assert result["action"] == "repaired_enable"
    clock.now += 60
    assert mapping.effective() == type(mapping.effective())(2, True)


def test_refused_and_throttled_updates_are_retried_until_they_land():
    clock, control = Clock(), MemoryControl()
    mapping = MemoryMapping(10, clock, update_delay_s=1.0)
    mapping.config = type(mapping.config)(10, False)  # disabled by hand, or a lost enable
    refusals = iter([True, True])
    mapping.refusals.append(lambda change: next(refusals, False))
    for _ in range(3):
        rearm_now(control, mapping, clock)
        clock.now += 600
    assert mapping.effective().enabled and mapping.updates == 1


def test_rearm_twice_is_harmless_and_a_pause_always_wins():
    clock, control = Clock(), MemoryControl()
    mapping = MemoryMapping(10, clock, update_delay_s=0.0)
    control.state = breaker.paused(ControlState(batch_size=5), "ops", clock())
    for _ in range(2):
        rearm_now(control, mapping, clock)
        clock.now += 1
    assert not mapping.effective().enabled and mapping.updates == 1


def test_every_rearm_reports_the_state_and_the_backlog_as_metrics():
    clock, control = Clock(), MemoryControl()
    mapping = MemoryMapping(10, clock, update_delay_s=0.0)
    control.state = ControlState(breaker=OPENED, batch_size=1)
    docs = []
    rearm(stream_name="s", provider="p", control=control, mapping=mapping, max_size=10,
          probe_lease_s=120, clock=clock, emit=docs.append, stage="prod", backlog=lambda: 42)
    doc = docs[0]
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Provider", "Stage"]]
    # Probing is not recovered: the circuit-open alarm keeps counting through half-open.
    assert (doc["BreakerOpen"], doc["Paused"], doc["Backlog"]) == (1, 0, 42)


def test_backlog_is_unknown_until_todays_enqueues_are_counted():
    from sluice.day_counts import backlog

    assert backlog({"fetched": 3}) is None
    assert backlog({"enqueued": 10, "fetched": 6, "skipped": 1, "parked": 1}) == 2


def test_item_failures_are_trusted_only_once_the_mapping_reports_them_settled():
    """A mapping created without ReportBatchItemFailures (the plain `chalice deploy` path) is
    converged to report them; while that update settles the API already answers with the new
    configuration, but Lambda still ignores a batchItemFailures response, which would lose
    the records handed back: the batch is handed back whole until the change has settled."""
    from sluice.invoker import WorkerResult
    from sluice.settings import load_settings
    from sluice.ventilator import StreamRecord, Ventilator
    from sluice_tools.memory import InlineFanOut, MemoryDayCounts, MemoryLedger, MemoryMalformed

    clock = Clock()
    mapping = MemoryMapping(2, clock, update_delay_s=30.0, reports_item_failures=False)
    settings = load_settings(provider="p", stream_name="s", table_name="t", result_bucket="b",
                             worker_function="w", ventilator_function="v", timezone="UTC",
                             max_concurrency=2)
    ventilator = Ventilator(
        settings, ledger=MemoryLedger(), control=MemoryControl(), mapping=mapping,
        invoke=lambda payload: WorkerResult(False, 5.0, error="http_503"),
        counts=MemoryDayCounts(), malformed=MemoryMalformed(), fan_out=InlineFanOut(),
        clock=clock, emit=lambda doc: None)

    def deliver(n: int):
        records = [StreamRecord(str(n * 10 + i), "shardId-0",
                                f'{{"record_id": "r{n}-{i}"}}'.encode()) for i in range(2)]
        clock.now += 1
        return ventilator.handle(records, mapping.stream_arn)

    first = deliver(1)
    assert first.retry and first.reports_item_failures is False  # RetryBatch: whole batch
    assert mapping.find().reports_item_failures and mapping.find().settling  # asked for
    settling = deliver(2)
    assert settling.retry and settling.reports_item_failures is False  # not in force yet
    clock.now += 60
    settled = deliver(3)
    assert settled.retry and settled.reports_item_failures is True
    assert mapping.effective().reports_item_failures
