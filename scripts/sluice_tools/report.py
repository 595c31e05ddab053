"""The run report: what happened (a trace), what it adds up to (summary.json), and a chart.

The summary reconciles three independent sources: the stream (what was put), the ledger (what
sluice says happened to each record) and the provider's own meter (what was actually served),
and checks the invariants of DESIGN.md on them with ``sluice_tools.invariants``, the module the
simulator uses, so both report the same verdicts under the same names.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.clock import local_day
from sluice.settings import ProviderSettings
from sluice_tools import invariants
from sluice_tools.scenario import Scenario


@dataclass
class Call:
    t: float
    latency_ms: float
    ok: bool
    in_flight: int


@dataclass
class Trace:
    """Everything observed during a run, in wall-clock time. Thread-safe appends."""

    started: float = field(default_factory=time.time)
    finished: float = 0.0
    batches: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    rearms: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    # Seen at the edges when the local stack has an observer (``session.Observer``): what the
    # ventilators and the rearm stored in the control item (the breaker's exact transitions,
    # when each half-open probe was issued), when each worker was invoked and when the
    # provider received each call.
    breaker_changes: list[tuple[int, float, str]] = field(default_factory=list)  # version, t
    probes_issued: set[float] = field(default_factory=set)
    invokes: dict[str, list[float]] = field(default_factory=dict)
    provider_calls: list[tuple[float, str]] = field(default_factory=list)
    time_scale: float = 1.0
    start_epoch: float | None = None  # scenario time 0 as an instant, when windows apply
    _breaker: str = "closed"
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def emit(self, doc: Mapping[str, Any]) -> None:
        """The runtime's log sink: EMF batch lines and rearm lines."""
        now = time.time()
        with self._lock:
            if doc.get("event") == "batch":
                self.batches.append((now, dict(doc)))
                breaker = doc.get("breaker", "closed")
                if breaker != self._breaker:
                    why = f" ({doc['health']})" if doc.get("health") else ""
                    self._note(now, f"breaker {self._breaker} -> {breaker}{why}")
                    self._breaker = breaker
            elif doc.get("event") == "rearm":
                self.rearms.append((now, dict(doc)))
                if doc.get("action") == "half_open":
                    if self._breaker == "closed":
                        # The batch that opened it never logged (its ventilator died after
                        # storing the state): the control item, which rearm read, is the truth.
                        self._note(now, "breaker closed -> open (its batch did not log)")
                    self._note(now, "rearm: half-open, probing at batch size 1")
                    self._breaker = "half_open"
                elif doc.get("action") == "window_opened":
                    self._note(now, "rearm: window open, resuming at the size reached")
                    self._breaker = "closed"
                elif doc.get("action") == "window_closed" and self._breaker != "window":
                    self._note(now, "rearm: outside the access window, mapping disabled")
                    self._breaker = "window"

    def call(self, t: float, latency_ms: float, ok: bool, in_flight: int) -> None:
        """A provider call, stamped when it started (``t`` is when it ended)."""
        with self._lock:
            self.calls.append(Call(t - latency_ms / 1000, latency_ms, ok, in_flight))

    def control_stored(self, t: float, state: Any) -> None:
        with self._lock:
            self.breaker_changes.append((state.version, t, state.breaker))
            if state.probe_issued_at:  # the runtime's clock: the wall clock, as here
                self.probes_issued.add(state.probe_issued_at)

    def invoke_sent(self, t: float, record_id: str) -> None:
        with self._lock:
            self.invokes.setdefault(record_id, []).append(t)

    def provider_called(self, t: float, record_id: str) -> None:
        with self._lock:
            self.provider_calls.append((t, record_id))

    def call_decisions(self) -> list[float]:
        """When each provider call was decided: when its worker was invoked (the last Invoke
        of the record before the call; a worker invoked before the circuit opened may reach
        the provider after, and a worker whose answer was lost runs on). Without an observer,
        when each call started."""
        with self._lock:
            if not self.provider_calls:
                return [c.t for c in self.calls]
            invokes = {rid: sorted(ts) for rid, ts in self.invokes.items()}
            calls = list(self.provider_calls)
        decided = []
        for t, record_id in calls:
            sent = invokes.get(record_id, [])
            i = bisect.bisect_right(sent, t) - 1
            decided.append(sent[i] if i >= 0 else t)
        return decided

    def _note(self, now: float, text: str) -> None:
        self.events.append(f"{_clock(self.scenario_s(now))} {text}")

    def scenario_s(self, t: float) -> float:
        return max(0.0, (t - self.started) * self.time_scale)

    def last_batch(self) -> dict[str, Any] | None:
        """The last batch that called the provider (a batch handed back while open did not)."""
        with self._lock:
            return next((d for _, d in reversed(self.batches) if d.get("Calls")), None)

    def day(self, settings: ProviderSettings) -> str:
        return local_day(time.time(), settings.zone)

    def open_periods(self) -> list[tuple[float, float]]:
        """Wall-clock intervals while the circuit was not closed: from the control item's
        transitions when they were observed (a batch line shows the state its ventilator
        loaded, which another shard may have changed since), else from a batch that opened
        the breaker to the one that closed it."""
        with self._lock:  # in the order they were stored (the optimistic lock's versions)
            stored = [(t, b) for _, t, b in sorted(self.breaker_changes)]
        changes = [(t, "open" if b == "half_open" else b) for t, b in stored] or [
            (t, doc.get("breaker")) for t, doc in self.batches]
        periods, start = [], None
        for t, state in changes:
            if state == "open" and start is None:
                start = t
            elif state == "closed" and start is not None:
                periods.append((start, t))
                start = None
        if start is not None:
            periods.append((start, self.finished or time.time()))
        return periods


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


def _final_states(items: Iterable[Mapping[str, Any]]) -> tuple[dict[str, str], int]:
    states: dict[str, str] = {}
    malformed = 0
    for item in items:
        pk = str(item["pk"])
        if pk == "#malformed":
            malformed += 1
        elif not pk.startswith("#"):
            status = item.get("status", "")
            if status == "fetched" or (status == "parked" and states.get(pk) != "fetched"):
                states[pk] = status
            else:
                states.setdefault(pk, status)
    return states, malformed


def _calls_while_open(trace: Trace, periods: list[tuple[float, float]]) -> list[float]:
    """When each provider call decided while the circuit was open was decided."""
    return [t for t in trace.call_decisions() if any(a <= t <= b for a, b in periods)]


def _max_probes_per_rearm(trace: Trace, periods: list[tuple[float, float]]) -> int:
    """Provider calls decided while the circuit was open, per rearm interval: at most one
    probe per interval across all shards. An interval starts when the circuit opens and when
    a rearm issues a probe: as the control item shows (a rearm that issues a probe while the
    circuit is already half-open, because the last probe's verdict was lost, logs no
    ``half_open`` action; a rearm that dies after issuing one logs nothing), else at every
    rearm's log line."""
    rearms = trace.probes_issued if trace.breaker_changes else {t for t, _ in trace.rearms}
    boundaries = sorted(rearms | {a for a, _ in periods})
    per = Counter(bisect.bisect_right(boundaries, t) for t in _calls_while_open(trace, periods))
    return max(per.values(), default=0)


def build_summary(
    *,
    scenario: Scenario,
    settings: ProviderSettings,
    ledger_items: list[dict[str, Any]],
    records: int,
    unique_ids: set[str],
    malformed_put: int,
    provider: Any,
    trace: Trace,
    drained: bool,
    control: Any,
    shards: int,
    time_scale: float,
    faults: dict[str, int] | None,
    poison_ids: Iterable[str] = (),
    converged: bool | None = None,
) -> dict[str, Any]:
    states, malformed_parked = _final_states(ledger_items)
    fetched = sum(1 for rid in unique_ids if states.get(rid) == "fetched")
    parked_ids = sum(1 for rid in unique_ids if states.get(rid) == "parked")
    poison = set(poison_ids)
    # Parked although the provider serves them: only poison records may be (malformed and
    # hostile payloads are parked apart, under #malformed, and are no ids).
    wrongly = sorted(rid for rid in unique_ids if states.get(rid) == "parked" and rid not in poison)
    lost = sum(1 for rid in unique_ids if states.get(rid) not in ("fetched", "parked"))
    lost += max(0, malformed_put - malformed_parked)
    parked = parked_ids + min(malformed_parked, malformed_put)
    stats = provider.stats()
    threshold = settings.latency_threshold_ms
    periods = trace.open_periods()
    max_probes = _max_probes_per_rearm(trace, periods)
    window = settings.window
    outside = 0
    if trace.start_epoch is not None:
        outside = sum(1 for c in trace.calls
                      if not window.is_open(trace.start_epoch + trace.scenario_s(c.t)))
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "provider": settings.provider,
        "policy": settings.policy,
        "time_scale": time_scale,
        "shards": shards,
        "records": records,
        "fetched": fetched,
        "skipped_duplicates": records - fetched - parked - lost,
        "parked": parked,
        "lost": lost,
        "duplicate_fetches": stats["duplicates"],
        "max_in_flight": stats["max_in_flight"],
        "max_concurrency": settings.max_concurrency,
        "latency_threshold_ms": threshold,
        "provider_calls": stats["calls"],
        "calls_over_threshold": sum(1 for c in trace.calls if c.latency_ms > threshold),
        "calls_failed": stats["failures"],
        "calls_while_open": len(_calls_while_open(trace, periods)),
        "max_probes_per_rearm_interval": max_probes,
        "breaker_opened": control.opens,
        "calls_outside_window": outside,
        "window_pauses": control.window_pauses,
        "rearm_probes": sum(1 for _, d in trace.rearms if d.get("action") == "half_open"),
        "makespan_s": round((trace.finished or time.time()) - trace.started, 2),
        "scenario_makespan_s": round(trace.scenario_s(trace.finished or time.time()), 1),
        "batch_size_trace": [[round(trace.scenario_s(t), 1), d["BatchSize"]]
                             for t, d in trace.batches],
        "open_periods_s": [[round(trace.scenario_s(a), 1), round(trace.scenario_s(b), 1)]
                           for a, b in periods],
        "events": list(trace.events),
    }
    if faults is not None:
        summary["faults_injected"] = faults
    if poison:
        summary["poison_records"] = len(poison)
    summary["invariants"] = invariants.check(invariants.RunFacts(
        duplicate_fetches=stats["duplicates"], lost=lost, drained=drained,
        max_in_flight=stats["max_in_flight"], max_concurrency=settings.max_concurrency,
        calls_outside_window=outside, max_probes_per_rearm=max_probes,
        parked_wrongly=len(wrongly), converged=converged))
    if wrongly:  # what the ledger says about each: ids, counts and reasons, never contents
        fields = ("pk", "attempts", "blamed", "suspects", "reason")
        summary["parked_wrongly"] = [{k: item.get(k) for k in fields} for item in ledger_items
                                     if item.get("pk") in wrongly
                                     and item.get("status") == "parked"]
    return summary


def write_report(summary: dict[str, Any], trace: Trace, scenario: Scenario, out: Path,
                 window: Any = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_chart(trace, scenario, summary, out / "chart.png", window)


def closed_periods(window: Any, start_epoch: float, end_s: float) -> list[tuple[float, float]]:
    """Scenario-time intervals in [0, end_s] when the access window was closed."""
    periods, t = [], 0.0
    while t < end_s:
        closed = not window.is_open(start_epoch + t)
        change = window.next_change(start_epoch + t)
        nxt = end_s if change is None else min(end_s, change - start_epoch)
        if closed:
            periods.append((t, nxt))
        t = max(nxt, t + 1.0)
    return periods


def write_chart(trace: Trace, scenario: Scenario, summary: dict[str, Any], path: Path,
                window: Any = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [trace.scenario_s(t) / 60 for t, _ in trace.batches]
    docs = [d for _, d in trace.batches]
    fig, (ax_size, ax_lat, ax_err) = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    ax_size.step(minutes, [d["BatchSize"] for d in docs], where="post", label="batch size")
    end = max(minutes, default=0.0)
    grid = [i * end / 400 for i in range(401)]
    ax_size.plot(grid, [scenario.state_at(m * 60).capacity for m in grid], "--", color="grey",
                 label="provider capacity")
    ax_size.axhline(summary["max_concurrency"], color="red", linewidth=0.8, label="X")
    ax_size.set_ylabel("batch size")
    ax_size.legend(loc="upper right", fontsize=8)
    called = [(m, d) for m, d in zip(minutes, docs, strict=True) if d["Calls"]]
    ax_lat.plot([m for m, _ in called], [d["LatencyP90"] for _, d in called], ".-",
                markersize=3, label="p90 latency per batch")
    threshold = summary.get("latency_threshold_ms")
    if threshold:
        ax_lat.axhline(threshold, color="red", linewidth=0.8, label="threshold")
    ax_lat.set_ylabel("ms")
    ax_lat.legend(loc="upper right", fontsize=8)
    ax_err.plot([m for m, _ in called], [d["ErrorRate"] for _, d in called], ".-",
                color="darkorange", markersize=3, label="error rate per batch")
    ax_err.set_ylabel("error rate")
    ax_err.set_ylim(-0.05, 1.05)
    ax_err.set_xlabel("scenario time (minutes)")
    ax_err.legend(loc="upper right", fontsize=8)
    for a, b in trace.open_periods():
        for ax in (ax_size, ax_lat, ax_err):
            ax.axvspan(trace.scenario_s(a) / 60, trace.scenario_s(b) / 60, color="red",
                       alpha=0.12, linewidth=0)
    if window is not None and trace.start_epoch is not None and not window.always_open:
        for a, b in closed_periods(window, trace.start_epoch, end * 60):
            for ax in (ax_size, ax_lat, ax_err):
                ax.axvspan(a / 60, b / 60, color="grey", alpha=0.2, linewidth=0)
    ok = all(summary["invariants"].values())
    windowed = window is not None and trace.start_epoch is not None and not window.always_open
    legend = "red = circuit open" + (", grey = outside the access window" if windowed else "")
    fig.suptitle(f"{summary['provider']} / {scenario.name}: {summary['fetched']} fetched, "
                 f"{summary['parked']} parked, {summary['lost']} lost, "
                 f"{summary['duplicate_fetches']} duplicates "
                 f"({'invariants hold' if ok else 'INVARIANT FAILED'})\n{legend}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
