"""Batch-size policies: how big the next batch may be, given how the last one went.

A policy is pure and clock-free: it is fed one batch's samples (latency and success per provider
call) plus the recent window it asked to keep, and answers with a Decision. Computing the size
is kept apart from enforcing it (the ventilator applies it through the mapping client), so the
simulator runs the very same code in virtual time.

Register a new policy with ``@register("name")``; settings and the simulator find it by name.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

INCREASE, DECREASE, HOLD, OPEN = "increase", "decrease", "hold", "open"


@dataclass(frozen=True)
class Sample:
    latency_ms: float
    ok: bool


@dataclass(frozen=True)
class Health:
    calls: int
    errors: int
    slow: int
    p50_ms: float
    p90_ms: float
    healthy: bool
    why: str = ""  # "errors", "slow", "errors+slow" or "" (safe to log: no contents)

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class Decision:
    size: int
    action: str  # increase | decrease | hold | open
    health: Health
    recent: tuple[Sample, ...] = field(default=())  # the samples to keep for the next batch


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def measure(batch: Sequence[Sample], latency_threshold_ms: float) -> tuple[int, int, float, float]:
    latencies = [s.latency_ms for s in batch]
    errors = sum(1 for s in batch if not s.ok)
    slow = sum(1 for s in batch if s.latency_ms > latency_threshold_ms)
    return errors, slow, percentile(latencies, 50), percentile(latencies, 90)


class Policy(ABC):
    """Base class: validated parameters, one update method, a clamp to [1, max_size]."""

    name = "abstract"

    def __init__(
        self,
        *,
        max_size: int,
        latency_threshold_ms: float = 1000.0,
        error_rate_threshold: float = 0.2,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self.max_size = max_size
        self.latency_threshold_ms = latency_threshold_ms
        self.error_rate_threshold = error_rate_threshold

    def clamp(self, size: int) -> int:
        return max(1, min(self.max_size, size))

    def serving(self, recent: Sequence[Sample], *, error_rate: float | None = None) -> bool:
        """Whether the recent samples show a provider that is serving: enough of them
        (``SERVING_MIN_SAMPLES``) and an error rate within the threshold (a provider with a
        base error rate serves too). Used to tell a lone bad record from a provider going
        down (``sluice.verdicts``); ``error_rate`` asks for a stricter rate than the threshold."""
        if len(recent) < SERVING_MIN_SAMPLES:
            return False
        errors = sum(1 for s in recent if not s.ok)
        limit = self.error_rate_threshold if error_rate is None else error_rate
        return errors / len(recent) <= limit

    @abstractmethod
    def decide(
        self, size: int, batch: Sequence[Sample], recent: Sequence[Sample] = ()
    ) -> Decision:
        """The next batch size after ``batch`` ran at ``size``; ``open`` only ever at size 1.
        ``recent`` is what the last decision asked to keep (``Decision.recent``)."""


POLICIES: dict[str, type[Policy]] = {}
SERVING_MIN_SAMPLES = 5
RECENT_SIZE = 20


def register(name: str):
    def wrap(cls: type[Policy]) -> type[Policy]:
        cls.name = name
        POLICIES[name] = cls
        return cls

    return wrap


@register("seed")
class SeedPolicy(Policy):
    """The original design's rule, kept verbatim for comparison.

    slow = latency above the threshold; if (slow + errors) / n > 0.5 then size - 1; if nothing
    was slow and nothing failed then size + 1; otherwise hold. Never above 10 (nor X).
    Unhealthy at size 1 opens the circuit.
    """

    SEED_MAX = 10

    def clamp(self, size: int) -> int:
        return max(1, min(self.max_size, self.SEED_MAX, size))

    def decide(self, size, batch, recent=()):
        n = len(batch)
        errors, slow, p50, p90 = measure(batch, self.latency_threshold_ms)
        unhealthy = n > 0 and (slow + errors) / n > 0.5
        # The rule itself keeps no history; the recent samples are kept for ``serving`` only.
        keep = (tuple(recent) + tuple(batch))[-RECENT_SIZE:]
        health = Health(n, errors, slow, p50, p90, healthy=not unhealthy, why=_why(
            errors and unhealthy, slow and unhealthy))
        if n == 0:
            return Decision(self.clamp(size), HOLD, health, tuple(recent))
        if unhealthy:
            if size <= 1:
                return Decision(1, OPEN, health)
            return Decision(self.clamp(size - 1), DECREASE, health, keep)
        if slow == 0 and errors == 0:
            new = self.clamp(size + 1)
            return Decision(new, INCREASE if new > size else HOLD, health, keep)
        return Decision(self.clamp(size), HOLD, health, keep)


@register("default")
class AimdPolicy(Policy):
    """sluice's default: back off multiplicatively, recover additively, judge on a window.

    - Errors and slowness are judged separately. A batch is failing when its error rate is
      above ``error_rate_threshold`` *and* the window's is above half of it, so one stray error
      after a run of good calls does not cut the size (the seed rule would), while an outage
      (every call failing) trips it at once.
    - Slowness is the p90 latency of the recent window (``window_size`` calls since the last
      decrease) once it holds ``min_samples`` (10: the p90 of fewer calls is just their
      maximum, pure noise); before that, the median of the window, so a small batch cannot
      look slow because of one outlier. The batch's own p90 must be slow too.
    - Unhealthy: size x ``decrease_factor`` (0.7: 10 -> 7 -> 4 -> 2 -> 1 -> open), five
      batches to open against the seed's ten. 0.7 rather than 0.5 because halving overshoots a
      provider whose capacity dropped to 2 or 3 (measured: `sluice simulate --compare`). The
      window is cleared, because samples taken at the old size no longer describe the new one.
    - Healthy (no errors, p90 under the threshold): size + 1, step by step up to X.
    """

    def __init__(
        self,
        *,
        max_size: int,
        latency_threshold_ms: float = 1000.0,
        error_rate_threshold: float = 0.2,
        decrease_factor: float = 0.7,
        window_size: int = RECENT_SIZE,
        min_samples: int = 10,
    ) -> None:
        super().__init__(
            max_size=max_size,
            latency_threshold_ms=latency_threshold_ms,
            error_rate_threshold=error_rate_threshold,
        )
        if not 0 < decrease_factor < 1:
            raise ValueError("decrease_factor must be between 0 and 1")
        if window_size < min_samples or min_samples < 1:
            raise ValueError("need 1 <= min_samples <= window_size")
        self.decrease_factor = decrease_factor
        self.window_size = window_size
        self.min_samples = min_samples

    def decide(self, size, batch, recent=()):
        n = len(batch)
        errors, slow, p50, p90 = measure(batch, self.latency_threshold_ms)
        recent = (tuple(recent) + tuple(batch))[-self.window_size :]
        if n == 0:
            return Decision(self.clamp(size), HOLD, Health(0, 0, 0, 0.0, 0.0, True), recent)

        recent_errors = sum(1 for s in recent if not s.ok)
        failing = (
            errors / n > self.error_rate_threshold
            and recent_errors / len(recent) > self.error_rate_threshold / 2
        )
        recent_latencies = [s.latency_ms for s in recent]
        if len(recent) >= self.min_samples:
            typical_slow = percentile(recent_latencies, 90)
        else:
            typical_slow = percentile(recent_latencies, 50)
        too_slow = p90 > self.latency_threshold_ms and typical_slow > self.latency_threshold_ms

        health = Health(n, errors, slow, p50, p90, healthy=not (failing or too_slow),
                        why=_why(failing, too_slow))
        if failing or too_slow:
            if size <= 1:
                return Decision(1, OPEN, health, ())
            new = self.clamp(math.floor(size * self.decrease_factor))
            return Decision(new, DECREASE, health, ())
        if errors == 0 and p90 <= self.latency_threshold_ms:
            new = self.clamp(size + 1)
            return Decision(new, INCREASE if new > size else HOLD, health, recent)
        return Decision(self.clamp(size), HOLD, health, recent)


def _why(errors: object, slow: object) -> str:
    return "+".join(w for w, on in (("errors", errors), ("slow", slow)) if on)


def make_policy(name: str, **params) -> Policy:
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose one of {sorted(POLICIES)}") from None
    return cls(**params)


# The peers (classic AIMD, Vegas, Gradient2) register on import, so settings and the simulator
# know their names wherever the runtime is imported. Last: they build on the names above.
from sluice import peer_policies  # noqa: E402, F401
