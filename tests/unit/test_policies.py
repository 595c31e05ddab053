"""Batch-size policies: the seed rule verbatim, and the default's faster, less noisy judgement."""

import pytest

from sluice.policies import (
    DECREASE,
    HOLD,
    INCREASE,
    OPEN,
    AimdPolicy,
    SeedPolicy,
    make_policy,
    percentile,
)
from sluice.policies import Sample as S

FAST, SLOW = 50.0, 1500.0  # threshold 1000 ms


def batch(fast=0, slow=0, errors=0):
    return [S(FAST, True)] * fast + [S(SLOW, True)] * slow + [S(FAST, False)] * errors


@pytest.mark.parametrize(
    ("size", "samples", "expected", "action"),
    [
        (5, batch(fast=5), 6, INCREASE),  # nothing slow, nothing failed: +1
        (5, batch(fast=4, slow=1), 5, HOLD),  # 1/5 bad: hold (no increase either)
        (4, batch(fast=2, slow=2), 4, HOLD),  # exactly 0.5 is not > 0.5
        (5, batch(fast=2, slow=3), 4, DECREASE),  # 3/5 > 0.5: -1
        (5, batch(fast=2, slow=1, errors=2), 4, DECREASE),  # slow and errors add up
        (10, batch(fast=10), 10, HOLD),  # max 10
        (1, batch(slow=1), 1, OPEN),  # unhealthy at 1: open
        (1, batch(fast=1), 2, INCREASE),
    ],
)
def test_seed_policy_is_the_original_rule(size, samples, expected, action):
    decision = SeedPolicy(max_size=50).decide(size, samples)
    assert (decision.size, decision.action) == (expected, action)


def test_seed_policy_counts_slow_strictly_above_the_threshold():
    decision = SeedPolicy(max_size=10).decide(3, [S(1000.0, True)] * 3)
    assert decision.action == INCREASE


def test_seed_policy_never_exceeds_x():
    assert SeedPolicy(max_size=4).decide(4, batch(fast=4)).size == 4


def steps_to_open(policy, start=10):
    size, steps = start, 0
    while True:
        steps += 1
        decision = policy.decide(size, batch(errors=size))
        if decision.action == OPEN:
            return steps
        size = decision.size


def test_default_backs_off_faster_than_seed_in_an_outage():
    default = steps_to_open(AimdPolicy(max_size=10))
    seed = steps_to_open(SeedPolicy(max_size=10))
    assert default == 5  # 10 -> 7 -> 4 -> 2 -> 1 -> open
    assert seed == 10  # 10 -> 9 -> ... -> 1 -> open
    assert default < seed


def test_default_ignores_one_stray_error_after_a_run_of_good_calls():
    policy = AimdPolicy(max_size=10)
    window = tuple(batch(fast=20))
    decision = policy.decide(1, batch(errors=1), window)
    assert decision.action == HOLD
    assert SeedPolicy(max_size=10).decide(1, batch(errors=1)).action == OPEN


def test_default_judges_latency_on_the_window_p90_once_it_has_enough_samples():
    policy = AimdPolicy(max_size=10, min_samples=10)
    # One slow call out of a large healthy window: p90 is still fast.
    assert policy.decide(4, batch(fast=3, slow=1), tuple(batch(fast=16))).action == HOLD
    # Mostly slow: p90 of the window is slow.
    assert policy.decide(4, batch(slow=4), tuple(batch(fast=2, slow=4))).action == DECREASE


def test_default_small_batch_needs_a_slow_median_not_one_outlier():
    policy = AimdPolicy(max_size=10, min_samples=10)
    assert policy.decide(3, batch(fast=2, slow=1)).action == HOLD
    assert policy.decide(3, batch(fast=1, slow=2)).action == DECREASE


def test_default_clears_the_window_after_a_decrease():
    decision = AimdPolicy(max_size=10).decide(8, batch(slow=8))
    assert decision.size == 5 and decision.recent == ()


def test_default_recovers_one_step_per_healthy_batch_up_to_x():
    policy = AimdPolicy(max_size=6)
    size, window, trace = 1, (), []
    for _ in range(10):
        decision = policy.decide(size, batch(fast=size), window)
        size, window = decision.size, decision.recent
        trace.append(size)
    assert trace == [2, 3, 4, 5, 6, 6, 6, 6, 6, 6]


@pytest.mark.parametrize("name", ["seed", "v1", "default"])
def test_policies_clamp_to_x_and_open_at_one(name):
    policy = make_policy(name, max_size=3)
    at_x = policy.decide(3, batch(fast=3))
    assert (at_x.size, at_x.action) == (3, HOLD)  # healthy at X: not 4
    assert policy.decide(5, batch(fast=5)).size == 3  # X lowered under the running size
    # A second failure in a row at size 1 (the default wants two: one proves nothing).
    at_one = policy.decide(1, batch(errors=1), batch(errors=1))
    assert (at_one.size, at_one.action) == (1, OPEN)  # never 0: opens instead


def test_one_error_at_size_one_is_no_verdict_but_a_failed_probe_reopens():
    policy = make_policy("default", max_size=10)
    lone = policy.decide(1, batch(errors=1), batch(fast=20))
    assert lone.action == HOLD and lone.health.healthy  # one error after 20 good calls
    probe = policy.decide(1, batch(errors=1))  # half-open: nothing recent
    assert probe.action == HOLD  # no verdict on the size...
    assert not probe.health.healthy  # ...but the failed probe reopens the circuit


def test_the_default_remembers_where_the_provider_overloaded():
    policy = make_policy("default", max_size=10)
    # At 8, a third of the calls fail while the others are served: overload. Cut, remember.
    cut = policy.decide(8, batch(fast=6, errors=3), batch(fast=20))
    assert cut.action == DECREASE and cut.size < 8 and dict(cut.memo)["ceiling"] == 8
    size, memo, recent, sizes = cut.size, cut.memo, (), []
    for _ in range(8):  # healthy windows
        d = policy.decide(size, batch(fast=size), recent, memo=memo)
        size, memo, recent = d.size, d.memo, d.recent
        sizes.append(size)
    # Just under the ceiling it waits (three healthy windows) before trying 8 again; the try
    # holding, the memory is forgotten and the climb goes on.
    assert sizes[:3] == [7, 7, 8] and sizes[-1] == 10


def test_the_default_steps_back_when_errors_rise_under_the_threshold():
    # At 9 the provider (capacity 8) fails about 15 % of calls: under the 20 % threshold,
    # far above its 1 % at 8. The last step up overloaded it: back to 8.
    policy = make_policy("default", max_size=10)
    memo, recent, decisions = (("base", 0.01), ("ceiling", 10.0)), batch(fast=20), []
    for _ in range(10):
        d = policy.decide(9, batch(fast=8, errors=1), recent, memo=memo)
        memo, recent = d.memo, d.recent
        decisions.append((d.action, d.size))
        if d.action != HOLD:
            break
    assert decisions[-1] == (DECREASE, 8) and dict(d.memo)["ceiling"] == 9


def test_a_steep_decrease_floors_at_one():
    decision = AimdPolicy(max_size=3, decrease_factor=0.3).decide(3, batch(errors=3))
    assert (decision.size, decision.action) == (1, DECREASE)  # floor(3 x 0.3) = 0 -> 1


def test_an_empty_batch_changes_nothing():
    assert AimdPolicy(max_size=5).decide(3, []).action == HOLD
    assert SeedPolicy(max_size=5).decide(3, []).action == HOLD


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown policy 'fast'"):
        make_policy("fast", max_size=3)


def test_percentile_is_nearest_rank():
    assert percentile([], 90) == 0.0
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == 9
    assert percentile([5], 50) == 5
