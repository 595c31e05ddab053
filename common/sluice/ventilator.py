"""The ventilator: one Kinesis delivery in, one provider call per record out. A shell that
reads, calls, asks the pure core (``verdicts``, ``policies``, ``breaker``) and writes.

For each delivery:
 1. Load the control state (the spec). Open, paused or outside the window: not one provider
    call; every record waits on the stream. Half-open: only the ventilator that takes the
    probe (one per rearm, under the control item's lock) makes one call.
 2. Triage: a record that cannot be decoded is parked at once with a reason; ids are deduped;
    what is fetched or parked today is skipped; a record leased by a live call is deferred.
 3. Dispatch: claim, then invoke the worker, at most the learned batch size in flight (the
    mapping may deliver more while an update settles, or while a record is held), and only
    while the Lambda's remaining time outlives a worker call plus the lease margin: a call
    is never started that the ventilator could not wait for.
 4. Judge (``verdicts.judge``), write each record's verdict to the ledger, feed the policy,
    store the control state, count, announce what was parked.
 5. Converge the mapping to the spec, then log one EMF line. Records to retry go back to
    Kinesis as ``batchItemFailures`` when the mapping reports them, else by RetryBatch.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sluice import breaker, verdicts
from sluice.breaker import ControlState
from sluice.clock import Clock, local_day, system_clock
from sluice.day_counts import DayCounts
from sluice.delivery import delivery_size
from sluice.fanout import ThreadFanOut
from sluice.intake import FetchRequest, MalformedRecord, decode_kinesis_data, parse_request
from sluice.invoker import WorkerResult
from sluice.ledger import FETCHED, PARKED, ClaimLost, Entry
from sluice.malformed import MalformedStore
from sluice.mapping import MappingView
from sluice.metrics import Emit, emf_document, stdout_emit
from sluice.parking import ParkedQueue
from sluice.policies import (
    HOLD,
    OPEN,
    SERVING_MIN_SAMPLES,
    Decision,
    Policy,
    Sample,
    make_policy,
    percentile,
)
from sluice.ports import ControlPort, FanOutPort, LedgerPort, MappingPort
from sluice.settings import ProviderSettings

# Outcomes of one stream record within one delivery.
O_FETCHED, O_FAILED, O_PARKED = "fetched", "failed", "parked"
O_SKIPPED, O_DEFERRED, O_MALFORMED = "skipped", "deferred", "malformed"
RETRY_OUTCOMES = frozenset({O_FAILED, O_DEFERRED})
MAX_BACKOFF_S = 20.0  # the longest a delivery with nothing to call waits before handing back
# Blame needs recent errors under this share of the error-rate threshold (see verdicts).
CLEAN_SHARE = 0.25
# The Lambda's time when no context tells it (tests, tools): the demo ventilator's timeout.
DEFAULT_TIME_S = 300.0


@dataclass(frozen=True)
class StreamRecord:
    sequence_number: str
    shard_id: str
    data: bytes
    undecodable: str = ""  # why the Kinesis envelope itself could not be decoded

    @classmethod
    def from_event(cls, raw: dict[str, Any]) -> StreamRecord:
        """Never raises for one bad record: a record that fails its delivery blocks its shard."""
        kinesis = raw.get("kinesis") or {}
        event_id = str(raw.get("eventID", ""))
        shard = event_id.split(":", 1)[0] if ":" in event_id else "shard"
        sequence = str(kinesis.get("sequenceNumber", ""))
        try:
            return cls(sequence, shard, decode_kinesis_data(kinesis.get("data")))
        except MalformedRecord as bad:
            return cls(sequence, shard, b"", undecodable=bad.reason)


@dataclass(frozen=True)
class Outcome:
    sequence_number: str
    outcome: str
    record_id: str = ""
    error: str = ""
    sample: Sample | None = None  # taught the policy (judged calls only)
    called: bool = False


@dataclass
class BatchReport:
    outcomes: list[Outcome] = field(default_factory=list)
    state: ControlState = field(default_factory=ControlState)
    decision: Decision | None = None
    mapping_update: str = ""
    # None: unknown (the mapping could not be read): the runtime then hands back the whole
    # batch (RetryBatch), which is correct whatever the mapping's configuration.
    reports_item_failures: bool | None = None
    problems: list[str] = field(default_factory=list)  # error kinds outside any one record
    backoff_s: float = 0.0  # nothing could be called: wait this long before handing back
    calls: int = 0
    held: bool = False  # a held record waited for company in this delivery
    cut_at: float = 0.0  # when the policy last lowered the limit in this delivery
    probe_token: str = ""  # this delivery holds the half-open probe
    stopped: bool = False  # the control item stopped calls while the delivery ran
    fetched_at: list[float] = field(default_factory=list)  # when its fetched records were
    quiet_until: float = 0.0  # a busy provider's Retry-After runs until then

    @property
    def retry(self) -> list[str]:
        return [o.sequence_number for o in self.outcomes if o.outcome in RETRY_OUTCOMES]

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)

    def response(self) -> dict[str, Any]:
        """What the Lambda handler returns to the event source mapping."""
        failures = sorted(self.retry, key=_seq_key)  # opaque strings, compared as integers
        return {"batchItemFailures": [{"itemIdentifier": seq} for seq in failures]}


Invoke = Callable[[dict[str, Any]], WorkerResult]
RemainingMs = Callable[[], float]


@dataclass
class _Pending:
    """A record that passed triage: to be claimed and called."""

    record: StreamRecord
    request: FetchRequest
    held: bool = False
    failed_at: float = 0.0  # when the record's last (failed) attempt began
    attempts: int = 0  # attempts so far today: a fresh record makes the better probe
    served_since_failure: bool = False
    witnessed: bool = False


class Ventilator:
    def __init__(
        self,
        settings: ProviderSettings,
        *,
        ledger: LedgerPort,
        control: ControlPort,
        mapping: MappingPort,
        invoke: Invoke,
        counts: DayCounts | Any,
        malformed: MalformedStore | Any,
        fan_out: FanOutPort | None = None,
        clock: Clock = system_clock,
        emit: Emit = stdout_emit,
        policy: Policy | None = None,
        window_clock: Clock | None = None,
        parked_queue: ParkedQueue | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.control = control
        self.mapping = mapping
        self.invoke = invoke
        self.counts = counts
        self.malformed = malformed
        self.fan_out = fan_out or ThreadFanOut()
        self.clock = clock
        # The access window is judged on this clock (the local demo compresses it); leases,
        # days and latencies stay on ``clock``.
        self.window_clock = window_clock or clock
        self.window = settings.window
        self.parked_queue = parked_queue
        self.emit = emit
        self.policy = policy or make_policy(
            settings.policy,
            max_size=settings.max_batch_size,
            latency_threshold_ms=settings.latency_threshold_ms,
            error_rate_threshold=settings.error_rate_threshold,
        )
        self._last_view: MappingView | None = None
        self._item_failures_settled = False
        # A call may start only if the ventilator can outlive it: the worker's timeout plus
        # the lease margin (the Invoke's own slack) must fit in the Lambda's remaining time.
        self._call_budget_ms = (settings.worker_timeout_s + settings.lease_margin_s) * 1000
        self._budget_s = DEFAULT_TIME_S - self._call_budget_ms / 1000  # set per delivery

    # -- the delivery ----------------------------------------------------------------------

    def handle(self, records: Sequence[StreamRecord], stream_arn: str,
               remaining_ms: RemainingMs | None = None) -> BatchReport:
        started = time.perf_counter()
        now = self.clock()
        day = local_day(now, self.settings.zone)
        report = BatchReport()
        view = self._find(stream_arn, report)
        report.reports_item_failures = self._reports_item_failures(view)
        state = self._track_window(self.control.load())
        if state.batch_size == 0 and view is not None:  # first batch ever: learn the size
            state = replace(state, batch_size=self.policy.clamp(view.batch_size))
        report.state = state
        cap = self.cap(state)

        if not state.mapping_enabled:
            # Open, paused or outside the window: not one provider call. The records wait on
            # the stream (Kinesis resumes from the checkpoint when the mapping is enabled).
            report.outcomes = [Outcome(r.sequence_number, O_DEFERRED) for r in records]
            return self._finish(report, view, day, started)
        self._budget_s = (remaining_ms() / 1000 if remaining_ms is not None
                          else DEFAULT_TIME_S) - self._call_budget_ms / 1000
        pending = self._triage(records, day, now, report)
        probe = state.breaker == breaker.HALF_OPEN
        if probe and not any(not p.held for p in pending):
            # Nothing here may be the probe (a held record needs a witness): keep the probe
            # for a delivery that can use it.
            report.outcomes += [Outcome(p.record.sequence_number, O_DEFERRED,
                                        p.request.record_id, "held") for p in pending]
            report.held = report.held or bool(pending)
            pending = []
        elif probe:
            token = uuid.uuid4().hex
            state = self.control.update(lambda s: breaker.take_probe(s, self.clock(), token))
            report.state = state
            report.probe_token = token
            if state.probe_token != token or state.breaker != breaker.HALF_OPEN:
                # Another shard has the probe (or it was already used): wait for its verdict.
                report.outcomes += [Outcome(p.record.sequence_number, O_DEFERRED,
                                            p.request.record_id, "probe_elsewhere")
                                    for p in pending]
                report.backoff_s = MAX_BACKOFF_S
                return self._finish(report, view, day, started)
            # The probe: one call, on a record that may be called alone; the rest wait.
            pending = sorted(pending, key=lambda p: (p.held, p.attempts))
            # No fresh record to probe with (those behind the failing ones are finished, the
            # rest of the shard out of reach): the next probe deliveries grow, as held ones do.
            report.held = report.held or pending[0].attempts > 0
            pending, later = pending[:1], pending[1:]
            report.outcomes += [Outcome(p.record.sequence_number, O_DEFERRED,
                                        p.request.record_id, "after_probe") for p in later]
        # Calls still running from an earlier attempt of this delivery (a ventilator killed
        # mid-wave, an Invoke whose answer was lost) hold live leases: they count against X.
        leased = sum(1 for o in report.outcomes if o.error == "leased")

        def limit() -> int:
            """Calls allowed in flight now: the policy's limit under the cap, less the leased;
            0 once the circuit opens (or a pause, a closed window) while the delivery runs."""
            current = report.state
            if probe:
                return 1 if current.breaker == breaker.HALF_OPEN else 0
            if current.breaker != breaker.CLOSED or not current.mapping_enabled:
                return 0
            return max(0, min(current.batch_size or cap, cap) - leased)

        if limit() <= 0:
            report.outcomes += [Outcome(p.record.sequence_number, O_DEFERRED,
                                        p.request.record_id, "cap_in_use") for p in pending]
            pending = []
        self._dispatch(pending, day, limit, remaining_ms, report)
        if report.held:
            self._hold(report)
        if not report.calls and report.retry:
            # Nothing could be called and something waits (leased or held records): hand
            # back after a pause rather than in a busy loop.
            report.backoff_s = MAX_BACKOFF_S
        return self._finish(report, view, day, started)

    def cap(self, state: ControlState) -> int:
        """Calls in flight per ventilator: X over the stream's real fan-out, never above X."""
        shards = max(self.settings.shards, state.shards)
        per = self.settings.max_concurrency // (shards * self.settings.parallelization_factor)
        return max(1, min(per, self.settings.max_concurrency))

    # -- steps ---------------------------------------------------------------------------------

    def _find(self, stream_arn: str, report: BatchReport) -> MappingView | None:
        try:
            self._last_view = self.mapping.find(stream_arn)
        except Exception as exc:  # throttled or down: decide without it, converge next time
            report.problems.append(f"mapping_read_{type(exc).__name__}")
        return self._last_view

    def _reports_item_failures(self, view: MappingView | None) -> bool | None:
        """Whether Lambda honours a batchItemFailures response now. While the mapping settles
        its answer shows the requested configuration, not the one in force: until this
        container has seen ReportBatchItemFailures settled, a response Lambda would ignore
        (losing the records handed back) is not risked: the batch is handed back whole."""
        if view is None:
            return None
        if view.reports_item_failures and not view.settling:
            self._item_failures_settled = True
        return view.reports_item_failures and (self._item_failures_settled or not view.settling)

    def _track_window(self, state: ControlState) -> ControlState:
        window_open = self.window.is_open(self.window_clock())
        if window_open == state.window_closed and not state.paused:
            # The window closed (or opened) since the last batch: outside it, not one call.
            change = breaker.window_opened if window_open else breaker.window_closed
            return self.control.update(lambda s: change(s, self.clock()), current=state)
        return state

    def _triage(self, records: Sequence[StreamRecord], day: str, now: float,
                report: BatchReport) -> list[_Pending]:
        """Park the undecodable, skip duplicates and finished records, defer leased ones."""
        first: dict[str, tuple[StreamRecord, FetchRequest]] = {}
        for record in records:
            try:
                if record.undecodable:
                    raise MalformedRecord(record.undecodable)
                request = parse_request(record.data)
            except MalformedRecord as bad:
                self.malformed.park(shard_id=record.shard_id,
                                    sequence_number=record.sequence_number, day=day,
                                    reason=bad.reason, data=record.data, now=now)
                report.outcomes.append(Outcome(record.sequence_number, O_MALFORMED,
                                               error=bad.reason))
                continue
            if request.record_id in first:  # the same id twice in one batch: one call
                report.outcomes.append(Outcome(record.sequence_number, O_SKIPPED,
                                               request.record_id, error="duplicate_in_batch"))
                continue
            first[request.record_id] = (record, request)

        entries = self.ledger.lookup(first, day)
        pending: list[_Pending] = []
        for record_id, (record, request) in first.items():
            entry = entries.get(record_id)
            if entry is not None and entry.status == FETCHED:
                report.fetched_at.append(entry.updated_at)
            if entry is not None and entry.is_final():
                report.outcomes.append(Outcome(record.sequence_number, O_SKIPPED, record_id,
                                               error=f"already_{entry.status}"))
            elif entry is not None and entry.is_leased(now):
                report.outcomes.append(Outcome(record.sequence_number, O_DEFERRED, record_id,
                                               error="leased"))
            else:
                held = entry is not None and verdicts.is_held(
                    entry.blamed, entry.suspects, self.settings.max_attempts)
                # Its last attempt began at claimed_at: a record served after that (in the
                # same attempt of this delivery, or later) is a witness for it.
                pending.append(_Pending(record, request, held,
                                        entry.claimed_at if entry is not None else 0.0,
                                        entry.attempts if entry is not None else 0))
        return pending

    def _dispatch(self, pending: list[_Pending], day: str, limit: Callable[[], int],
                  remaining_ms: RemainingMs | None, report: BatchReport) -> None:
        """Claim, call, judge. A held record is called only after another record of this
        delivery was served (it needs a witness: see ``verdicts``)."""
        # Served since a record last failed: a record of this delivery fetched after it, or
        # any shard's delivery, provided the provider's latest judged call went well.
        state = report.state
        lately = state.last_served_at if (state.recent and state.recent[-1].ok
                                          and not state.lone_failures) else 0.0
        for p in pending:
            p.served_since_failure = p.attempts > 0 and (
                lately > p.failed_at or any(t > p.failed_at for t in report.fetched_at))
        normal = [p for p in pending if not p.held]
        held = [p for p in pending if p.held]
        served_now = self._run(normal, day, limit, remaining_ms, report)
        # Served in this delivery (after any earlier failure by construction), or in an
        # earlier attempt of it after the held record last failed.
        witnessed = [p for p in held if served_now or p.served_since_failure]
        for p in witnessed:
            p.witnessed = True
        if witnessed:
            self._run(witnessed, day, limit, remaining_ms, report)
        waiting = [p for p in held if not p.witnessed]
        report.outcomes += [Outcome(p.record.sequence_number, O_DEFERRED,
                                    p.request.record_id, "held") for p in waiting]
        report.held = report.held or bool(waiting)

    def _run(self, pending: list[_Pending], day: str, limit: Callable[[], int],
             remaining_ms: RemainingMs | None, report: BatchReport) -> bool:
        """Run the calls and judge them; whether the provider served any.

        Batch dispatch: at most the limit of the delivery's start in flight, one judgement
        when all have ended (the seed's mechanism: the delivery is the batch). Window
        dispatch: the limit is read before every start, and each window of completed calls
        (as many as the limit) is judged as it completes, so the policy moves the limit
        while the delivery runs, and an opening circuit stops new calls at once."""
        windowed = self.settings.dispatch == "window"
        tasks = [lambda p=p: self._one(p, day, remaining_ms, report) for p in pending]
        calls: list[verdicts.CallResult] = []
        window = max(1, limit())
        served = False

        def done(index: int, result: object) -> None:
            nonlocal window, served
            p = pending[index]
            seq, rid = p.record.sequence_number, p.request.record_id
            if isinstance(result, BaseException):  # AWS trouble around the call
                report.outcomes.append(Outcome(seq, O_DEFERRED, rid,
                                               f"error_{type(result).__name__}"))
            elif isinstance(result, Outcome):  # never called: skipped or deferred
                report.outcomes.append(result)
            elif isinstance(result, verdicts.CallResult):
                report.calls += 1
                served = served or result.kind in (verdicts.OK, verdicts.PERMANENT)
                calls.append(result)
                if windowed and len(calls) >= window:
                    self._conclude(list(calls), day, report)
                    calls.clear()
                    window = max(1, limit())

        results = self.fan_out.run(tasks, limit if windowed else max(1, limit()),
                                   on_done=done, most=self.cap(report.state))
        for p, result in zip(pending, results, strict=True):
            if result is None:  # never started: the circuit opened, or the limit fell to 0
                report.outcomes.append(Outcome(p.record.sequence_number, O_DEFERRED,
                                               p.request.record_id, "not_started"))
        if calls:
            self._conclude(calls, day, report)
        return served

    def _one(self, p: _Pending, day: str, remaining_ms: RemainingMs | None,
             report: BatchReport) -> verdicts.CallResult | Outcome:
        seq, rid = p.record.sequence_number, p.request.record_id
        if not self.window.is_open(self.window_clock()):
            # The window closed while this delivery ran: the record waits for the next opening.
            return Outcome(seq, O_DEFERRED, rid, error="window_closed")
        if remaining_ms is not None and remaining_ms() <= self._call_budget_ms:
            # Could not outlive the call: if killed, its worker would run on unwatched.
            return Outcome(seq, O_DEFERRED, rid, error="deadline")
        if not self._still_allowed(report):
            return Outcome(seq, O_DEFERRED, rid, error="circuit_open")
        token = uuid.uuid4().hex
        try:
            entry = self.ledger.claim(rid, day, token, self.clock(), self.settings.lease_s)
        except ClaimLost as lost:
            old = lost.existing
            if old is not None and old.status in (FETCHED, PARKED):
                return Outcome(seq, O_SKIPPED, rid, error=f"already_{old.status}")
            return Outcome(seq, O_DEFERRED, rid, error="leased")
        result = self.invoke({"record_id": rid, "day": day, "claim_token": token,
                              "attempt": entry.attempts, "source": p.request.source})
        kind = result.outcome
        if result.retry_after_s > 0 and not result.ok:
            report.quiet_until = max(report.quiet_until, self.clock() + result.retry_after_s)
        if kind in (verdicts.OK, verdicts.FOUND):
            if not result.recorded:
                self.ledger.complete(rid, day, token, self.clock())
        elif kind == verdicts.REJECTED:
            self.ledger.release(rid, day, token, self.clock())  # it never started
        elif kind in (verdicts.FAILED, verdicts.PERMANENT):
            self.ledger.fail(rid, day, token, self.clock(), error=result.error,
                             park=kind == verdicts.PERMANENT)
        # AMBIGUOUS: no write. The worker may still be running: the lease keeps it ours.
        return _call_result(seq, rid, kind, result, entry, witnessed=p.witnessed,
                            served_since_failure=p.served_since_failure)

    def _settle(self, judgement: verdicts.Judgement, results: list[verdicts.CallResult],
                day: str, report: BatchReport) -> None:
        by_seq = {r.sequence_number: r for r in results}
        samples = iter(judgement.samples)
        for v in judgement.verdicts:
            call = by_seq[v.sequence_number]
            judged = call.kind in (verdicts.OK, verdicts.PERMANENT) or (
                call.kind == verdicts.FAILED and not v.suspect)
            sample = next(samples) if judged else None
            outcome = {verdicts.FETCHED: O_FETCHED, verdicts.PARK: O_PARKED}.get(
                v.action, O_FAILED if call.kind == verdicts.FAILED else O_DEFERRED)
            if call.kind == verdicts.FAILED and (v.blame or v.suspect or v.action == verdicts.PARK):
                settled = self.ledger.settle_failure(
                    v.record_id, day, self.clock(), blamed=v.blame, suspect=v.suspect,
                    park=v.action == verdicts.PARK, reason=v.reason)
                if v.action == verdicts.PARK and not settled:
                    outcome = O_FAILED  # claimed again meanwhile: that attempt decides
            error = v.reason if outcome == O_PARKED and v.reason else v.error
            report.outcomes.append(Outcome(v.sequence_number, outcome, v.record_id, error,
                                           sample, called=True))

    def _still_allowed(self, report: BatchReport) -> bool:
        """Whether the control item, read again right before this claim, still allows a
        call: another shard's ventilator may have opened the circuit (or an operator paused)
        since this delivery loaded it, and a call started then would be a call while open,
        beside the rearm's probe. One strongly consistent read per call: the price of
        invariant 5 across shards. A read that fails allows nothing (the record waits)."""
        if report.stopped:
            return False
        try:
            current = self.control.load()
        except Exception as exc:
            report.problems.append(f"control_read_{type(exc).__name__}")
            return False
        allowed = current.mapping_enabled and (
            current.breaker == breaker.CLOSED
            or (current.breaker == breaker.HALF_OPEN and bool(report.probe_token)
                and current.probe_token == report.probe_token))
        if not allowed:
            report.stopped = True
            report.state = current  # window dispatch: the limit falls to 0, nothing starts
        return allowed

    def _conclude(self, calls: list[verdicts.CallResult], day: str,
                  report: BatchReport) -> None:
        """Judge calls that have ended, write their verdicts, teach the policy."""
        state = report.state
        judgement = verdicts.judge(
            calls,
            breaker_closed=state.breaker == breaker.CLOSED,
            provider_serving=(self.policy.serving(state.recent)
                              and state.lone_failures < self.settings.max_attempts),
            max_attempts=self.settings.max_attempts,
            error_rate_threshold=self.settings.error_rate_threshold,
            serving_cleanly=serving_cleanly(
                state.recent, self.settings.error_rate_threshold * CLEAN_SHARE),
        )
        self._settle(judgement, calls, day, report)
        self._learn(judgement, calls, report)

    def _learn(self, judgement: verdicts.Judgement, calls: list[verdicts.CallResult],
               report: BatchReport) -> None:
        """Feed the policy and store what it learned, with the breaker's move (and, in window
        dispatch, the delivery size that fits the ventilator's time)."""
        samples = list(judgement.samples)
        if not samples and not judgement.hold and not judgement.suspects:
            return
        known = report.state
        # Window dispatch: calls started before the limit was last lowered ran under the old
        # limit; their failures already caused that cut and must not cut again (one cut per
        # round trip, as TCP does), or one overload would walk the limit down to an open
        # circuit. They are judged as records all the same.
        started = [c.started_at for c in calls]
        stale = sum(1 for t in started if t < report.cut_at) * 2 > len(started)

        def step(current: ControlState) -> ControlState:
            current = current if current.batch_size else replace(
                current, batch_size=known.batch_size)
            if samples:
                decision = self._decide(current, samples, report)
                lowers = decision.action == OPEN or decision.size < current.batch_size
                if decision.size > current.batch_size and self.clock() < max(
                        current.rate_limited_until, report.quiet_until):
                    # The provider said it is busy and when to come back (Retry-After): the
                    # limit that overloaded it is not probed again before then. Calls go on
                    # at the lowered limit (pausing every call for each 429 of a slot-limited
                    # provider idles the slots it does have: goodput 0.05 in `retry-after`).
                    decision = replace(decision, size=current.batch_size, action=HOLD)
                if not (stale and lowers):
                    report.decision = decision
                    current = breaker.after_batch(current, decision, self.clock())
            current = replace(current,
                              lone_failures=judgement.lone_failures(current.lone_failures),
                              delivery=self._delivery(current),
                              # Every shard's ventilator honours the provider's Retry-After.
                              rate_limited_until=max(current.rate_limited_until,
                                                     report.quiet_until))
            if judgement.served:
                current = replace(current, last_served_at=self.clock())
            return breaker.hold(current, self.clock()) if judgement.hold else current

        before = report.state.batch_size
        self._store(step, report)
        if report.state.batch_size < before:
            report.cut_at = self.clock()

    def _decide(self, current: ControlState, samples: list[Sample],
                report: BatchReport) -> Decision:
        """The policy's decision; if the policy raises (a bug, a corrupt memo), the ``v1``
        rule decides instead: a broken policy must never leave the breaker unfed (the circuit
        would never open, and an outage would be called for hours)."""
        try:
            return self.policy.decide(current.batch_size, samples, current.recent,
                                      memo=current.memo)
        except Exception as exc:
            report.problems.append(f"policy_{type(exc).__name__}")
            fallback = make_policy(
                "v1", max_size=self.policy.max_size,
                latency_threshold_ms=self.settings.latency_threshold_ms,
                error_rate_threshold=self.settings.error_rate_threshold)
            return fallback.decide(current.batch_size, samples, current.recent)

    def _hold(self, report: BatchReport) -> None:
        """A held record waited for company: deliveries bring records behind it a while."""
        self._store(lambda current: breaker.hold(current, self.clock(), missed=True), report)

    def _store(self, step: Callable[[ControlState], ControlState], report: BatchReport) -> None:
        try:
            report.state = self.control.update(step, current=report.state)
        except Exception as exc:  # the ledger has every record's verdict; the policy waits
            report.problems.append(f"control_{type(exc).__name__}")

    def _delivery(self, state: ControlState) -> int:
        if self.settings.dispatch != "window":
            return 0
        return delivery_size(min(state.batch_size or 1, self.cap(state)), state.recent,
                             budget_s=self._budget_s,
                             prior_latency_ms=self.settings.latency_threshold_ms)

    def _finish(self, report: BatchReport, view: MappingView | None, day: str,
                started: float) -> BatchReport:
        # Notices and counts first: a throttled mapping call must not lose them.
        self._announce_parked(report, day)
        self._count(report, day)
        report.mapping_update = self._converge(view, report.state)
        self._log(report, day, started)
        return report

    def _count(self, report: BatchReport, day: str) -> None:
        counts = {
            "calls": sum(1 for o in report.outcomes if o.called),
            "fetched": report.count(O_FETCHED),
            "failed": report.count(O_FAILED),
            "parked": report.count(O_PARKED) + report.count(O_MALFORMED),
            "skipped": report.count(O_SKIPPED),
        }
        try:
            self.counts.add(day, counts, self.clock())
        except Exception as exc:  # approximate counters: never worth failing a delivery
            report.problems.append(f"counts_{type(exc).__name__}")

    def _converge(self, view: MappingView | None, state: ControlState) -> str:
        if view is None:
            return "unknown"
        spec = breaker.desired_mapping(state, max_size=self.cap(state),
                                       fallback_size=view.batch_size, now=self.clock())
        try:
            return self.mapping.apply(view, enabled=spec.enabled, batch_size=spec.batch_size)
        except Exception as exc:  # the rearm converges it within one interval
            return f"failed_{type(exc).__name__}"

    def _announce_parked(self, report: BatchReport, day: str) -> None:
        if self.parked_queue is None:
            return
        notices = [{"provider": self.settings.provider, "day": day, "record_id": o.record_id,
                    "sequence_number": o.sequence_number, "reason": o.error}
                   for o in report.outcomes if o.outcome in (O_PARKED, O_MALFORMED)]
        if notices:
            try:
                self.parked_queue.announce(notices)
            except Exception as exc:  # the ledger is the record of truth; the queue a notice
                report.problems.append(f"park_notice_{type(exc).__name__}")

    def _log(self, report: BatchReport, day: str, started: float) -> None:
        called = [o for o in report.outcomes if o.called]
        judged = [o.sample for o in called if o.sample is not None]
        latencies = [s.latency_ms for s in judged]
        errors = sorted({o.error for o in report.outcomes if o.error} | set(report.problems))
        metrics = {
            "BatchSize": report.state.batch_size,  # the concurrency limit, in either dispatch
            "Delivery": len(report.outcomes),  # records this delivery brought
            "Calls": len(called),
            "Fetched": report.count(O_FETCHED),
            "Failed": report.count(O_FAILED),
            "Parked": report.count(O_PARKED) + report.count(O_MALFORMED),
            "Skipped": report.count(O_SKIPPED),
            "Deferred": report.count(O_DEFERRED),
            "LatencyP50": round(percentile(latencies, 50), 1),
            "LatencyP90": round(percentile(latencies, 90), 1),
            "ErrorRate": round(sum(1 for s in judged if not s.ok) / len(judged), 3)
            if judged else 0.0,
            "BreakerOpen": int(report.state.breaker == breaker.OPENED),
        }
        fields = {
            "event": "batch",
            "day": day,
            "records": len(report.outcomes),
            "decision": report.decision.action if report.decision else "none",
            "health": report.decision.health.why if report.decision else "",
            "breaker": report.state.label,
            "mapping_update": report.mapping_update,
            "errors": [_safe_error(e) for e in errors],
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        self.emit(emf_document(self.settings.provider, int(self.clock() * 1000), metrics, fields,
                               stage=self.settings.stage))


def serving_cleanly(recent: Sequence[Sample], rate: float) -> bool:
    """Whether the recent samples show a provider clean enough to blame a failure on its
    record: the error rate, estimated with half an error and half a success added (Jeffreys),
    within ``rate``. Twenty calls with one error is 7 %, not 5 %: at a base error rate of 18 %
    a window of twenty holds at most one error one time in ten, and healthy records failing
    three or four times in a row by chance were parked (the brownout scenario); ten calls
    without an error (4.5 %) are clean."""
    if len(recent) < SERVING_MIN_SAMPLES:
        return False
    errors = sum(1 for s in recent if not s.ok)
    return (errors + 0.5) / (len(recent) + 1) <= rate


def _call_result(seq: str, rid: str, kind: str, result: WorkerResult, entry: Entry, *,
                 witnessed: bool, served_since_failure: bool) -> verdicts.CallResult:
    return verdicts.CallResult(seq, rid, kind, result.latency_ms, result.error,
                               attempts=entry.attempts, blamed=entry.blamed,
                               suspects=entry.suspects,
                               witnessed=witnessed,
                               served_since_failure=served_since_failure,
                               started_at=entry.claimed_at,
                               retry_after_s=result.retry_after_s)


def _seq_key(sequence_number: str) -> tuple[int, int | str]:
    """Kinesis sequence numbers are decimal strings: compare as integers, odd ones last."""
    return (0, int(sequence_number)) if sequence_number.isdigit() else (1, sequence_number)


def _safe_error(error: str) -> str:
    """Error kinds and reasons are content-free by construction; cap their length anyway."""
    return error[:120]
