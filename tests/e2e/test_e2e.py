"""End to end: a short scenario through the real local stack (moto server, local Lambda with
pollers and schedules, fake provider), at a high time scale. One full breaker cycle."""

import json

import pytest

from sluice_tools.local.demo import DemoOptions, DemoRun
from sluice_tools.scenario import parse_scenario

pytestmark = pytest.mark.e2e

OUTAGE_THEN_RECOVERY = {
    "name": "e2e-outage",
    "records": 160,
    "duplicates": 0.05,
    "malformed": 0.02,
    "provider": {"capacity": 10, "latency_ms": {"p50": 15, "p90": 40}, "error_rate": 0.0},
    "settings": {"max_concurrency": 6},
    "phases": [{"at": "3m", "outage": True}, {"at": "25m", "outage": False}],
}


def test_outage_opens_probes_and_recovers_with_every_invariant(tmp_path):
    scenario = parse_scenario(OUTAGE_THEN_RECOVERY)
    run = DemoRun(DemoOptions(scenario, time_scale=600, report_dir=tmp_path, seed=3,
                              update_delay_s=0.05, max_wall_s=120))
    summary = run.run()

    assert summary["invariants"] == {name: True for name in summary["invariants"]}
    assert summary["records"] == 160 + 8 + 4
    assert summary["fetched"] == 160 and summary["lost"] == 0
    assert summary["parked"] == 4  # the malformed payloads, with reasons in the ledger
    assert summary["skipped_duplicates"] == 8
    assert summary["duplicate_fetches"] == 0
    assert summary["max_in_flight"] <= 6
    # One full cycle at least: opened, probed at batch size 1 after a rearm, closed again.
    assert summary["breaker_opened"] >= 1 and summary["rearm_probes"] >= 1
    events = " | ".join(summary["events"])
    assert "closed -> open" in events and "half_open -> closed" in events
    sizes = [size for _, size in summary["batch_size_trace"]]
    assert min(sizes) == 1 and sizes[-1] > 1
    assert json.loads((tmp_path / "summary.json").read_text())["fetched"] == 160
    assert (tmp_path / "chart.png").stat().st_size > 10_000


# Every kind of fault (each strikes at least once per run, whatever the draws: see
# sluice_tools.local.faults); an outage that comes back three times gives the mapping updates
# their worst moments (the breaker opening, a rearm half-opening) several times over.
FAULT_CAMPAIGN = {
    "name": "e2e-faults",
    "records": 160,
    "duplicates": 0.05,
    "provider": {"capacity": 10, "latency_ms": {"p50": 10, "p90": 30}, "error_rate": 0.02},
    # Short worker timeout and lease margin: an injected hang or death costs seconds.
    "settings": {"max_concurrency": 6, "worker_timeout_s": 2, "lease_margin_s": 1},
    "phases": [{"at": "4m", "outage": True}, {"at": "34m", "outage": False},
               {"at": "60m", "outage": True}, {"at": "90m", "outage": False},
               {"at": "120m", "outage": True}, {"at": "150m", "outage": False}],
}
CAMPAIGN_RATES = {
    "worker_killed": 0.05, "connection_dropped": 0.05, "invoke_throttled": 0.03,
    "concurrency_squeezed": 0.02, "ventilator_killed": 0.08, "update_refused": 0.5,
    "update_settled_late": 0.7, "mapping_throttled": 0.03, "worker_timeout": 0.02,
    "dynamodb_throttled": 0.03, "malformed_record": 0.05,
}
INVARIANTS = ("once_a_day", "nothing_lost", "concurrency_cap", "inside_window",
              "no_blocked_shard", "one_probe_per_rearm", "outages_park_nothing", "converges")


def test_the_invariants_survive_injected_faults(tmp_path):
    from sluice_tools.local.faults import DEFAULT_RATES, Faults

    faults = Faults(seed=11, rates=CAMPAIGN_RATES)
    # A generous budget: a loaded 2-core CI machine runs this in about a minute.
    summary = DemoRun(DemoOptions(parse_scenario(FAULT_CAMPAIGN), time_scale=600, faults=faults,
                                  seed=11, update_delay_s=0.05, max_wall_s=300,
                                  report_dir=tmp_path)).run()
    faults.reraise()  # a background call that died fails the test with its exception

    injected = summary["faults_injected"]
    kinds = [*DEFAULT_RATES, "hostile", "two_shards"]
    assert {kind: injected[kind] > 0 for kind in kinds} == dict.fromkeys(kinds, True), injected
    verdicts = summary["invariants"]
    assert sorted(verdicts) == sorted(INVARIANTS)
    assert verdicts == dict.fromkeys(INVARIANTS, True), summary
    assert summary["shards"] == 2
    assert summary["fetched"] == 160 and summary["lost"] == 0
    assert summary["parked"] == injected["malformed_record"] + injected["hostile"]
    assert summary["duplicate_fetches"] == 0 and summary["max_in_flight"] <= 6
    # Workers killed after storing: their next attempt found the result, no second call.
    assert summary["fault_observations"]["result_found"] >= 1
    assert summary["breaker_opened"] >= 1 and summary["rearm_probes"] >= 1
    assert summary["mapping_at_end"]["converged"]
