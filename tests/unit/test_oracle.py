"""The physical-limit oracle: closed forms on tiny scenarios, and no simulated run beats it."""

import heapq
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.window import AccessWindow
from sluice_tools.provider_model import ProviderServer, congestion_factor
from sluice_tools.scenario import load_scenario, parse_scenario
from sluice_tools.simulate.engine import Simulation
from sluice_tools.simulate.oracle import (
    SAMPLING_DELTA,
    mean_latency_s,
    physical_limit,
    physical_limit_makespan_s,
)

L = math.log(1 / SAMPLING_DELTA)


def scenario(records=1000, capacity=10, p50=100, p90=100, error_rate=0.0, overload=0.3,
             phases=(), congestion=0.0, provider=None, **extra):
    """Flat latency up to capacity (no congestion) unless asked: the closed forms stay short."""
    return parse_scenario({"records": records, "provider": {
        "capacity": capacity, "latency_ms": {"p50": p50, "p90": p90},
        "error_rate": error_rate, "overload_error_rate": overload, "congestion": congestion,
        **(provider or {})}, "phases": list(phases), **extra})


def fluid(s, x, **kwargs):
    return physical_limit_makespan_s(s, x, delta=None, **kwargs)


def test_steady_is_records_times_mean_latency_over_concurrency():
    assert fluid(scenario(), 10) == pytest.approx(1000 * 0.1 / 10)
    # Heavy tail: the mean of the log-normal, exp(mu + sigma^2 / 2), not its median.
    tailed = scenario(p50=100, p90=400)
    sigma = math.log(4) / 1.2815515655446004
    assert mean_latency_s(tailed.provider) == pytest.approx(0.1 * math.exp(sigma ** 2 / 2))
    assert fluid(tailed, 10) == pytest.approx(1000 * 0.1 * math.exp(sigma ** 2 / 2) / 10)
    # X below the capacity: X in flight.
    assert fluid(scenario(), 4) == pytest.approx(1000 * 0.1 / 4)


def test_capacity_below_x_runs_at_the_capacity():
    assert fluid(scenario(capacity=4), 10) == pytest.approx(1000 * 0.1 / 4)
    # Overloading only pays if the provider fails less over capacity than under it (odd, but
    # then c / mean calls per second, each stretched, at the overload error rate).
    odd = scenario(capacity=4, error_rate=0.5, overload=0.0)
    assert fluid(odd, 10) == pytest.approx(1000 * 0.1 / 4)
    assert fluid(odd, 4) == pytest.approx(1000 * 0.1 / 4 / 0.5)


def test_several_streams_bound_over_ranks_when_x_exceeds_capacity():
    # The engine stretches a call by the in-flight count at its start: with several shards
    # the k-th oldest call in flight saw at least k. Capacity 2, X = 4, no errors:
    # 1 + 1 + 2/3 + 1/2 slots' worth of calls.
    s = scenario(capacity=2, overload=0.0)
    assert fluid(s, 4, streams=2) == pytest.approx(1000 * 0.1 / (1 + 1 + 2 / 3 + 1 / 2))
    assert fluid(scenario(), 4, streams=2) == fluid(scenario(), 4)  # X <= c: no difference


def test_errors_are_retried_and_records_park_at_max_attempts():
    flaky = scenario(error_rate=0.2)
    assert fluid(flaky, 10) == pytest.approx(1000 * 0.1 / 10 / 0.8)
    # Parked at the third failure: a record takes 1 + e + e^2 calls on average.
    assert fluid(flaky, 10, max_attempts=3) == pytest.approx(
        1000 * 0.1 / 10 * (1 + 0.2 + 0.04))


def test_an_outage_is_waited_out():
    # 10 s of work; the provider is down from 4 s to 64 s.
    down = scenario(phases=[{"at": "4s", "outage": True}, {"at": "64s", "outage": False}])
    assert fluid(down, 10) == pytest.approx(70.0)
    # Lower capacity from 4 s on: 400 records done, 600 at 4 per 0.1 s.
    slow = scenario(phases=[{"at": "4s", "capacity": 4}])
    assert fluid(slow, 10) == pytest.approx(4 + 600 * 0.1 / 4)
    # Down for good before the end: never.
    assert fluid(scenario(phases=[{"at": "4s", "outage": True}]), 10) == math.inf


def test_a_closed_window_is_waited_out():
    # 100 records/s; from 01:59 UTC, 60 s of work before the 02:00-02:30 maintenance.
    s = scenario(records=12_000, start="2026-11-25T01:59")
    window = AccessWindow.parse("UTC", maintenance_windows=["wed 02:00-02:30"])
    start = s.start_epoch("UTC", 0.0)
    assert fluid(s, 10, window=window, start_epoch=start) == pytest.approx(60 + 1800 + 60)
    # Starting while it is closed: nothing until 02:30.
    closed = scenario(records=1000, start="2026-11-25T02:10")
    assert fluid(closed, 10, window=window, start_epoch=closed.start_epoch("UTC", 0.0)) == \
        pytest.approx(20 * 60 + 10)
    # Without start_epoch the scenario's start in the window's timezone is used.
    assert fluid(s, 10, window=window) == pytest.approx(1920)


def test_the_bound_allows_for_carry_over_and_sampling_luck():
    # No variance at all (constant latency, no errors): the margin is Freedman's 2L/3.
    exact = physical_limit(scenario(), 10)
    assert exact.carry_records == 0
    assert exact.margin_records == pytest.approx(2 * L / 3)
    assert exact.bound_s == pytest.approx((1000 - 2 * L / 3) * 0.1 / 10)
    # A drop (here an outage) credits the X calls in flight then.
    down = physical_limit(scenario(phases=[{"at": "4s", "outage": True},
                                           {"at": "64s", "outage": False}]), 10)
    assert down.carry_records == 10 and down.bound_s < down.fluid_s
    # Heavy tails: a few per cent of 20,000 records, a large share of 300.
    big = physical_limit(scenario(records=20_000, p90=400), 10)
    small = physical_limit(scenario(records=300, p90=400), 10)
    assert 0.02 < big.margin_records / 20_000 < 0.06
    assert small.margin_records / 300 > 0.25
    assert big.bound_s < big.fluid_s and small.bound_s < small.fluid_s
    # delta=None is the fluid limit itself.
    assert physical_limit_makespan_s(scenario(), 10, delta=None) == exact.fluid_s
    assert physical_limit_makespan_s(scenario(), 10) == exact.bound_s


def test_congestion_makes_fewer_calls_faster():
    # latency_ms is the provider at capacity: 4 of 10 slots busy serve in g(4) of it.
    s = scenario(congestion=0.5)
    g4 = (1 + 0.5 * 0.4 ** 2) / 1.5
    assert congestion_factor(s.provider, 4) == pytest.approx(g4)
    assert fluid(s, 4) == pytest.approx(1000 * 0.1 * g4 / 4)
    assert fluid(s, 10) == pytest.approx(1000 * 0.1 / 10)  # at capacity: unchanged
    # Several streams: the k-th oldest call saw at least k calls, so at most 1 / g(k).
    ranks = sum(1 / congestion_factor(s.provider, k) for k in range(1, 11))
    assert fluid(s, 10, streams=2) == pytest.approx(1000 * 0.1 / ranks)
    # Congestion steep enough that the last slot costs more than it brings: fewer is faster.
    steep = scenario(congestion=4.0, provider={"congestion_exponent": 4})
    best = max(n / congestion_factor(steep.provider, n) for n in range(1, 11))
    assert best > 10 and fluid(steep, 10) == pytest.approx(1000 * 0.1 / best)


def test_overload_errors_ramp_and_429s_yield_nothing():
    # X = 10 over capacity 4, no error under capacity and none once overloaded: running over
    # capacity gives nothing more (a slot share c / n), and a 429 nothing at all.
    assert fluid(scenario(capacity=4, overload=0.0), 10) == pytest.approx(1000 * 0.1 / 4)
    odd = scenario(capacity=4, error_rate=0.5, overload=0.0)  # overloaded, it fails less
    assert fluid(odd, 10) == pytest.approx(1000 * 0.1 / 4)
    rate_limited = scenario(capacity=4, error_rate=0.5, overload=0.0,
                            provider={"retry_after": "10s"})
    assert fluid(rate_limited, 10) == pytest.approx(1000 * 0.1 / 4 / 0.5)
    assert fluid(rate_limited, 10, streams=2) == pytest.approx(1000 * 0.1 / 4 / 0.5)


def test_only_the_bursts_given_count():
    s = scenario(provider={"bursts": {"every": "1m", "length": "10s", "error_rate": 0.5}})
    assert fluid(s, 10) == pytest.approx(10.0)  # none given: none counted
    # Half the calls fail from 0 s to 5 s: 250 records, then 750 at 100 a second.
    assert fluid(s, 10, bursts=[(0.0, 5.0)]) == pytest.approx(12.5)
    limit = physical_limit(s, 10, bursts=[(0.0, 5.0)])
    assert limit.carry_records == 0 and limit.bound_s < limit.fluid_s
    later = physical_limit(s, 10, bursts=[(2.0, 3.0)])
    assert later.carry_records == 10  # a burst is a drop: the calls in flight then carry


def _closed_loop_makespan(server, records, n):
    """A client of the provider model that keeps n calls in flight and retries every failed
    record at once (max_attempts None), calls starting together sharing their congestion."""
    pending, done, seq, ends = records, 0, 0, []
    for _ in range(min(n, pending)):
        answer = server.call(0.0, together=min(n, pending))
        heapq.heappush(ends, (answer.latency_s, seq, answer.ok))
        seq += 1
    pending -= len(ends)
    now = 0.0
    while ends:
        now, _, ok = heapq.heappop(ends)
        if ok:
            done += 1
        else:
            pending += 1
        if pending:
            answer = server.call(now)
            heapq.heappush(ends, (now + answer.latency_s, seq, answer.ok))
            seq += 1
            pending -= 1
    assert done == records
    return now


@pytest.mark.parametrize("name", ["steady", "degrade-and-recover", "brownout", "flapping-below",
                                  "retry-after"])
def test_no_client_of_the_provider_model_beats_the_limit(name):
    """The server (wait for a slot, congestion, overload ramp, queue timeout, 429, bursts)
    against the oracle: at X = 1, capacity and 10, whatever the scenario's capacity."""
    s = load_scenario(name).with_records(1500)
    with_bursts = parse_scenario({"provider": {
        "capacity": 6, "latency_ms": {"p50": 100, "p90": 400}, "error_rate": 0.02,
        "bursts": {"every": "20s", "length": "5s", "error_rate": 0.8}}, "records": 1500})
    for sc in (s, with_bursts):
        for x in sorted({1, sc.provider.capacity, 10}):
            for seed in (1, 2):
                server = ProviderServer(sc, random.Random(seed))
                makespan = _closed_loop_makespan(server, sc.records, x)
                bound = physical_limit_makespan_s(
                    sc, x, bursts=server.bursts.intervals(makespan))
                assert bound <= makespan, (sc.name, x, seed, bound, makespan)


@pytest.mark.parametrize("dispatch", ["batch", "window"])
@pytest.mark.parametrize("name", ["steady", "degrade-and-recover", "flapping",
                                  "maintenance-window"])
def test_shipped_scenarios_stay_under_the_limit(name, dispatch):
    sim = Simulation(load_scenario(name).with_records(3000), seed=1,
                     settings_overrides={"dispatch": dispatch})
    summary = sim.run()
    s = sim.settings
    limit = physical_limit(sim.scenario, s.max_concurrency, window=sim.window,
                           start_epoch=sim.start_epoch, max_attempts=s.max_attempts,
                           streams=s.shards * s.parallelization_factor)
    assert limit.bound_s <= limit.fluid_s
    assert limit.bound_s <= summary["makespan_s"]


@st.composite
def scenarios(draw):
    p50 = draw(st.sampled_from([20, 60, 150]))
    doc = {
        "records": draw(st.integers(100, 400)),
        "duplicates": draw(st.sampled_from([0.0, 0.05])),
        "provider": {"capacity": draw(st.integers(1, 12)),
                     "latency_ms": {"p50": p50,
                                    "p90": p50 * draw(st.sampled_from([1, 2, 4]))},
                     "error_rate": draw(st.sampled_from([0.0, 0.01, 0.1])),
                     "overload_error_rate": draw(st.sampled_from([0.05, 0.3])),
                     "congestion": draw(st.sampled_from([0.0, 0.5, 1.0])),
                     "retry_after": draw(st.sampled_from([0, 0, 5]))},
        "settings": {"max_concurrency": draw(st.integers(1, 12))},
        "phases": [],
    }
    at = 0
    for kind in draw(st.lists(st.sampled_from(["outage", "capacity"]), max_size=2)):
        at += draw(st.integers(1, 30))
        if kind == "outage":  # down for a while, then back
            doc["phases"].append({"at": at, "outage": True})
            at += draw(st.integers(1, 120))
            doc["phases"].append({"at": at, "outage": False})
        else:
            doc["phases"].append({"at": at, "capacity": draw(st.integers(1, 12))})
    if draw(st.booleans()):  # a maintenance window a few seconds in
        doc["start"] = "2026-11-25T01:59:50"
        doc["settings"].update(timezone="UTC", maintenance_windows=["wed 02:00-02:03"])
    return parse_scenario(doc)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), policy=st.sampled_from(["seed", "default"]),
       seed=st.integers(1, 10_000))
def test_no_run_beats_the_physical_limit(scenario, policy, seed):
    for dispatch in ("batch", "window"):
        sim = Simulation(scenario, policy=policy, seed=seed,
                         settings_overrides={"dispatch": dispatch})
        summary = sim.run()
        s = sim.settings
        bound = physical_limit_makespan_s(
            scenario, s.max_concurrency, window=sim.window, start_epoch=sim.start_epoch,
            max_attempts=s.max_attempts, streams=s.shards * s.parallelization_factor)
        assert bound <= summary["makespan_s"], (dispatch, summary["makespan_s"], bound)
