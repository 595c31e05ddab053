"""Least-privilege IAM, one policy per function and stage, generated from the settings.

- ventilator: reads only its stream, invokes only its worker, manages only its own mapping,
  touches only its table, sends only to its queue;
- worker: reads only its secret (if it has one), reads and writes only its results prefix
  (ListBucket limited to that prefix, so a missing result answers 404 rather than 403),
  and updates only *record* items of its ledger (never ``#control`` or other ``#`` rows);
- rearm: only its mapping, its stream's summary (the real shard count) and the control item;
- kickoff: only the day's input prefix (ListBucket too: a missing file is a 404), its stream
  (put) and the kickoff item of its table.
The one wildcard resource is ``lambda:ListEventSourceMappings``, which AWS does not scope.

Managing the mapping. The Service Authorization Reference for Lambda
(https://docs.aws.amazon.com/service-authorization/latest/reference/list_awslambda.html)
lists lambda:GetEventSourceMapping, UpdateEventSourceMapping and DeleteEventSourceMapping on
the resource type ``eventSourceMapping`` (``arn:${Partition}:lambda:${Region}:${Account}:
event-source-mapping:${UUID}``) with the condition key ``lambda:FunctionArn``. Two forms:
- ``mapping=`` the mapping's exact ARN (the deployed stack: CloudFormation knows the UUID,
  ``Ref`` of the mapping resource): no condition at all, so nothing about how Lambda fills
  ``lambda:FunctionArn`` (qualified or not, present or not) can deny the ventilator its own
  mapping, and no other mapping is granted. The statement then lives in its own
  ``AWS::IAM::Policy`` (the mapping needs the function, which needs its role: no cycle).
- without it (Chalice's policy files, for a plain `chalice deploy` where the UUID does not
  exist yet): any mapping of the account and region whose function is the ventilator
  (``ArnLike`` on the unqualified and qualified function ARN).

``arn`` builds ARNs either with CloudFormation substitutions (exact account and region, for
the deployed template) or with explicit values (Chalice's policy files, resolved at deploy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sluice.settings import ProviderSettings
from sluice_tools.resources import queue_name

Arn = Callable[[str, str], Any]  # (service, resource) -> ARN (string or Fn::Sub)
MAPPING_SID = "ManageOwnMapping"


def sub_arn(service: str, resource: str) -> Any:
    if service == "s3":
        return {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::{resource}"}
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:"
                       f"${{AWS::AccountId}}:{resource}"}


def literal_arn(region: str, account: str, partition: str = "aws") -> Arn:
    def arn(service: str, resource: str) -> str:
        if service == "s3":
            return f"arn:{partition}:s3:::{resource}"
        return f"arn:{partition}:{service}:{region}:{account}:{resource}"

    return arn


def mapping_sub_arn(mapping_logical_id: str) -> dict[str, str]:
    """The exact ARN of the mapping CloudFormation creates (``Ref`` gives its UUID)."""
    return {"Fn::Sub": "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:"
                       f"event-source-mapping:${{{mapping_logical_id}}}"}


def _logs(arn: Arn, function_name: str) -> dict[str, Any]:
    return {"Sid": "OwnLogs", "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": arn("logs", f"log-group:/aws/lambda/{function_name}:*")}


def _own_mapping(arn: Arn, ventilator: str, mapping: Any) -> list[dict[str, Any]]:
    actions = ["lambda:GetEventSourceMapping", "lambda:UpdateEventSourceMapping"]
    if mapping is not None:
        manage = {"Sid": MAPPING_SID, "Effect": "Allow", "Action": actions, "Resource": mapping}
    else:
        function = arn("lambda", f"function:{ventilator}")
        qualified = arn("lambda", f"function:{ventilator}:*")
        manage = {"Sid": MAPPING_SID, "Effect": "Allow", "Action": actions,
                  "Resource": arn("lambda", "event-source-mapping:*"),
                  "Condition": {"ArnLike": {"lambda:FunctionArn": [function, qualified]}}}
    return [{"Sid": "ListMappings", "Effect": "Allow",
             "Action": "lambda:ListEventSourceMappings", "Resource": "*"}, manage]


def _leading_keys(*keys: str) -> dict[str, Any]:
    return {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": list(keys)}}


# Record ids never start with '#'; every row that is not a record does (#control, #stats...).
RECORD_ITEMS_ONLY = {"ForAllValues:StringNotLike": {"dynamodb:LeadingKeys": ["#*"]}}


def _list_prefix(arn: Arn, bucket: str, prefix: str) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": arn("s3", bucket),
            "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}}}


def function_policies(settings: ProviderSettings, arn: Arn, *,
                      mapping: Any = None) -> dict[str, dict[str, Any]]:
    """Handler name -> IAM policy document."""
    s = settings
    s.require("stream_name", "table_name", "result_bucket", "worker_function",
              "ventilator_function")
    stage_prefix = s.ventilator_function.removesuffix("-ventilator")
    table = arn("dynamodb", f"table/{s.table_name}")
    stream = arn("kinesis", f"stream/{s.stream_name}")
    results = f"{s.result_prefix}/{s.provider}/"
    inputs = f"inputs/{s.provider}/"

    def doc(*statements: dict[str, Any]) -> dict[str, Any]:
        return {"Version": "2012-10-17", "Statement": list(statements)}

    worker_statements = [
        # GetObject: the worker looks for today's result before calling the provider.
        {"Sid": "OwnResults", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": arn("s3", f"{s.result_bucket}/{results}*")},
        {"Sid": "ListOwnResults", **_list_prefix(arn, s.result_bucket, results)},
        {"Sid": "RecordFetched", "Effect": "Allow", "Action": "dynamodb:UpdateItem",
         "Resource": table, "Condition": RECORD_ITEMS_ONLY},
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
            *_own_mapping(arn, s.ventilator_function, mapping),
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
            *_own_mapping(arn, s.ventilator_function, mapping),
            {"Sid": "OwnShardCount", "Effect": "Allow",
             "Action": "kinesis:DescribeStreamSummary", "Resource": stream},
            {"Sid": "OwnControlItem", "Effect": "Allow",
             "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
             "Resource": table, "Condition": _leading_keys("#control")},
            _logs(arn, f"{stage_prefix}-rearm"),
        ),
        "kickoff": doc(
            {"Sid": "ReadDayInputs", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": arn("s3", f"{s.result_bucket}/{inputs}*")},
            {"Sid": "ListDayInputs", **_list_prefix(arn, s.result_bucket, inputs)},
            {"Sid": "EnqueueOnOwnStream", "Effect": "Allow",
             "Action": ["kinesis:PutRecord", "kinesis:PutRecords"], "Resource": stream},
            {"Sid": "KickoffMarker", "Effect": "Allow",
             "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem"], "Resource": table,
             "Condition": _leading_keys("#kickoff")},
            _logs(arn, f"{stage_prefix}-kickoff"),
        ),
    }


def split_mapping_statements(document: dict[str, Any]) -> tuple[dict[str, Any], list[dict]]:
    """(the document without its mapping statement, the mapping statements)."""
    keep = [st for st in document["Statement"] if st.get("Sid") != MAPPING_SID]
    moved = [st for st in document["Statement"] if st.get("Sid") == MAPPING_SID]
    return {**document, "Statement": keep}, moved
