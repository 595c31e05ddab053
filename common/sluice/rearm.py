"""The scheduled rearm (every 10 minutes): the half-open step of the circuit breaker.

If the breaker is open (or half-open but its mapping never got enabled) and no operator has
paused the provider, enable the mapping at batch size 1: the next batch is one probe call.
If the mapping is already enabled, do nothing. A closed breaker with a disabled mapping was
disabled by someone else: operators win, so it is left alone.
"""

from __future__ import annotations

from typing import Any

from sluice import breaker
from sluice.clock import Clock, system_clock
from sluice.control import ControlStore
from sluice.mapping import MappingClient
from sluice.metrics import Emit, stdout_emit


def rearm(
    *,
    stream_name: str,
    provider: str,
    control: ControlStore,
    mapping: MappingClient,
    clock: Clock = system_clock,
    emit: Emit = stdout_emit,
) -> dict[str, Any]:
    view = mapping.find(stream_name=stream_name)
    state = control.load()
    if state.paused:
        update = mapping.apply(view, enabled=False, batch_size=view.batch_size)
        result = {"action": "none", "why": "paused by operator", "mapping_update": update}
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
