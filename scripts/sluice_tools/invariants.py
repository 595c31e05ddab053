"""The invariants of DESIGN.md, checked the same way on a local demo run and a simulation.

Each run collects ``RunFacts`` (from the ledger, the provider's own counts and the trace);
``check`` turns them into the named verdicts that summary.json and the simulator report.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunFacts:
    duplicate_fetches: int  # counted by the provider itself
    lost: int  # records put that ended neither fetched nor parked
    drained: bool  # every shard's records were processed before the run ended
    max_in_flight: int  # measured by the provider (or the simulated one)
    max_concurrency: int
    calls_outside_window: int
    max_probes_per_rearm: int  # provider calls while the circuit was open, per rearm interval
    parked_wrongly: int = 0  # parked records that were neither hostile nor poison
    converged: bool | None = None  # mapping == spec at the end (None: not measured)


def check(facts: RunFacts) -> dict[str, bool]:
    verdicts = {
        "once_a_day": facts.duplicate_fetches == 0,
        "nothing_lost": facts.lost == 0 and facts.drained,
        "concurrency_cap": facts.max_in_flight <= facts.max_concurrency,
        "inside_window": facts.calls_outside_window == 0,
        "no_blocked_shard": facts.drained,
        "one_probe_per_rearm": facts.max_probes_per_rearm <= 1,
        "outages_park_nothing": facts.parked_wrongly == 0,
    }
    if facts.converged is not None:
        verdicts["converges"] = facts.converged
    return verdicts


def max_per_interval(times: list[float], interval_s: float) -> int:
    """The most events in any sliding interval of ``interval_s`` seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] >= interval_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def max_per_period(times: list[float], period_s: float) -> int:
    """The most events in one period of a fixed schedule (``[k * period, (k + 1) * period)``
    from time 0): one probe per rearm interval, whenever in the interval it happened."""
    buckets: dict[int, int] = {}
    for t in times:
        k = int(t // period_s)
        buckets[k] = buckets.get(k, 0) + 1
    return max(buckets.values(), default=0)
