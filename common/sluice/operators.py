"""Operator actions: pause and resume a provider. Nothing automatic overrides a pause."""

from __future__ import annotations

from sluice import breaker
from sluice.breaker import ControlState
from sluice.clock import Clock, system_clock
from sluice.control import ControlStore
from sluice.mapping import MappingClient


def pause(
    control: ControlStore, mapping: MappingClient, stream_name: str, reason: str,
    clock: Clock = system_clock,
) -> tuple[ControlState, str]:
    state = control.update(lambda s: breaker.paused(s, reason, clock()))
    view = mapping.find(stream_name=stream_name)
    return state, mapping.apply(view, enabled=False, batch_size=view.batch_size)


def resume(
    control: ControlStore, mapping: MappingClient, stream_name: str, clock: Clock = system_clock
) -> tuple[ControlState, str]:
    """Lift the pause. An open breaker stays open (the next rearm probes); otherwise the
    mapping comes back at the batch size the controller had reached."""
    state = control.update(lambda s: breaker.resumed(s, clock()))
    view = mapping.find(stream_name=stream_name)
    size = state.batch_size or view.batch_size
    return state, mapping.apply(view, enabled=state.mapping_enabled, batch_size=size)
