"""The fault campaign in the simulator: random fault schedules, every invariant after each run.

Each example draws a seed; the seed draws a schedule (``Chaos.campaign``): workers killed after
the provider answered, Invoke connections dropped after the worker ran, Invoke throttling,
mapping updates refused or settling late, hostile payloads, one or two shards,
ReportBatchItemFailures on or off. CI runs a small campaign; the README has the big one.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice_tools.scenario import load_scenario
from sluice_tools.simulate.chaos import HOLDING_KINDS, Chaos
from sluice_tools.simulate.engine import Simulation

RECORDS = 300


@pytest.mark.parametrize("scenario", ["flapping", "long-outage"])
@pytest.mark.parametrize("policy", ["seed", "default"])
# Derandomized: CI runs the same schedules every time; `sluice`'s README has the big run.
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_every_invariant_holds_under_a_random_fault_schedule(scenario, policy, seed):
    chaos = Chaos.campaign(seed, RECORDS, HOLDING_KINDS)
    summary = Simulation(load_scenario(scenario).with_records(RECORDS), policy=policy,
                         seed=seed, chaos=chaos).run()
    broken = {name for name, ok in summary["invariants"].items() if not ok}
    assert not broken, (broken, summary["faults_injected"])
    assert summary["invariants"]["converges"]


def test_the_campaign_really_injects_faults():
    chaos = Chaos.campaign(3, RECORDS, HOLDING_KINDS)
    summary = Simulation(load_scenario("flapping").with_records(RECORDS), seed=3,
                         chaos=chaos).run()
    assert sum(summary["faults_injected"].values()) > 0
    assert set(summary["faults_injected"]) <= HOLDING_KINDS
