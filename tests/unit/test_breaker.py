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
    half = breaker.after_rearm(opened, 5.0, probe_lease_s=120)
    assert half.breaker == HALF_OPEN and half.batch_size == 1 and half.mapping_enabled
    closed = ControlState(batch_size=7)
    assert breaker.after_rearm(closed, 5.0, probe_lease_s=120) == closed


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
    assert breaker.after_rearm(state, 2.0, probe_lease_s=120) == state
    assert breaker.after_batch(state, decision(2, "increase", True), 3.0) == state
    assert not state.mapping_enabled and state.label == "paused"
    resumed = breaker.resumed(state, 4.0)
    assert resumed.breaker == OPENED and not resumed.paused  # the next rearm probes


def test_half_open_gives_one_probe_per_rearm_across_shards():
    half = breaker.after_rearm(ControlState(breaker=OPENED, batch_size=1), 600.0,
                               probe_lease_s=120)
    first = breaker.take_probe(half, 601.0, "shard-a")
    assert first.probe_token == "shard-a"
    second = breaker.take_probe(first, 601.5, "shard-b")  # the other shard's first batch
    assert second.probe_token == "shard-a" and not second.probe_available
    # A probe whose verdict was lost (its ventilator died) is reissued by the next rearm only.
    assert not breaker.after_rearm(first, 700.0, probe_lease_s=120).probe_available
    assert breaker.after_rearm(first, 1200.0, probe_lease_s=120).probe_available


def test_the_spec_follows_pause_window_breaker_and_a_held_record():
    spec = breaker.desired_mapping
    closed = ControlState(batch_size=6)
    assert spec(closed, max_size=10, fallback_size=3, now=0) == breaker.MappingSpec(True, 6)
    assert spec(closed, max_size=4, fallback_size=3, now=0).batch_size == 4  # real shards
    assert not spec(breaker.paused(closed, "ops", 1), max_size=10, fallback_size=3,
                    now=0).enabled
    assert not spec(ControlState(breaker=OPENED, batch_size=1), max_size=10, fallback_size=3,
                    now=0).enabled
    half = ControlState(breaker=HALF_OPEN, batch_size=4)
    # Half-open: one probe call, chosen from a whole delivery (the least-tried record), so a
    # poison record at the head of the shard is not the probe every time; one call whatever
    # the cap, so the delivery need not fit it.
    probe = breaker.MappingSpec(True, breaker.PROBE_DELIVERY)
    assert spec(half, max_size=10, fallback_size=3, now=0) == probe
    assert spec(half, max_size=1, fallback_size=3, now=0) == probe
    held = ControlState(batch_size=1, held_until=100.0)
    assert spec(held, max_size=10, fallback_size=1, now=50).batch_size == breaker.HELD_DELIVERY
    assert spec(held, max_size=10, fallback_size=1, now=150).batch_size == 1


def test_held_deliveries_double_while_they_bring_no_witness():
    # Every record behind the held one was already finished: the stream only reaches the
    # records further behind through bigger deliveries.
    state = breaker.hold(ControlState(batch_size=2), now=0.0)
    sizes = []
    for t in range(1, 10):
        sizes.append(breaker.desired_mapping(state, max_size=10, fallback_size=2,
                                             now=float(t)).batch_size)
        state = breaker.hold(state, now=float(t), missed=True)
    assert sizes[:4] == [100, 200, 400, 800] and max(sizes) == breaker.KINESIS_MAX_BATCH
    # Once the hold lapses, the count starts again.
    later = breaker.hold(state, now=10_000.0)
    assert later.held_misses == 0
