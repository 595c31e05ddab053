"""The circuit breaker and the control state it lives in: pure transitions, no IO, no clock.

    closed --(unhealthy at size 1)--> open --(rearm)--> half_open --(healthy probe)--> closed
                                        ^                   |
                                        +--(unhealthy probe)+

``paused`` is orthogonal and belongs to operators: while it is set nothing automatic (a
decision, a rearm, a window opening) enables the mapping; resuming leaves the breaker where it
was. ``window_closed`` is orthogonal too: outside the provider's access window the mapping is
disabled whatever the breaker says, and when the window opens the breaker's batch size is
restored (1 only if the circuit was open).
The state is stored by ``control.ControlStore`` so it survives cold starts and is shared by
every shard's ventilator.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sluice.policies import OPEN, Decision, Sample

CLOSED, OPENED, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class ControlState:
    breaker: str = CLOSED
    batch_size: int = 0  # 0 = not learned yet: start from the mapping's BatchSize
    paused: bool = False
    pause_reason: str = ""
    window_closed: bool = False  # outside the provider's access window
    reason: str = ""  # why the breaker last opened (error kinds only)
    window: tuple[Sample, ...] = field(default=())
    opened_at: float = 0.0
    changed_at: float = 0.0
    opens: int = 0
    window_pauses: int = 0
    version: int = 0  # optimistic-lock counter, bumped by every stored change

    @property
    def mapping_enabled(self) -> bool:
        """Whether the event source mapping should deliver batches."""
        return not self.paused and not self.window_closed and self.breaker != OPENED

    @property
    def label(self) -> str:
        """What status shows: an operator pause, then the window, then the breaker."""
        return "paused" if self.paused else "window" if self.window_closed else self.breaker


def after_batch(state: ControlState, decision: Decision, now: float) -> ControlState:
    """Apply one batch's decision. A batch that arrives while open or paused never gets here
    (the ventilator makes no calls then), so only closed and half-open move."""
    if state.paused or state.window_closed or state.breaker == OPENED:
        return state
    if state.breaker == HALF_OPEN:
        if decision.health.healthy:
            # The probe passed: close, and resume the ramp from where the policy says.
            return replace(state, breaker=CLOSED, batch_size=max(decision.size, 1),
                           window=decision.window, changed_at=now, reason="")
        return _open(state, decision, now)
    if decision.action == OPEN:
        return _open(state, decision, now)
    if decision.size == state.batch_size and decision.window == state.window:
        return state
    return replace(state, batch_size=decision.size, window=decision.window, changed_at=now)


def _open(state: ControlState, decision: Decision, now: float) -> ControlState:
    return replace(
        state,
        breaker=OPENED,
        batch_size=1,
        window=(),
        reason=decision.health.why or "unhealthy",
        opened_at=now,
        changed_at=now,
        opens=state.opens + 1,
    )


def after_rearm(state: ControlState, now: float) -> ControlState:
    """The scheduled rearm: an open breaker goes half-open at batch size 1; nothing else moves."""
    if state.paused or state.breaker != OPENED:
        return state
    return replace(state, breaker=HALF_OPEN, batch_size=1, window=(), changed_at=now)


def window_closed(state: ControlState, now: float) -> ControlState:
    if state.window_closed:
        return state
    return replace(state, window_closed=True, window_pauses=state.window_pauses + 1,
                   changed_at=now)


def window_opened(state: ControlState, now: float) -> ControlState:
    """The breaker keeps its state and batch size: ingestion resumes where it stopped."""
    return replace(state, window_closed=False, changed_at=now) if state.window_closed else state


def paused(state: ControlState, reason: str, now: float) -> ControlState:
    return replace(state, paused=True, pause_reason=reason or "operator", changed_at=now)


def resumed(state: ControlState, now: float) -> ControlState:
    return replace(state, paused=False, pause_reason="", changed_at=now)
