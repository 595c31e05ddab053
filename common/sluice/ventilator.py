"""The ventilator: one Kinesis batch in, one provider call per record out, all at once.

For each batch:
 1. Load the control state. Open or paused: make no provider call, make sure the mapping is
    disabled, and hand every record back to Kinesis (nothing is lost: it resumes from the
    checkpoint when the mapping is enabled again).
 2. Decode each record; a malformed one is parked at once with a reason (it never blocks).
 3. Dedupe ids within the batch, look the rest up in the ledger (100 keys a request) and skip
    what is already fetched or parked today; a record leased by another live call is deferred.
 4. Claim each remaining record (one conditional write) and invoke the worker for it, all
    concurrently but never more than the batch size the controller allows (the mapping may
    still deliver a bigger batch while an update settles). Each outcome is recorded as soon as
    it is known (the worker marks "fetched"; the ventilator marks "failed", or "parked" for a
    permanent error such as 404).
 5. Judge the failures. A failed attempt is held against the record (toward max_attempts)
    only when the provider was otherwise serving: another call in the same batch succeeded,
    or the record, already blamed, failed alone again while the breaker is closed and the
    recent window is healthy (a poison record at the head of a redelivered batch; that call
    is then kept out of the health judgement, so one bad record cannot shrink the batch or
    open the circuit). A record failing while everything fails is the provider's problem,
    not the record's: it waits on the stream, however long the outage, instead of being
    parked. Safety net: parked anyway after 3 x max_attempts attempts.
 6. Feed the policy; apply its decision to the control state (optimistic lock) and the mapping.
 7. Log one EMF line. Records to retry (failed below max attempts, deferred) go back to
    Kinesis: as ``batchItemFailures`` when the mapping has ReportBatchItemFailures (it then
    checkpoints at the lowest one), otherwise by raising RetryBatch (the whole batch comes back
    and everything already finished is skipped by the ledger lookup).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from sluice import breaker
from sluice.breaker import ControlState
from sluice.clock import Clock, local_day, system_clock
from sluice.control import ControlStore
from sluice.intake import FetchRequest, MalformedRecord, parse_request
from sluice.invoker import WorkerResult
from sluice.ledger import FETCHED, PARKED, ClaimLost, Ledger
from sluice.mapping import MappingClient, MappingView
from sluice.metrics import Emit, emf_document, stdout_emit
from sluice.parking import ParkedQueue
from sluice.policies import Decision, Policy, Sample, make_policy, percentile
from sluice.settings import ProviderSettings

# Outcomes of one stream record within one delivery.
O_FETCHED, O_FAILED, O_PARKED = "fetched", "failed", "parked"
O_SKIPPED, O_DEFERRED, O_MALFORMED = "skipped", "deferred", "malformed"
RETRY_OUTCOMES = frozenset({O_FAILED, O_DEFERRED})
SAFETY_NET_FACTOR = 3  # parked regardless after this many times max_attempts attempts


@dataclass(frozen=True)
class StreamRecord:
    sequence_number: str
    shard_id: str
    data: bytes

    @classmethod
    def from_event(cls, raw: dict[str, Any]) -> StreamRecord:
        kinesis = raw["kinesis"]
        event_id = raw.get("eventID", "")
        return cls(
            sequence_number=kinesis["sequenceNumber"],
            shard_id=event_id.split(":", 1)[0] if ":" in event_id else "shard",
            data=base64.b64decode(kinesis["data"]),
        )


@dataclass(frozen=True)
class Outcome:
    sequence_number: str
    outcome: str
    record_id: str = ""
    error: str = ""
    sample: Sample | None = None
    attempts: int = 0  # this attempt's number, when the provider was called
    prior_blame: int = 0  # failed attempts already held against the record
    suspect: bool = False  # failed alone again after being blamed: says nothing of the provider

    @property
    def judges_provider(self) -> bool:
        return self.sample is not None and not self.suspect


@dataclass
class BatchReport:
    outcomes: list[Outcome] = field(default_factory=list)
    state: ControlState = field(default_factory=ControlState)
    decision: Decision | None = None
    mapping_update: str = ""
    reports_item_failures: bool = False
    problems: list[str] = field(default_factory=list)  # error kinds outside any one record

    @property
    def retry(self) -> list[str]:
        return [o.sequence_number for o in self.outcomes if o.outcome in RETRY_OUTCOMES]

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)

    def response(self) -> dict[str, Any]:
        """What the Lambda handler returns to the event source mapping."""
        failures = sorted(self.retry, key=int)  # opaque strings, compared as integers
        return {"batchItemFailures": [{"itemIdentifier": seq} for seq in failures]}


Invoke = Callable[[dict[str, Any]], WorkerResult]


class Ventilator:
    def __init__(
        self,
        settings: ProviderSettings,
        *,
        ledger: Ledger,
        control: ControlStore,
        mapping: MappingClient,
        invoke: Invoke,
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

    def handle(self, records: Sequence[StreamRecord], stream_arn: str) -> BatchReport:
        started = time.perf_counter()
        now = self.clock()
        day = local_day(now, self.settings.zone)
        view = self.mapping.find(stream_arn)
        loaded = self.control.load()
        window_open = self.window.is_open(self.window_clock())
        if window_open == loaded.window_closed and not loaded.paused:
            # The window closed (or opened) since the last batch: outside it, not one call.
            change = breaker.window_opened if window_open else breaker.window_closed
            loaded = self.control.update(lambda s: change(s, self.clock()), current=loaded)
        state = loaded
        if state.batch_size == 0:  # first batch ever: learn the size the mapping started with
            state = _with_size(state, self.policy.clamp(view.batch_size))
        report = BatchReport(state=state, reports_item_failures=view.reports_item_failures)

        if not state.mapping_enabled:
            # Open, paused or outside the window: not one provider call. The records wait on
            # the stream (Kinesis resumes from the checkpoint when the mapping is enabled).
            report.outcomes = [Outcome(r.sequence_number, O_DEFERRED) for r in records]
            report.mapping_update = self._apply(view, state)
            self._log(report, day, started)
            return report

        to_call = self._triage(records, day, now, report)
        self._call(to_call, day, min(state.batch_size, self.settings.max_batch_size), report)
        self._judge_failures(report, day, state)

        samples = [o.sample for o in report.outcomes if o.judges_provider]
        if samples:
            def step(current: ControlState) -> ControlState:
                current = current if current.batch_size else _with_size(current, state.batch_size)
                decision = self.policy.decide(current.batch_size, samples, current.window)
                report.decision = decision
                return breaker.after_batch(current, decision, self.clock())

            report.state = self.control.update(step, current=loaded)
        report.mapping_update = self._apply(view, report.state)
        self._announce_parked(report, day)
        self.ledger.count(
            day,
            {
                "calls": len(samples),
                "fetched": report.count(O_FETCHED),
                "failed": report.count(O_FAILED),
                "parked": report.count(O_PARKED) + report.count(O_MALFORMED),
            },
            now,
        )
        self._log(report, day, started)
        return report

    # -- steps ---------------------------------------------------------------------------------

    def _triage(
        self, records: Sequence[StreamRecord], day: str, now: float, report: BatchReport
    ) -> list[tuple[StreamRecord, FetchRequest]]:
        """Park the malformed, skip duplicates and finished records, defer leased ones."""
        first: dict[str, tuple[StreamRecord, FetchRequest]] = {}
        for record in records:
            try:
                request = parse_request(record.data)
            except MalformedRecord as bad:
                self.ledger.park_malformed(
                    shard_id=record.shard_id, sequence_number=record.sequence_number,
                    day=day, reason=bad.reason, data=record.data, now=now,
                )
                report.outcomes.append(Outcome(record.sequence_number, O_MALFORMED,
                                               error=bad.reason))
                continue
            if request.record_id in first:  # the same id twice in one batch: one call
                report.outcomes.append(Outcome(record.sequence_number, O_SKIPPED,
                                               request.record_id, error="duplicate_in_batch"))
                continue
            first[request.record_id] = (record, request)

        entries = self.ledger.lookup(first, day)
        to_call = []
        for record_id, (record, request) in first.items():
            entry = entries.get(record_id)
            if entry is not None and entry.is_final():
                report.outcomes.append(Outcome(record.sequence_number, O_SKIPPED, record_id,
                                               error=f"already_{entry.status}"))
            elif entry is not None and entry.is_leased(now):
                report.outcomes.append(Outcome(record.sequence_number, O_DEFERRED, record_id,
                                               error="leased"))
            else:
                to_call.append((record, request))
        return to_call

    def _call(
        self,
        to_call: list[tuple[StreamRecord, FetchRequest]],
        day: str,
        limit: int,
        report: BatchReport,
    ) -> None:
        if not to_call:
            return
        with ThreadPoolExecutor(max_workers=max(1, min(limit, len(to_call)))) as pool:
            futures = [pool.submit(self._one, rec, req, day) for rec, req in to_call]
            for (record, request), future in zip(to_call, futures, strict=True):
                try:
                    report.outcomes.append(future.result())
                except Exception as exc:  # AWS trouble around the call: try again later
                    report.outcomes.append(Outcome(record.sequence_number, O_DEFERRED,
                                                   request.record_id,
                                                   error=f"error_{type(exc).__name__}"))

    def _one(self, record: StreamRecord, request: FetchRequest, day: str) -> Outcome:
        seq, rid = record.sequence_number, request.record_id
        if not self.window.is_open(self.window_clock()):
            # The window closed while this batch ran: the record waits for the next opening.
            return Outcome(seq, O_DEFERRED, rid, error="window_closed")
        token = uuid.uuid4().hex
        try:
            entry = self.ledger.claim(rid, day, token, self.clock(), self.settings.lease_s)
        except ClaimLost as lost:
            old = lost.existing
            if old is not None and old.status in (FETCHED, PARKED):
                return Outcome(seq, O_SKIPPED, rid, error=f"already_{old.status}")
            return Outcome(seq, O_DEFERRED, rid, error="leased")
        result = self.invoke({
            "record_id": rid,
            "day": day,
            "claim_token": token,
            "attempt": entry.attempts,
            "source": request.source,
        })
        sample = Sample(result.latency_ms, result.ok)
        if result.ok:
            if not result.recorded:
                self.ledger.complete(rid, day, token, self.clock())
            return Outcome(seq, O_FETCHED, rid, sample=sample, attempts=entry.attempts)
        status = self.ledger.fail(rid, day, token, self.clock(), error=result.error,
                                  park=result.permanent)
        return Outcome(seq, O_PARKED if status == PARKED else O_FAILED, rid, result.error,
                       sample, attempts=entry.attempts, prior_blame=entry.blamed)

    def _judge_failures(self, report: BatchReport, day: str, state: ControlState) -> None:
        """Blame, and park at max attempts, the failures the provider is not to blame for."""
        called = [o for o in report.outcomes if o.sample is not None]
        failed = [o for o in called if o.outcome == O_FAILED]
        served = sum(1 for o in called if o.sample.ok)
        limit = self.settings.max_attempts
        window_errors = sum(1 for s in state.window if not s.ok)
        healthy_lately = (state.breaker == breaker.CLOSED and len(state.window) >= 5
                          and window_errors / len(state.window)
                          <= self.settings.error_rate_threshold / 2)
        for i, o in enumerate(report.outcomes):
            if o.outcome != O_FAILED:
                continue
            suspect = (served == 0 and len(failed) == 1 and o.prior_blame > 0
                       and healthy_lately)
            blamed = served > 0 or suspect
            if suspect:
                report.outcomes[i] = o = replace(o, suspect=True)
            blame = o.prior_blame + int(blamed)
            park = blame >= limit or o.attempts >= limit * SAFETY_NET_FACTOR
            if not (blamed or park):
                continue
            reason = f"{o.error} after {o.attempts} attempts"
            settled = self.ledger.settle_failure(o.record_id, day, self.clock(), blamed=blamed,
                                                 park=park, reason=reason)
            if settled and park:
                report.outcomes[i] = replace(o, outcome=O_PARKED)

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

    def _apply(self, view: MappingView, state: ControlState) -> str:
        return self.mapping.apply(view, enabled=state.mapping_enabled, batch_size=state.batch_size)

    def _log(self, report: BatchReport, day: str, started: float) -> None:
        samples = [o.sample for o in report.outcomes if o.sample is not None]
        latencies = [s.latency_ms for s in samples]
        errors = sorted({o.error for o in report.outcomes if o.error} | set(report.problems))
        metrics = {
            "BatchSize": report.state.batch_size,
            "Calls": len(samples),
            "Fetched": report.count(O_FETCHED),
            "Failed": report.count(O_FAILED),
            "Parked": report.count(O_PARKED) + report.count(O_MALFORMED),
            "Skipped": report.count(O_SKIPPED),
            "Deferred": report.count(O_DEFERRED),
            "LatencyP50": round(percentile(latencies, 50), 1),
            "LatencyP90": round(percentile(latencies, 90), 1),
            "ErrorRate": round(sum(1 for s in samples if not s.ok) / len(samples), 3)
            if samples else 0.0,
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
            "errors": errors,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        self.emit(emf_document(self.settings.provider, int(self.clock() * 1000), metrics, fields))


def _with_size(state: ControlState, size: int) -> ControlState:
    return replace(state, batch_size=size)
