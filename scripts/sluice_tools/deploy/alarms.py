"""A provider's alarms, and a small evaluator that replays metrics through their definitions.

Why the definitions look the way they do:
- A metric emitted per batch vanishes while the mapping is disabled (circuit open, paused,
  window closed). So the state alarms use what the rearm emits on *every* run (every 10
  minutes): ``BreakerOpen``, ``Paused``, ``Backlog``, ``MappingEnabled``.
- One rearm datapoint per 10 minutes: a 5-minute period would be empty every other time. The
  periods are 15 minutes or more, so each holds at least one rearm run whatever the
  schedule's jitter, and ``notBreaching`` only covers a rearm that stopped altogether, which
  has its own alarm (``rearm-silent``: missing data *is* the failure there).
- Dimensions are exactly what ``sluice.metrics.emf_document`` emits (Provider and Stage).

``evaluate`` implements CloudWatch's rules for what these alarms use: per-period statistics
(Minimum, Maximum, Sum, Average, SampleCount), M out of N datapoints, the four
missing-data treatments and simple metric math (``m1 * m2``). It is fed datapoints built from
the very EMF documents the runtime writes (``datapoints_from_emf``).
"""

from __future__ import annotations

import ast
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice.metrics import NAMESPACE, dimensions
from sluice.settings import ProviderSettings
from sluice_tools.deploy.names import StageNames

REARM_INTERVAL_S = 600
STATE_PERIOD_S = 900  # > the rearm interval: never an empty period while the rearm runs
CIRCUIT_OPEN_ALARM_MINUTES = 60
PAUSED_WITH_BACKLOG_HOURS = 24

ALARM, OK, INSUFFICIENT = "ALARM", "OK", "INSUFFICIENT_DATA"
REPLAYABLE = ("circuit-open", "paused-with-backlog", "parked", "rearm-silent")


def _dims(settings: ProviderSettings) -> list[dict[str, str]]:
    values = {"Provider": settings.provider, "Stage": settings.stage}
    return [{"Name": d, "Value": values[d]} for d in dimensions(settings.stage)]


def _alarm(name: str, description: str, **props: Any) -> dict[str, Any]:
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "AlarmName": name, "AlarmDescription": description, "TreatMissingData": "notBreaching",
        **props}}


def _ours(settings: ProviderSettings, metric: str) -> dict[str, Any]:
    return {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": _dims(settings)}


def alarm_resources(settings: ProviderSettings, names: StageNames, *, ventilator: str,
                    max_record_age_s: int) -> dict[str, Any]:
    """Logical id -> AWS::CloudWatch::Alarm, named per provider and stage."""
    s = settings
    open_periods = CIRCUIT_OPEN_ALARM_MINUTES * 60 // STATE_PERIOD_S
    return {
        "CircuitOpenAlarm": _alarm(
            names.alarm("circuit-open"),
            f"The circuit has been open (or probing) in {open_periods} consecutive "
            f"{STATE_PERIOD_S // 60}-minute periods (about {CIRCUIT_OPEN_ALARM_MINUTES} "
            "minutes): the provider is down or refusing; records wait on the stream.",
            **_ours(s, "BreakerOpen"), Statistic="Maximum", Period=STATE_PERIOD_S,
            EvaluationPeriods=open_periods, DatapointsToAlarm=open_periods,
            ComparisonOperator="GreaterThanOrEqualToThreshold", Threshold=1),
        "PausedWithBacklogAlarm": _alarm(
            names.alarm("paused-with-backlog"),
            f"Paused by an operator for {PAUSED_WITH_BACKLOG_HOURS} hours while records wait: "
            "they expire with the stream's retention.",
            Metrics=[
                {"Id": "paused", "ReturnData": False, "MetricStat": {
                    "Metric": _ours(s, "Paused"), "Period": 3600, "Stat": "Minimum"}},
                {"Id": "backlog", "ReturnData": False, "MetricStat": {
                    "Metric": _ours(s, "Backlog"), "Period": 3600, "Stat": "Minimum"}},
                {"Id": "waiting", "Expression": "paused * backlog", "ReturnData": True,
                 "Label": "records waiting behind a pause"},
            ],
            EvaluationPeriods=PAUSED_WITH_BACKLOG_HOURS,
            DatapointsToAlarm=PAUSED_WITH_BACKLOG_HOURS,
            ComparisonOperator="GreaterThanThreshold", Threshold=0),
        "ParkedAlarm": _alarm(
            names.alarm("parked"),
            "Records were parked: see the parked queue and the ledger for their reasons.",
            **_ours(s, "Parked"), Statistic="Sum", Period=300, EvaluationPeriods=1,
            ComparisonOperator="GreaterThanThreshold", Threshold=0),
        "IteratorAgeAlarm": _alarm(
            names.alarm("iterator-age"),
            "The oldest unprocessed record is approaching the stream's retention.",
            Namespace="AWS/Lambda", MetricName="IteratorAge", Statistic="Maximum",
            Dimensions=[{"Name": "FunctionName", "Value": ventilator}],
            Period=300, EvaluationPeriods=1, ComparisonOperator="GreaterThanThreshold",
            Threshold=max_record_age_s * 1000 * 0.8),
        "ParkedQueueAlarm": _alarm(
            names.alarm("parked-queue"),
            "The parked queue holds records nobody has handled yet.",
            Namespace="AWS/SQS", MetricName="ApproximateNumberOfMessagesVisible",
            Statistic="Maximum",
            Dimensions=[{"Name": "QueueName", "Value": {"Fn::GetAtt": ["ParkedQueue",
                                                                        "QueueName"]}}],
            Period=300, EvaluationPeriods=1, ComparisonOperator="GreaterThanThreshold",
            Threshold=0),
        "RearmSilentAlarm": _silent(names, s),
    }


def _silent(names: StageNames, s: ProviderSettings) -> dict[str, Any]:
    alarm = _alarm(
        names.alarm("rearm-silent"),
        "The rearm has not reported for 30 minutes: nothing re-enables an open circuit or a "
        "window that opens, and the state alarms are blind.",
        **_ours(s, "MappingEnabled"), Statistic="SampleCount", Period=STATE_PERIOD_S,
        EvaluationPeriods=2, DatapointsToAlarm=2,
        ComparisonOperator="LessThanThreshold", Threshold=1)
    alarm["Properties"]["TreatMissingData"] = "breaching"  # silence is the failure
    return alarm


# -- the evaluator ---------------------------------------------------------------------------

MetricKey = tuple[str, str, tuple[tuple[str, str], ...]]  # namespace, name, sorted dimensions
Datapoints = Mapping[MetricKey, list[tuple[float, float]]]  # (epoch seconds, value)


def metric_key(namespace: str, name: str, dims: Iterable[Mapping[str, Any]]) -> MetricKey:
    return namespace, name, tuple(sorted((d["Name"], str(d["Value"])) for d in dims))


def datapoints_from_emf(documents: Iterable[Mapping[str, Any]]) -> dict[MetricKey, list]:
    """The datapoints CloudWatch extracts from EMF log lines, exactly as it would: one per
    metric per dimension set, with the dimension values read from the document."""
    out: dict[MetricKey, list[tuple[float, float]]] = defaultdict(list)
    for doc in documents:
        meta = doc.get("_aws")
        if not meta:
            continue  # a plain log line
        t = meta["Timestamp"] / 1000
        for directive in meta["CloudWatchMetrics"]:
            for dim_set in directive["Dimensions"]:
                dims = [{"Name": d, "Value": doc[d]} for d in dim_set]
                for metric in directive["Metrics"]:
                    key = metric_key(directive["Namespace"], metric["Name"], dims)
                    out[key].append((t, float(doc[metric["Name"]])))
    return out


def _stat(stat: str, values: list[float]) -> float:
    if stat == "Minimum":
        return min(values)
    if stat == "Maximum":
        return max(values)
    if stat == "Sum":
        return sum(values)
    if stat == "Average":
        return sum(values) / len(values)
    if stat == "SampleCount":
        return float(len(values))
    raise ValueError(f"statistic {stat!r} is not supported by this evaluator")


def _series(points: list[tuple[float, float]], period: int, stat: str) -> dict[int, float]:
    buckets: dict[int, list[float]] = defaultdict(list)
    for t, v in points:
        buckets[int(t // period) * period].append(v)
    return {start: _stat(stat, vs) for start, vs in buckets.items()}


def _expression(expr: str, values: Mapping[str, float | None]) -> float | None:
    """Metric math restricted to + - * / over metric ids and numbers; missing -> missing."""

    def walk(node: ast.AST) -> float | None:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult
                                                      | ast.Div):
            left, right = walk(node.left), walk(node.right)
            if left is None or right is None:
                return None
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            return left / right if right else math.nan
        raise ValueError(f"unsupported metric math in {expr!r}")

    return walk(ast.parse(expr, mode="eval"))


def _breaching(value: float, op: str, threshold: float) -> bool:
    return {
        "GreaterThanThreshold": value > threshold,
        "GreaterThanOrEqualToThreshold": value >= threshold,
        "LessThanThreshold": value < threshold,
        "LessThanOrEqualToThreshold": value <= threshold,
    }[op]


@dataclass
class Replay:
    alarm: str
    states: list[tuple[int, str]] = field(default_factory=list)  # (period end, state)

    @property
    def final(self) -> str:
        return self.states[-1][1] if self.states else INSUFFICIENT

    @property
    def ever_alarm(self) -> bool:
        return any(state == ALARM for _, state in self.states)

    def first(self, state: str) -> int | None:
        return next((t for t, s in self.states if s == state), None)


def _period_values(props: Mapping[str, Any], data: Datapoints) -> tuple[int, dict[int, float]]:
    if "Metrics" in props:
        stats = {m["Id"]: m["MetricStat"] for m in props["Metrics"] if "MetricStat" in m}
        (result,) = [m for m in props["Metrics"] if m.get("ReturnData", True)]
        periods = {st["Period"] for st in stats.values()}
        if len(periods) != 1:
            raise ValueError("every metric of an expression must share one period")
        period = periods.pop()
        series = {i: _series(data.get(metric_key(st["Metric"]["Namespace"],
                                                 st["Metric"]["MetricName"],
                                                 st["Metric"].get("Dimensions", [])), []),
                             period, st["Stat"]) for i, st in stats.items()}
        starts = set().union(*(s.keys() for s in series.values())) if series else set()
        values = {}
        for start in starts:
            v = _expression(result["Expression"], {i: s.get(start) for i, s in series.items()})
            if v is not None:
                values[start] = v
        return period, values
    key = metric_key(props["Namespace"], props["MetricName"], props.get("Dimensions", []))
    return props["Period"], _series(data.get(key, []), props["Period"], props["Statistic"])


def evaluate(props: Mapping[str, Any], data: Datapoints, start: float, end: float) -> Replay:
    """The alarm's state at the end of every period from ``start`` to ``end``."""
    period, values = _period_values(props, data)
    n = props["EvaluationPeriods"]
    m = props.get("DatapointsToAlarm", n)
    op, threshold = props["ComparisonOperator"], props["Threshold"]
    missing_rule = props.get("TreatMissingData", "missing")
    replay = Replay(props.get("AlarmName", "?"))
    state = INSUFFICIENT
    first_end = int(start // period) * period + period
    for period_end in range(first_end, int(end) + 1, period):
        window = [values.get(period_end - period * (i + 1)) for i in range(n)]
        present = [v for v in window if v is not None]
        if missing_rule == "breaching":
            breaches = sum(1 for v in window if v is None or _breaching(v, op, threshold))
            state = ALARM if breaches >= m else OK
        elif missing_rule == "notBreaching":
            breaches = sum(1 for v in present if _breaching(v, op, threshold))
            state = ALARM if breaches >= m else OK
        elif not present:  # "missing": no data at all; "ignore": keep the state
            state = INSUFFICIENT if missing_rule == "missing" else state
        else:
            breaches = sum(1 for v in present if _breaching(v, op, threshold))
            state = ALARM if breaches >= min(m, len(present)) else OK
        replay.states.append((period_end, state))
    return replay
