"""The simulator: the runtime's real decision code in virtual time."""

import itertools
import json
import math

import pytest

from sluice.policies import HOLD, Decision, Health, Policy, register
from sluice_tools.cli import main
from sluice_tools.scenario import load_scenario, parse_scenario
from sluice_tools.simulate.engine import BATCH_OVERHEAD_S, Simulation, oracle_makespan_s

SHIPPED = ["steady", "degrade-and-recover", "flapping", "long-outage"]


@pytest.fixture(scope="module")
def compare():
    runs = {}
    for name in ("steady", "degrade-and-recover", "flapping"):
        for policy in ("seed", "default"):
            runs[name, policy] = Simulation(load_scenario(name).with_records(20_000),
                                            policy=policy).run()
    return runs


def test_seed_policy_reproduces_the_original_story():
    sim = Simulation(load_scenario("degrade-and-recover").with_records(20_000), policy="seed")
    summary = sim.run()
    sizes = [size for _, size in summary["batch_size_trace"]]
    assert sizes[0] == 10 and min(sizes) == 1 and sizes[-1] == 10
    assert summary["breaker_opened"] >= 1
    # While the provider is down (20m to 45m), a probe every 10 minutes, and nothing more.
    probes = [t for t, action in sim.trace.rearms if action == "half_open" and 1200 < t < 2700]
    assert len(probes) >= 2 and all(b - a == 600 for a, b in itertools.pairwise(probes))
    assert summary["invariants"]["one_probe_per_rearm"]
    # The recovery: back to 10 after the provider came back at 45m.
    after = [size for t, size in summary["batch_size_trace"] if t > 2700]
    assert after[0] <= 2 and max(after) == 10  # from the probe's size 1, step by step


def test_same_seed_same_result_other_seed_other_result():
    scenario = load_scenario("flapping").with_records(3000)
    a = Simulation(scenario, seed=5).run()
    b = Simulation(scenario, seed=5).run()
    c = Simulation(scenario, seed=6).run()
    assert a == b
    assert a["batch_size_trace"] != c["batch_size_trace"]


def test_oracle_matches_the_closed_form_on_constant_capacity():
    scenario = parse_scenario({"records": 1005, "provider": {
        "capacity": 10, "latency_ms": {"p50": 100, "p90": 100}, "error_rate": 0.0}})
    batches = math.ceil(1005 / 10)
    assert oracle_makespan_s(scenario, 10) == pytest.approx(batches * (0.1 + BATCH_OVERHEAD_S))
    # Capacity below X: the oracle runs at the capacity, not at X.
    slow = parse_scenario({"records": 100, "provider": {
        "capacity": 4, "latency_ms": {"p50": 200, "p90": 200}, "error_rate": 0.0}})
    assert oracle_makespan_s(slow, 10) == pytest.approx(25 * (0.2 + BATCH_OVERHEAD_S))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("policy", ["seed", "default"])
def test_invariants_hold_on_every_scenario_policy_and_seed(name, policy, seed):
    summary = Simulation(load_scenario(name).with_records(4000), policy=policy, seed=seed).run()
    assert summary["invariants"] == {k: True for k in summary["invariants"]}, summary
    assert summary["max_in_flight"] <= summary["max_concurrency"]


def test_default_beats_seed_where_the_provider_degrades(compare):
    for name in ("degrade-and-recover", "flapping"):
        seed, default = compare[name, "seed"], compare[name, "default"]
        assert default["calls_over_threshold"] < seed["calls_over_threshold"]
        assert default["calls_failed"] < seed["calls_failed"]
        assert default["calls_during_outage"] < seed["calls_during_outage"]


def test_default_is_as_fast_as_seed_on_the_median_of_three_seeds():
    """Per seed, one unlucky half-open probe (a 1 % base error at the wrong moment) costs a
    whole rearm interval (10 minutes) whatever the policy: compare medians, not one draw.
    Window dispatch, where the default is tuned (in batch dispatch, on the queueing provider
    model, the seed's rule is about 1 % faster at more than twice the bad calls)."""
    def median(policy, dispatch, key):
        runs = [Simulation(load_scenario("degrade-and-recover").with_records(20_000),
                           policy=policy, seed=seed,
                           settings_overrides={"dispatch": dispatch}).run()
                for seed in (1, 2, 3)]
        return sorted(key(r) for r in runs)[1]

    def makespan(run):
        return run["makespan_s"]

    def bad_calls(run):
        return run["calls_failed"] + run["calls_over_threshold"]

    assert median("default", "window", makespan) <= median("seed", "window", makespan)
    assert median("default", "window", bad_calls) * 2 < median("seed", "window", bad_calls)


def test_default_keeps_a_steady_provider_busy(compare):
    assert compare["steady", "default"]["goodput_ratio"] >= 0.9


def test_a_new_policy_is_one_small_registered_class():
    @register("fixed-test")
    class Fixed(Policy):
        def decide(self, size, batch, window=()):
            return Decision(size, HOLD, Health(len(batch), 0, 0, 0, 0, True))

    summary = Simulation(load_scenario("steady").with_records(500), policy="fixed-test").run()
    assert summary["policy"] == "fixed-test" and summary["fetched"] == 500


def test_cli_writes_the_summary_keys_and_a_chart(tmp_path, capsys):
    out, chart = tmp_path / "run.json", tmp_path / "run.png"
    code = main(["simulate", "degrade-and-recover", "--records", "3000", "--policy", "seed",
                 "--json", str(out), "--chart", str(chart)])
    assert code == 0
    doc = json.loads(out.read_text())
    for key in ("records", "fetched", "skipped_duplicates", "parked", "lost",
                "duplicate_fetches", "max_in_flight", "provider_calls", "calls_over_threshold",
                "calls_failed", "breaker_opened", "makespan_s", "batch_size_trace",
                "invariants", "policy", "oracle_makespan_s", "goodput_ratio"):
        assert key in doc
    assert doc["policy"] == "seed" and chart.stat().st_size > 10_000
    assert "degrade-and-recover" in capsys.readouterr().out


def test_cli_compare_needs_flag_for_several_policies(capsys):
    assert main(["simulate", "steady", "--policy", "seed", "--policy", "default"]) == 2
    assert "--compare" in capsys.readouterr().err


def test_windows_pause_and_resume_with_nothing_called_outside():
    sim = Simulation(load_scenario("overnight").with_records(45_000))
    summary = sim.run()
    assert summary["calls_outside_window"] == 0
    assert summary["window_pauses"] >= 2  # closed at the start (21:00), then Saturday 06:00
    assert summary["fetched"] == 45_000 and summary["lost"] == 0
    assert summary["invariants"]["inside_window"]
    # The oracle waits out closed windows too, so goodput stays meaningful.
    assert summary["goodput_ratio"] > 0.9


def test_scenario_start_must_be_a_local_date_time():
    from sluice_tools.scenario import ScenarioError

    with pytest.raises(ScenarioError, match="not a local date-time"):
        parse_scenario({"start": "tomorrow night"})
    with pytest.raises(ScenarioError, match="drop the offset"):
        parse_scenario({"start": "2026-03-29T21:00+01:00"})
