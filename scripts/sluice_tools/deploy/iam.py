"""Least-privilege IAM, one policy per function and stage, generated from the settings.

Each DynamoDB grant names the API actions its function's code calls and, through a
``dynamodb:LeadingKeys`` condition on the partition key, the rows it calls them on (record ids
never start with ``#``; every other row does). ``tests/functional/test_iam_calls.py`` records
every AWS call each function makes on the local stack and checks it against these documents:

- ventilator: reads only its stream (the event source mapping reads it with this role), invokes
  only its worker, manages only its own mapping, sends only to its queue; in its table:
  BatchGetItem and UpdateItem on record items (triage, claim, verdicts), GetItem and PutItem
  on ``#control`` (the breaker's state, optimistic lock), UpdateItem on ``#stats`` (the day's
  counters, ADD) and PutItem on ``#malformed`` (undecodable payloads, parked);
- worker: reads only its secret (if it has one), reads and writes only its results prefix
  (ListBucket limited to that prefix, so a missing result answers 404 rather than 403),
  and UpdateItem on record items only (marks its record fetched);
- rearm: only its mapping and its stream's summary (the real shard count); in its table
  GetItem and PutItem on ``#control``, and GetItem on ``#stats`` and ``#kickoff`` (the
  backlog: ``DayCounts.get`` adds the ad-hoc count and the kickoff marker's ``put``);
- kickoff: only the day's input prefix (ListBucket too: a missing file is a 404), PutRecords
  on its stream, and UpdateItem on ``#kickoff`` only (claim, progress, release, finish: all
  conditional updates of the day's marker).
The one wildcard resource is ``lambda:ListEventSourceMappings``, which AWS does not scope.

Managing the mapping. The stored copies of the Service Authorization Reference for Lambda
(https://docs.aws.amazon.com/service-authorization/latest/reference/list_awslambda.html) are
partial. Data generated from it lists lambda:GetEventSourceMapping, UpdateEventSourceMapping
and DeleteEventSourceMapping on the resource type ``eventSourceMapping`` (required;
``arn:${Partition}:lambda:${Region}:${Account}:event-source-mapping:${UUID}``) with
``lambda:FunctionArn`` in the actions' condition-keys column (the resource type's own row lists
none). Older versions of the Lambda developer guide scoped Update and Delete to the mapping but
listed GetEventSourceMapping on ``*`` with no condition. Two forms:
- ``mapping=`` the mapping's exact ARN (the deployed stack: CloudFormation knows the UUID,
  ``Ref`` of the mapping resource): no condition at all, so whether or not Lambda sends
  ``lambda:FunctionArn`` with these requests, and however it fills it (qualified or not),
  nothing can deny the ventilator its own mapping, and no other mapping is granted. The
  statement lives in its own ``AWS::IAM::Policy`` (the mapping needs the function, which needs
  its role: no cycle).
- without it (Chalice's policy files, for a plain `chalice deploy` where the UUID does not
  exist yet): ``event-source-mapping:*`` (any mapping of the account and region) with
  ``ArnLike`` ``lambda:FunctionArn`` on the ventilator's unqualified and qualified ARN: this
  relies on Lambda setting that key for these actions, as their rows list it.
Update is scoped to the mapping by every source; Get is covered by both forms as long as it is
evaluated on the mapping's ARN (under the older guide's ``*``-only row neither would cover it).
Only a real account evaluates these (moto enforces no IAM), and no `sluice smoke` check fails
on a denial of them: see the README's IAM section for the log lines that show one.

``arn`` builds ARNs either with CloudFormation substitutions (exact account and region, for
the deployed template) or with explicit values (Chalice's policy files, resolved at deploy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sluice.control import CONTROL_KEY
from sluice.day_counts import STATS_PK
from sluice.kickoff_marker import KICKOFF_PK
from sluice.malformed import MALFORMED_PK
from sluice.settings import ProviderSettings
from sluice_tools.resources import queue_name

Arn = Callable[[str, str], Any]  # (service, resource) -> ARN (string or Fn::Sub)
MAPPING_SID = "ManageOwnMapping"
CONTROL_PK = CONTROL_KEY["pk"]["S"]  # "#control"


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


def _items(sid: str, table: Any, actions: list[str], condition: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB ``actions`` on the rows of ``table`` that ``condition`` names (never all)."""
    named = [f"dynamodb:{a}" for a in actions]
    return {"Sid": sid, "Effect": "Allow", "Action": named if len(named) > 1 else named[0],
            "Resource": table, "Condition": condition}


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
        # Ledger.complete, after the result is stored.
        _items("RecordFetched", table, ["UpdateItem"], RECORD_ITEMS_ONLY),
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
            # Ledger.lookup (BatchGetItem); claim, complete, fail, release, settle_failure.
            _items("RecordLedger", table, ["BatchGetItem", "UpdateItem"], RECORD_ITEMS_ONLY),
            # ControlStore.load / update (a conditional PutItem: the optimistic lock).
            _items("ControlItem", table, ["GetItem", "PutItem"], _leading_keys(CONTROL_PK)),
            # DayCounts.add: one ADD per delivery.
            _items("DayCounts", table, ["UpdateItem"], _leading_keys(STATS_PK)),
            # MalformedStore.park: an undecodable payload, keyed by its stream position.
            _items("ParkMalformed", table, ["PutItem"], _leading_keys(MALFORMED_PK)),
            {"Sid": "ParkToOwnQueue", "Effect": "Allow", "Action": "sqs:SendMessage",
             "Resource": arn("sqs", queue_name(s))},
            _logs(arn, s.ventilator_function),
        ),
        "worker": doc(*worker_statements, _logs(arn, s.worker_function)),
        "rearm": doc(
            *_own_mapping(arn, s.ventilator_function, mapping),
            {"Sid": "OwnShardCount", "Effect": "Allow",
             "Action": "kinesis:DescribeStreamSummary", "Resource": stream},
            # ControlStore.load / update (a conditional PutItem: the optimistic lock).
            _items("OwnControlItem", table, ["GetItem", "PutItem"], _leading_keys(CONTROL_PK)),
            # The Backlog metric: DayCounts.get reads the day's #stats and #kickoff rows.
            _items("DayBacklog", table, ["GetItem"], _leading_keys(STATS_PK, KICKOFF_PK)),
            _logs(arn, f"{stage_prefix}-rearm"),
        ),
        "kickoff": doc(
            {"Sid": "ReadDayInputs", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": arn("s3", f"{s.result_bucket}/{inputs}*")},
            {"Sid": "ListDayInputs", **_list_prefix(arn, s.result_bucket, inputs)},
            {"Sid": "EnqueueOnOwnStream", "Effect": "Allow", "Action": "kinesis:PutRecords",
             "Resource": stream},
            # KickoffMarker.start, advance, release, finish: conditional UpdateItems only.
            _items("KickoffMarker", table, ["UpdateItem"], _leading_keys(KICKOFF_PK)),
            _logs(arn, f"{stage_prefix}-kickoff"),
        ),
    }


def split_mapping_statements(document: dict[str, Any]) -> tuple[dict[str, Any], list[dict]]:
    """(the document without its mapping statement, the mapping statements)."""
    keep = [st for st in document["Statement"] if st.get("Sid") != MAPPING_SID]
    moved = [st for st in document["Statement"] if st.get("Sid") == MAPPING_SID]
    return {**document, "Statement": keep}, moved
