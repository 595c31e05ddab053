"""Least-privilege IAM, one policy per function and stage, generated from the settings.

- ventilator: reads only its stream, invokes only its worker, manages only its own mapping
  (a ``lambda:FunctionArn`` condition), touches only its table, sends only to its queue;
- worker: reads only its secret (if it has one), writes only its results prefix and its
  ledger items;
- rearm: only its mapping and the control item of its table;
- kickoff: only the day's input prefix, its stream (put) and the kickoff item of its table.
The one wildcard resource is ``lambda:ListEventSourceMappings``, which AWS does not scope.

``arn`` builds ARNs either with CloudFormation substitutions (exact account and region, for
the deployed template) or with explicit values / wildcards (for Chalice's policy files).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sluice.settings import ProviderSettings
from sluice_tools.resources import queue_name

Arn = Callable[[str, str], Any]  # (service, resource) -> ARN (string or Fn::Sub)


def sub_arn(service: str, resource: str) -> Any:
    if service == "s3":
        return {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::{resource}"}
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:"
                       f"${{AWS::AccountId}}:{resource}"}


def literal_arn(region: str = "*", account: str = "*") -> Arn:
    def arn(service: str, resource: str) -> str:
        if service == "s3":
            return f"arn:aws:s3:::{resource}"
        return f"arn:aws:{service}:{region}:{account}:{resource}"

    return arn


def _logs(arn: Arn, function_name: str) -> dict[str, Any]:
    return {"Sid": "OwnLogs", "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": arn("logs", f"log-group:/aws/lambda/{function_name}:*")}


def _own_mapping(arn: Arn, ventilator: str) -> list[dict[str, Any]]:
    return [
        {"Sid": "ListMappings", "Effect": "Allow", "Action": "lambda:ListEventSourceMappings",
         "Resource": "*"},
        {"Sid": "ManageOwnMapping", "Effect": "Allow",
         "Action": ["lambda:GetEventSourceMapping", "lambda:UpdateEventSourceMapping"],
         "Resource": arn("lambda", "event-source-mapping:*"),
         "Condition": {"StringEquals": {
             "lambda:FunctionArn": arn("lambda", f"function:{ventilator}")}}},
    ]


def _leading_keys(*keys: str) -> dict[str, Any]:
    return {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": list(keys)}}


def function_policies(settings: ProviderSettings, arn: Arn) -> dict[str, dict[str, Any]]:
    """Handler name -> IAM policy document."""
    s = settings
    s.require("stream_name", "table_name", "result_bucket", "worker_function",
              "ventilator_function")
    stage_prefix = s.ventilator_function.removesuffix("-ventilator")
    table = arn("dynamodb", f"table/{s.table_name}")
    stream = arn("kinesis", f"stream/{s.stream_name}")

    def doc(*statements: dict[str, Any]) -> dict[str, Any]:
        return {"Version": "2012-10-17", "Statement": list(statements)}

    worker_statements = [
        {"Sid": "WriteOwnResults", "Effect": "Allow", "Action": "s3:PutObject",
         "Resource": arn("s3", f"{s.result_bucket}/{s.result_prefix}/{s.provider}/*")},
        {"Sid": "RecordFetched", "Effect": "Allow", "Action": "dynamodb:UpdateItem",
         "Resource": table},
    ]
    if s.secret_id:
        worker_statements.append(
            {"Sid": "ReadOwnSecret", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
             "Resource": arn("secretsmanager", f"secret:{s.secret_id}-??????")})
    return {
        "ventilator": doc(
            {"Sid": "ReadOwnStream", "Effect": "Allow",
             "Action": ["kinesis:DescribeStream", "kinesis:DescribeStreamSummary",
                        "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards"],
             "Resource": stream},
            {"Sid": "InvokeOwnWorker", "Effect": "Allow", "Action": "lambda:InvokeFunction",
             "Resource": arn("lambda", f"function:{s.worker_function}")},
            *_own_mapping(arn, s.ventilator_function),
            {"Sid": "OwnLedger", "Effect": "Allow",
             "Action": ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem",
                        "dynamodb:UpdateItem", "dynamodb:Query"],
             "Resource": table},
            {"Sid": "ParkToOwnQueue", "Effect": "Allow", "Action": "sqs:SendMessage",
             "Resource": arn("sqs", queue_name(s))},
            _logs(arn, s.ventilator_function),
        ),
        "worker": doc(*worker_statements, _logs(arn, s.worker_function)),
        "rearm": doc(
            *_own_mapping(arn, s.ventilator_function),
            {"Sid": "OwnControlItem", "Effect": "Allow",
             "Action": ["dynamodb:GetItem", "dynamodb:PutItem"], "Resource": table,
             "Condition": _leading_keys("#control")},
            _logs(arn, f"{stage_prefix}-rearm"),
        ),
        "kickoff": doc(
            {"Sid": "ReadDayInputs", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": arn("s3", f"{s.result_bucket}/inputs/{s.provider}/*")},
            {"Sid": "EnqueueOnOwnStream", "Effect": "Allow",
             "Action": ["kinesis:PutRecord", "kinesis:PutRecords"], "Resource": stream},
            {"Sid": "KickoffMarker", "Effect": "Allow",
             "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem"], "Resource": table,
             "Condition": _leading_keys("#kickoff")},
            _logs(arn, f"{stage_prefix}-kickoff"),
        ),
    }
