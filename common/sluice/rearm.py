"""The scheduled rearm (every 10 minutes): the reconcile loop of the provider's pipeline.

Level-triggered, not edge-triggered: each run brings the control item (the spec) up to date
with the clock (the access window, a half-open probe for an open breaker, the stream's real
shard count), then compares what the event source mapping *should* be with what it *is*,
transitional states included, and converges. Whatever made them differ (an update refused
while another settled, a throttled call, a ventilator killed between two writes, a hand edit)
is repaired here within one interval; running it twice is harmless. A mapping disabled by
hand is enabled again: to stop ingestion, operators use ``sluice pause``, which the spec
honours (an operator pause wins over everything, then the window, then the breaker).

Every run also emits the provider's state as EMF metrics, so alarms see a datapoint every
10 minutes whether or not batches flow (a circuit open for hours emits no batch metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sluice import breaker
from sluice.clock import Clock, system_clock
from sluice.mapping import UNCHANGED
from sluice.metrics import Emit, emf_document, stdout_emit
from sluice.ports import ControlPort, MappingPort, ShardsPort
from sluice.window import AccessWindow


def rearm(
    *,
    stream_name: str,
    provider: str,
    control: ControlPort,
    mapping: MappingPort,
    max_size: int,
    probe_lease_s: float,
    clock: Clock = system_clock,
    emit: Emit = stdout_emit,
    window: AccessWindow | None = None,
    window_clock: Clock | None = None,
    shards: ShardsPort | None = None,
    max_concurrency: int = 0,
    parallelization_factor: int = 1,
    min_shards: int = 1,
    stage: str = "",
    backlog: Callable[[], int | None] | None = None,
) -> dict[str, Any]:
    problems: list[str] = []
    open_shards = 0
    if shards is not None:
        try:
            open_shards = shards.open_shards()
        except Exception as exc:  # keep the last known count; the cap only ever shrinks
            problems.append(f"shards_{type(exc).__name__}")
    window_open = window is None or window.is_open((window_clock or clock)())
    before = control.load()

    def refresh(state: breaker.ControlState) -> breaker.ControlState:
        now = clock()
        state = breaker.with_shards(state, open_shards)
        if not state.paused:
            state = (breaker.window_opened if window_open else breaker.window_closed)(state, now)
        return breaker.after_rearm(state, now, probe_lease_s=probe_lease_s)

    state = control.update(refresh, current=before)
    if max_concurrency:
        fan_out = max(min_shards, state.shards) * parallelization_factor
        max_size = max(1, min(max_size, max_concurrency // fan_out))
    view = mapping.find(stream_name=stream_name)
    spec = breaker.desired_mapping(state, max_size=max_size, fallback_size=view.batch_size,
                                   now=clock())
    update = mapping.apply(view, enabled=spec.enabled, batch_size=spec.batch_size)
    result = {
        "action": _action(before, state, view.enabled, spec.enabled, update),
        "breaker": state.label,
        "why": ("paused by operator" if state.paused else "outside the access window"
                if state.window_closed else f"breaker {state.breaker}"),
        "mapping_state": view.state,
        "mapping_update": update,
        "wanted": {"enabled": spec.enabled, "batch_size": spec.batch_size},
        "converged": update == UNCHANGED,
        "problems": problems,
    }
    metrics = {
        # Open or probing: not recovered. (Half-open lasts one probe; a circuit that keeps
        # failing its probes alternates open / half-open and must still count as open.)
        "BreakerOpen": int(state.breaker != breaker.CLOSED),
        "Paused": int(state.paused),
        "WindowClosed": int(state.window_closed),
        "MappingEnabled": int(view.enabled),
    }
    waiting = _backlog(backlog, problems)
    if waiting is not None:
        metrics["Backlog"] = waiting
    emit(emf_document(provider, int(clock() * 1000), metrics, {"event": "rearm", **result},
                      stage=stage))
    return result


def _backlog(backlog: Callable[[], int | None] | None, problems: list[str]) -> int | None:
    """Today's records still waiting (enqueued minus finished), when the counters know."""
    if backlog is None:
        return None
    try:
        return backlog()
    except Exception as exc:  # the counters are a convenience; the rearm's job goes on
        problems.append(f"backlog_{type(exc).__name__}")
        return None


def _action(before: breaker.ControlState, after: breaker.ControlState, was_enabled: bool,
            wanted: bool, update: str) -> str:
    """One word for logs and the simulator's trace: what this run changed, if anything."""
    if before.breaker == breaker.OPENED and after.breaker == breaker.HALF_OPEN:
        return "half_open"
    if before.window_closed and not after.window_closed:
        return "window_opened"
    if after.window_closed and not after.paused:
        return "window_closed"  # outside the window: the mapping stays (or goes) disabled
    if update != UNCHANGED and wanted and not was_enabled:
        return "repaired_enable"
    if update != UNCHANGED and not wanted and was_enabled:
        return "repaired_disable"
    return "converge" if update != UNCHANGED else "none"
