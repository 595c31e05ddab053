"""Window dispatch's pure parts: the delivery size rule and the sliding window's limit."""

import threading

from sluice.delivery import MAX_DELIVERY, delivery_size
from sluice.fanout import ThreadFanOut
from sluice.policies import Sample
from sluice_tools.memory import InlineFanOut


def test_a_delivery_is_what_the_limit_finishes_in_the_ventilators_time():
    fast = [Sample(100.0, True)] * 10
    # 10 in flight x 60 s / 0.1 s = 6000 -> capped at MAX_DELIVERY.
    assert delivery_size(10, fast, budget_s=60, prior_latency_ms=1000) == MAX_DELIVERY
    slow = [Sample(20_000.0, True)] * 10
    # 10 x 180 s / 20 s = 90 -> 64, a power of two (small moves do not update the mapping).
    assert delivery_size(10, slow, budget_s=180, prior_latency_ms=1000) == 64
    # Too few samples: the latency threshold stands in for the mean.
    assert delivery_size(4, fast[:3], budget_s=10, prior_latency_ms=1000) == 32
    # Never less than one window of calls, even with no time left.
    assert delivery_size(7, slow, budget_s=0, prior_latency_ms=1000) == 7


def test_a_limit_that_falls_to_zero_starts_nothing_more():
    started, lock, release = [], threading.Lock(), threading.Event()
    stop = threading.Event()

    def task(i):
        def run():
            with lock:
                started.append(i)
            if i == 0:
                return "first"
            release.wait(timeout=30)
            return f"r{i}"
        return run

    def on_done(index, result):
        if result == "first":
            stop.set()  # the circuit opened: the window closes
            release.set()

    tasks = [task(i) for i in range(6)]
    results = ThreadFanOut().run(tasks, lambda: 0 if stop.is_set() else 2,
                                 on_done=on_done, most=2)
    assert sorted(started) == [0, 1]
    assert results[:2] == ["first", "r1"] and results[2:] == [None] * 4


def test_the_inline_fan_out_honours_a_moving_limit_too():
    seen = []
    results = InlineFanOut().run([lambda i=i: i for i in range(5)],
                                 lambda: 0 if len(seen) >= 3 else 1,
                                 on_done=lambda index, result: seen.append(result))
    assert results == [0, 1, 2, None, None]


def test_window_dispatch_holds_every_invariant_and_beats_the_batch_barrier():
    from sluice_tools.scenario import load_scenario
    from sluice_tools.simulate.engine import Simulation

    def run(name, dispatch, seed):
        return Simulation(load_scenario(name).with_records(4000), seed=seed,
                          settings_overrides={"dispatch": dispatch}).run()

    for name in ("steady", "degrade-and-recover", "flapping", "long-outage"):
        for seed in (1, 2):
            window = run(name, "window", seed)
            assert all(window["invariants"].values()), (name, seed, window["invariants"])
            assert window["max_in_flight"] <= window["max_concurrency"]
    steady_batch, steady_window = run("steady", "batch", 1), run("steady", "window", 1)
    # The barrier: each batch waits for its slowest call. Without it, about three times faster.
    assert steady_window["makespan_s"] * 2.5 < steady_batch["makespan_s"]


def test_no_mode_beats_the_physical_limit_on_a_shipped_scenario():
    from sluice_tools.scenario import load_scenario
    from sluice_tools.simulate.engine import Simulation

    for name in ("steady", "degrade-and-recover", "flapping", "long-outage"):
        for dispatch in ("batch", "window"):
            summary = Simulation(load_scenario(name).with_records(3000), seed=1,
                                 settings_overrides={"dispatch": dispatch}).run()
            assert summary["dispatch"] == dispatch
            assert 0 < summary["goodput"] <= 1, (name, dispatch, summary["goodput"])
