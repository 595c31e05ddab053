"""Breaker transitions: pure, clock-free."""

from sluice import breaker
from sluice.breaker import CLOSED, HALF_OPEN, OPENED, ControlState
from sluice.policies import OPEN, Decision, Health


def decision(size, action, healthy):
    return Decision(size, action, Health(1, 0 if healthy else 1, 0, 1, 1, healthy, "errors"))


def test_unhealthy_at_one_opens_and_disables_the_mapping():
    state = breaker.after_batch(ControlState(batch_size=1), decision(1, OPEN, False), 100.0)
    assert state.breaker == OPENED and not state.mapping_enabled
    assert state.opens == 1 and state.opened_at == 100.0 and state.reason == "errors"


def test_rearm_half_opens_only_an_open_breaker():
    opened = ControlState(breaker=OPENED, batch_size=1)
    half = breaker.after_rearm(opened, 5.0)
    assert half.breaker == HALF_OPEN and half.batch_size == 1 and half.mapping_enabled
    assert breaker.after_rearm(ControlState(batch_size=7), 5.0) == ControlState(batch_size=7)


def test_healthy_probe_closes_and_resumes_the_ramp():
    state = breaker.after_batch(ControlState(breaker=HALF_OPEN, batch_size=1),
                                decision(2, "increase", True), 1.0)
    assert state.breaker == CLOSED and state.batch_size == 2


def test_unhealthy_probe_reopens():
    state = breaker.after_batch(ControlState(breaker=HALF_OPEN, batch_size=1, opens=1),
                                decision(1, OPEN, False), 1.0)
    assert state.breaker == OPENED and state.opens == 2


def test_operator_pause_survives_rearm_and_decisions():
    state = breaker.paused(ControlState(breaker=OPENED, batch_size=1), "provider asked", 1.0)
    assert breaker.after_rearm(state, 2.0) == state
    assert breaker.after_batch(state, decision(2, "increase", True), 3.0) == state
    assert not state.mapping_enabled and state.label == "paused"
    resumed = breaker.resumed(state, 4.0)
    assert resumed.breaker == OPENED and not resumed.paused  # the next rearm probes
