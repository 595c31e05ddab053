"""Alarms that fire: the metrics the runtime emits (EMF documents from sluice.metrics, with the
cadence of the rearm schedule and of batches) replayed through each alarm's definition from
the generated template. Each alarm reaches ALARM in the situation it exists for, and stays OK
in every other one (a steady day, a nightly window, an outage, a pause, a poison record...).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from sluice.metrics import emf_document
from sluice.settings import load_settings
from sluice_tools.deploy.alarms import (
    ALARM,
    OK,
    REPLAYABLE,
    datapoints_from_emf,
    evaluate,
)
from sluice_tools.deploy.names import StageNames
from sluice_tools.deploy.template import merge_template

HOUR = 3600
T0 = 1_790_000_000  # any epoch second


@pytest.fixture(scope="module")
def alarms():
    settings = load_settings(provider="demo", stage="prod", stream_name="x", table_name="x",
                             result_bucket="x")
    template = merge_template(settings, StageNames.of("demo", "prod"),
                              handlers=["ventilator", "worker", "rearm", "kickoff"])
    by_kind = {}
    for resource in template["Resources"].values():
        if resource.get("Type") == "AWS::CloudWatch::Alarm":
            props = resource["Properties"]
            by_kind[props["AlarmName"].removeprefix("sluice-demo-prod-")] = props
    return by_kind


@dataclass
class Timeline:
    """What a provider emits over time: rearm runs (every 10 minutes, with the scheduler's
    jitter) and ventilator batches. ``state(t)`` says what the world is at time t."""

    hours: float
    stage: str = "prod"
    seed: int = 1
    docs: list = field(default_factory=list)

    def rearm(self, t, *, breaker_not_closed=0, paused=0, window_closed=0, enabled=1, backlog=0):
        metrics = {"BreakerOpen": breaker_not_closed, "Paused": paused,
                   "WindowClosed": window_closed, "MappingEnabled": enabled, "Backlog": backlog}
        self.docs.append(emf_document("demo", int(t * 1000), metrics, {"event": "rearm"},
                                      stage=self.stage))

    def batch(self, t, *, size=10, fetched=10, failed=0, parked=0, breaker_open=0):
        calls = fetched + failed
        metrics = {"BatchSize": size, "Calls": calls, "Fetched": fetched, "Failed": failed,
                   "Parked": parked, "Skipped": 0, "Deferred": 0, "LatencyP50": 150.0,
                   "LatencyP90": 600.0, "ErrorRate": failed / calls if calls else 0.0,
                   "BreakerOpen": breaker_open}
        self.docs.append(emf_document("demo", int(t * 1000), metrics, {"event": "batch"},
                                      stage=self.stage))

    def run(self, world) -> Timeline:
        rng = random.Random(self.seed)
        end = T0 + self.hours * HOUR
        t = T0
        while t < end:  # the rearm schedule: every 600 s, up to a minute late
            w = world(t - T0)
            if w.get("rearm", True):
                self.rearm(t + rng.uniform(0, 60), **w.get("state", {}))
            t += 600
        t = T0
        while t < end:  # batches, when the mapping delivers them
            w = world(t - T0)
            if "batch" in w:
                self.batch(t, **w["batch"])
            t += 60
        return self

    def replay(self, alarms):
        data = datapoints_from_emf(self.docs)
        return {kind: evaluate(props, data, T0, T0 + self.hours * HOUR)
                for kind, props in alarms.items() if kind in REPLAYABLE}


def steady(t):
    return {"batch": {}}


def outage(t):
    """Steady, then the provider down for two hours (the circuit open: one failed probe per
    rearm), then steady again. An outage parks nothing."""
    if 2 * HOUR <= t < 2 * HOUR + 120:  # the batches that detect it
        return {"batch": {"size": 4, "fetched": 0, "failed": 4}}
    if 2 * HOUR + 120 <= t < 4 * HOUR:
        state = {"breaker_not_closed": 1, "enabled": 0, "backlog": 800}
        probe = {"size": 1, "fetched": 0, "failed": 1, "breaker_open": 1}
        return {"state": state, **({"batch": probe} if t % 600 < 60 else {})}
    return {"batch": {}}


def paused_with_backlog(t):
    if t >= HOUR:
        return {"state": {"paused": 1, "enabled": 0, "backlog": 500}}
    return {"batch": {}}


def paused_while_deployed(t):
    """Deployed, ingestion off until cutover: paused, nothing waiting."""
    return {"state": {"paused": 1, "enabled": 0, "backlog": 0}}


def nightly_window(t):
    """Called only from 22:00 to 06:00: records wait every day (not an incident)."""
    hour = (t / HOUR) % 24
    if 6 <= hour < 22:
        return {"state": {"window_closed": 1, "enabled": 0, "backlog": 3000}}
    return {"batch": {}}


def poison_record(t):
    if 3 * HOUR <= t < 3 * HOUR + 60:
        return {"batch": {"fetched": 9, "failed": 1, "parked": 1}}
    return {"batch": {}}


def rearm_broken(t):
    """The rearm stops reporting after two hours (IAM, a bad deploy...): batches go on."""
    return {"batch": {}, "rearm": t < 2 * HOUR}


SITUATIONS = {
    # situation: (world, hours, alarms that must fire)
    "steady day": (steady, 26, set()),
    "nightly window": (nightly_window, 26, set()),
    "deployed, paused until cutover": (paused_while_deployed, 26, set()),
    "two-hour outage": (outage, 6, {"circuit-open"}),
    "paused with a backlog": (paused_with_backlog, 26, {"paused-with-backlog"}),
    "poison record parked": (poison_record, 6, {"parked"}),
    "rearm broken": (rearm_broken, 4, {"rearm-silent"}),
}


@pytest.mark.parametrize("situation", SITUATIONS)
def test_each_alarm_fires_in_its_situation_and_only_there(alarms, situation):
    world, hours, expected = SITUATIONS[situation]
    replays = Timeline(hours).run(world).replay(alarms)
    assert set(replays) == set(REPLAYABLE)
    fired = {kind for kind, replay in replays.items() if replay.ever_alarm}
    assert fired == expected, {k: r.first(ALARM) for k, r in replays.items()}


def test_the_circuit_open_alarm_fires_within_its_hour_and_clears_on_recovery(alarms):
    replay = Timeline(6).run(outage).replay(alarms)["circuit-open"]
    opened = T0 + 2 * HOUR + 120
    fired = replay.first(ALARM)
    # Open in four consecutive 15-minute periods: between 45 and 75 minutes after it opened.
    assert opened + 45 * 60 <= fired <= opened + 75 * 60
    assert replay.final == OK  # recovered at 4 h


def test_alarm_dimensions_are_exactly_what_the_runtime_emits(alarms):
    doc = emf_document("demo", T0 * 1000, {"BreakerOpen": 1}, {}, stage="prod")
    emitted = {d: doc[d] for d in doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]}
    assert emitted == {"Provider": "demo", "Stage": "prod"}
    for props in alarms.values():
        metrics = [m["MetricStat"]["Metric"] for m in props.get("Metrics", [])
                   if "MetricStat" in m] or [props]
        for metric in metrics:
            if metric["Namespace"] == "Sluice":
                assert {d["Name"]: d["Value"] for d in metric["Dimensions"]} == emitted


def test_the_old_definition_could_never_fire_during_an_outage():
    """12 of 12 five-minute periods, missing = not breaching, fed by batches only: the circuit
    is open, batches stop, so it never sees 12 datapoints (issue 11)."""
    old = {"Namespace": "Sluice", "MetricName": "BreakerOpen", "Statistic": "Minimum",
           "Dimensions": [{"Name": "Provider", "Value": "demo"}, {"Name": "Stage",
                                                                   "Value": "prod"}],
           "Period": 300, "EvaluationPeriods": 12, "ComparisonOperator":
           "GreaterThanOrEqualToThreshold", "Threshold": 1, "TreatMissingData": "notBreaching"}
    timeline = Timeline(6).run(outage)
    timeline.docs = [d for d in timeline.docs if d["event"] == "batch"]
    assert not evaluate(old, datapoints_from_emf(timeline.docs), T0, T0 + 6 * HOUR).ever_alarm


def test_the_evaluator_follows_cloudwatch_rules():
    key_dims = [{"Name": "Provider", "Value": "p"}]
    base = {"Namespace": "N", "MetricName": "M", "Dimensions": key_dims, "Period": 60,
            "Statistic": "Maximum", "ComparisonOperator": "GreaterThanThreshold", "Threshold": 0,
            "EvaluationPeriods": 3, "DatapointsToAlarm": 2}
    from sluice_tools.deploy.alarms import metric_key

    data = {metric_key("N", "M", key_dims): [(0, 1), (60, 0), (120, 1), (130, 0)]}
    states = [s for _, s in evaluate({**base, "TreatMissingData": "notBreaching"}, data, 0,
                                     300).states]
    assert states == ["OK", "OK", "ALARM", "OK", "OK"]  # 2 of 3, then they age out
    breaching = evaluate({**base, "TreatMissingData": "breaching"}, data, 0, 300)
    assert breaching.final == ALARM  # the empty periods count against it
    assert evaluate({**base, "TreatMissingData": "missing"}, {}, 0, 300).final \
        == "INSUFFICIENT_DATA"


class _Control:
    def __init__(self, state):
        self.state = state

    def load(self):
        return self.state

    def update(self, change, current=None):
        self.state = change(self.state)
        return self.state


class _Mapping:
    def __init__(self):
        from sluice.mapping import MappingView

        self.view_type = MappingView
        self.view = MappingView("uuid", 1, "Disabled", "arn:stream", True)

    def find(self, stream_arn=None, stream_name=None):
        return self.view

    def apply(self, view, *, enabled, batch_size):
        self.view = self.view_type("uuid", batch_size, "Enabled" if enabled else "Disabled",
                                   "arn:stream", True)
        return "updated"


def test_the_rearm_reports_an_open_circuit_at_every_run_of_an_outage():
    """The contract the circuit-open alarm relies on, checked on the real rearm: open, probe
    (half-open), the probe fails (open again), and so on: every run reports BreakerOpen 1."""
    from dataclasses import replace

    from sluice import breaker
    from sluice.rearm import rearm

    control, mapping, docs = _Control(breaker.ControlState(breaker=breaker.OPENED)), \
        _Mapping(), []
    for run in range(6):
        rearm(stream_name="s", provider="demo", control=control, mapping=mapping, max_size=10,
              probe_lease_s=120, clock=lambda run=run: T0 + run * 600.0, emit=docs.append)
        control.state = replace(control.state, breaker=breaker.OPENED)  # the probe failed
    assert [d["BreakerOpen"] for d in docs] == [1] * 6
