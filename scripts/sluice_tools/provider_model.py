"""The provider model: how a scenario's provider answers one call, shared by the simulator
(virtual time) and the fake HTTP provider (real time).

A provider has ``capacity`` slots. A call that finds a slot free is served at once; one that
finds them all busy waits for the earliest slot to free, first come first served (unless the
provider answers 429 instead, see below). Latency = queue wait + service time. Everything
below is per call, with the scenario's state (``ProviderState``) at the call's arrival.

    D      = exp(N(ln p50, sigma)),  sigma = ln(p90 / p50) / z90      the latency_ms draw
    g(b)   = (1 + K * (min(b, c) / c)**M) / (1 + K)                   congestion factor
    S      = D * g(b)                                                 service time
    o      = max(0, (n + 1 - c) / c)                                  overload ratio
    p(o)   = e + (E - e) * min(1, o / R)                              error probability
    p'     = 1 - (1 - p(o)) * (1 - B)     in an error burst           (independent causes)

- ``c`` capacity (``capacity``); ``b`` the busy slots when the call's service starts, itself
  included (``c`` for a call that waited; a caller starting several calls at one instant may
  say so with ``together``: they share that group's congestion).
- ``K`` (``congestion``, default 0.5) and ``M`` (``congestion_exponent``, default 2): service
  slows as the slots fill. ``latency_ms`` is the provider *at capacity*: ``g(c) = 1``, a call
  alone is served in about 1 / (1 + K) of it (2/3 by default), half full in 0.75. Latency
  therefore rises with load before any error does, and above capacity it keeps rising with
  the queue. (Anchoring at capacity keeps every scenario's numbers at X = capacity exactly as
  they were when latency was flat up to capacity.)
- ``n`` the calls in the provider when the call arrives (served or queued, itself excluded):
  ``o`` is the queue it joins, in capacities (0 when a slot is free).
- ``e`` (``error_rate``) the failure probability at or under capacity; ``E``
  (``overload_error_rate``) the failure probability once the overload ratio reaches ``R``
  (``overload_ramp``, default 0.25: a queue a quarter of the capacity long); linear between.
- ``B`` (``bursts.error_rate``, default 0.9) while an error burst is on. Bursts are a two-state
  (Gilbert-Elliott) process in scenario time, independent of the calls: calm periods last
  Exp(mean ``bursts.every`` - ``bursts.length``), bursts Exp(mean ``bursts.length``), so a
  burst starts every ``bursts.every`` on average and covers length / every of the time.
  ``bursts.every = 0`` (the default): no bursts. Errors cluster in time.
- A call whose wait would exceed ``queue_timeout`` (default 60 s; 0: never) is answered 504
  when it expires, and never takes a slot.
- ``retry_after`` (a duration, default 0: off): a call that finds every slot busy is answered
  429 at once, with ``Retry-After`` = that duration, instead of queueing. Advisory: the
  provider does not punish a client that comes back sooner (it answers by its slots).
- An outage (``outage = true``) answers 503 at once: min(D, 0.05 s), no slot taken.

A failed call (503) still takes its slot for its whole service time: the provider worked on
it. Deterministic: given the rng and the call times, a server answers the same way.

``ProviderState.latency_s`` / ``fails`` are the same formulas without state, for callers that
only know how many calls are in flight: the queue becomes Little's law (n in flight, c slots:
latency x n / c), there is no queue timeout and no burst.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sluice_tools.scenario import ProviderState, Scenario

Z90 = 1.2815515655446004  # standard normal quantile at 0.9
FAST_ANSWER_S = 0.05  # an outage's 503 and a 429 come back at once (at most this long)

OK, ERROR, OVERLOAD, BURST, QUEUE_TIMEOUT, RATE_LIMITED, OUTAGE = (
    "ok", "error", "overload", "burst", "queue_timeout", "rate_limited", "outage")


class _State(Protocol):  # what the formulas read of a ProviderState
    capacity: int
    p50_ms: float
    p90_ms: float
    error_rate: float
    overload_error_rate: float
    congestion: float
    congestion_exponent: float
    overload_ramp: float


# -- the formulas --------------------------------------------------------------------------------


def sigma(p50_ms: float, p90_ms: float) -> float:
    return max(0.0, math.log(p90_ms / p50_ms) / Z90)


def draw_ms(rng: random.Random, p50_ms: float, p90_ms: float) -> float:
    """D: one draw of the log-normal through (p50, p90), milliseconds (one rng.gauss)."""
    return math.exp(rng.gauss(math.log(p50_ms), sigma(p50_ms, p90_ms)))


def congestion_factor(state: _State, busy: float) -> float:
    """g(b) = (1 + K (min(b, c) / c)^M) / (1 + K): 1 at capacity, 1 / (1 + K) alone."""
    k = state.congestion
    if k <= 0:
        return 1.0
    u = min(max(busy, 0.0), state.capacity) / state.capacity
    return (1 + k * u ** state.congestion_exponent) / (1 + k)


def overload_ratio(state: _State, in_provider: float) -> float:
    """o: calls beyond capacity, in capacities, with ``in_provider`` calls (itself included)."""
    return max(0.0, (in_provider - state.capacity) / state.capacity)


def error_probability(state: _State, overload: float = 0.0, burst: float = 0.0) -> float:
    """p(o) = e + (E - e) min(1, o / R), and in a burst 1 - (1 - p) (1 - B)."""
    e = state.error_rate
    p = e
    if overload > 0:
        ramp = state.overload_ramp
        p = e + (state.overload_error_rate - e) * (min(1.0, overload / ramp) if ramp > 0 else 1)
    return p if burst <= 0 else 1 - (1 - p) * (1 - burst)


# -- answers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    latency_s: float  # arrival to answer: wait + service, or the fast answer
    ok: bool
    status: int  # 200; 503 error or outage; 504 queue timeout; 429 rate limited
    retry_after_s: float | None = None  # with a 429: what the Retry-After header says
    waited_s: float = 0.0  # of latency_s, the time queued for a slot
    reason: str = OK  # ok | error | overload | burst | queue_timeout | rate_limited | outage


# -- error bursts ----------------------------------------------------------------------------------


class BurstTimeline:
    """When error bursts are on, in scenario time: a two-state Markov process whose periods
    are drawn from its own rng, so it depends on the seed and the scenario only, never on the
    calls (the oracle can be given the very bursts a run met). Rates are those of the phase in
    force; at a phase boundary the running period is drawn anew with the new phase's rates
    (exact for exponential periods: they are memoryless); a phase without bursts ends one."""

    def __init__(self, scenario: Scenario, rng: random.Random) -> None:
        self._scenario = scenario
        self._rng = rng
        self._boundaries = sorted({p.at_s for p in scenario.phases})
        self._t = 0.0  # generated up to here
        self._on = False
        self._next = self._draw(0.0)  # when the current period ends (inf: never)
        self._bursts: list[tuple[float, float]] = []  # finished bursts
        self._started = 0.0  # the running burst's start, when on

    def _draw(self, at: float) -> float:
        state = self._scenario.state_at(at)
        every, length = state.burst_every_s, state.burst_length_s
        if every <= 0:
            return math.inf if not self._on else at  # no bursts in this phase: a burst ends
        mean = length if self._on else every - length
        return at + self._rng.expovariate(1 / mean)

    def _advance(self, t: float) -> None:
        while True:
            boundary = next((b for b in self._boundaries if b > self._t), math.inf)
            switch = min(self._next, boundary)
            if switch > t:
                self._t = t
                return
            self._t = switch
            if self._next <= boundary:  # the period ends: flip
                if self._on:
                    self._bursts.append((self._started, switch))
                else:
                    self._started = switch
                self._on = not self._on
            self._next = self._draw(switch)

    def on(self, t_s: float) -> bool:
        """Whether a burst is on at scenario time ``t_s`` (at or after earlier queries)."""
        if t_s > self._t:
            self._advance(t_s)
        if self._on and t_s >= self._started:
            return True
        i = bisect.bisect_right(self._bursts, (t_s, math.inf)) - 1
        return i >= 0 and self._bursts[i][0] <= t_s < self._bursts[i][1]

    def intervals(self, until_s: float) -> list[tuple[float, float]]:
        """The bursts that start before ``until_s``, as (start, end) in scenario time; one
        still on at ``until_s`` is cut there. For ``oracle.physical_limit(bursts=...)``."""
        self._advance(max(until_s, self._t))
        out = [(a, b) for a, b in self._bursts if a < until_s]
        if self._on and self._started < until_s:
            out.append((self._started, until_s))
        return out


# -- the server ------------------------------------------------------------------------------------


class _Constant:
    """A scenario of one state, for a server built from a ProviderState."""

    def __init__(self, state: ProviderState) -> None:
        self.state, self.phases = state, ()

    def state_at(self, t_s: float) -> ProviderState:
        return self.state


class ProviderServer:
    """A provider with ``capacity`` slots and a FIFO queue, clock-free: time comes in as
    ``now_s`` on each call, which must not go backwards (calls are admitted in arrival order;
    an earlier ``now_s`` is served after the calls already admitted, never refused).

    ``now_s`` is the server's clock (seconds; slots, waits and service live on it), ``t_s``
    the scenario time the state and the bursts are read at (default: ``now_s``). In the
    simulator both run together; the fake provider runs a real clock for slots and latencies
    and a scaled one for the scenario's phases.
    """

    def __init__(self, scenario: Scenario | ProviderState, rng: random.Random, *,
                 burst_seed: int | None = None) -> None:
        # A bare ProviderState is a scenario of one state.
        self.scenario: Any = scenario if hasattr(scenario, "state_at") else _Constant(scenario)
        self._rng = rng
        seed = rng.getrandbits(64) if burst_seed is None else burst_seed
        self.bursts = BurstTimeline(self.scenario, random.Random(seed))
        self._ends: list[float] = []  # sorted: when each admitted, unfinished call ends
        self._starts: list[float] = []  # sorted: when each queued call will start
        self._last_start = -math.inf
        self._last_now = -math.inf
        self.out_of_order = 0  # calls that came with an earlier now_s than a previous one

    def _prune(self, now_s: float) -> None:
        del self._ends[:bisect.bisect_right(self._ends, now_s)]
        del self._starts[:bisect.bisect_right(self._starts, now_s)]

    def load(self, now_s: float) -> tuple[int, int]:
        """(calls being served, calls queued) at ``now_s``."""
        self._prune(now_s)
        return len(self._ends) - len(self._starts), len(self._starts)

    def call(self, now_s: float, t_s: float | None = None, *, together: int = 1,
             must_fail: bool = False) -> Answer:
        """A call arriving at ``now_s``. ``together``: calls the caller starts at this same
        instant, this one included (they share the group's congestion). ``must_fail``: the
        call fails whatever the provider does (a record the provider always fails); it still
        queues and takes its slot."""
        if now_s < self._last_now:
            self.out_of_order += 1
        self._last_now = max(self._last_now, now_s)
        state = self.scenario.state_at(now_s if t_s is None else t_s)
        d_s = draw_ms(self._rng, state.p50_ms, state.p90_ms) / 1000
        if state.outage:
            return Answer(min(d_s, FAST_ANSWER_S), False, 503, reason=OUTAGE)
        self._prune(now_s)
        c, n = state.capacity, len(self._ends)
        start = max(now_s, self._last_start)
        if n >= c:  # the call starts when fewer than c admitted calls remain unfinished
            start = max(start, self._ends[n - c])
        wait = start - now_s
        if wait > 0 and state.retry_after_s > 0:
            return Answer(min(d_s, FAST_ANSWER_S), False, 429, retry_after_s=state.retry_after_s,
                          reason=RATE_LIMITED)
        if wait > 0 and 0 < state.queue_timeout_s < wait:
            return Answer(state.queue_timeout_s, False, 504, waited_s=state.queue_timeout_s,
                          reason=QUEUE_TIMEOUT)
        busy = c if wait > 0 else min(c, n - len(self._starts) + 1)
        service = d_s * congestion_factor(state, max(busy, min(together, c)))
        bisect.insort(self._ends, start + service)
        if wait > 0:
            bisect.insort(self._starts, start)
        self._last_start = start
        t = now_s if t_s is None else t_s
        p_burst = state.burst_error_rate if self.bursts.on(t) else 0.0
        overload = overload_ratio(state, n + 1)
        draw = self._rng.random()
        latency = wait + service
        if must_fail or draw < error_probability(state, overload, p_burst):
            base = error_probability(state)
            reason = (ERROR if draw < base else
                      OVERLOAD if draw < error_probability(state, overload) else BURST)
            return Answer(latency, False, 503, waited_s=wait, reason=reason)
        return Answer(latency, True, 200, waited_s=wait)


class RealTimeServer:
    """A ProviderServer on the wall clock, for many threads: each call is admitted under a
    lock at the instant it arrives, so arrivals are in order; the caller then sleeps the
    answer's latency (queue wait + service), holding its slot exactly as the server booked
    it: the slot heap is the semaphore, with its waits known in advance."""

    def __init__(self, scenario: Scenario | ProviderState, scenario_time: Callable[[], float],
                 rng: random.Random, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.server = ProviderServer(scenario, rng)
        self.scenario_time = scenario_time
        self._monotonic = monotonic
        self._lock = threading.Lock()

    def call(self, *, must_fail: bool = False) -> Answer:
        with self._lock:
            return self.server.call(self._monotonic(), self.scenario_time(), must_fail=must_fail)
