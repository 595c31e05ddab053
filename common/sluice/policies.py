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
from dataclasses import dataclass, field, replace
from typing import Any

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
    # What else the policy remembers between decisions (e.g. the size that last overloaded
    # the provider): a few named numbers, stored in the control item beside ``recent`` and
    # handed back as ``decide(..., memo=)``. Survives an open circuit; a policy forgets what
    # it chooses to.
    memo: tuple[tuple[str, float], ...] = field(default=())


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
        self, size: int, batch: Sequence[Sample], recent: Sequence[Sample] = (),
        memo: Memo = (),
    ) -> Decision:
        """The next batch size after ``batch`` ran at ``size``; ``open`` only ever at size 1.
        ``recent`` is what the last decision asked to keep (``Decision.recent``), ``memo``
        what it asked to remember (``Decision.memo``)."""


POLICIES: dict[str, type[Policy]] = {}
Memo = tuple[tuple[str, float], ...]
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

    def decide(self, size, batch, recent=(), memo=()):
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


@register("v1")
class AimdPolicy(Policy):
    """sluice's default until 2026-11 (``v1``, kept for comparison): back off
    multiplicatively, recover additively, judge on a window.

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

    def looks_bad(self, errors: int, calls: int, recent: Sequence[Sample]) -> bool:
        """The window's error rate above the threshold and the recent window's above half."""
        recent_errors = sum(1 for s in recent if not s.ok)
        return (errors / calls > self.error_rate_threshold
                and recent_errors / len(recent) > self.error_rate_threshold / 2)

    def looks_slow(self, p90: float, recent: Sequence[Sample]) -> bool:
        """The window's p90 and the recent window's (its p50 before ``min_samples``) above
        the latency threshold."""
        latencies = [s.latency_ms for s in recent]
        typical = percentile(latencies, 90 if len(recent) >= self.min_samples else 50)
        return p90 > self.latency_threshold_ms and typical > self.latency_threshold_ms

    def decide(self, size, batch, recent=(), memo=()):
        n = len(batch)
        errors, slow, p50, p90 = measure(batch, self.latency_threshold_ms)
        recent = (tuple(recent) + tuple(batch))[-self.window_size :]
        if n == 0:
            return Decision(self.clamp(size), HOLD, Health(0, 0, 0, 0.0, 0.0, True), recent)

        failing = self.looks_bad(errors, n, recent)
        too_slow = self.looks_slow(p90, recent)

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


def significant(errors: int, calls: int, rate: float, *, alpha: float = 0.05) -> bool:
    """Whether ``errors`` in ``calls`` say the error rate is above ``rate``: the chance of
    that many or more at ``rate`` is under ``alpha`` (a one-sided binomial test). One error in
    one call is 100 %, and proves nothing against a 20 % threshold (p = 0.2); two in two do."""
    if calls <= 0 or errors <= 0:
        return False
    if rate <= 0:
        return True
    if rate >= 1:
        return False
    log_rate, log_rest = math.log(rate), math.log1p(-rate)
    tail = sum(math.exp(math.lgamma(calls + 1) - math.lgamma(k + 1) - math.lgamma(calls - k + 1)
                        + k * log_rate + (calls - k) * log_rest)
               for k in range(errors, calls + 1))
    return tail < alpha


STEP_BACK_FLOOR = 0.01  # the base error rate assumed at least
STEP_BACK_MARGIN = 0.03  # how far above it errors must be, significantly, to step back
SLOW_MIN_SAMPLES = 5  # calls before a verdict of "too slow" (the p50 of five, at least)
STEP_BACK_CALLS = 60.0  # the calls at one size the step-back test looks at (older ones fade)


@register("default")
class CeilingPolicy(AimdPolicy):
    """sluice's default: AIMD that remembers where the provider overloaded.

    - **Errors need evidence.** A window is failing when its error rate and the recent
      window's are above ``error_rate_threshold`` (as ``v1``) *and* the errors of the two
      together are significant against the threshold (``significant``): one error in a
      window of one or two calls is not an overload (with a base error rate just under the
      threshold, judging 1-2 calls kept the circuit open most of a brownout), while a
      provider failing every call is caught within two calls at any size.
    - **Slowness** is judged as in ``v1``: the window's p90 and the recent window's (p50
      before ``min_samples``) above ``latency_threshold_ms``.
    - **Back off** by ``decrease_factor`` (0.7), as ``v1``; unhealthy at 1 opens the circuit.
    - **A ceiling.** An error cut at size s remembers s (``memo["ceiling"]``): the provider
      could not take s calls. The climb back is +1 per healthy window up to just under the
      ceiling (fast: the sizes below were fine), then it waits ``patience`` healthy windows
      before trying the ceiling again, and the wait doubles with every failed try at the same
      ceiling (``memo["misses"]``, up to 2**4): a provider whose capacity sits below X is
      probed rarely, instead of being overloaded on every climb (``v1`` spent about half its
      time above capacity). A try that holds lifts the ceiling: capacity came back. Like TCP
      CUBIC's W_max, with the plateau as a count of healthy windows (policies have no clock).
      The memory survives an open circuit: a flapping provider has the same capacity when
      it comes back.
    """

    def __init__(
        self,
        *,
        patience: int = 3,
        max_backoff_exponent: int = 4,
        evidence: bool = True,
        step_back: bool = True,
        **base: Any,
    ) -> None:
        super().__init__(**base)  # max_size, thresholds, decrease_factor, window, min_samples
        if patience < 0 or max_backoff_exponent < 0:
            raise ValueError("patience and max_backoff_exponent must be >= 0")
        self.patience = patience
        self.max_backoff_exponent = max_backoff_exponent
        self.evidence = evidence
        self.step_back = step_back

    def decide(self, size, batch, recent=(), memo=()):
        n = len(batch)
        errors, slow, p50, p90 = measure(batch, self.latency_threshold_ms)
        before = tuple(recent)
        recent = (before + tuple(batch))[-self.window_size :]
        mem = dict(memo)
        if n == 0:
            return Decision(self.clamp(size), HOLD, Health(0, 0, 0, 0.0, 0.0, True), recent,
                            memo=tuple(memo))

        pooled = before[-self.window_size:] + tuple(batch)
        looks_bad = self.looks_bad(errors, n, recent)
        failing = looks_bad and (not self.evidence or significant(
            sum(1 for s in pooled if not s.ok), len(pooled), self.error_rate_threshold))
        # Slowness needs evidence too: one slow call of a heavy-tailed provider (a half-open
        # probe that drew a p97 latency) is not a slow provider.
        too_slow = self.looks_slow(p90, recent) and (
            not self.evidence or len(recent) >= SLOW_MIN_SAMPLES)

        # Unhealthy as soon as the window looks bad (a half-open probe that failed reopens
        # the circuit); the size moves only on evidence.
        health = Health(n, errors, slow, p50, p90, healthy=not (looks_bad or too_slow),
                        why=_why(looks_bad, too_slow))
        if failing or too_slow:
            if failing and errors < n and size > 1:
                # Some calls served, too many failed: overload, so this size is a ceiling.
                # (Every call failing is an outage: it says nothing about capacity.)
                self._overloaded(mem, size)
            mem["waited"] = 0.0
            if size <= 1:
                return Decision(1, OPEN, health, (), memo=_memo(mem))
            new = self.clamp(math.floor(size * self.decrease_factor))
            return Decision(new, DECREASE, health, (), memo=_memo(mem))
        # Errors under the threshold, but above what the provider gives at sizes it takes:
        # the last step up overloaded it (a queue of one call fails ~15 % of calls, under a
        # 20 % threshold). Step back one and remember the size as the ceiling.
        if mem.get("at") != size:
            mem.update(at=float(size), at_calls=0.0, at_errors=0.0)
        # The calls at this size, the oldest fading out past STEP_BACK_CALLS: a provider
        # that degrades later, at a size it took for hours, is judged on what it does now.
        keep = min(1.0, STEP_BACK_CALLS / max(1.0, mem.get("at_calls", 0.0) + n))
        mem["at_calls"] = (mem.get("at_calls", 0.0) + n) * keep
        mem["at_errors"] = (mem.get("at_errors", 0.0) + errors) * keep
        base = max(mem.get("base", 0.0), STEP_BACK_FLOOR)
        if (self.step_back and size > 1 and errors
                and significant(round(mem["at_errors"]), round(mem["at_calls"]),
                                base + max(STEP_BACK_MARGIN, base / 2), alpha=0.01)):
            self._overloaded(mem, size)
            mem["waited"] = 0.0
            new = self.clamp(size - 1)
            health = replace(health, healthy=False, why="errors")
            return Decision(new, DECREASE, health, (), memo=_memo(mem))
        if not mem.get("ceiling") or size < mem["ceiling"] - 1:
            # The provider's own error rate at sizes it takes (slow moving average).
            mem["base"] = 0.9 * mem.get("base", 0.0) + 0.1 * (errors / n)
        if errors == 0 and p90 <= self.latency_threshold_ms:
            ceiling = mem.get("ceiling", 0.0)
            if ceiling and size + 1 >= ceiling:
                needed = self.patience * 2 ** min(int(mem.get("misses", 0.0)),
                                                  self.max_backoff_exponent)
                waited = mem.get("waited", 0.0) + 1
                if waited < needed:
                    mem["waited"] = waited
                    return Decision(self.clamp(size), HOLD, health, recent, memo=_memo(mem))
                mem["waited"] = 0.0
                if size >= ceiling:  # the ceiling held: capacity came back, forget it
                    mem = {}
            new = self.clamp(size + 1)
            return Decision(new, INCREASE if new > size else HOLD, health, recent,
                            memo=_memo(mem))
        return Decision(self.clamp(size), HOLD, health, recent, memo=_memo(mem))

    def _overloaded(self, mem: dict[str, float], size: int) -> None:
        """``size`` overloaded the provider: it is the ceiling now. A failed try at (or next
        to) the same ceiling makes the next try wait longer."""
        ceiling = mem.get("ceiling", 0.0)
        again = bool(ceiling) and size >= ceiling - 1
        mem["misses"] = min(mem.get("misses", 0.0) + 1, self.max_backoff_exponent) \
            if again else 0.0
        mem["ceiling"] = float(size)


def _memo(mem: dict[str, float]) -> Memo:
    return tuple(sorted((k, float(v)) for k, v in mem.items() if v))


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
