"""The provider model: what the simulator and the fake provider both serve."""

import heapq
import itertools
import random
import urllib.error
import urllib.request
from dataclasses import replace

import pytest

from sluice.errors import ProviderError
from sluice.provider_http import get
from sluice_tools.fake_provider import FakeProvider, ScenarioBehaviour
from sluice_tools.provider_model import (
    BURST,
    FAST_ANSWER_S,
    OUTAGE,
    QUEUE_TIMEOUT,
    RATE_LIMITED,
    ProviderServer,
    congestion_factor,
    draw_ms,
    error_probability,
)
from sluice_tools.scenario import (
    ProviderState,
    ScenarioError,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
)

NEW = ("below-capacity", "brownout", "flapping-below", "retry-after")


def provider(**fields):
    """A provider without latency noise unless asked (p50 = p90 = 100 ms) and no errors."""
    return replace(ProviderState(p50_ms=100, p90_ms=100, error_rate=0.0), **fields)


def closed_loop(server, n, calls, *, t0=0.0):
    """A client keeping ``n`` calls in flight (all n start together), each next call starting
    as one ends: the answers in start order."""
    ends = []
    answers = []
    for _ in range(n):
        answer = server.call(t0, together=n)
        answers.append(answer)
        heapq.heappush(ends, t0 + answer.latency_s)
    while len(answers) < calls:
        now = heapq.heappop(ends)
        answer = server.call(now)
        answers.append(answer)
        heapq.heappush(ends, now + answer.latency_s)
    return answers


def mean(values):
    values = list(values)
    return sum(values) / len(values)


def test_latency_rises_with_load_before_errors_do():
    state = provider(capacity=8, p90_ms=300, error_rate=0.0, overload_error_rate=0.3)
    latency, errors = {}, {}
    for n in range(1, 17):
        answers = closed_loop(ProviderServer(state, random.Random(n)), n, 2000)
        latency[n] = mean(a.latency_s for a in answers)
        errors[n] = mean(not a.ok for a in answers)
    # Up to capacity: slower and slower, and never an error.
    assert all(latency[n] < latency[n + 1] for n in range(1, 8))
    assert latency[8] / latency[1] > 1.3
    assert all(errors[n] == 0 for n in range(1, 9))
    # Beyond it: the queue keeps latency rising, and errors come.
    assert all(latency[n] < latency[n + 1] for n in range(8, 16))
    assert all(errors[n] > 0 for n in range(9, 17))


def test_congestion_is_anchored_at_capacity():
    state = provider(capacity=10, congestion=0.5, congestion_exponent=2)
    assert congestion_factor(state, 10) == 1.0  # latency_ms is the provider at capacity
    assert congestion_factor(state, 1) == pytest.approx(1.005 / 1.5)
    assert congestion_factor(state, 5) == pytest.approx(1.125 / 1.5)
    assert congestion_factor(state, 30) == 1.0  # over capacity: the queue, not congestion
    assert congestion_factor(provider(congestion=0.0), 1) == 1.0
    # A group started together shares the group's congestion.
    server = ProviderServer(provider(capacity=10), random.Random(1))
    assert [round(server.call(0.0, together=4).latency_s, 6) for _ in range(4)] == \
        [round(0.1 * congestion_factor(state, 4), 6)] * 4


def test_calls_beyond_capacity_wait_for_the_earliest_slot():
    server = ProviderServer(provider(capacity=2, congestion=0.0), random.Random(1))
    a, b = server.call(0.0), server.call(0.0)
    c, d = server.call(0.01), server.call(0.02)
    assert (a.latency_s, b.latency_s, a.waited_s) == (pytest.approx(0.1),) * 2 + (0.0,)
    assert c.waited_s == pytest.approx(0.09) and c.latency_s == pytest.approx(0.19)
    assert d.waited_s == pytest.approx(0.08) and d.latency_s == pytest.approx(0.18)
    assert server.load(0.05) == (2, 2)  # a and b served, c and d queued
    e = server.call(0.05)  # first come, first served: after c and d
    assert e.waited_s == pytest.approx(0.15) and e.ok
    assert server.load(0.15) == (2, 1)


def test_a_capacity_drop_makes_new_calls_wait_for_the_old_ones():
    scenario = parse_scenario({"provider": {"capacity": 4, "congestion": 0.0,
                                            "latency_ms": {"p50": 100, "p90": 100}},
                               "phases": [{"at": 0.05, "capacity": 1}]})
    server = ProviderServer(scenario, random.Random(1))
    assert all(server.call(0.0).waited_s == 0 for _ in range(4))
    late = server.call(0.06)  # capacity 1 now: waits until all four are done
    assert late.waited_s == pytest.approx(0.04)


def test_error_probability_grows_with_the_overload_ratio():
    state = provider(capacity=8, p90_ms=300, error_rate=0.01, overload_error_rate=0.3,
                     overload_ramp=0.25)
    assert error_probability(state, 0.0) == 0.01
    assert error_probability(state, 0.125) == pytest.approx(0.155)
    assert error_probability(state, 0.25) == pytest.approx(0.3)
    assert error_probability(state, 3.0) == pytest.approx(0.3)
    assert error_probability(state, 0.0, burst=0.9) == pytest.approx(1 - 0.99 * 0.1)
    # Served: at capacity the base rate, a queue of one on the ramp, a full queue at E.
    rates = [mean(not a.ok for a in closed_loop(ProviderServer(state, random.Random(3)), n,
                                                 6000)) for n in (8, 9, 16)]
    assert rates[0] < 0.02 < rates[1] < rates[2]
    assert rates[1] == pytest.approx(0.155, abs=0.02)
    assert rates[2] == pytest.approx(0.3, abs=0.02)


def test_a_call_queued_past_the_provider_timeout_gets_504_and_no_slot():
    state = provider(capacity=1, p50_ms=10_000, p90_ms=10_000, congestion=0.0,
                     queue_timeout_s=15.0)
    server = ProviderServer(state, random.Random(1))
    assert server.call(0.0).ok
    assert server.call(0.0).waited_s == pytest.approx(10.0)  # its slot frees at 10 s
    late = server.call(0.0)  # would wait 20 s
    assert (late.ok, late.status, late.reason, late.latency_s) == (False, 504, QUEUE_TIMEOUT,
                                                                   15.0)
    assert server.load(0.0) == (1, 1)  # it took no place
    assert server.call(6.0).waited_s == pytest.approx(14.0)


def test_retry_after_mode_answers_429_at_once_instead_of_queueing():
    state = provider(capacity=2, retry_after_s=15.0)
    server = ProviderServer(state, random.Random(1))
    assert server.call(0.0).ok and server.call(0.0).ok
    third = server.call(0.01)
    assert (third.ok, third.status, third.reason) == (False, 429, RATE_LIMITED)
    assert third.retry_after_s == 15.0 and third.latency_s <= FAST_ANSWER_S
    assert server.load(0.01) == (2, 0)  # not queued
    assert server.call(0.2).ok  # a slot is free again
    # The stateless form agrees: over capacity, a fast failure.
    assert state.fails(random.Random(1), 3)
    assert state.latency_s(random.Random(1), 3) <= FAST_ANSWER_S


def test_error_bursts_are_time_correlated():
    scenario = parse_scenario({"provider": {
        "capacity": 10, "error_rate": 0.0, "latency_ms": {"p50": 100, "p90": 100},
        "bursts": {"every": "5m", "length": "30s", "error_rate": 1.0}}})
    server = ProviderServer(scenario, random.Random(7))
    answers = [server.call(float(t)) for t in range(0, 5 * 3600)]  # one call a second
    failed = [not a.ok for a in answers]
    share = mean(failed)
    assert 0.05 < share < 0.16  # about length / every
    assert all(a.reason == BURST for a in answers if not a.ok)
    # Errors cluster: after an error, another is almost certain; runs last about 30 s.
    after_error = [b for a, b in itertools.pairwise(failed) if a]
    assert mean(after_error) > 0.9
    runs = sum(1 for a, b in itertools.pairwise([False, *failed]) if b and not a)
    assert 30 < runs < 100 and 15 < sum(failed) / runs < 50
    # The bursts are a function of the seed and the scenario, not of the calls.
    other = ProviderServer(scenario, random.Random(99), burst_seed=None)
    assert other.bursts.intervals(3600.0) != server.bursts.intervals(3600.0)
    twin_a = ProviderServer(scenario, random.Random(1), burst_seed=5)
    twin_b = ProviderServer(scenario, random.Random(2), burst_seed=5)
    for t in range(0, 7200, 7):
        twin_a.call(float(t))
    assert twin_a.bursts.intervals(7200.0) == twin_b.bursts.intervals(7200.0)
    intervals = server.bursts.intervals(5 * 3600.0)
    assert sum(b - a for a, b in intervals) == pytest.approx(sum(failed), rel=0.02)


def test_a_phase_can_switch_bursts_off():
    scenario = parse_scenario({"provider": {
        "capacity": 10, "error_rate": 0.0, "bursts": {"every": "2m", "length": "1m",
                                                      "error_rate": 1.0}},
        "phases": [{"at": "1h", "bursts": {"every": 0}}]})
    server = ProviderServer(scenario, random.Random(3))
    intervals = server.bursts.intervals(3 * 3600.0)
    assert intervals and all(b <= 3600.0 for _, b in intervals)
    assert all(server.call(float(t)).ok for t in range(3600, 7200, 10))


def test_an_outage_fails_fast_and_takes_no_slot():
    scenario = parse_scenario({"provider": {"capacity": 1, "congestion": 0.0,
                                            "latency_ms": {"p50": 2000, "p90": 2000}},
                               "phases": [{"at": 10, "outage": True},
                                          {"at": 20, "outage": False}]})
    server = ProviderServer(scenario, random.Random(1))
    answers = [server.call(10.0 + i / 10) for i in range(20)]
    assert all((a.ok, a.status, a.reason) == (False, 503, OUTAGE) for a in answers)
    assert all(a.latency_s <= FAST_ANSWER_S for a in answers)
    after = server.call(20.0)
    assert after.ok and after.waited_s == 0


def test_same_rng_and_call_times_give_the_same_answers():
    scenario = load_scenario("brownout")

    def run(seed):
        server = ProviderServer(scenario, random.Random(seed))
        return closed_loop(server, 12, 3000)

    assert run(4) == run(4)
    assert run(4) != run(5)


def test_the_stateless_form_keeps_shipped_numbers_at_capacity():
    """At capacity the latency is the latency_ms draw itself, as it was when latency was flat
    up to capacity; above, stretched by in_flight / capacity as before."""
    for name in shipped_scenarios():
        state = load_scenario(name).provider
        c = state.capacity
        draw = draw_ms(random.Random(1), state.p50_ms, state.p90_ms) / 1000
        assert state.latency_s(random.Random(1), c) == pytest.approx(draw)
        if state.retry_after_s == 0:
            assert state.latency_s(random.Random(1), 2 * c) == pytest.approx(2 * draw)
        assert state.latency_s(random.Random(1), 1) < draw  # and faster alone


def test_every_shipped_scenario_loads():
    names = shipped_scenarios()
    assert set(NEW) <= set(names)
    for name in names:
        scenario = load_scenario(name)
        assert scenario.description and scenario.records >= 1
        assert scenario.settings.get("max_concurrency", 10) >= 1
        ProviderServer(scenario, random.Random(1)).call(0.0)  # the server takes it too
    retry = load_scenario("retry-after").provider
    assert retry.retry_after_s == 15.0
    below = load_scenario("below-capacity")
    assert below.state_at(3600).capacity < below.settings["max_concurrency"]
    brownout = load_scenario("brownout")
    assert max(brownout.state_at(p.at_s).error_rate for p in brownout.phases) < 0.2
    assert any(brownout.state_at(p.at_s).outage for p in brownout.phases)
    flapping = load_scenario("flapping-below")
    assert max(flapping.state_at(p.at_s).capacity for p in flapping.phases) < 10


@pytest.mark.parametrize("doc, message", [
    ({"provider": {"bursts": {"every": "1m", "length": "2m"}}}, "longer than length"),
    ({"provider": {"bursts": {"often": "1m"}}}, "bursts"),
    ({"provider": {"congestion": -1}}, "congestion"),
    ({"provider": {"overload_ramp": 0}}, "overload_ramp"),
    ({"provider": {"retry_after": "soon"}}, "retry_after"),
    ({"provider": {"queue_timeout": "1m"}, "phases": [{"at": "1m", "latency_ms": {"p90": 1}}]},
     "p90 must be >= p50"),
])
def test_new_fields_are_validated(doc, message):
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(doc)


def test_new_fields_parse_in_provider_and_phases():
    scenario = parse_scenario({"provider": {
        "congestion": 1.0, "congestion_exponent": 3, "overload_ramp": 0.5,
        "queue_timeout": "30s", "retry_after": "1m",
        "bursts": {"every": "20m", "length": "2m", "error_rate": 0.5}},
        "phases": [{"at": "1h", "retry_after": 0, "bursts": {"length": "30s"}}]})
    first, later = scenario.provider, scenario.state_at(4000)
    assert (first.congestion, first.congestion_exponent, first.overload_ramp) == (1.0, 3.0, 0.5)
    assert (first.queue_timeout_s, first.retry_after_s) == (30.0, 60.0)
    assert (first.burst_every_s, first.burst_length_s, first.burst_error_rate) == \
        (1200.0, 120.0, 0.5)
    assert (later.retry_after_s, later.burst_length_s, later.burst_every_s) == (0.0, 30.0,
                                                                               1200.0)


# -- the fake provider serves the same model over HTTP ---------------------------------------------


class _Clock:
    """The fake provider's clock, moved by the test: its sleeps are recorded, not slept, so
    the slot bookkeeping is exact whatever the machine's load (HTTP stays real)."""

    def __init__(self):
        self.now, self.slept = 0.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(round(seconds, 6))


def _fake(provider_fields, clock):
    scenario = parse_scenario({"provider": {"congestion": 0.0, "error_rate": 0.0,
                                            **provider_fields}})
    behaviour = ScenarioBehaviour(scenario, clock, seed=1, monotonic=clock)
    return FakeProvider(behaviour, sleep=clock.sleep).start()


def test_the_fake_provider_answers_429_with_retry_after_over_capacity():
    clock = _Clock()
    api = _fake({"capacity": 1, "latency_ms": {"p50": 600, "p90": 600}, "retry_after": "15s"},
                clock)
    try:
        assert get(f"{api.url}/records/a", timeout_s=5)  # holds the slot until 0.6 s
        clock.now = 0.1
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{api.url}/records/b", timeout=5)
        assert refused.value.code == 429
        assert refused.value.headers["Retry-After"] == "15"
        refused.value.close()
        # The worker's HTTP client sees an error like any other (retryable, not permanent).
        with pytest.raises(ProviderError) as error:
            get(f"{api.url}/records/c", timeout_s=5)
        assert (error.value.kind, error.value.permanent) == ("http_429", False)
        assert clock.slept[0] == 0.6 and all(s <= FAST_ANSWER_S for s in clock.slept[1:])
        clock.now = 0.6  # the slot is free again
        assert get(f"{api.url}/records/d", timeout_s=5)
        stats = api.stats()
        assert (stats["rate_limited"], stats["failures"], stats["served"]) == (2, 2, 2)
    finally:
        api.stop()


def test_the_fake_provider_queues_calls_beyond_capacity():
    clock = _Clock()
    api = _fake({"capacity": 1, "latency_ms": {"p50": 400, "p90": 400}}, clock)
    try:
        assert get(f"{api.url}/records/a", timeout_s=5)
        clock.now = 0.1
        assert get(f"{api.url}/records/b", timeout_s=5)  # waits 0.3 s for a's slot
        clock.now = 0.2
        assert get(f"{api.url}/records/c", timeout_s=5)  # and then for b's
        assert clock.slept == [0.4, 0.7, 1.0]
    finally:
        api.stop()
