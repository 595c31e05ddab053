"""The resources template merged into `chalice package --merge-template`, per provider and stage.

Everything Chalice cannot declare: the data resources (from ``sluice_tools.resources``, the
same definitions the local stack creates), fixed function names, the mapping's extras, exact
least-privilege policies (CloudFormation substitutions, no account or region wildcards),
alarms and a dashboard built from the metrics the ventilator already emits (EMF).

Chalice names resources after handlers (``ventilator`` -> ``Ventilator``/``VentilatorRole``,
the stream event ``VentilatorKinesisEventSource``); the merge deep-merges dictionaries, so
these fragments only add or replace what they name.
"""

from __future__ import annotations

import json
from typing import Any

from sluice.metrics import NAMESPACE
from sluice.settings import ProviderSettings
from sluice_tools.deploy.iam import function_policies, sub_arn
from sluice_tools.resources import RETENTION_HOURS, provider_resources

# Records about to outlive the stream's retention are handed to the on-failure queue (their
# shard and sequence range) a day before the stream would drop them: a circuit open over a long
# weekend loses nothing silently. Retries are otherwise unlimited: the ventilator decides.
MAX_RECORD_AGE_S = (RETENTION_HOURS - 24) * 3600
CIRCUIT_OPEN_ALARM_MINUTES = 60


def logical(handler: str) -> str:
    return "".join(part.capitalize() for part in handler.split("_"))


def merge_template(
    settings: ProviderSettings,
    *,
    app_name: str,
    stage: str,
    handlers: list[str],
    stream_event_handler: str = "ventilator",
) -> dict[str, Any]:
    s = settings
    resources: dict[str, Any] = dict(provider_resources(s))
    policies = function_policies(s, sub_arn)
    for handler in handlers:
        name = f"{app_name}-{stage}-{handler}"
        resources[logical(handler)] = {
            "Properties": {
                "FunctionName": name,
                "Environment": {"Variables": {
                    "SLUICE_PARKED_QUEUE_URL": {"Ref": "ParkedQueue"},
                    "SLUICE_WORKER_FUNCTION": f"{app_name}-{stage}-worker",
                    "SLUICE_VENTILATOR_FUNCTION": f"{app_name}-{stage}-{stream_event_handler}",
                }},
            },
        }
        if handler in policies:
            resources[f"{logical(handler)}Role"] = {"Properties": {"Policies": [{
                "PolicyName": f"{logical(handler)}Policy",
                "PolicyDocument": policies[handler],
            }]}}
    ventilator = logical(stream_event_handler)
    # The mapping is created with the function: the stream and table must exist first.
    resources[ventilator]["DependsOn"] = ["RequestStream", "Ledger"]
    resources[ventilator]["Properties"]["Events"] = {
        f"{ventilator}KinesisEventSource": {"Properties": {
            "ParallelizationFactor": s.parallelization_factor,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "MaximumRetryAttempts": -1,
            "BisectBatchOnFunctionError": False,
            "MaximumRecordAgeInSeconds": MAX_RECORD_AGE_S,
            "DestinationConfig": {"OnFailure": {
                "Type": "SQS", "Destination": {"Fn::GetAtt": ["ParkedQueue", "Arn"]}}},
        }},
    }
    resources.update(_alarms(s, f"{app_name}-{stage}-{stream_event_handler}"))
    resources["Dashboard"] = _dashboard(s, stage, f"{app_name}-{stage}-{stream_event_handler}")
    return {"Resources": resources, "Outputs": {
        "StreamName": {"Value": {"Ref": "RequestStream"}},
        "LedgerTable": {"Value": {"Ref": "Ledger"}},
        "ResultsBucket": {"Value": {"Ref": "Results"}},
        "ParkedQueueUrl": {"Value": {"Ref": "ParkedQueue"}},
    }}


def _alarm(name: str, description: str, **props: Any) -> dict[str, Any]:
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "AlarmName": name, "AlarmDescription": description, "TreatMissingData": "notBreaching",
        **props}}


def _alarms(s: ProviderSettings, ventilator: str) -> dict[str, Any]:
    provider_dim = [{"Name": "Provider", "Value": s.provider}]
    return {
        "IteratorAgeAlarm": _alarm(
            f"sluice-{s.provider}-iterator-age",
            "The oldest unprocessed record is approaching the stream's retention.",
            Namespace="AWS/Lambda", MetricName="IteratorAge", Statistic="Maximum",
            Dimensions=[{"Name": "FunctionName", "Value": ventilator}],
            Period=300, EvaluationPeriods=1, ComparisonOperator="GreaterThanThreshold",
            Threshold=MAX_RECORD_AGE_S * 1000 * 0.8),
        "CircuitOpenAlarm": _alarm(
            f"sluice-{s.provider}-circuit-open",
            f"The circuit has been open for over {CIRCUIT_OPEN_ALARM_MINUTES} minutes.",
            Namespace=NAMESPACE, MetricName="BreakerOpen", Statistic="Minimum",
            Dimensions=provider_dim, Period=300,
            EvaluationPeriods=CIRCUIT_OPEN_ALARM_MINUTES // 5,
            ComparisonOperator="GreaterThanOrEqualToThreshold", Threshold=1),
        "ParkedAlarm": _alarm(
            f"sluice-{s.provider}-parked",
            "Records were parked: see the parked queue and the ledger for their reasons.",
            Namespace="AWS/SQS", MetricName="ApproximateNumberOfMessagesVisible",
            Statistic="Maximum",
            Dimensions=[{"Name": "QueueName", "Value": {"Fn::GetAtt": ["ParkedQueue",
                                                                        "QueueName"]}}],
            Period=300, EvaluationPeriods=1, ComparisonOperator="GreaterThanThreshold",
            Threshold=0),
    }


def _dashboard(s: ProviderSettings, stage: str, ventilator: str) -> dict[str, Any]:
    def metric_widget(title: str, metrics: list[list[Any]], stat: str, y: int, x: int) -> dict:
        return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6, "properties": {
            "title": title, "metrics": metrics, "stat": stat, "period": 60,
            "region": "${AWS::Region}", "view": "timeSeries"}}

    def ours(name: str) -> list[Any]:
        return [NAMESPACE, name, "Provider", s.provider]

    widgets = [
        metric_widget("Batch size (concurrency)", [ours("BatchSize")], "Average", 0, 0),
        metric_widget("Breaker open (1 = open)", [ours("BreakerOpen")], "Maximum", 0, 12),
        metric_widget("p90 latency (ms)", [ours("LatencyP90")], "Maximum", 6, 0),
        metric_widget("Error rate", [ours("ErrorRate")], "Average", 6, 12),
        metric_widget("Iterator age (ms)",
                      [["AWS/Lambda", "IteratorAge", "FunctionName", ventilator]],
                      "Maximum", 12, 0),
        {**metric_widget("Fetched / parked per day", [ours("Fetched"), ours("Parked")], "Sum",
                         12, 12), },
    ]
    widgets[-1]["properties"]["period"] = 86400
    return {"Type": "AWS::CloudWatch::Dashboard", "Properties": {
        "DashboardName": f"sluice-{s.provider}-{stage}",
        "DashboardBody": {"Fn::Sub": json.dumps({"widgets": widgets})},
    }}
