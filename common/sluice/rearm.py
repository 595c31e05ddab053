"""The scheduled rearm (every 10 minutes): the half-open step of the circuit breaker, and
the keeper of the provider's access window.

In order: an operator pause wins over everything (the mapping stays disabled). Outside the
access window the mapping is disabled (reason "window"). When the window opens, the mapping is
enabled again at the batch size the breaker had reached (1 only if the circuit was open). If
the breaker is open (or half-open but its mapping never got enabled), enable the mapping at
batch size 1: the next batch is one probe call. If the mapping is already enabled, do nothing.
A closed breaker with a disabled mapping was disabled by someone else: operators win, so it is
left alone.
"""

from __future__ import annotations

from typing import Any

from sluice import breaker
from sluice.clock import Clock, system_clock
from sluice.control import ControlStore
from sluice.mapping import MappingClient
from sluice.metrics import Emit, stdout_emit
from sluice.window import AccessWindow


def rearm(
    *,
    stream_name: str,
    provider: str,
    control: ControlStore,
    mapping: MappingClient,
    clock: Clock = system_clock,
    emit: Emit = stdout_emit,
    window: AccessWindow | None = None,
    window_clock: Clock | None = None,
) -> dict[str, Any]:
    view = mapping.find(stream_name=stream_name)
    state = control.load()
    window_open = window is None or window.is_open((window_clock or clock)())
    reopened = False
    if not state.paused and not window_open:
        state = control.update(lambda s: breaker.window_closed(s, clock()), current=state)
    elif not state.paused and state.window_closed:
        state = control.update(lambda s: breaker.window_opened(s, clock()), current=state)
        reopened = True
    if state.paused:
        update = mapping.apply(view, enabled=False, batch_size=view.batch_size)
        result = {"action": "none", "why": "paused by operator", "mapping_update": update}
    elif not window_open:
        update = mapping.apply(view, enabled=False, batch_size=view.batch_size)
        result = {"action": "window_closed", "mapping_update": update}
    elif reopened and state.breaker == breaker.CLOSED:
        update = mapping.apply(view, enabled=True, batch_size=state.batch_size or view.batch_size)
        result = {"action": "window_opened", "mapping_update": update}
    elif view.enabled:
        result = {"action": "none", "why": "mapping already enabled"}
    elif state.breaker in (breaker.OPENED, breaker.HALF_OPEN):
        state = control.update(lambda s: breaker.after_rearm(s, clock()))
        update = mapping.apply(view, enabled=state.mapping_enabled, batch_size=state.batch_size)
        result = {"action": "half_open", "mapping_update": update}
    else:
        result = {"action": "none", "why": "mapping disabled outside sluice; left alone"}
    emit({"event": "rearm", "Provider": provider, "breaker": state.label, **result})
    return result
