"""The simulator: the runtime's real decision code in virtual time.

The ventilator (triage, claims, blame and parking, policy, breaker), the policies and the
rearm handler run unchanged; around them the stream, the event source mapping (updates settle
after a delay), the worker fan-out and the provider (the scenario's capacity, latency, errors
and phases) are simulated. One batch per shard at a time, as Lambda does for Kinesis; a batch
lasts as long as its slowest call plus a fixed overhead for the AWS calls around it.

Deterministic: the same scenario, policy and seed give the same result.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import math
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from sluice import breaker, verdicts
from sluice import rearm as rearm_module
from sluice.breaker import OPENED
from sluice.fanout import limit_now
from sluice.invoker import WorkerResult
from sluice.settings import ProviderSettings, load_settings
from sluice.ventilator import BatchReport, StreamRecord, Ventilator
from sluice.window import AccessWindow
from sluice_tools import invariants
from sluice_tools.memory import (
    MemoryControl,
    MemoryDayCounts,
    MemoryLedger,
    MemoryMalformed,
    MemoryMapping,
    MemoryShards,
)
from sluice_tools.provider_model import OUTAGE, ProviderServer
from sluice_tools.scenario import ProviderState, Scenario
from sluice_tools.simulate.chaos import Chaos, VentilatorKilled
from sluice_tools.simulate.oracle import physical_limit

REARM_PERIOD_S = 600.0
BATCH_OVERHEAD_S = 0.05  # ledger reads, claims, control write, mapping read around a batch
IDLE_POLL_S = 1.0  # an enabled mapping polls an empty or disabled shard about once a second
DEFAULT_START = 1_764_000_000.0  # a fixed instant, so the ledger's days are deterministic
DEFAULT_HORIZON_S = 7 * 86400
VENTILATOR_TIMEOUT_S = 900.0  # Lambda's maximum: the deploy sets it


class VirtualFanOut:
    """The fan-out port in virtual time: at most ``limit`` calls in flight, the next one
    starting as soon as one ends (the production ``ThreadFanOut``'s semantics). Tasks run one
    after another in start-time order, with the clock set to each task's start."""

    def __init__(self, engine: Simulation) -> None:
        self.engine = engine

    def run(self, tasks, limit, *, on_done=None, most=None):
        engine = self.engine
        results = [None] * len(tasks)
        running: list[tuple[float, int, Any]] = []  # (end, index, result) of started calls
        started, now = 0, engine.now

        while True:
            # Calls starting together are in flight together: each sees the delivery's
            # concurrency, not just the calls started before it in this loop.
            engine.delivery_concurrency = max(1, min(limit_now(limit), len(tasks) - started
                                                     + len(running)))
            while started < len(tasks) and len(running) < limit_now(limit):
                engine.now = now
                engine.apply_worker_writes()
                engine.call_latency_s = 0.0
                try:
                    engine.chaos.before_task(engine)
                except VentilatorKilled:
                    # Dead now: what it would have written when its running calls answered
                    # never happens; their leases stay until they lapse.
                    engine.drop_ventilator_writes(engine.current, after=engine.now)
                    raise
                engine.in_call = True
                try:
                    result = tasks[started]()
                except VentilatorKilled:
                    raise
                except Exception as exc:
                    result = exc
                finally:
                    engine.in_call = False
                heapq.heappush(running, (now + engine.call_latency_s, started, result))
                started += 1
            if not running:
                break
            end, index, result = heapq.heappop(running)
            engine.wait_until(end)  # other shards' deliveries and the rearm run meanwhile
            now = engine.now
            engine.apply_worker_writes()
            results[index] = result
            if on_done is not None:
                on_done(index, result)
        engine.now = now
        engine.apply_worker_writes()
        return results


class _CallEndLedger:
    """The ledger as the ventilator sees it in virtual time. Tasks run one after another at
    their start times, but the ventilator writes a call's outcome (complete, fail, release)
    when the call *ends*: those writes are queued to land then, and a ventilator killed
    before a call ended never writes its outcome (the call's lease stays live)."""

    def __init__(self, engine: Simulation, ledger: MemoryLedger) -> None:
        self.engine, self.ledger = engine, ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)  # lookup, get, claim, settle_failure: at once

    def _at_call_end(self, write: Any, *args: Any, **kwargs: Any) -> bool:
        engine = self.engine
        if not engine.in_call:
            return write(*args, **kwargs)
        engine.queue_write(engine.now + engine.call_latency_s,
                           lambda at: write(*args[:-1], at, **kwargs), owner=engine.current)
        return True

    def complete(self, record_id: str, day: str, token: str, now: float) -> bool:
        return self._at_call_end(self.ledger.complete, record_id, day, token, now)

    def fail(self, record_id: str, day: str, token: str, now: float, **kwargs: Any) -> Any:
        return self._at_call_end(self.ledger.fail, record_id, day, token, now, **kwargs)

    def release(self, record_id: str, day: str, token: str, now: float) -> bool:
        return self._at_call_end(self.ledger.release, record_id, day, token, now)


POLL, RESUME, REARM = "poll", "resume", "rearm"


class _Abandoned(BaseException):
    """Unwinds a delivery left waiting when the run ends (not an Exception: the ventilator's
    own handlers must not catch it)."""


class _Delivery:
    """One shard's delivery: the real ventilator's ``handle`` in a thread of its own, so it
    can wait in virtual time while other shards' deliveries run. Exactly one thread runs at a
    time (the scheduler and the delivery hand a baton back and forth), so a run stays
    deterministic; an exception the delivery dies of is re-raised by the scheduler."""

    def __init__(self, shard: int, batch: list[StreamRecord], honoured: bool,
                 deliver: Any) -> None:
        self.shard, self.batch, self.honoured = shard, batch, honoured
        self.report: BatchReport | None = None
        self.error: BaseException | None = None
        self._deliver = deliver
        self._go = threading.Semaphore(0)
        self._back = threading.Semaphore(0)
        self._abandoned = False
        self.thread: threading.Thread | None = threading.Thread(
            target=self._body, name=f"delivery-shard-{shard}", daemon=True)
        self._started = False

    def _body(self) -> None:
        self._go.acquire()
        try:
            self.report = self._deliver()
        except VentilatorKilled:
            self.report = None
        except _Abandoned:
            pass
        except BaseException as exc:  # handed to the scheduler, which raises it
            self.error = exc
        finally:
            self.thread = None
            self._back.release()

    def resume(self) -> None:
        """Scheduler side: let the delivery run until it parks or ends."""
        if not self._started:
            self._started = True
            self.thread.start()
        self._go.release()
        self._back.acquire()

    def park(self) -> None:
        """Delivery side: hand the baton back and wait to be resumed."""
        self._back.release()
        self._go.acquire()
        if self._abandoned:
            raise _Abandoned()

    def abandon(self) -> None:
        thread = self.thread
        if thread is None:
            return
        self._abandoned = True
        self._go.release()
        thread.join()


@dataclass
class SimTrace:
    batches: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[float, float, bool, bool]] = field(default_factory=list)  # t, ms, ok, outage
    rearms: list[tuple[float, str]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


def expected_max_latency_s(state: ProviderState, n: int) -> float:
    """E[max of n log-normal latencies] at in-flight n <= capacity (numerical integration)."""
    if n <= 0:
        return 0.0
    mu = math.log(state.p50_ms)
    sigma = max(0.0, math.log(state.p90_ms / state.p50_ms) / 1.2815515655446004)
    if sigma == 0.0:
        return state.p50_ms / 1000
    steps, lo, hi = 2000, -8.0, 8.0
    dz = (hi - lo) / steps
    total = 0.0
    for i in range(steps + 1):
        z = lo + i * dz
        pdf = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1 + math.erf(z / math.sqrt(2)))
        weight = 0.5 if i in (0, steps) else 1.0
        total += weight * math.exp(mu + sigma * z) * n * pdf * cdf ** (n - 1)
    return total * dz / 1000


def oracle_makespan_s(scenario: Scenario, max_batch: int,
                      overhead_s: float = BATCH_OVERHEAD_S, window: AccessWindow | None = None,
                      start_epoch: float = DEFAULT_START) -> float:
    """An ideal controller that knows the capacity at every moment: batches exactly at
    min(X, capacity), never overloads, waits out outages and closed windows, and retries only
    base errors."""
    t, remaining = 0.0, float(scenario.records)
    phase_times = sorted({p.at_s for p in scenario.phases})
    cache: dict[tuple[int, ProviderState], float] = {}
    while remaining > 1e-9:
        if window is not None and not window.is_open(start_epoch + t):
            opens = window.next_change(start_epoch + t)
            if opens is None:
                return math.inf
            t = opens - start_epoch
            continue
        state = scenario.state_at(t)
        if state.outage:
            later = [p for p in phase_times if p > t]
            if not later:
                return math.inf
            t = later[0]
            continue
        size = min(max_batch, state.capacity, math.ceil(remaining))
        key = (size, state)
        if key not in cache:
            cache[key] = expected_max_latency_s(state, size) + overhead_s
        t += cache[key]
        remaining -= size * (1 - state.error_rate)
    return t


class Simulation:
    def __init__(self, scenario: Scenario, *, policy: str | None = None, seed: int = 1,
                 update_delay_s: float = 2.0, horizon_s: float = DEFAULT_HORIZON_S,
                 settings_overrides: dict[str, Any] | None = None,
                 chaos: Chaos | None = None) -> None:
        self.scenario = scenario
        self.seed = seed
        self.rng = random.Random(seed)
        # The provider draws from its own generator, so the chaos schedule's draws never
        # shift what the provider does.
        self.provider = ProviderServer(scenario, random.Random(seed * 6151 + 1))
        self.chaos = chaos or Chaos.none()
        fields = {"provider": "sim", "stream_name": "sim", "table_name": "sim",
                  "result_bucket": "sim", "worker_function": "sim-worker",
                  "ventilator_function": "sim-ventilator", "timezone": "UTC",
                  **scenario.settings, **self.chaos.settings, **(settings_overrides or {})}
        if policy:
            fields["policy"] = policy
        self.settings: ProviderSettings = load_settings(**fields)
        self.start_epoch = scenario.start_epoch(self.settings.timezone, DEFAULT_START)
        self.now = self.start_epoch
        self.window = self.settings.window
        self.horizon_s = horizon_s
        self.ledger = MemoryLedger()
        self.control = MemoryControl()
        self.counts = MemoryDayCounts()
        self.malformed = MemoryMalformed()
        self.shards = MemoryShards(self.settings.shards)
        self.mapping = MemoryMapping(
            self.settings.max_batch_size, self.clock, update_delay_s,
            reports_item_failures=self.chaos.reports_item_failures,
            delay=self.chaos.update_delay(update_delay_s))
        self.chaos.install(self)
        self.trace = SimTrace()
        self.served: dict[tuple[str, str], int] = {}
        self.stored: set[tuple[str, str]] = set()
        self.intervals: list[tuple[float, float]] = []  # every provider call: (start, end)
        self.call_latency_s = 0.0
        self.delivery_concurrency = 1
        # Ledger writes that land when a call ends: (at, order, write, by which delivery).
        self._writes: list[tuple[float, int, Any, _Delivery | None]] = []
        self.in_call = False
        self._write_order = itertools.count()
        self._open_since: float | None = None
        # One ventilator per shard: the shards' deliveries are concurrent Lambda invocations
        # (separate execution environments), each with its own per-delivery state.
        self.ventilators = [Ventilator(
            self.settings, ledger=_CallEndLedger(self, self.ledger), control=self.control,
            mapping=self.mapping,
            invoke=self._invoke, counts=self.counts, malformed=self.malformed,
            fan_out=VirtualFanOut(self), clock=self.clock, emit=self._emit,
        ) for _ in range(self.settings.shards)]
        self.ventilator = self.ventilators[0]
        # The scheduler: every shard's poll, every running delivery's next instant and the
        # rearm's schedule, in virtual-time order (see ``wait_until``).
        self._events: list[tuple[float, int, str, Any]] = []
        self._event_order = itertools.count()
        self.current: _Delivery | None = None  # the delivery whose thread runs now

    # -- virtual time ---------------------------------------------------------------------------

    def clock(self) -> float:
        return self.now

    def t(self) -> float:
        return self.now - self.start_epoch

    # -- the simulated provider and worker -----------------------------------------------------

    def _invoke(self, payload: dict[str, Any]) -> WorkerResult:
        """Lambda's Invoke of the worker: the worker's own logic (look for today's result,
        call the provider, store, mark fetched), with the chaos schedule's faults."""
        key = (payload["record_id"], payload["day"])
        rejected = self.chaos.invoke_rejected(self)
        if rejected:
            return WorkerResult(False, 0.0, error="invoke_TooManyRequestsException",
                                kind=verdicts.REJECTED)
        if key in self.stored:  # the worker finds today's result: no provider call
            recorded = self.ledger.complete(*key, payload["claim_token"], self.now)
            return WorkerResult(True, 0.0, recorded=recorded, found=True)
        # The provider's slots and queue see every call in virtual-time order (the shards'
        # deliveries interleave), as a real provider would.
        answer = self.provider.call(self.now, self.t(), together=self.delivery_concurrency,
                                    must_fail=payload["record_id"] in self.chaos.poison)
        latency_s, fail = answer.latency_s, not answer.ok
        self.call_latency_s = latency_s
        self.intervals.append((self.now, self.now + latency_s))
        ms = latency_s * 1000
        self.trace.calls.append((self.t(), ms, not fail, answer.reason == OUTAGE))
        if fail:
            return WorkerResult(False, ms, error=f"http_{answer.status}",
                                retry_after_s=answer.retry_after_s or 0.0)
        self.served[key] = self.served.get(key, 0) + 1
        self.stored.add(key)
        fault = self.chaos.after_provider_answered(self)
        if fault == "worker_killed":  # after storing, before marking: the result stays
            return WorkerResult(False, ms, error="worker_Sandbox.Timedout")
        # The worker marks the record fetched itself, right after storing it: at the call's
        # end, so until then the record is in progress under a live lease (a retry beside a
        # killed ventilator's orphaned calls sees them as such, as it would in AWS).
        token = payload["claim_token"]
        self.queue_write(self.now + latency_s,
                         lambda at: self.ledger.complete(*key, token, at), owner=None)
        if fault == "connection_dropped":  # the worker ran; the ventilator cannot know
            return WorkerResult(False, ms, error="invoke_ReadTimeoutError",
                                kind=verdicts.AMBIGUOUS)
        return WorkerResult(True, ms, recorded=True)

    def queue_write(self, at: float, write: Any, *, owner: _Delivery | None) -> None:
        """A ledger write landing at ``at``: a worker's (``owner`` None) or a delivery's."""
        heapq.heappush(self._writes, (at, next(self._write_order), write, owner))

    def drop_ventilator_writes(self, owner: _Delivery | None, *, after: float) -> None:
        """A killed ventilator's writes due after its death never happen (other shards'
        deliveries are other Lambda invocations: theirs still land)."""
        self._writes = [w for w in self._writes
                        if not (w[3] is not None and w[3] is owner and w[0] > after)]
        heapq.heapify(self._writes)

    def apply_worker_writes(self, until: float | None = None) -> None:
        """The ledger writes (the workers' and the ventilator's) of calls that have ended by
        ``until`` (default: now)."""
        until = self.now if until is None else until
        while self._writes and self._writes[0][0] <= until:
            at, _, write, _ = heapq.heappop(self._writes)
            write(at)

    def _emit(self, doc: dict[str, Any]) -> None:
        if doc.get("event") == "batch":
            self.trace.batches.append({"t": self.t(), **{k: doc[k] for k in (
                "BatchSize", "Delivery", "Calls", "LatencyP90", "ErrorRate", "breaker",
                "decision")}})
        elif doc.get("event") == "rearm":
            self.trace.rearms.append((self.t(), doc.get("action", "")))

    # -- the run ----------------------------------------------------------------------------------

    def _shard_records(self) -> list[list[StreamRecord]]:
        scenario, rng = self.scenario, random.Random(self.seed * 7919)
        ids = [f"r{i:07d}" for i in range(scenario.records)]
        payloads = [(rid, "scheduled") for rid in ids]
        dupes = rng.sample(ids, k=min(len(ids), math.ceil(scenario.duplicates * len(ids))))
        payloads += [(rid, "adhoc") for rid in dupes]
        data = [json.dumps({"record_id": rid, "source": source}).encode()
                for rid, source in payloads]
        keys = [rid for rid, _ in payloads]
        hostile = self.chaos.hostile_payloads(rng)
        for i, bad in enumerate(hostile):
            at = rng.randrange(len(data) + 1)
            data.insert(at, bad)
            keys.insert(at, f"hostile-{i}")
        shards: list[list[StreamRecord]] = [[] for _ in range(self.settings.shards)]
        for key, payload in zip(keys, data, strict=True):
            shard = int(hashlib.md5(key.encode()).hexdigest(), 16) % self.settings.shards
            seq = str(len(shards[shard]) + 1)
            shards[shard].append(StreamRecord(seq, f"shardId-{shard:012d}", payload))
        self.unique_ids = set(ids)
        self.hostile = len(hostile)
        self.records_put = len(payloads) + len(hostile)
        return shards

    def _rearm(self) -> None:
        s = self.settings
        rearm_module.rearm(stream_name="sim", provider="sim", control=self.control,
                           mapping=self.mapping, clock=self.clock, emit=self._emit,
                           window=self.window, max_size=s.max_batch_size,
                           probe_lease_s=s.lease_s, shards=self.shards,
                           max_concurrency=s.max_concurrency,
                           parallelization_factor=s.parallelization_factor,
                           min_shards=s.shards)

    def run(self) -> dict[str, Any]:
        shards = self._shard_records()
        self._checkpoints = [0] * len(shards)
        self._retry_batches: dict[int, list[StreamRecord]] = {}
        for shard in range(len(shards)):
            self._schedule(self.now, POLL, shard)
        self._schedule(self.now + REARM_PERIOD_S, REARM, None)
        done_at = None
        try:
            while self._events:
                t, _, kind, item = heapq.heappop(self._events)
                self.now = max(self.now, t)
                self.apply_worker_writes()
                if kind == REARM:  # the rearm fires on its schedule, whatever the shards do
                    self._rearm()
                    self._schedule(self.now + REARM_PERIOD_S, REARM, None)
                    continue
                if self.t() > self.horizon_s:
                    break
                self._note_breaker()
                if kind == RESUME:
                    self._step(item)
                    continue
                records = shards[item]
                if self._checkpoints[item] >= len(records):
                    if all(c >= len(r) for c, r in zip(self._checkpoints, shards, strict=True)):
                        done_at = self.now
                        break
                    continue  # this shard is drained; the others go on
                self._poll(item, records)
        finally:
            self._abandon_deliveries()
        if done_at is None:
            done_at = self.now
        self._note_breaker()
        self._settle_world()
        return self._summary(done_at - self.start_epoch)

    def _schedule(self, at: float, kind: str, item: Any) -> None:
        heapq.heappush(self._events, (at, next(self._event_order), kind, item))

    def _poll(self, shard: int, records: list[StreamRecord]) -> None:
        """The mapping polls a shard: a delivery starts if it is enabled."""
        config = self.mapping.effective()
        if not config.enabled:
            self._schedule(self.now + IDLE_POLL_S, POLL, shard)
            return
        # Lambda retries a failed invocation (or a RetryBatch) with the same batch, whatever
        # the mapping's BatchSize became meanwhile; a new batch takes the current size.
        checkpoint = self._checkpoints[shard]
        batch = self._retry_batches.pop(shard, None) or \
            records[checkpoint: checkpoint + config.batch_size]
        deadline = self.now + VENTILATOR_TIMEOUT_S
        ventilator = self.ventilators[shard]

        def deliver() -> BatchReport:
            return ventilator.handle(batch, self.mapping.stream_arn,
                                     remaining_ms=lambda: (deadline - self.now) * 1000)

        self._step(_Delivery(shard, batch, config.reports_item_failures, deliver))

    def _step(self, delivery: _Delivery) -> None:
        """Run a delivery's thread until it waits for a later instant or ends."""
        self.current = delivery
        try:
            delivery.resume()
        finally:
            self.current = None
        if delivery.thread is not None:
            return  # waiting: its RESUME event is queued
        if delivery.error is not None:
            raise delivery.error  # a bug in the code under test: fail loudly
        shard, batch = delivery.shard, delivery.batch
        report = delivery.report
        delay = BATCH_OVERHEAD_S
        if report is None:  # killed: nothing returned, Lambda retries the whole batch
            self._retry_batches[shard] = batch
        else:
            delay += report.backoff_s
            self._checkpoints[shard] = self._advance(
                self._checkpoints[shard], batch, report, honoured=delivery.honoured)
            if report.retry and not report.reports_item_failures:
                self._retry_batches[shard] = batch  # RetryBatch: the same batch again
        self._schedule(self.now + delay, POLL, shard)

    def wait_until(self, at: float) -> None:
        """The running delivery's time moves on to ``at``. Whatever is due before then (other
        shards' deliveries, the rearm) runs first, so every ledger read and write, in every
        delivery, happens in virtual-time order: a delivery never sees a write another makes
        later, nor misses one made earlier."""
        delivery = self.current
        if delivery is None or not self._events or self._events[0][0] > at:
            self.now = max(self.now, at)
            return
        self._schedule(at, RESUME, delivery)
        delivery.park()
        self.current = delivery

    def _abandon_deliveries(self) -> None:
        """The run ended (horizon) with deliveries waiting: unwind their threads."""
        for _, _, kind, item in self._events:
            if kind == RESUME:
                item.abandon()
        self._events.clear()

    def _settle_world(self) -> None:
        """After the run: let pending updates settle and one more rearm converge, as the
        schedule would; the run converged if the mapping then matches the spec."""
        self.chaos.stop()
        self.apply_worker_writes(until=float("inf"))
        self.now += 3600
        self._rearm()
        self.now += 3600
        self.mapping.effective()

    @staticmethod
    def _advance(checkpoint: int, batch: list[StreamRecord], report: BatchReport, *,
                 honoured: bool) -> int:
        retry = set(report.retry)
        if retry and not report.reports_item_failures:
            return checkpoint  # RetryBatch: the whole batch comes back
        if not honoured:
            # A mapping without ReportBatchItemFailures ignores the response: as AWS does,
            # the whole batch counts as done (what the ventilator handed back is lost).
            return checkpoint + len(batch)
        for i, record in enumerate(batch):
            if record.sequence_number in retry:
                return checkpoint + i  # ReportBatchItemFailures: resume at the lowest failed
        return checkpoint + len(batch)

    def _note_breaker(self) -> None:
        state = self.control.state
        if state.breaker == OPENED and self._open_since is None:
            self._open_since = self.t()
        elif state.breaker == "closed" and self._open_since is not None:
            self.trace.events.append(f"open {self._open_since:.0f}s -> {self.t():.0f}s")
            self._open_since = None

    # -- results ----------------------------------------------------------------------------------

    def open_periods(self) -> list[tuple[float, float]]:
        periods, start = [], None
        for b in self.trace.batches:
            if b["breaker"] == "open" and start is None:
                start = b["t"]
            elif b["breaker"] == "closed" and start is not None:
                periods.append((start, b["t"]))
                start = None
        if start is not None:
            periods.append((start, self.t()))
        return periods

    def _waiting_for_a_witness(self, states: dict[str, str]) -> set[str]:
        """Poison records left at the end with nothing to witness them: every other record is
        finished, so none can be served after their last failure, and a lone failure looks
        exactly like an outage (held, or probed at every rearm as the breaker's only
        candidate). Not lost: they wait on the stream, blocking nothing, until a record put
        behind them (the next day's kickoff, an ad-hoc request) is served; then they are
        parked. Counted apart, and only when nothing but poison is unfinished."""
        unfinished = {rid for rid in self.unique_ids if states.get(rid) not in
                      ("fetched", "parked")}
        return unfinished if unfinished <= self.chaos.poison else set()

    def _summary(self, makespan: float) -> dict[str, Any]:
        s = self.settings
        states = self.ledger.final_states()
        fetched = sum(1 for rid in self.unique_ids if states.get(rid) == "fetched")
        parked = sum(1 for rid in self.unique_ids if states.get(rid) == "parked")
        waiting = self._waiting_for_a_witness(states)
        lost = len(self.unique_ids) - fetched - parked - len(waiting)
        hostile_parked = len(self.malformed.items)
        lost += max(0, self.hostile - hostile_parked)
        parked_wrongly = sum(1 for rid in self.unique_ids
                             if states.get(rid) == "parked" and rid not in self.chaos.poison)
        duplicates = sum(n - 1 for n in self.served.values() if n > 1)
        calls = self.trace.calls
        outage_calls = [c for c in calls if c[3]]
        periods = self.open_periods()
        # Once the breaker has opened on an outage, at most one probe per rearm interval.
        probes = [c[0] for c in outage_calls if any(a < c[0] <= b for a, b in periods)]
        # Per rearm interval (the rearm fires at multiples of the period from the start): a
        # probe follows its rearm after the mapping settles and a delivery takes the token.
        max_probes = invariants.max_per_period(probes, REARM_PERIOD_S)
        oracle = oracle_makespan_s(self.scenario, s.max_batch_size, window=self.window,
                                   start_epoch=self.start_epoch)
        physical = physical_limit(self.scenario, s.max_concurrency, window=self.window,
                                  start_epoch=self.start_epoch, max_attempts=s.max_attempts,
                                  streams=s.shards * s.parallelization_factor,
                                  bursts=self.provider.bursts.intervals(makespan)).bound_s
        outside = sum(1 for c in calls if not self.window.is_open(self.start_epoch + c[0]))
        trace = [[round(b["t"], 2), b["BatchSize"]] for b in self.trace.batches]
        max_in_flight = _max_overlap(self.intervals)
        spec = breaker.desired_mapping(self.control.state, max_size=self.ventilator.cap(
            self.control.state), fallback_size=self.mapping.config.batch_size, now=self.now)
        final = self.mapping.effective()
        converged = (final.enabled, final.batch_size) == (spec.enabled, spec.batch_size)
        summary = {
            "scenario": self.scenario.name,
            "policy": s.policy,
            "seed": self.seed,
            "records": self.records_put,
            "fetched": fetched,
            "skipped_duplicates": self.records_put - fetched - parked - lost - len(waiting)
            - hostile_parked,
            "parked": parked + hostile_parked,
            "lost": lost,
            "held_waiting": len(waiting),
            "duplicate_fetches": duplicates,
            "max_in_flight": max_in_flight,
            "max_concurrency": s.max_concurrency,
            "provider_calls": len(calls),
            "calls_over_threshold": sum(1 for c in calls if c[1] > s.latency_threshold_ms),
            "calls_failed": sum(1 for c in calls if not c[2]),
            "calls_during_outage": len(outage_calls),
            "max_probes_per_rearm_interval": max_probes,
            "breaker_opened": self.control.state.opens,
            "calls_outside_window": outside,
            "window_pauses": self.control.state.window_pauses,
            "mapping_updates": self.mapping.updates,
            "makespan_s": round(makespan, 1),
            "oracle_makespan_s": round(oracle, 1),
            "goodput_ratio": round(oracle / makespan, 3) if makespan > 0 else 1.0,
            "dispatch": s.dispatch,
            # Against the physical limit (min(X, capacity) always in flight): <= 1 always.
            "physical_makespan_s": round(physical, 1),
            "goodput": round(physical / makespan, 3) if makespan > 0 else 1.0,
            "time_to_back_off_s": _time_to_back_off(self.scenario, self.trace.batches),
            "time_to_full_s": _time_to_full(self.scenario, self.trace.batches,
                                            s.max_batch_size),
            "batch_size_trace": trace,
            "open_periods_s": [[round(a, 1), round(b, 1)] for a, b in self.open_periods()],
        }
        if self.chaos.rates:
            summary["faults_injected"] = dict(sorted(self.chaos.injected.items()))
            summary["poison_records"] = len(self.chaos.poison)
            summary["hostile_records"] = self.hostile
        summary["invariants"] = invariants.check(invariants.RunFacts(
            duplicate_fetches=duplicates, lost=lost, drained=lost == 0,
            max_in_flight=max_in_flight, max_concurrency=s.max_concurrency,
            calls_outside_window=outside, max_probes_per_rearm=max_probes,
            parked_wrongly=parked_wrongly, converged=converged))
        return summary


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most provider calls in flight at any instant (ends sort before starts)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, delta in edges:
        current += delta
        best = max(best, current)
    return best


def _degradations(scenario: Scenario) -> list[tuple[float, bool]]:
    """(phase time, is_degradation) for phases that lower capacity or start/end an outage."""
    out, before = [], scenario.provider
    for phase in scenario.phases:
        after = scenario.state_at(phase.at_s)
        if (after.outage and not before.outage) or after.capacity < before.capacity:
            out.append((phase.at_s, True))
        elif (before.outage and not after.outage) or after.capacity > before.capacity:
            out.append((phase.at_s, False))
        before = after
    return out


def _time_to_back_off(scenario: Scenario, batches: list[dict[str, Any]]) -> float | None:
    """Worst time, over degradations, from onset to the first decrease or open."""
    worst = None
    for at, degraded in _degradations(scenario):
        if not degraded:
            continue
        before = [b for b in batches if b["t"] < at]
        onset = scenario.state_at(at)
        if before and (before[-1]["breaker"] == "open"
                       or (not onset.outage and before[-1]["BatchSize"] <= onset.capacity)):
            took = 0.0  # already backed off (or open) when the degradation began
            worst = took if worst is None else max(worst, took)
            continue
        after = [b for b in batches if b["t"] >= at]
        hit = next((b["t"] for b in after if b["decision"] in ("decrease", "open")
                    or b["breaker"] == "open"), None)
        took = (hit - at) if hit is not None else math.inf
        worst = took if worst is None else max(worst, took)
    return None if worst is None else round(worst, 1)


def _time_to_full(scenario: Scenario, batches: list[dict[str, Any]],
                  full: int) -> float | None:
    """Worst time, over recoveries, from the provider's recovery to batch size X again."""
    worst = None
    for at, degraded in _degradations(scenario):
        if degraded:
            continue
        if min(full, scenario.state_at(at).capacity) < full:
            continue  # recovered only partly: X is not the target
        hit = next((b["t"] for b in batches if b["t"] >= at and b["BatchSize"] >= full), None)
        took = (hit - at) if hit is not None else math.inf
        worst = took if worst is None else max(worst, took)
    return None if worst is None else round(worst, 1)
