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
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

from sluice import rearm as rearm_module
from sluice.breaker import OPENED
from sluice.invoker import WorkerResult
from sluice.settings import ProviderSettings, load_settings
from sluice.ventilator import BatchReport, Outcome, StreamRecord, Ventilator
from sluice.window import AccessWindow
from sluice_tools.scenario import ProviderState, Scenario
from sluice_tools.simulate.memory import MemoryControl, MemoryLedger, SimMapping

REARM_PERIOD_S = 600.0
BATCH_OVERHEAD_S = 0.05  # ledger reads, claims, control write, mapping read around a batch
IDLE_POLL_S = 1.0  # an enabled mapping polls an empty or disabled shard about once a second
DEFAULT_START = 1_764_000_000.0  # a fixed instant, so the ledger's days are deterministic
DEFAULT_HORIZON_S = 7 * 86400


class _SimVentilator(Ventilator):
    """The real ventilator, with its thread fan-out replaced by simulated concurrent calls."""

    engine: Simulation

    def _call(self, to_call, day, limit, report: BatchReport) -> None:
        self.engine.begin_calls(min(limit, len(to_call)), limit)
        for record, request in to_call:
            report.outcomes.append(self._one(record, request, day))


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
                 settings_overrides: dict[str, Any] | None = None) -> None:
        self.scenario = scenario
        self.seed = seed
        self.rng = random.Random(seed)
        fields = {"provider": "sim", "stream_name": "sim", "table_name": "sim",
                  "result_bucket": "sim", "worker_function": "sim-worker",
                  "ventilator_function": "sim-ventilator", "timezone": "UTC",
                  **scenario.settings, **(settings_overrides or {})}
        if policy:
            fields["policy"] = policy
        self.settings: ProviderSettings = load_settings(**fields)
        self.start_epoch = scenario.start_epoch(self.settings.timezone, DEFAULT_START)
        self.now = self.start_epoch
        self.window = self.settings.window
        self.horizon_s = horizon_s
        self.ledger = MemoryLedger()
        self.control = MemoryControl()
        self.mapping = SimMapping(self.settings.max_batch_size, self.clock, update_delay_s)
        self.trace = SimTrace()
        self.served: dict[tuple[str, str], int] = {}
        self.in_flight_batches: list[tuple[float, int]] = []  # (end time, calls)
        self.batch_calls = 0
        self.batch_latencies: list[float] = []
        self.max_in_flight = 0
        self._open_since: float | None = None
        self.ventilator = _SimVentilator(
            self.settings, ledger=self.ledger, control=self.control, mapping=self.mapping,
            invoke=self._invoke, clock=self.clock, emit=self._emit,
        )
        self.ventilator.engine = self

    # -- virtual time ---------------------------------------------------------------------------

    def clock(self) -> float:
        return self.now

    def t(self) -> float:
        return self.now - self.start_epoch

    # -- the simulated provider and worker -----------------------------------------------------

    def begin_calls(self, n: int, limit: int) -> None:
        """A batch's calls start: ``n`` at a time (more run in waves of ``limit``)."""
        self.batch_limit = max(1, limit)
        t = self.now
        self.in_flight_batches = [(end, k) for end, k in self.in_flight_batches if end > t]
        self.batch_calls = n
        self.batch_in_flight = n + sum(k for _, k in self.in_flight_batches)
        self.max_in_flight = max(self.max_in_flight, self.batch_in_flight)
        self.batch_latencies = []

    def _invoke(self, payload: dict[str, Any]) -> WorkerResult:
        state = self.scenario.state_at(self.t())
        in_flight = self.batch_in_flight
        latency_s = state.latency_s(self.rng, in_flight)
        fail = state.fails(self.rng, in_flight)
        if state.outage:
            latency_s = min(latency_s, 0.05)
        self.batch_latencies.append(latency_s)
        ms = latency_s * 1000
        self.trace.calls.append((self.t(), ms, not fail, state.outage))
        if fail:
            return WorkerResult(False, ms, error="http_503")
        key = (payload["record_id"], payload["day"])
        self.served[key] = self.served.get(key, 0) + 1
        # The worker marks the record fetched itself, right after storing it.
        recorded = self.ledger.complete(payload["record_id"], payload["day"],
                                        payload["claim_token"], self.now)
        return WorkerResult(True, ms, recorded=recorded)

    def _emit(self, doc: dict[str, Any]) -> None:
        if doc.get("event") == "batch":
            self.trace.batches.append({"t": self.t(), **{k: doc[k] for k in (
                "BatchSize", "Calls", "LatencyP90", "ErrorRate", "breaker", "decision")}})
        elif doc.get("event") == "rearm":
            self.trace.rearms.append((self.t(), doc.get("action", "")))

    # -- the run ----------------------------------------------------------------------------------

    def _shard_records(self) -> list[list[StreamRecord]]:
        scenario, rng = self.scenario, random.Random(self.seed * 7919)
        ids = [f"r{i:07d}" for i in range(scenario.records)]
        payloads = [(rid, "scheduled") for rid in ids]
        dupes = rng.sample(ids, k=min(len(ids), math.ceil(scenario.duplicates * len(ids))))
        payloads += [(rid, "adhoc") for rid in dupes]
        shards: list[list[StreamRecord]] = [[] for _ in range(self.settings.shards)]
        for rid, source in payloads:
            shard = int(hashlib.md5(rid.encode()).hexdigest(), 16) % self.settings.shards
            data = json.dumps({"record_id": rid, "source": source}).encode()
            seq = str(len(shards[shard]) + 1)
            shards[shard].append(StreamRecord(seq, f"shardId-{shard:012d}", data))
        self.unique_ids = set(ids)
        self.records_put = len(payloads)
        return shards

    def run(self) -> dict[str, Any]:
        shards = self._shard_records()
        checkpoints = [0] * len(shards)
        queue: list[tuple[float, int, int]] = [(self.now, 0, i) for i in range(len(shards))]
        next_rearm = self.now + REARM_PERIOD_S
        done_at = None
        counter = 1
        while queue:
            t, _, shard = heapq.heappop(queue)
            while next_rearm <= t:  # rearm fires on its schedule, whatever the shards do
                self.now = next_rearm
                rearm_module.rearm(stream_name="sim", provider="sim", control=self.control,
                                   mapping=self.mapping, clock=self.clock, emit=self._emit,
                                   window=self.window)
                next_rearm += REARM_PERIOD_S
            self.now = t
            if self.t() > self.horizon_s:
                break
            self._note_breaker()
            records = shards[shard]
            if checkpoints[shard] >= len(records):
                if all(c >= len(r) for c, r in zip(checkpoints, shards, strict=True)):
                    done_at = self.now if done_at is None else done_at
                    break
                continue  # this shard is drained; the others go on
            config = self.mapping.effective()
            if not config.enabled:
                heapq.heappush(queue, (t + IDLE_POLL_S, counter, shard))
                counter += 1
                continue
            batch = records[checkpoints[shard]: checkpoints[shard] + config.batch_size]
            self.batch_latencies, self.batch_calls = [], 0
            report = self.ventilator.handle(batch, self.mapping.stream_arn)
            duration = self._batch_duration() + BATCH_OVERHEAD_S
            if self.batch_calls:
                self.in_flight_batches.append((self.now + duration, self.batch_calls))
            checkpoints[shard] = self._advance(checkpoints[shard], batch, report.outcomes)
            heapq.heappush(queue, (t + duration, counter, shard))
            counter += 1
        if done_at is None:
            done_at = self.now
        self._note_breaker()
        return self._summary(done_at - self.start_epoch)

    def _batch_duration(self) -> float:
        """Waves of at most the allowed batch size run one after another."""
        lat, step = self.batch_latencies, getattr(self, "batch_limit", 1)
        return sum(max(lat[i:i + step]) for i in range(0, len(lat), step))

    @staticmethod
    def _advance(checkpoint: int, batch: list[StreamRecord], outcomes: list[Outcome]) -> int:
        retry = {o.sequence_number for o in outcomes if o.outcome in ("failed", "deferred")}
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

    def _summary(self, makespan: float) -> dict[str, Any]:
        s = self.settings
        states = self.ledger.final_states()
        fetched = sum(1 for rid in self.unique_ids if states.get(rid) == "fetched")
        parked = sum(1 for rid in self.unique_ids if states.get(rid) == "parked")
        lost = len(self.unique_ids) - fetched - parked
        duplicates = sum(n - 1 for n in self.served.values() if n > 1)
        calls = self.trace.calls
        outage_calls = [c for c in calls if c[3]]
        periods = self.open_periods()
        # Once the breaker has opened on an outage, at most one probe per rearm interval.
        probes = [c[0] for c in outage_calls if any(a < c[0] <= b for a, b in periods)]
        # (probes follow their rearm by the same settle delay: allow a second of jitter)
        max_outage_calls_per_rearm = _max_calls_per_interval(probes, REARM_PERIOD_S - 1.0)
        oracle = oracle_makespan_s(self.scenario, s.max_batch_size, window=self.window,
                                   start_epoch=self.start_epoch)
        outside = sum(1 for c in calls if not self.window.is_open(self.start_epoch + c[0]))
        trace = [[round(b["t"], 2), b["BatchSize"]] for b in self.trace.batches]
        summary = {
            "scenario": self.scenario.name,
            "policy": s.policy,
            "seed": self.seed,
            "records": self.records_put,
            "fetched": fetched,
            "skipped_duplicates": self.records_put - fetched - parked - lost,
            "parked": parked,
            "lost": lost,
            "duplicate_fetches": duplicates,
            "max_in_flight": self.max_in_flight,
            "max_concurrency": s.max_concurrency,
            "provider_calls": len(calls),
            "calls_over_threshold": sum(1 for c in calls if c[1] > s.latency_threshold_ms),
            "calls_failed": sum(1 for c in calls if not c[2]),
            "calls_during_outage": len(outage_calls),
            "max_probes_per_rearm_interval": max_outage_calls_per_rearm,
            "breaker_opened": self.control.state.opens,
            "calls_outside_window": outside,
            "window_pauses": self.control.state.window_pauses,
            "mapping_updates": self.mapping.updates,
            "makespan_s": round(makespan, 1),
            "oracle_makespan_s": round(oracle, 1),
            "goodput_ratio": round(oracle / makespan, 3) if makespan > 0 else 1.0,
            "time_to_back_off_s": _time_to_back_off(self.scenario, self.trace.batches),
            "time_to_full_s": _time_to_full(self.scenario, self.trace.batches,
                                            s.max_batch_size),
            "batch_size_trace": trace,
            "open_periods_s": [[round(a, 1), round(b, 1)] for a, b in self.open_periods()],
        }
        summary["invariants"] = {
            "once_a_day": duplicates == 0,
            "nothing_lost": lost == 0,
            "concurrency_cap": self.max_in_flight <= s.max_concurrency,
            "inside_window": outside == 0,
            "one_probe_per_rearm_while_open": max_outage_calls_per_rearm <= s.shards,
        }
        return summary


def _max_calls_per_interval(times: list[float], window: float) -> int:
    """The most calls in any window of ``window`` seconds (sliding)."""
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
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
