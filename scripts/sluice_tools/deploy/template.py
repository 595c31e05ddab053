"""The resources template merged into `chalice package --merge-template`, per provider and stage.

Everything Chalice cannot declare: the data resources (from ``sluice_tools.resources``, the
same definitions the local stack creates, kept on stack delete), stage-scoped names (the
bucket's with the account and region, by ``Fn::Sub``, so one template fits any account),
fixed function names, the worker's timeout and reserved concurrency (X), the mapping's extras
and its initial state, exact least-privilege policies (CloudFormation substitutions, no
account or region wildcards), alarms on metrics that exist when they matter, and a dashboard.

Chalice names resources after handlers (``ventilator`` -> ``Ventilator``/``VentilatorRole``,
the stream event ``VentilatorKinesisEventSource``); the merge deep-merges dictionaries, so
these fragments only add or replace what they name. The event's ``Stream`` is replaced with
the same ``Fn::Sub`` form Chalice uses, naming the stage's stream (the decorator names one
stream for every stage).
"""

from __future__ import annotations

import json
from typing import Any

from sluice.metrics import NAMESPACE, dimensions
from sluice.settings import ProviderSettings
from sluice_tools.deploy.alarms import alarm_resources
from sluice_tools.deploy.iam import (
    function_policies,
    mapping_sub_arn,
    split_mapping_statements,
    sub_arn,
)
from sluice_tools.deploy.names import StageNames
from sluice_tools.resources import RETENTION_HOURS, provider_resources, resource_outputs

# Records about to outlive the stream's retention are handed to the on-failure queue (their
# shard and sequence range) a day before the stream would drop them: a circuit open over a long
# weekend loses nothing silently. Retries are otherwise unlimited: the ventilator decides.
MAX_RECORD_AGE_S = (RETENTION_HOURS - 24) * 3600


def logical(handler: str) -> str:
    return "".join(part.capitalize() for part in handler.split("_"))


def stage_settings(settings: ProviderSettings, names: StageNames) -> ProviderSettings:
    """The settings as the deployed functions see them: stage-scoped names, the bucket as
    its ``Fn::Sub`` pattern (resolved by CloudFormation)."""
    return settings.model_copy(update={
        "stage": names.stage, "stream_name": names.stream, "table_name": names.table,
        "result_bucket": names.bucket_sub, "worker_function": names.function("worker"),
        "ventilator_function": names.function("ventilator"), "parked_queue_url": ""})


def merge_template(
    settings: ProviderSettings,
    names: StageNames,
    *,
    handlers: list[str],
    stream_event_handler: str = "ventilator",
    mapping_enabled: bool = False,
) -> dict[str, Any]:
    s = stage_settings(settings, names)
    resources: dict[str, Any] = dict(provider_resources(s))
    ventilator = logical(stream_event_handler)
    event = f"{ventilator}KinesisEventSource"  # Chalice's name for the stream event
    mapping_id = f"{ventilator}{event}"  # the mapping resource SAM generates from that event
    policies = function_policies(s, sub_arn, mapping=mapping_sub_arn(mapping_id))
    mapping_statements: list[dict[str, Any]] = []
    roles = []
    for handler in handlers:
        resources[logical(handler)] = {"Properties": {
            "FunctionName": names.function(handler),
            "Environment": {"Variables": {
                "SLUICE_STAGE": names.stage,
                "SLUICE_STREAM_NAME": {"Ref": "RequestStream"},
                "SLUICE_TABLE_NAME": {"Ref": "Ledger"},
                "SLUICE_RESULT_BUCKET": {"Ref": "Results"},
                "SLUICE_PARKED_QUEUE_URL": {"Ref": "ParkedQueue"},
                "SLUICE_WORKER_FUNCTION": names.function("worker"),
                "SLUICE_VENTILATOR_FUNCTION": names.function(stream_event_handler),
            }},
        }}
        if handler in policies:
            document, moved = split_mapping_statements(policies[handler])
            if moved:
                mapping_statements = moved
                roles.append({"Ref": f"{logical(handler)}Role"})
            resources[f"{logical(handler)}Role"] = {"Properties": {"Policies": [{
                "PolicyName": f"{logical(handler)}Policy", "PolicyDocument": document}]}}
    if mapping_statements:
        # Its own policy: it names the mapping, which needs the function, which needs its role.
        resources["ManageOwnMappingPolicy"] = {
            "Type": "AWS::IAM::Policy",
            "Properties": {"PolicyName": "ManageOwnMapping", "Roles": roles,
                           "PolicyDocument": {"Version": "2012-10-17",
                                              "Statement": mapping_statements}}}
    # The platform caps the worker at X as well, and its timeout is the setting's.
    resources["Worker"]["Properties"].update(
        Timeout=s.worker_timeout_s, ReservedConcurrentExecutions=s.max_concurrency)
    # The mapping is created with the function, after the stream and the table: the
    # function's environment names them (Ref), which orders them first.
    resources[ventilator]["Properties"]["Events"] = {
        event: {"Properties": {
            "Stream": {"Fn::Sub": "arn:${AWS::Partition}:kinesis:${AWS::Region}:"
                                  f"${{AWS::AccountId}}:stream/{names.stream}"},
            # Off until `sluice migrate cutover` (a redeploy keeps whatever state it found).
            "Enabled": mapping_enabled,
            "ParallelizationFactor": s.parallelization_factor,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "MaximumRetryAttempts": -1,
            "BisectBatchOnFunctionError": False,
            "MaximumRecordAgeInSeconds": MAX_RECORD_AGE_S,
            "DestinationConfig": {"OnFailure": {
                "Type": "SQS", "Destination": {"Fn::GetAtt": ["ParkedQueue", "Arn"]}}},
        }},
    }
    resources.update(alarm_resources(s, names, ventilator=names.function(stream_event_handler),
                                     max_record_age_s=MAX_RECORD_AGE_S))
    resources["Dashboard"] = _dashboard(s, names, names.function(stream_event_handler))
    return {"Resources": resources, "Outputs": {
        **resource_outputs(),
        "Stage": {"Value": names.stage},
        "MappingId": {"Value": {"Ref": mapping_id}},
    }}


def _dashboard(s: ProviderSettings, names: StageNames, ventilator: str) -> dict[str, Any]:
    dims = {"Provider": s.provider, "Stage": s.stage}

    def metric_widget(title: str, metrics: list[list[Any]], stat: str, y: int, x: int,
                      period: int = 60) -> dict:
        return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6, "properties": {
            "title": title, "metrics": metrics, "stat": stat, "period": period,
            "region": "${AWS::Region}", "view": "timeSeries"}}

    def ours(name: str) -> list[Any]:
        out: list[Any] = [NAMESPACE, name]
        for d in dimensions(s.stage):
            out += [d, dims[d]]
        return out

    widgets = [
        metric_widget("Batch size (concurrency)", [ours("BatchSize")], "Average", 0, 0),
        metric_widget("Breaker open / paused / window closed (rearm, 1 = yes)",
                      [ours("BreakerOpen"), ours("Paused"), ours("WindowClosed")],
                      "Maximum", 0, 12, period=600),
        metric_widget("p90 latency (ms)", [ours("LatencyP90")], "Maximum", 6, 0),
        metric_widget("Error rate", [ours("ErrorRate")], "Average", 6, 12),
        metric_widget("Iterator age (ms)",
                      [["AWS/Lambda", "IteratorAge", "FunctionName", ventilator]],
                      "Maximum", 12, 0),
        metric_widget("Backlog (records waiting, rearm)", [ours("Backlog")], "Maximum", 12, 12,
                      period=600),
        metric_widget("Fetched / parked per day", [ours("Fetched"), ours("Parked")], "Sum",
                      18, 0, period=86400),
    ]
    return {"Type": "AWS::CloudWatch::Dashboard", "Properties": {
        "DashboardName": {"Fn::Sub": names.dashboard_sub},
        "DashboardBody": {"Fn::Sub": json.dumps({"widgets": widgets})},
    }}
