"""The circuit breaker and the control state it lives in: pure transitions, no IO, no clock.

    closed --(unhealthy at size 1)--> open --(rearm)--> half_open --(healthy probe)--> closed
                                        ^                   |
                                        +--(unhealthy probe)+

``paused`` is orthogonal and belongs to operators: while it is set nothing automatic (a
decision, a rearm, a window opening) enables the mapping; resuming leaves the breaker where it
was. ``window_closed`` is orthogonal too: outside the provider's access window the mapping is
disabled whatever the breaker says, and when the window opens the breaker's batch size is
restored (1 only if the circuit was open).

The state is the *spec* of the event source mapping: ``desired_mapping`` says what the mapping
should be, and every rearm run (and every batch) converges the mapping to it, whatever made
them differ (a lost, refused or throttled update, a crash between two writes). It is stored by
``control.ControlStore`` so it survives cold starts and is shared by every shard's ventilator.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sluice.policies import OPEN, Decision, Sample

CLOSED, OPENED, HALF_OPEN = "closed", "open", "half_open"
HOLD_DELIVERY_S = 900.0  # how long a held record keeps deliveries bigger
# While a record is held, deliveries bring this many records (calls stay at the learned size,
# in waves), so the records behind it are called and can witness that the provider serves.
HELD_DELIVERY = 100
KINESIS_MAX_BATCH = 10_000  # the largest BatchSize a Kinesis mapping takes
PROBE_DELIVERY = 100  # half-open: records delivered to choose the one probe call from


@dataclass(frozen=True)
class ControlState:
    breaker: str = CLOSED
    batch_size: int = 0  # 0 = not learned yet: start from the mapping's BatchSize
    paused: bool = False
    pause_reason: str = ""
    window_closed: bool = False  # outside the provider's access window
    reason: str = ""  # why the breaker last opened (error kinds only)
    recent: tuple[Sample, ...] = field(default=())  # the policy's recent samples
    memo: tuple[tuple[str, float], ...] = field(default=())  # what the policy remembers
    opened_at: float = 0.0
    changed_at: float = 0.0
    opens: int = 0
    window_pauses: int = 0
    # Half-open allows one probe per rearm: the rearm issues it (probe_issued_at), a
    # ventilator takes it with the control item's optimistic lock (probe_taken_at).
    probe_issued_at: float = 0.0
    probe_taken_at: float = 0.0
    probe_token: str = ""  # who took it
    shards: int = 0  # the stream's open shards, as the rearm last saw them (0 = unknown)
    held_until: float = 0.0  # a record failed alone too often: bigger deliveries until then
    # Held deliveries in a row that brought the held record no witness (every record behind
    # it already finished): each doubles the next delivery, so records further behind, which
    # the stream only delivers after it, come into reach.
    held_misses: int = 0
    lone_failures: int = 0  # suspect failures since the provider last served a call
    last_served_at: float = 0.0  # the last delivery (any shard) in which the provider served
    # Window dispatch: records per delivery while closed (``delivery.delivery_size``); 0 in
    # batch dispatch, where a delivery is the batch size (the concurrency).
    delivery: int = 0
    # The provider's Retry-After (a 429 or 503 asking for a pause): no call starts before.
    rate_limited_until: float = 0.0
    version: int = 0  # optimistic-lock counter, bumped by every stored change

    @property
    def mapping_enabled(self) -> bool:
        """Whether the event source mapping should deliver batches."""
        return not self.paused and not self.window_closed and self.breaker != OPENED

    @property
    def label(self) -> str:
        """What status shows: an operator pause, then the window, then the breaker."""
        return "paused" if self.paused else "window" if self.window_closed else self.breaker

    @property
    def probe_available(self) -> bool:
        return self.breaker == HALF_OPEN and self.probe_taken_at < self.probe_issued_at


@dataclass(frozen=True)
class MappingSpec:
    enabled: bool
    batch_size: int


def desired_mapping(state: ControlState, *, max_size: int, fallback_size: int,
                    now: float) -> MappingSpec:
    """What the event source mapping should be. Level-triggered: compare, then converge.

    The size is the learned batch size (the mapping's own until one is learned), clamped to
    the per-ventilator cap, or in window dispatch the delivery size; half-open,
    ``PROBE_DELIVERY`` records (the ventilator makes one call: the probe, on the least-tried
    record); while a record is held, at least ``HELD_DELIVERY``, doubled for every held
    delivery that brought it no witness, so the held record never arrives without records
    behind it (the call cap stays at the learned size: the ventilator runs waves).
    """
    size = max(1, min(max_size, state.batch_size or fallback_size))
    if state.delivery:  # window dispatch: the limit applies to calls, not to deliveries
        size = max(size, state.delivery)
    if state.breaker == HALF_OPEN:
        # One probe call, chosen from a whole delivery: a record that failed before would
        # test itself rather than the provider (a poison record at the head of the shard
        # must not be the probe, every time), so the probe is the least-tried record of many.
        size = PROBE_DELIVERY
    elif state.breaker != CLOSED:
        size = 1
    if now < state.held_until:
        size = max(size, min(KINESIS_MAX_BATCH, HELD_DELIVERY << min(state.held_misses, 7)))
    return MappingSpec(state.mapping_enabled, size)


def after_batch(state: ControlState, decision: Decision, now: float) -> ControlState:
    """Apply one batch's decision. A batch that arrives while open or paused never gets here
    (the ventilator makes no calls then), so only closed and half-open move."""
    if state.paused or state.window_closed or state.breaker == OPENED:
        return state
    if state.breaker == HALF_OPEN:
        if decision.health.healthy:
            # The probe passed: close, and resume the ramp from where the policy says.
            return replace(state, breaker=CLOSED, batch_size=max(decision.size, 1),
                           recent=decision.recent, memo=decision.memo, changed_at=now,
                           reason="")
        return _open(state, decision, now)
    if decision.action == OPEN:
        return _open(state, decision, now)
    if (decision.size, decision.recent, decision.memo) == (
            state.batch_size, state.recent, state.memo):
        return state
    return replace(state, batch_size=decision.size, recent=decision.recent,
                   memo=decision.memo, changed_at=now)


def _open(state: ControlState, decision: Decision, now: float) -> ControlState:
    return replace(
        state,
        memo=decision.memo,
        breaker=OPENED,
        batch_size=1,
        recent=(),
        reason=decision.health.why or "unhealthy",
        opened_at=now,
        changed_at=now,
        opens=state.opens + 1,
    )


def take_probe(state: ControlState, now: float, token: str) -> ControlState:
    """A ventilator takes the half-open probe (under the control item's lock: one winner)."""
    if not state.probe_available or state.paused or state.window_closed:
        return state
    return replace(state, probe_taken_at=now, probe_token=token)


def after_rearm(state: ControlState, now: float, *, probe_lease_s: float) -> ControlState:
    """The scheduled rearm: an open breaker goes half-open at batch size 1 with one probe.

    Half-open already: issue a new probe if the last one was never taken, or was taken so long
    ago that its call is over (its ventilator died, or the verdict was lost), so a lost probe
    cannot leave the provider half-open forever. At most one probe per rearm interval.
    """
    if state.paused or state.window_closed:
        return state
    if state.breaker == OPENED:
        return replace(state, breaker=HALF_OPEN, batch_size=1, recent=(), changed_at=now,
                       probe_issued_at=now, probe_taken_at=0.0)
    if state.breaker == HALF_OPEN:
        stale = state.probe_taken_at < state.probe_issued_at or \
            state.probe_taken_at + probe_lease_s <= now
        if stale:
            return replace(state, probe_issued_at=now, probe_taken_at=0.0)
    return state


def with_shards(state: ControlState, shards: int) -> ControlState:
    return state if shards <= 0 or shards == state.shards else replace(state, shards=shards)


def hold(state: ControlState, now: float, *, missed: bool = False) -> ControlState:
    """Deliveries bring records behind a held record for a while; ``missed``: this one
    brought it no witness, so the next brings twice as many."""
    until = now + HOLD_DELIVERY_S
    misses = (state.held_misses if now < state.held_until else 0) + int(missed)
    if state.held_until >= until - 60 and misses == state.held_misses:
        return state
    return replace(state, held_until=until, held_misses=misses)


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
