"""A busy provider's Retry-After: honoured by the limit, never held against a record."""

from sluice.invoker import WorkerResult
from sluice.settings import load_settings
from sluice.ventilator import StreamRecord, Ventilator
from sluice_tools.memory import (
    InlineFanOut,
    MemoryControl,
    MemoryDayCounts,
    MemoryLedger,
    MemoryMalformed,
    MemoryMapping,
)
from sluice_tools.scenario import load_scenario
from sluice_tools.simulate.engine import Simulation


class Clock:
    def __init__(self) -> None:
        self.now = 1_764_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_is_not_probed_again_before_the_providers_retry_after():
    clock, control = Clock(), MemoryControl()
    settings = load_settings(provider="p", stream_name="s", table_name="t", result_bucket="b",
                             worker_function="w", ventilator_function="v", timezone="UTC",
                             max_concurrency=4, dispatch="window")
    busy = {f"r1-{i}" for i in range(4)}  # the first delivery: every call refused

    def invoke(payload):
        if payload["record_id"] in busy:
            return WorkerResult(False, 20.0, error="http_429", retry_after_s=30.0)
        return WorkerResult(True, 100.0, recorded=False)

    mapping = MemoryMapping(4, clock, update_delay_s=0.0)
    ventilator = Ventilator(
        settings, ledger=MemoryLedger(), control=control, mapping=mapping, invoke=invoke,
        counts=MemoryDayCounts(), malformed=MemoryMalformed(), fan_out=InlineFanOut(),
        clock=clock, emit=lambda doc: None)

    def deliver(n: int, after_s: float) -> int:
        clock.now += after_s
        records = [StreamRecord(str(n * 10 + i), "shardId-0",
                                f'{{"record_id": "r{n}-{i}"}}'.encode()) for i in range(4)]
        ventilator.handle(records, mapping.stream_arn)
        return control.state.batch_size

    assert deliver(1, 1) < 4  # every call refused as too busy: the limit is cut
    cut = control.state.batch_size
    assert control.state.rate_limited_until == clock.now + 30
    assert [deliver(n, 5) for n in (2, 3, 4, 5)] == [cut] * 4  # healthy, but not yet
    assert deliver(6, 20) > cut  # Retry-After has passed: the climb resumes


def test_a_rate_limited_provider_parks_nothing_in_either_dispatch_mode():
    # The rule is pinned in test_verdicts (a 429 blames nobody); this runs the whole story:
    # capacity 5, then 3, then 6, X = 10, 429 + Retry-After whenever the slots are full.
    scenario = load_scenario("retry-after").with_records(1500)
    for dispatch in ("window", "batch"):
        summary = Simulation(scenario, seed=1, settings_overrides={"dispatch": dispatch}).run()
        assert summary["parked"] == 0, dispatch
        assert all(summary["invariants"].values()), (dispatch, summary["invariants"])
