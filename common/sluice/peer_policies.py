"""Peer policies: three classic limit algorithms, adapted from Netflix's concurrency-limits,
run beside sluice's own (``sluice simulate --compare --policy aimd --policy vegas ...``).

What changes from the Java, for all three (see each class for the rest):

- Netflix's limit algorithms (``limit/AIMDLimit.java``, ``limit/VegasLimit.java``,
  ``limit/Gradient2Limit.java``) are fed one sample at a time, or one per window when wrapped
  in ``limit/WindowedLimit.java``. Here a policy is fed one window of completed calls at a time:
  a batch in batch dispatch, ``limit`` calls in window dispatch. WindowedLimit reports a drop
  when any call of the window dropped; here errors count once the window's error rate is above
  ``error_rate_threshold`` (these providers have a base error rate). As there, the window's
  in-flight count (its number of calls) guards against growing a limit the traffic does not
  use: under half the size in use, nothing grows.
- The Java classes keep their state in fields. Here the only state is the size and the samples
  a decision asks to keep (``Decision.recent``, stored in the control item as ``[ms, ok]``
  pairs, about 12 bytes each): Vegas's minimum and Gradient2's long-term latency are
  recomputed from those samples at every decision. Opening the circuit forgets them.
- A window's latency is the geometric mean of its successful calls (WindowedLimit averages).
  Provider latencies here are heavy-tailed per record (log-normal, p90 2.5 to 4 times p50 in
  the shipped scenarios), and the geometric mean moves less with one slow record than the
  average does, while it moves exactly as much when the provider slows every call down.
  Failed calls are left out: a provider that is down answers fast, which would look like no
  load at all.
- A drop, for Vegas and Gradient2: the window's error rate above ``error_rate_threshold``, or
  its latency above ``latency_threshold_ms`` (sluice's "too slow", the timeout Netflix's
  callers report as a drop). A drop halves the size, as TCP Vegas keeps Reno's response to
  loss: with limits of 1 to 10 a step of one would take up to ten windows of calls to a
  failing provider to reach the breaker. Unhealthy at size 1 opens the circuit (the ventilator
  and breaker need ``open`` only ever at 1); a latency rise alone never opens it.
- ``serving`` (whether failures beside served calls may be blamed on records, see
  ``verdicts``) is judged on the last ``RECENT_SIZE`` samples, as for the other policies,
  however many samples a peer keeps.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sluice.policies import (
    DECREASE,
    HOLD,
    INCREASE,
    OPEN,
    RECENT_SIZE,
    Decision,
    Health,
    Policy,
    Sample,
    _why,
    measure,
    register,
)

# Samples Vegas and Gradient2 keep: 100 pairs are about 1.2 KB of the control item (DynamoDB's
# item limit is 400 KB), enough for ten windows at X = 10.
PEER_WINDOW = 100
MIN_LATENCY_MS = 0.1  # the control item rounds latencies to 0.1 ms; a logarithm needs > 0


def typical_latency_ms(latencies: Sequence[float]) -> float:
    """A window's latency: the geometric mean (0.0 for none)."""
    if not latencies:
        return 0.0
    logs = [math.log(max(MIN_LATENCY_MS, ms)) for ms in latencies]
    return math.exp(sum(logs) / len(logs))


def window_latencies(latencies: Sequence[float], size: int) -> list[float]:
    """The typical latency of each run of ``size`` consecutive calls, newest run first; an
    incomplete oldest run is left out (its mean would not compare with a whole window's)."""
    if size < 1:
        return []
    return [typical_latency_ms(latencies[end - size:end])
            for end in range(len(latencies), size - 1, -size)]


def log10_step(size: int) -> int:
    """Netflix's ``functions/Log10RootIntFunction.java``: max(1, int(log10(size)))."""
    return max(1, int(math.log10(max(1, size))))


class PeerPolicy(Policy):
    """What the peers share: one window in, a drop halves (at 1 it opens), an app-limited
    window holds, otherwise ``resize`` says where the size goes."""

    def __init__(
        self,
        *,
        max_size: int,
        latency_threshold_ms: float = 1000.0,
        error_rate_threshold: float = 0.2,
        window_size: int = RECENT_SIZE,
        drop_factor: float = 0.5,
    ) -> None:
        super().__init__(
            max_size=max_size,
            latency_threshold_ms=latency_threshold_ms,
            error_rate_threshold=error_rate_threshold,
        )
        if not 1 <= window_size <= PEER_WINDOW:
            raise ValueError(f"window_size must be between 1 and {PEER_WINDOW}")
        if not 0 < drop_factor < 1:
            raise ValueError("drop_factor must be between 0 and 1")
        self.window_size = window_size
        self.drop_factor = drop_factor

    @abstractmethod
    def too_slow(self, slow_calls: int, latency_ms: float) -> bool:
        """Whether the window's latency is a drop (the timeout of Netflix's callers)."""

    @abstractmethod
    def resize(self, size: int, latency_ms: float, batch: Sequence[Sample],
               keep: tuple[Sample, ...]) -> int:
        """The next size after a window without drops (``keep`` ends with ``batch``)."""

    def serving(self, recent: Sequence[Sample], *, error_rate: float | None = None) -> bool:
        return super().serving(tuple(recent)[-RECENT_SIZE:], error_rate=error_rate)

    def decide(self, size, batch, recent=(), memo=()):
        n = len(batch)
        if n == 0:
            return Decision(self.clamp(size), HOLD, Health(0, 0, 0, 0.0, 0.0, True),
                            tuple(recent))
        errors, slow, p50, p90 = measure(batch, self.latency_threshold_ms)
        latency = typical_latency_ms([s.latency_ms for s in batch if s.ok])
        failing = errors / n > self.error_rate_threshold
        too_slow = self.too_slow(slow, latency)
        health = Health(n, errors, slow, p50, p90, healthy=not (failing or too_slow),
                        why=_why(failing, too_slow))
        keep = (tuple(recent) + tuple(batch))[-self.window_size:]
        if failing or too_slow:
            if size <= 1:
                return Decision(1, OPEN, health, ())
            return Decision(self.clamp(math.floor(size * self.drop_factor)), DECREASE, health,
                            keep)
        wanted = size
        if errors < n and n * 2 >= size:  # something served, and not app-limited
            wanted = self.resize(size, latency, batch, keep)
        if wanted < size:  # a decrease for latency: no drop, but not healthy either
            health = replace(health, healthy=False, why="slow")
        new = self.clamp(wanted)
        action = INCREASE if new > size else DECREASE if new < size else HOLD
        return Decision(new, action, health, keep)


@register("aimd")
class ClassicAimdPolicy(PeerPolicy):
    """The classic additive-increase, multiplicative-decrease rule.

    From Netflix ``limit/AIMDLimit.java``: a drop (a failure, or a call slower than the
    timeout) multiplies the limit by the backoff ratio; otherwise the limit grows by one, but
    only while at least half of it is in use (``inflight * 2 >= limit``).

    Adapted: judged per window, not per call. The window is unhealthy when its error rate is
    above ``error_rate_threshold`` (AIMDLimit: any drop) or any of its calls took longer than
    ``latency_threshold_ms`` (the timeout; AIMDLimit's default is 5 s). The backoff ratio is
    0.5, the classic one (AIMDLimit allows 0.5 to 1 and defaults to 0.9), floored at 1;
    unhealthy at size 1 opens the circuit. It keeps no history: the last ``RECENT_SIZE``
    samples are kept for ``serving`` only, as the seed rule does.
    """

    def __init__(self, *, backoff_ratio: float = 0.5, **base: Any) -> None:
        super().__init__(drop_factor=backoff_ratio, **base)

    def too_slow(self, slow_calls, latency_ms):
        return slow_calls > 0

    def resize(self, size, latency_ms, batch, keep):
        return size + 1


@register("vegas")
class VegasPolicy(PeerPolicy):
    """Delay-based: estimate how many calls queue at the provider, keep it between alpha and
    beta.

    From Netflix ``limit/VegasLimit.java``: queue = ceil(limit x (1 - rtt_noload / rtt)),
    rtt_noload being the smallest latency seen; queue < alpha: grow, queue > beta: shrink, in
    between: hold; steps of max(1, log10(limit)) (``functions/Log10RootIntFunction.java``);
    no growth while under half the limit is in use; a drop shrinks the limit.

    Adapted:
    - rtt is the window's latency (the geometric mean of its successful calls), and
      rtt_noload the smallest latency of the windows kept in ``recent`` (the last
      ``window_size`` samples, cut into runs as long as this window, newest first) and of
      this one. Like with like: a single call's minimum would sit far under any window's
      latency with heavy-tailed providers, and the queue would look full at any size.
    - VegasLimit re-probes rtt_noload every 15-30 x limit samples, so that a provider whose
      base latency rose is not taken as queueing for ever. Here the retained window plays that
      part: a minimum older than ``window_size`` calls is forgotten.
    - alpha and beta are fixed (3 and 6, VegasLimit's values for limits under 100). So at a
      size of ``beta`` or less the estimate can never exceed beta: below it, only drops
      shrink the size.
    - A drop halves (VegasLimit steps down by log10(limit)). Not kept: VegasLimit's jump of
      +beta when the queue is near empty (from 1 to 7 at once, with X = 10), and its holding
      on a new minimum: a queue of 0 grows by one step here.
    - A shrink for latency is reported unhealthy ("slow"); it never happens at size 1.
    """

    def __init__(self, *, alpha: int = 3, beta: int = 6, window_size: int = PEER_WINDOW,
                 **base: Any) -> None:
        super().__init__(window_size=window_size, **base)
        if not 1 <= alpha < beta:
            raise ValueError("need 1 <= alpha < beta")
        self.alpha = alpha
        self.beta = beta

    def too_slow(self, slow_calls, latency_ms):
        return latency_ms > self.latency_threshold_ms

    def resize(self, size, latency_ms, batch, keep):
        served = sum(1 for s in batch if s.ok)
        history = [s.latency_ms for s in keep[: max(0, len(keep) - len(batch))] if s.ok]
        noload = min([latency_ms, *window_latencies(history, served)])
        queue = math.ceil(size * (1 - noload / latency_ms))
        if queue < self.alpha:
            return size + log10_step(size)
        if queue > self.beta:
            return size - log10_step(size)
        return size


@register("gradient2")
class Gradient2Policy(PeerPolicy):
    """Gradient of latency: shrink while the short-term latency runs above the long-term one.

    From Netflix ``limit/Gradient2Limit.java``: gradient = clamp(tolerance x long / short,
    0.5, 1.0); new = limit x gradient + queue_size, smoothed: limit x (1 - smoothing) + new x
    smoothing; tolerance 1.5 and smoothing 0.2 as there; no change while under half the limit
    is in use. The long-term latency is an exponential average (``measurement/
    ExpAvgMeasurement.java``: a plain mean over a warm-up, then 2 / (n + 1) per sample).

    Adapted:
    - short is this window's latency (geometric mean of its successful calls); long is the
      exponential average, in log space, of the successful calls kept in ``recent`` and of this
      window (oldest first: a mean of the first ``warmup``, then 2 / (``long_window`` + 1)
      each). Gradient2Limit averages one value per window over 600 windows and decays the
      long-term value when it is twice the short one; here it cannot outlive the
      ``window_size`` samples kept, which forgets a past overload within that many calls.
    - queue_size is 1, not 4: at limits of 1 to 10 an allowance of 4 would cancel any
      gradient above 0.5 (10 x 0.6 + 4 = 10), so latency could never shrink the limit.
    - The limit here is a whole number kept in the control item, with no fraction to carry to
      the next window: the smoothed value is rounded away from the current size, so a move of
      under one call is one step. At these sizes the rule moves one step toward the target.
    - Errors: Gradient2Limit ignores drops. Here a drop halves (the gradient's floor, applied
      at once, without smoothing or queue allowance), and unhealthy at size 1 opens.
    - A shrink for latency is reported unhealthy ("slow"); it never happens at size 1
      (1 x 0.5 + 1 > 1).
    """

    def __init__(
        self,
        *,
        tolerance: float = 1.5,
        smoothing: float = 0.2,
        queue_size: int = 1,
        long_window: int = 50,
        warmup: int = 10,
        window_size: int = PEER_WINDOW,
        **base: Any,
    ) -> None:
        super().__init__(window_size=window_size, **base)
        if tolerance < 1.0:
            raise ValueError("tolerance must be >= 1.0")
        if not 0 < smoothing <= 1:
            raise ValueError("smoothing must be in (0, 1]")
        if queue_size < 0 or long_window < 1 or warmup < 1:
            raise ValueError("need queue_size >= 0, long_window >= 1 and warmup >= 1")
        self.tolerance = tolerance
        self.smoothing = smoothing
        self.queue_size = queue_size
        self.long_window = long_window
        self.warmup = warmup

    def too_slow(self, slow_calls, latency_ms):
        return latency_ms > self.latency_threshold_ms

    def long_latency_ms(self, latencies: Sequence[float]) -> float:
        """The exponential average (in log space) of ``latencies``, oldest first."""
        logs = [math.log(max(MIN_LATENCY_MS, ms)) for ms in latencies]
        if not logs:
            return 0.0
        head = logs[: self.warmup]
        value = sum(head) / len(head)
        factor = 2.0 / (self.long_window + 1)
        for x in logs[self.warmup:]:
            value = value * (1 - factor) + x * factor
        return math.exp(value)

    def resize(self, size, latency_ms, batch, keep):
        long = self.long_latency_ms([s.latency_ms for s in keep if s.ok])
        gradient = max(0.5, min(1.0, self.tolerance * long / latency_ms))
        target = size * gradient + self.queue_size
        smoothed = size * (1 - self.smoothing) + target * self.smoothing
        if abs(smoothed - size) < 1e-9:
            return size
        return math.ceil(smoothed) if smoothed > size else math.floor(smoothed)
