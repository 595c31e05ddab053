"""The physical limit: how fast any controller could drain a scenario, whatever its dispatch.

The provider (``provider_model``) serves ``capacity`` calls at once, slower as its slots fill;
sluice may have at most X in flight. The fastest possible run keeps the best number of calls
in flight (min(X, capacity) unless errors say otherwise) at every moment the provider is up
and the access window open, retries every failed call at once, waits out outages and closed
windows without a rearm delay, and has no overhead around a delivery. No barrier (a batch
waiting for its slowest call) and no ramp: that is what makes it the yardstick for both
dispatch modes (``oracle_makespan_s`` in ``engine`` is a batch-barrier controller).

Per state of the scenario (``Scenario.state_at``, constant between phases, window changes and
the error bursts given):

    sigma  = max(0, ln(p90 / p50) / z90)        z90 = 1.2815515655446004 (as ``latency_s``)
    m      = p50 * exp(sigma**2 / 2)             mean latency at capacity (log-normal), seconds
    g(n)   = (1 + K (min(n, c) / c)**M) / (1+K)  congestion: a call's service time with n
                                                 calls in the provider is m * g(n), g(c) = 1
    p_n    = e, or e + (E - e) min(1, o / R)     error probability with n calls in, overload
             with o = (n - c) / c > 0            ratio o (``provider_model.error_probability``;
                                                 in a burst 1 - (1 - p_n) (1 - B))
    q(p)   = (1 - p) / (1 - p**A)                records finished per call, p its error rate:
                                                 a record ends served or parked after A failed
                                                 attempts (max_attempts; A = None: 1 - p)
    y(n)   = min(1, c / n) * q(p_n) / g(n)       records per m one call yields with n in: over
                                                 capacity a slot share c / n (the queue), and
                                                 nothing for a 429 (``retry_after``)
    r      = max over n <= X of n * y(n) / m     records per second: n = min(X, c) unless
                                                 running over capacity fails less (odd) or
                                                 congestion outgrows the extra slot
    r      = 0                                   in an outage (every call fails) or while the
                                                 access window is closed (nothing is called)

    fluid  = the time T where integral_0^T r(t) dt = records (unique ids: duplicates cost no
             call, the ledger skips them)

Bursts. Error bursts are random in time: a run that met fewer than average would beat a bound
computed from their mean, so the oracle counts only the bursts it is given (``bursts``, the
very periods a run met: ``ProviderServer.bursts.intervals``), each a phase of its own; given
none it counts none (a provider without bursts is faster, so that is still a bound).

``fluid`` is the issue's definition, the best a run does *on average*. One run is a draw, and
two things let a draw beat it, so the bound (``physical_limit_makespan_s``) allows for both:

- **Carry-over.** A call keeps the state it started in: calls in flight when the provider goes
  down, the window closes or the capacity drops still end as they began. At most X calls are
  ever in flight, each finishes at most one record: ``carry = X * drops``, ``drops`` the
  moments before ``fluid`` where r falls.
- **Sampling luck.** Latencies have no positive floor: a run whose draws come out short beats
  any bound computed from means. Per record, the normalized cost (its calls' latencies over
  their mean, in units of the expected cost of a record) has mean 1 and variance

      v = (kappa * (exp(sigma**2) - 1) + var K) / kappa**2

  with K = min(Geometric(1 - e), A) the calls a record takes, kappa = E[K]. The deficit
  sum(1 - cost) over records is a martingale with increments <= 1 (costs are >= 0), so by
  Freedman's inequality it exceeds ``margin`` with probability at most ``delta``:

      V      = records * (the largest v of a state the provider is called in before fluid)
      L      = ln(1 / delta)
      margin = L / 3 + sqrt(L**2 / 9 + 2 * V * L)

  (A controller running over capacity with its errors only raises a record's cost, which can
  only lower its chance of beating the bound; one running below min(X, c) has calls cheaper
  by g(n) but fewer of them: r takes the best n.)

    bound = the time T where integral_0^T r(t) dt = records - carry - margin
            (at least the first moment the provider can be called)

``delta`` defaults to 1e-6: no run of a test suite beats the bound by luck. The margin shrinks
as 1 / sqrt(records): on ``steady`` (p90 / p50 = 3.3) 38 % of 300 records, 14 % of 2,000,
4.4 % of 20,000, 2 % of 100,000.

Overload and congestion. A call's service time is set by the calls in flight when it starts
(the engine's ``in_flight``, the server's busy slots): a call started before others pushed the
count up runs faster (less congested, unstretched). With one stream the fan-out's
``delivery_concurrency`` (``together`` for the server) confines this to a limit that rises in
the middle of a delivery (window dispatch on ``flapping``: 1.4 % more capacity-seconds than c,
inside the margin). With ``streams`` > 1 (shards x parallelization factor) the rate is the
bound over ranks instead: the k-th oldest call in flight saw at least k, so it yields at most
max over j >= k of y(j), summed over k = 1..X. With congestion that bound is looser than
min(X, c) * y(min(X, c)) even for X <= c (sum over k of 1 / g(k): 14 % above c for c = 10 with
the default K = 0.5, M = 2): an honest bound, not a tight one.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from sluice.window import AccessWindow
from sluice_tools.provider_model import congestion_factor, error_probability, overload_ratio
from sluice_tools.scenario import Z90, ProviderState, Scenario

SAMPLING_DELTA = 1e-6  # the chance that a run beats the bound by drawing short latencies
HORIZON_S = 366 * 86400.0  # a provider that serves nothing for a year never finishes
_NUDGE_S = 1e-3  # evaluate a state just after its boundary (epoch floats lose sub-us)


@dataclass(frozen=True)
class PhysicalLimit:
    fluid_s: float  # the expected-value limit: min(X, capacity) in flight, mean latencies
    bound_s: float  # what no run beats (but with probability <= delta)
    carry_records: float  # records credited for calls in flight when the rate fell
    margin_records: float  # records credited for lucky latency and error draws


def sigma(state: ProviderState) -> float:
    return max(0.0, math.log(state.p90_ms / state.p50_ms) / Z90)


def mean_latency_s(state: ProviderState) -> float:
    """E[latency] of the log-normal through (p50, p90): exp(mu + sigma^2 / 2)."""
    return state.p50_ms * math.exp(sigma(state) ** 2 / 2) / 1000


def records_per_call(error_rate: float, max_attempts: int | None) -> float:
    """Records a call finishes on average: served, or parked at the ``max_attempts``-th failure."""
    e = error_rate
    if max_attempts is None:
        return 1.0 - e
    if e >= 1.0:
        return 1.0 / max_attempts
    return (1.0 - e) / (1.0 - e ** max_attempts)


def _cost_variance(state: ProviderState, error_rate: float, max_attempts: int | None) -> float:
    """Variance of a record's cost (sum of its calls' latencies) over its mean."""
    e, s2 = error_rate, math.exp(sigma(state) ** 2) - 1.0
    if max_attempts is None:
        if e >= 1.0:
            return math.inf
        kappa, k2 = 1 / (1 - e), (1 + e) / (1 - e) ** 2
    else:
        kappa = sum(e ** j for j in range(max_attempts))
        k2 = sum((2 * j + 1) * e ** j for j in range(max_attempts))
    return (kappa * s2 + k2 - kappa ** 2) / kappa ** 2


def error_rates(state: ProviderState, max_concurrency: int, *,
                burst: bool = False) -> list[float]:
    """p_n for n = 1..X calls in the provider (``provider_model.error_probability``): e up to
    capacity, then the overload ramp; in a burst, combined with the burst's error rate."""
    b = state.burst_error_rate if burst else 0.0
    return [error_probability(state, overload_ratio(state, n), b)
            for n in range(1, max_concurrency + 1)]


def records_per_s(state: ProviderState, max_concurrency: int, *,
                  max_attempts: int | None = None, streams: int = 1,
                  burst: bool = False) -> float:
    """r: the most records per second any run finishes in this state (0 in an outage)."""
    if state.outage:
        return 0.0
    x, c, m = max_concurrency, state.capacity, mean_latency_s(state)
    yields = [records_per_call(p, max_attempts) for p in error_rates(state, x, burst=burst)]

    def per_call(n: int) -> float:
        """Records per mean latency one call with n calls in the provider yields: over
        capacity it holds a slot share c / n (Little's law) and fails at the overload rate,
        or, answered 429 at once (``retry_after``), yields nothing."""
        if n > c and state.retry_after_s > 0:
            return 0.0
        return min(1.0, c / n) * yields[n - 1] / congestion_factor(state, n)

    if streams <= 1:
        # One delivery at a time: calls started together share its congestion, a call that
        # starts as another ends sees the calls in flight: all n see n.
        return max(n * per_call(n) for n in range(1, x + 1)) / m
    # The k-th oldest call in flight started with at least k in flight: it yields at most
    # the best per_call(j) for j >= k (a suffix maximum, summed over k).
    total, best_from = 0.0, 0.0
    for k in range(x, 0, -1):
        best_from = max(best_from, per_call(k))
        total += best_from
    return total / m


def _cost_variance_at(state: ProviderState, max_concurrency: int,
                      max_attempts: int | None, burst: bool = False) -> float:
    rates = set(error_rates(state, max_concurrency, burst=burst))
    return max(_cost_variance(state, e, max_attempts) for e in rates)


def _segments(scenario: Scenario, window: AccessWindow | None, start_epoch: float,
              bursts: Sequence[tuple[float, float]] = ()
              ) -> Iterator[tuple[float, float, ProviderState, bool, bool]]:
    """(start, end, state, window open, burst on) from scenario time 0, the last endless."""
    bursts = sorted(bursts)
    phase_times = sorted({p.at_s for p in scenario.phases} | {t for b in bursts for t in b})
    windowed = window is not None and not window.always_open
    t = 0.0
    while t < HORIZON_S:
        probe = t + _NUDGE_S if t > 0 else 0.0
        state = scenario.state_at(probe)
        end = next((p for p in phase_times if p > probe), math.inf)
        i = bisect.bisect_right(bursts, (probe, math.inf)) - 1
        in_burst = i >= 0 and bursts[i][0] <= probe < bursts[i][1]
        is_open = True
        if windowed:
            assert window is not None
            is_open = window.is_open(start_epoch + probe)
            change = window.next_change(start_epoch + probe)
            if change is not None:
                end = min(end, change - start_epoch)
        yield t, end, state, is_open, in_burst
        t = end


@dataclass
class _Walk:
    finish_s: float
    first_live_s: float
    drops: int  # boundaries before finish_s where the rate fell
    variance: float  # the largest cost variance of a state called in before finish_s


def _walk(scenario: Scenario, target: float,
          rate_at: Callable[[ProviderState, bool, bool], float],
          variance_at: Callable[[ProviderState, bool], float], window: AccessWindow | None,
          start_epoch: float, bursts: Sequence[tuple[float, float]]) -> _Walk:
    done, drops, variance, previous = 0.0, 0, 0.0, None
    first_live = math.inf
    for start, end, state, is_open, in_burst in _segments(scenario, window, start_epoch,
                                                          bursts):
        rate = rate_at(state, is_open, in_burst)
        if previous is not None and rate < previous:
            drops += 1
        previous = rate
        if rate <= 0:
            if end == math.inf:
                break
            continue
        first_live = min(first_live, start)
        variance = max(variance, variance_at(state, in_burst))
        need = max(0.0, target - done)
        if start + need / rate <= end:
            return _Walk(start + need / rate, first_live, drops, variance)
        done += (end - start) * rate
    return _Walk(math.inf, first_live, drops, variance)


def physical_limit(scenario: Scenario, max_concurrency: int, *,
                   window: AccessWindow | None = None, start_epoch: float | None = None,
                   max_attempts: int | None = None, streams: int = 1,
                   delta: float = SAMPLING_DELTA,
                   bursts: Sequence[tuple[float, float]] = ()) -> PhysicalLimit:
    """The fluid limit and the bound no run beats (see the module's docstring for both).

    ``window``: the provider's access window (nothing is called while it is closed), with
    ``start_epoch`` the instant of scenario time 0 (the simulation's ``start_epoch``).
    ``max_attempts``: the settings' (a record parks at its A-th failure; None: retried until
    served). ``streams``: shards x parallelization factor. ``bursts``: the error bursts the
    run met, (start, end) in scenario time (``ProviderServer.bursts.intervals``); without
    them bursts are not counted (still a bound: bursts only slow a run down)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be a probability strictly between 0 and 1, not {delta}")
    if window is not None and not window.always_open and start_epoch is None:
        from sluice_tools.simulate.engine import DEFAULT_START

        start_epoch = scenario.start_epoch(str(window.zone), DEFAULT_START)
    epoch = start_epoch or 0.0

    def rate_at(state: ProviderState, is_open: bool, in_burst: bool) -> float:
        if not is_open:
            return 0.0
        return records_per_s(state, max_concurrency, max_attempts=max_attempts, streams=streams,
                             burst=in_burst)

    def variance_at(state: ProviderState, in_burst: bool) -> float:
        return _cost_variance_at(state, max_concurrency, max_attempts, in_burst)

    records = float(scenario.records)
    fluid = _walk(scenario, records, rate_at, variance_at, window, epoch, bursts)
    carry = float(max_concurrency * fluid.drops)
    big_l = math.log(1 / delta)
    total_variance = records * fluid.variance
    margin = big_l / 3 + math.sqrt(big_l ** 2 / 9 + 2 * total_variance * big_l)
    target = records - carry - margin
    if target <= 0:
        bound = fluid.first_live_s if fluid.first_live_s < math.inf else math.inf
        bound = min(bound, fluid.finish_s)
    else:
        bound = _walk(scenario, target, rate_at, variance_at, window, epoch, bursts).finish_s
    return PhysicalLimit(fluid.finish_s, bound, carry, margin)


def physical_limit_makespan_s(scenario: Scenario, max_concurrency: int, *,
                              window: AccessWindow | None = None,
                              start_epoch: float | None = None,
                              max_attempts: int | None = None, streams: int = 1,
                              delta: float | None = SAMPLING_DELTA,
                              bursts: Sequence[tuple[float, float]] = ()) -> float:
    """Seconds no run of ``scenario`` with at most ``max_concurrency`` calls in flight beats
    (but with probability <= ``delta``); ``delta=None``: the fluid limit itself, the best a
    run does on average, which a lucky run may beat."""
    limit = physical_limit(scenario, max_concurrency, window=window, start_epoch=start_epoch,
                           max_attempts=max_attempts, streams=streams,
                           delta=delta if delta is not None else SAMPLING_DELTA, bursts=bursts)
    return limit.fluid_s if delta is None else limit.bound_s
