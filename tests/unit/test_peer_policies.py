"""The peer policies (classic AIMD, Vegas, Gradient2): registered like any policy, pure, and
moving the size the way their Netflix originals would, one window of calls at a time."""

import importlib
import json
import sys
from dataclasses import replace
from unittest.mock import ANY

import pytest

import sluice
from sluice.breaker import ControlState
from sluice.control import _decode, _encode
from sluice.peer_policies import (
    PEER_WINDOW,
    ClassicAimdPolicy,
    Gradient2Policy,
    VegasPolicy,
    typical_latency_ms,
    window_latencies,
)
from sluice.policies import DECREASE, HOLD, INCREASE, OPEN, POLICIES, RECENT_SIZE, make_policy
from sluice.policies import Sample as S
from sluice.settings import load_settings

PEERS = {"aimd": ClassicAimdPolicy, "vegas": VegasPolicy, "gradient2": Gradient2Policy}
BASE = 100.0  # ms, far under the 1000 ms threshold


def calls(n, ms=BASE, errors=0):
    return [S(ms, True)] * (n - errors) + [S(ms, False)] * errors


def history(n=60, ms=BASE):
    return tuple(calls(n, ms))


def make(name, **params):
    """As the ventilator builds a policy from settings."""
    return make_policy(name, max_size=10, latency_threshold_ms=1000.0,
                       error_rate_threshold=0.2, **params)


# -- registration -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "cls"), PEERS.items())
def test_peers_are_built_by_name_with_the_ventilators_arguments(name, cls):
    assert POLICIES[name] is cls
    policy = make(name)
    assert isinstance(policy, cls) and policy.name == name
    assert load_settings(policy=name).policy == name  # settings validate against POLICIES


def test_peers_register_when_the_runtime_imports_its_policies(monkeypatch):
    # A fresh interpreter that imports only sluice.policies (as settings does) knows them.
    for module in ("sluice.policies", "sluice.peer_policies"):
        monkeypatch.delitem(sys.modules, module)
        monkeypatch.delattr(sluice, module.split(".")[1])
    fresh = importlib.import_module("sluice.policies")
    assert set(PEERS) | {"seed", "default"} <= set(fresh.POLICIES)


@pytest.mark.parametrize("name", PEERS)
def test_peers_clamp_to_x_and_open_only_at_one(name):
    policy = make_policy(name, max_size=3)
    at_x = policy.decide(3, calls(3), history())
    assert (at_x.size, at_x.action) == (3, HOLD)  # healthy at X: not 4
    assert policy.decide(5, calls(5), history()).size == 3  # X lowered under the running size
    for size in (3, 2):
        cut = policy.decide(size, calls(size, errors=size), history())
        assert cut.action == DECREASE and 1 <= cut.size < size
    at_one = policy.decide(1, calls(1, errors=1), history())
    assert (at_one.size, at_one.action) == (1, OPEN)  # never 0: opens instead
    assert not at_one.health.healthy and at_one.health.why == "errors"


@pytest.mark.parametrize("name", PEERS)
def test_peers_hold_on_an_empty_window_and_keep_what_they_kept(name):
    kept = history(10)
    decision = make(name).decide(4, [], kept)
    assert (decision.size, decision.action, decision.recent) == (4, HOLD, kept)
    assert decision.health.healthy


@pytest.mark.parametrize("name", PEERS)
def test_peers_do_not_grow_a_limit_the_traffic_does_not_use(name):
    # Netflix's "app-limited" guard: under half the limit in flight proves nothing.
    assert make(name).decide(8, calls(3), history()).size == 8


@pytest.mark.parametrize("name", PEERS)
def test_peers_keep_a_small_window_that_fits_the_control_item(name):
    policy = make(name)
    recent = ()
    for _ in range(30):
        recent = policy.decide(10, calls(10, ms=999.94), recent).recent
    assert len(recent) == policy.window_size <= PEER_WINDOW
    item = _encode(ControlState(batch_size=10, recent=recent))
    assert len(json.dumps(item)) < 4_000  # bytes, against DynamoDB's 400 KB per item
    # What the control item gives back (latencies rounded to 0.1 ms) decides the same.
    stored = _decode(item).recent
    assert policy.decide(9, calls(9, ms=500.0), stored) == replace(
        policy.decide(9, calls(9, ms=500.0), recent), recent=ANY)


@pytest.mark.parametrize("name", ["vegas", "gradient2"])
def test_serving_is_judged_on_the_last_calls_as_for_the_other_policies(name):
    # An error burst long ago, then clean calls: serving, as the default would judge it.
    recent = tuple(calls(40, errors=40)) + history(RECENT_SIZE)
    assert make(name).serving(recent)
    assert not make("default").serving(recent)  # what the whole window would have said


# -- aimd --------------------------------------------------------------------------------------


def test_aimd_halves_on_errors_down_to_open():
    policy, size, trace = make("aimd"), 10, []
    while True:
        decision = policy.decide(size, calls(size, errors=size))
        trace.append((decision.size, decision.action))
        if decision.action == OPEN:
            break
        size = decision.size
    assert trace == [(5, DECREASE), (2, DECREASE), (1, DECREASE), (1, OPEN)]


def test_aimd_halves_on_one_call_over_the_timeout():
    decision = make("aimd").decide(9, [*calls(8), S(1500.0, True)])
    assert (decision.size, decision.action) == (4, DECREASE)
    assert (decision.health.healthy, decision.health.why, decision.health.slow) == (
        False, "slow", 1)


def test_aimd_tolerates_errors_under_the_threshold_and_grows_by_one():
    decision = make("aimd").decide(10 - 1, calls(9, errors=1))  # 11% <= 20%
    assert (decision.size, decision.action) == (10, INCREASE)
    assert decision.health.healthy


def test_aimd_recovers_one_step_per_healthy_window_up_to_x():
    policy, size, recent, trace = make_policy("aimd", max_size=5), 1, (), []
    for _ in range(6):
        decision = policy.decide(size, calls(size), recent)
        size, recent = decision.size, decision.recent
        trace.append(size)
    assert trace == [2, 3, 4, 5, 5, 5]
    assert len(recent) <= RECENT_SIZE  # it keeps samples for ``serving`` only


# -- vegas -------------------------------------------------------------------------------------


def test_vegas_grows_on_flat_latency():
    decision = make("vegas").decide(5, calls(5), history())
    assert (decision.size, decision.action) == (6, INCREASE)


def test_vegas_shrinks_as_latency_rises_at_the_same_size():
    policy = make("vegas")
    # queue = ceil(9 x (1 - 100 / rtt)): 1.2x -> 2 (grow), 1.6x -> 4 (hold), 3.5x -> 7 (shrink)
    actions = [policy.decide(9, calls(9, ms=BASE * f), history()).action
               for f in (1.2, 1.6, 3.5)]
    assert actions == [INCREASE, HOLD, DECREASE]
    slow = policy.decide(10, calls(10, ms=BASE * 3), history())
    assert (slow.size, slow.action) == (9, DECREASE)
    assert (slow.health.healthy, slow.health.why) == (False, "slow")


def test_vegas_cuts_on_errors():
    decision = make("vegas").decide(10, calls(10, errors=4), history())
    assert (decision.size, decision.action, decision.health.why) == (5, DECREASE, "errors")


def test_vegas_latency_alone_never_opens_and_cannot_shrink_at_beta_or_below():
    policy = make("vegas")
    at_one = policy.decide(1, calls(1, ms=900.0), history())
    assert at_one.action != OPEN and at_one.health.healthy
    # At 6 the queue estimate is at most 6: not above beta, so latency alone holds.
    assert policy.decide(6, calls(6, ms=900.0), history()).action == HOLD


def test_vegas_keeps_its_minimum_in_the_samples_and_forgets_it_after_the_window():
    policy = make_policy("vegas", max_size=20, window_size=40)
    recent = history(10)  # the provider at 100 ms
    # Base latency rises to 300 ms for good: the queue looks full, the size shrinks ...
    first = policy.decide(10, calls(10, ms=300.0), recent)
    assert first.action == DECREASE
    # ... until the old minimum has left the window; then 300 ms is the new no-load latency.
    size, recent = first.size, first.recent
    for _ in range(4):
        decision = policy.decide(size, calls(size, ms=300.0), recent)
        size, recent = decision.size, decision.recent
    assert min(s.latency_ms for s in recent) == 300.0
    assert policy.decide(size, calls(size, ms=300.0), recent).action == INCREASE


def test_vegas_takes_no_baseline_from_failed_calls():
    # A dead provider answers fast; its 5 ms 503s must not become the no-load latency.
    recent = history(20) + tuple(calls(4, ms=5.0, errors=4))
    assert make("vegas").decide(9, calls(9), recent).action == INCREASE


def test_vegas_compares_windows_not_single_calls():
    # Heavy-tailed calls with a flat typical latency: no queue, although single calls vary 10x.
    spread = [S(ms, True) for ms in (30.0, 60.0, 100.0, 160.0, 300.0)] * 2
    assert make("vegas").decide(9, spread, tuple(spread) * 5).action == INCREASE


# -- gradient2 ---------------------------------------------------------------------------------


def test_gradient2_shrinks_when_short_term_latency_exceeds_long_term():
    decision = make("gradient2").decide(10, calls(10, ms=BASE * 3), history(90))
    # long = 144 ms (the average has only begun to move), gradient = 1.5 x 144 / 300 = 0.72,
    # target = 10 x 0.72 + 1 = 8.2, smoothed 10 x 0.8 + 8.2 x 0.2 = 9.6 -> 9
    assert (decision.size, decision.action) == (9, DECREASE)
    assert (decision.health.healthy, decision.health.why) == (False, "slow")


def test_gradient2_grows_while_latency_is_within_tolerance():
    policy = make("gradient2")
    assert policy.decide(5, calls(5), history()).size == 6
    assert policy.decide(5, calls(5, ms=BASE * 1.4), history()).size == 6  # under 1.5x


def test_gradient2_long_term_catches_up_with_a_lasting_change():
    policy, size, recent = make("gradient2"), 10, history(100)
    sizes = []
    for _ in range(20):
        decision = policy.decide(size, calls(size, ms=BASE * 3), recent)
        size, recent = decision.size, decision.recent
        sizes.append(size)
    assert sizes[0] < 10  # shrinks first ...
    assert sizes[-1] > min(sizes)  # ... then grows again once 300 ms is the long-term norm


def test_gradient2_halves_on_errors_and_opens_only_at_one():
    policy = make("gradient2")
    cut = policy.decide(8, calls(8, errors=3), history())
    assert (cut.size, cut.action, cut.health.why) == (4, DECREASE, "errors")
    slow_at_one = policy.decide(1, calls(1, ms=900.0), history())
    assert slow_at_one.action == INCREASE  # 1 x 0.5 + 1 > 1: latency never opens


@pytest.mark.parametrize("name", ["vegas", "gradient2"])
def test_a_window_slower_than_the_threshold_is_a_drop(name):
    decision = make(name).decide(4, calls(4, ms=2500.0), history())
    assert (decision.size, decision.action, decision.health.why) == (2, DECREASE, "slow")
    assert make(name).decide(1, calls(1, ms=2500.0), history()).action == OPEN


def test_window_latency_is_the_geometric_mean_of_whole_runs():
    assert typical_latency_ms([10.0, 1000.0]) == pytest.approx(100.0)
    assert typical_latency_ms([]) == 0.0
    assert window_latencies([1.0, 4.0, 9.0, 9.0, 16.0], 2) == pytest.approx([12.0, 6.0])
