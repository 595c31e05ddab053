"""Each function's IAM policy, checked against the AWS calls its code really makes.

The demo provider runs on the local stack (moto's server, the local Lambda service, the fake
provider over HTTP): rearm, kickoff (no input file yet, then a file), ventilator (records, an
undecodable payload, a warm container) and, through the ventilator's Invoke, the worker. A
botocore hook on the default session (``before-parameter-build``: every boto3 client of the
runtime is made from it) records each call with the function that made it: the local Lambda
service runs a function in a thread named ``lambda-<function name>``; calls from a function's
own helper threads (the ventilator's fan-out) belong to the function the test is driving.

Each call becomes an IAM request (action, resource ARN, condition keys such as
``dynamodb:LeadingKeys``) and is evaluated against the policy ``deploy.iam`` generates, in both
forms: the stack's (the mapping's exact ARN) and Chalice's policy files (``ArnLike`` on
``lambda:FunctionArn``). Then the other way round: every grant, at the grain of (action, row
kind) for DynamoDB (``#control``, ``#stats``, ``#kickoff``, ``#malformed``, or ``record`` for
record ids), must have been used by the run, or be in ``NOT_CALLED_BY_THE_CODE`` with its reason.

moto enforces no IAM: the evaluator here implements the policy elements ``deploy.iam`` uses
(Allow statements; ``*``/``?`` wildcards; StringEquals, StringLike, StringNotLike, ArnLike, with
ForAllValues). What only AWS proves (its own evaluation, and which condition keys Lambda fills
for the mapping's actions) is for ``sluice smoke``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import pytest

from sluice.clock import local_day
from sluice_tools.deploy.iam import function_policies, literal_arn
from sluice_tools.fake_provider import FakeProvider, PercentBehaviour
from sluice_tools.local.events import KinesisItem, kinesis_event, scheduled_event
from sluice_tools.local.lambda_api import LambdaApiServer
from sluice_tools.local.lambda_service import ACCOUNT, LambdaService
from sluice_tools.local.moto import stack_environment
from sluice_tools.local.provider_app import load_provider
from sluice_tools.local.stack import DeployedProvider, deploy_provider

REGION = "us-east-1"  # the local stack's (moto's and the local Lambda service's)
HANDLERS = ("ventilator", "worker", "rearm", "kickoff")
LOGS = {("logs:CreateLogGroup", ""), ("logs:CreateLogStream", ""), ("logs:PutLogEvents", "")}

# Granted, and never called by the function's code: each with why it is granted anyway.
NOT_CALLED_BY_THE_CODE: dict[str, dict[tuple[str, str], str]] = {
    "ventilator": {
        **{grant: "the Lambda runtime writes the function's log" for grant in LOGS},
        **{(f"kinesis:{a}", ""): "the event source mapping reads the stream with the "
           "function's role" for a in ("DescribeStream", "DescribeStreamSummary", "GetRecords",
                                       "GetShardIterator", "ListShards")},
    },
    "worker": {
        **{grant: "the Lambda runtime writes the function's log" for grant in LOGS},
        ("s3:ListBucket", ""): "never called: it makes S3 answer HeadObject on a missing result "
                               "with 404, not 403",
    },
    "rearm": {grant: "the Lambda runtime writes the function's log" for grant in LOGS},
    "kickoff": {
        **{grant: "the Lambda runtime writes the function's log" for grant in LOGS},
        ("s3:ListBucket", ""): "makes a missing input answer 404; called only to tell a 403 "
                               "apart (sources.ids_from_bucket), which moto never answers",
    },
}


# -- what the code calls, as IAM requests --------------------------------------------------------

@dataclass(frozen=True)
class Call:
    function: str  # the handler that made it
    action: str  # the IAM action, e.g. dynamodb:GetItem
    resource: str  # the ARN IAM evaluates (or "*")
    context: tuple[tuple[str, tuple[str, ...]], ...] = ()  # condition keys and their values

    @property
    def keys(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.context}

    @property
    def scope(self) -> str:
        """The row kind for DynamoDB: ``#control``, ``#stats``... or ``record``; else ''."""
        leading = self.keys.get("dynamodb:LeadingKeys")
        if leading is None:
            return ""
        kinds = {pk if pk.startswith("#") else "record" for pk in leading}
        assert len(kinds) == 1, f"one call on several kinds of row: {self}"
        return kinds.pop()

    def __str__(self) -> str:
        return f"{self.function}: {self.action} on {self.resource} {self.keys or ''}"


def arn(service: str, resource: str) -> str:
    return literal_arn(REGION, ACCOUNT)(service, resource)


def _function_arn(name: str) -> str:
    return name if name.startswith("arn:") else arn("lambda", f"function:{name}")


def _pk_in_key_condition(params: dict[str, Any]) -> list[str]:
    bound = re.search(r"\bpk\s*=\s*(:\w+)", params.get("KeyConditionExpression", ""))
    return [params["ExpressionAttributeValues"][bound.group(1)]["S"]] if bound else []


def iam_requests(service: str, operation: str, params: dict[str, Any], *,
                 mapping_function: str) -> Iterator[tuple[str, str, dict[str, list[str]]]]:
    """(action, resource, condition keys) IAM evaluates for one API call."""
    if service == "dynamodb":
        if operation == "BatchGetItem":
            for table, spec in params["RequestItems"].items():
                yield ("dynamodb:BatchGetItem", arn("dynamodb", f"table/{table}"),
                       {"dynamodb:LeadingKeys": [k["pk"]["S"] for k in spec["Keys"]]})
            return
        table = arn("dynamodb", f"table/{params['TableName']}")
        if operation in ("GetItem", "PutItem", "UpdateItem", "DeleteItem"):
            key = params.get("Key") or params["Item"]
            yield f"dynamodb:{operation}", table, {"dynamodb:LeadingKeys": [key["pk"]["S"]]}
        elif operation == "Query":
            yield "dynamodb:Query", table, {"dynamodb:LeadingKeys": _pk_in_key_condition(params)}
        else:
            yield f"dynamodb:{operation}", table, {}
    elif service == "kinesis":
        yield f"kinesis:{operation}", arn("kinesis", f"stream/{params['StreamName']}"), {}
    elif service == "s3":
        bucket = params["Bucket"]
        if operation in ("GetObject", "HeadObject"):  # HeadObject is authorized by GetObject
            yield "s3:GetObject", arn("s3", f"{bucket}/{params['Key']}"), {}
        elif operation == "PutObject":
            yield "s3:PutObject", arn("s3", f"{bucket}/{params['Key']}"), {}
        elif operation in ("ListObjectsV2", "ListObjects"):
            yield "s3:ListBucket", arn("s3", bucket), {"s3:prefix": [params.get("Prefix", "")]}
        else:
            yield f"s3:{operation}", "?", {}
    elif service == "lambda":
        if operation == "Invoke":
            yield "lambda:InvokeFunction", _function_arn(params["FunctionName"]), {}
        elif operation == "ListEventSourceMappings":
            yield "lambda:ListEventSourceMappings", "*", {}
        elif operation in ("GetEventSourceMapping", "UpdateEventSourceMapping"):
            # As the Service Authorization Reference's action rows read: the mapping's ARN,
            # and lambda:FunctionArn (the function the mapping invokes).
            yield (f"lambda:{operation}", arn("lambda", f"event-source-mapping:{params['UUID']}"),
                   {"lambda:FunctionArn": [mapping_function]})
        else:
            yield f"lambda:{operation}", "?", {}
    elif service == "sqs":
        queue = params["QueueUrl"].rstrip("/").rsplit("/", 1)[-1]
        action = "SendMessage" if operation == "SendMessageBatch" else operation
        yield f"sqs:{action}", arn("sqs", queue), {}
    elif service == "secretsmanager":
        yield ("secretsmanager:GetSecretValue",
               arn("secretsmanager", f"secret:{params['SecretId']}-AbCdEf"), {})
    else:
        yield f"{service}:{operation}", "?", {}


@dataclass
class CallRecorder:
    """A ``before-parameter-build`` handler: each call, attributed to the function making it."""

    by_thread: dict[str, str]  # thread name -> handler
    mapping_function: str
    calls: list[Call] = field(default_factory=list)
    driving: str | None = None  # the handler the test is running now
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        function = self.by_thread.get(threading.current_thread().name, self.driving)
        if function is None:
            return  # the test's own set-up (an input file), not a function's call
        service = model.service_model.service_name
        with self._lock:
            for action, resource, keys in iam_requests(
                    service, model.name, params, mapping_function=self.mapping_function):
                context = tuple((k, tuple(v)) for k, v in sorted(keys.items()))
                self.calls.append(Call(function, action, resource, context))


# -- the policy evaluator ------------------------------------------------------------------------

def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _like(value: str, pattern: str) -> bool:
    """IAM's wildcards: ``*`` any run of characters, ``?`` one character."""
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


_TESTS = {
    "StringEquals": lambda v, expected: v in expected,
    "StringLike": lambda v, expected: any(_like(v, p) for p in expected),
    "ArnLike": lambda v, expected: any(_like(v, p) for p in expected),
    "StringNotLike": lambda v, expected: not any(_like(v, p) for p in expected),
}
_NEGATED = {"StringNotLike"}


def _condition(operator: str, key: str, expected: Any, context: dict[str, list[str]]) -> bool:
    qualifier, _, base = operator.rpartition(":")
    if base not in _TESTS or qualifier not in ("", "ForAllValues", "ForAnyValue"):
        raise AssertionError(f"the evaluator does not know {operator}: teach it first")
    test, expected = _TESTS[base], _listed(expected)
    values = context.get(key)
    if qualifier == "ForAllValues":  # true for every value in the request (and for none)
        return all(test(v, expected) for v in values or [])
    if qualifier == "ForAnyValue":
        return any(test(v, expected) for v in values or [])
    if values is None:  # a key absent from the request: only a negated operator holds
        return base in _NEGATED
    return any(test(v, expected) for v in values)


def _statement_allows(statement: dict[str, Any], call: Call) -> bool:
    assert statement["Effect"] == "Allow"
    if not any(_like(call.action.lower(), a.lower()) for a in _listed(statement["Action"])):
        return False
    if not any(_like(call.resource, r) for r in _listed(statement["Resource"])):
        return False
    return all(_condition(op, key, expected, call.keys)
               for op, block in statement.get("Condition", {}).items()
               for key, expected in block.items())


def allowed(policy: dict[str, Any], call: Call) -> bool:
    return any(_statement_allows(st, call) for st in policy["Statement"])


def grants(policy: dict[str, Any]) -> set[tuple[str, str]]:
    """(action, row kind) for DynamoDB actions, (action, '') for the others. A DynamoDB grant
    without a LeadingKeys condition is (action, '*'): no call ever uses that, so it fails."""
    granted: set[tuple[str, str]] = set()
    for st in policy["Statement"]:
        condition = st.get("Condition", {})
        for action in _listed(st["Action"]):
            if not action.startswith("dynamodb:"):
                granted.add((action, ""))
            elif "ForAllValues:StringEquals" in condition:
                rows = condition["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"]
                granted |= {(action, row) for row in rows}
            elif condition == {"ForAllValues:StringNotLike": {"dynamodb:LeadingKeys": ["#*"]}}:
                granted.add((action, "record"))
            else:
                granted.add((action, "*"))
    return granted


# -- the run --------------------------------------------------------------------------------------

class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now


@dataclass
class Run:
    deployed: DeployedProvider
    calls: list[Call]

    def policies(self, form: str) -> dict[str, dict[str, Any]]:
        uuid = self.deployed.mapping_uuids[0]
        mapping = arn("lambda", f"event-source-mapping:{uuid}") if form == "stack" else None
        return function_policies(self.deployed.settings, literal_arn(REGION, ACCOUNT),
                                 mapping=mapping)

    def of(self, handler: str) -> list[Call]:
        return [c for c in self.calls if c.function == handler]


@pytest.fixture(scope="module")
def run(moto_server) -> Iterator[Run]:
    moto_server.reset()
    clock = Clock(datetime(2026, 11, 27, 9, 0, tzinfo=UTC))
    lambdas = LambdaService(update_delay_s=0.0)
    api = LambdaApiServer(lambdas).start()
    zone = ZoneInfo("Europe/London")  # the demo provider's timezone
    provider = FakeProvider(PercentBehaviour(seed=7), day=lambda: local_day(clock(), zone)).start()
    # Every client of the runtime is boto3.client(...): made from the default session, whose
    # event emitter they share.
    events = boto3._get_default_session().events
    recorder: CallRecorder | None = None
    with pytest.MonkeyPatch.context() as env:
        for key, value in stack_environment(moto_server.url, api.url).items():
            env.setenv(key, value)
        try:
            deployed = deploy_provider(load_provider("demo"), lambdas, api_base_url=provider.url,
                                       overrides={"latency_threshold_ms": 600}, clock=clock,
                                       emit=lambda doc: None,
                                       function_response_types=["ReportBatchItemFailures"])
            # The stack sets the parked queue's URL; the local deploy leaves it out.
            runtime = deployed.runtime
            runtime.settings = runtime.settings.model_copy(
                update={"parked_queue_url": deployed.resources["ParkedQueue"]})
            names = deployed.functions
            recorder = CallRecorder(
                {f"lambda-{name}": handler for handler, name in names.items()},
                mapping_function=_function_arn(names["ventilator"]))
            events.register("before-parameter-build", recorder)
            _scenario(deployed, lambdas, recorder, clock)
        finally:
            if recorder is not None:
                events.unregister("before-parameter-build", recorder)
            provider.stop()
            api.stop()
    yield Run(deployed, recorder.calls)


def _scenario(deployed: DeployedProvider, lambdas: LambdaService, recorder: CallRecorder,
              clock: Clock) -> None:
    names, s = deployed.functions, deployed.settings
    day = local_day(clock(), s.zone)
    uuid = deployed.mapping_uuids[0]
    sequence = iter(range(1000, 2000))

    def invoke(handler: str, event: dict[str, Any]) -> Any:
        recorder.driving = handler
        try:
            result = lambdas.invoke(names[handler], event)
        finally:
            recorder.driving = None
        assert not result.function_error, (handler, result.payload)
        return json.loads(result.payload)

    def tick(handler: str) -> dict[str, Any]:
        return invoke(handler, scheduled_event(REGION, names[handler], "2026-11-27T09:00:00Z"))

    def delivery(*payloads: bytes) -> dict[str, Any]:
        return kinesis_event(deployed.stream_arn, [
            KinesisItem("shardId-000000000000", str(next(sequence)), "pk", p, clock())
            for p in payloads])

    assert tick("rearm")["problems"] == []  # a fresh table: writes #control; reads the backlog
    assert tick("kickoff")["action"] == "none"  # no input yet: claims, reads, releases
    boto3.client("s3").put_object(Bucket=s.result_bucket, Key=f"inputs/demo/{day}.txt",
                                  Body=b"k-1\nk-2\nk-3\n")
    assert tick("kickoff")["action"] == "enqueued"  # claims, reads, puts, advances, finishes
    records = [json.dumps({"record_id": f"r-{i}"}).encode() for i in range(3)]
    answer = invoke("ventilator", delivery(*records, b"not json: parked at once"))
    assert answer == {"batchItemFailures": []}
    # A warm container reads its mapping by UUID; a mapping changed by hand is converged.
    lambdas.update_mapping(uuid, {"BatchSize": 3})
    answer = invoke("ventilator", delivery(json.dumps({"record_id": "r-9"}).encode()))
    assert answer == {"batchItemFailures": []}
    lambdas.update_mapping(uuid, {"BatchSize": 2})
    assert tick("rearm")["problems"] == []


# -- the checks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("handler", HANDLERS)
@pytest.mark.parametrize("form", ["stack", "chalice"])
def test_the_policy_allows_every_call_the_function_makes(run, form, handler):
    policy = run.policies(form)[handler]
    calls = run.of(handler)
    assert calls, f"the run made no call as {handler}"
    denied = sorted({str(c) for c in calls if not allowed(policy, c)})
    assert denied == [], "denied on AWS:\n" + "\n".join(denied)


@pytest.mark.parametrize("handler", HANDLERS)
@pytest.mark.parametrize("form", ["stack", "chalice"])
def test_the_policy_grants_nothing_beyond_the_calls_and_the_documented_list(run, form, handler):
    used = {(c.action, c.scope) for c in run.of(handler)}
    unused = grants(run.policies(form)[handler]) - used
    assert unused == set(NOT_CALLED_BY_THE_CODE[handler]), (
        f"granted, never called and not documented: "
        f"{sorted(unused - set(NOT_CALLED_BY_THE_CODE[handler]))}; documented but called or "
        f"not granted: {sorted(set(NOT_CALLED_BY_THE_CODE[handler]) - unused)}")


def test_the_run_covers_each_kind_of_row_each_function_touches(run):
    """What the checks above rest on: the run exercised these paths (a scenario that stopped
    doing them would make the first check pass vacuously)."""
    made = {h: {(c.action, c.scope) for c in run.of(h)} for h in HANDLERS}
    assert {("dynamodb:GetItem", "#control"), ("dynamodb:PutItem", "#control"),
            ("dynamodb:GetItem", "#stats"), ("dynamodb:GetItem", "#kickoff"),
            ("lambda:GetEventSourceMapping", ""),
            ("lambda:UpdateEventSourceMapping", "")} <= made["rearm"]
    assert {("dynamodb:UpdateItem", "#kickoff"), ("s3:GetObject", ""),
            ("kinesis:PutRecords", "")} == made["kickoff"]
    assert {("dynamodb:BatchGetItem", "record"), ("dynamodb:UpdateItem", "record"),
            ("dynamodb:UpdateItem", "#stats"), ("dynamodb:PutItem", "#malformed"),
            ("dynamodb:GetItem", "#control"), ("dynamodb:PutItem", "#control"),
            ("sqs:SendMessage", ""), ("lambda:InvokeFunction", ""),
            ("lambda:GetEventSourceMapping", ""),
            ("lambda:UpdateEventSourceMapping", "")} <= made["ventilator"]
    assert {("dynamodb:UpdateItem", "record"), ("s3:GetObject", ""),
            ("s3:PutObject", "")} == made["worker"]


def test_the_evaluator_denies_what_iam_denies():
    """The checks above are only as good as the evaluator: it must refuse a row, an action, a
    table or a function that the statement does not name."""
    table = arn("dynamodb", "table/t")

    def call(action: str, rows: list[str], resource: str = table) -> Call:
        return Call("f", action, resource, (("dynamodb:LeadingKeys", tuple(rows)),))

    control = {"Statement": [{"Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": table,
                              "Condition": {"ForAllValues:StringEquals": {
                                  "dynamodb:LeadingKeys": ["#control"]}}}]}
    assert allowed(control, call("dynamodb:GetItem", ["#control"]))
    assert not allowed(control, call("dynamodb:GetItem", ["#stats"]))
    assert not allowed(control, call("dynamodb:GetItem", ["#control", "r-1"]))
    assert not allowed(control, call("dynamodb:PutItem", ["#control"]))
    assert not allowed(control, call("dynamodb:GetItem", ["#control"], table + "-2"))
    records = {"Statement": [{"Effect": "Allow", "Action": "dynamodb:BatchGetItem",
                              "Resource": table, "Condition": {"ForAllValues:StringNotLike": {
                                  "dynamodb:LeadingKeys": ["#*"]}}}]}
    assert allowed(records, call("dynamodb:BatchGetItem", ["r-1", "r-2"]))
    assert not allowed(records, call("dynamodb:BatchGetItem", ["r-1", "#control"]))
    mine = arn("lambda", "function:v")
    mapping = {"Statement": [{"Effect": "Allow", "Action": "lambda:UpdateEventSourceMapping",
                              "Resource": arn("lambda", "event-source-mapping:*"),
                              "Condition": {"ArnLike": {"lambda:FunctionArn": [mine,
                                                                               f"{mine}:*"]}}}]}
    update = arn("lambda", "event-source-mapping:u-1")

    def on(function: str | None) -> Call:
        keys = (("lambda:FunctionArn", (function,)),) if function else ()
        return Call("f", "lambda:UpdateEventSourceMapping", update, keys)

    assert allowed(mapping, on(mine)) and allowed(mapping, on(f"{mine}:live"))
    assert not allowed(mapping, on(arn("lambda", "function:v2")))
    assert not allowed(mapping, on(None))  # the key absent: ArnLike does not hold
