"""Deploy, proven offline: the packaged stack lints, translates, creates in moto's
CloudFormation with everything configured as intended, and its IAM is least privilege."""

import fnmatch
import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from sluice_tools.cli import main
from sluice_tools.deploy.iam import function_policies, literal_arn
from sluice_tools.deploy.package import DeployRefused, deploy, package, plan
from sluice_tools.provider_config import provider_names, provider_settings

CFN_LINT = Path(sys.executable).with_name("cfn-lint")


@pytest.fixture(scope="module", params=provider_names())
def packaged(request, tmp_path_factory):
    """Every provider, planned and packaged for its dev stage."""
    the_plan = plan(request.param, "dev")
    return the_plan, package(the_plan, tmp_path_factory.mktemp("pkg"))


def test_packaged_template_passes_cfn_lint(packaged):
    _, sam = packaged
    done = subprocess.run([str(CFN_LINT), str(sam)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mapping_extras_and_function_names_are_merged(packaged):
    the_plan, sam = packaged
    name = the_plan.settings.provider
    resources = json.loads(sam.read_text())["Resources"]
    event = resources["Ventilator"]["Properties"]["Events"]["VentilatorKinesisEventSource"]
    props = event["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["MaximumRetryAttempts"] == -1 and props["BisectBatchOnFunctionError"] is False
    assert props["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["ParkedQueue", "Arn"]}
    assert resources["Ventilator"]["DependsOn"] == ["RequestStream", "Ledger"]
    assert resources["Worker"]["Properties"]["FunctionName"] == f"sluice-{name}-dev-worker"
    assert resources["RequestStream"]["Properties"]["RetentionPeriodHours"] == 168
    assert {"IteratorAgeAlarm", "CircuitOpenAlarm", "ParkedAlarm", "Dashboard"} <= set(resources)


def test_deploy_refuses_a_fan_out_above_x():
    with pytest.raises(DeployRefused, match="exceeds max_concurrency"):
        plan("demo", "dev", overrides={"max_concurrency": 5})


def test_dry_run_deploys_nothing(capsys):
    assert main(["deploy", "demo", "--stage", "dev", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stack"] == "sluice-demo-dev" and "VentilatorRole" in out["packaged_resources"]


def test_the_stack_creates_in_moto_as_intended(packaged, aws, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", aws.moto.url)  # moto's Lambda this time
    the_plan, sam = packaged
    name, s = the_plan.settings.provider, the_plan.settings
    session = boto3.session.Session()
    session.client("s3").create_bucket(Bucket="artifacts")
    lines = []
    result = deploy(the_plan, sam, artifacts_bucket="artifacts", session=session,
                    progress=lines.append, poll_s=0)
    assert any("CREATE_COMPLETE" in line for line in lines)
    physical = result["resources"]
    assert physical["RequestStream"] == f"sluice-{name}"
    stream = session.client("kinesis").describe_stream_summary(StreamName=f"sluice-{name}")
    assert stream["StreamDescriptionSummary"]["RetentionPeriodHours"] == 168
    table = session.client("dynamodb").describe_table(TableName=s.table_name)["Table"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    assert session.client("sqs").get_queue_url(QueueName=f"sluice-{name}-parked")["QueueUrl"]
    lam = session.client("lambda")
    worker = lam.get_function(FunctionName=f"sluice-{name}-dev-worker")["Configuration"]
    ventilator = lam.get_function(FunctionName=f"sluice-{name}-dev-ventilator")["Configuration"]
    assert ventilator["Timeout"] > worker["Timeout"] > 70
    env = ventilator["Environment"]["Variables"]
    assert env["SLUICE_WORKER_FUNCTION"] == f"sluice-{name}-dev-worker"
    (mapping,) = lam.list_event_source_mappings(
        FunctionName=f"sluice-{name}-dev-ventilator")["EventSourceMappings"]
    assert mapping["BatchSize"] * s.shards * s.parallelization_factor <= s.max_concurrency
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"].endswith(
        f":sluice-{name}-parked")
    rules = session.client("events").list_rules()["Rules"]
    assert sorted(r["ScheduleExpression"] for r in rules) == ["rate(10 minutes)"] * 2


# What each function's code calls (service:action), from the runtime package.
NEEDED = {
    "ventilator": {"dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem",
                   "dynamodb:UpdateItem", "dynamodb:Query", "lambda:InvokeFunction",
                   "lambda:GetEventSourceMapping", "lambda:UpdateEventSourceMapping",
                   "lambda:ListEventSourceMappings", "kinesis:GetRecords",
                   "kinesis:GetShardIterator", "kinesis:DescribeStream",
                   "kinesis:DescribeStreamSummary", "kinesis:ListShards", "sqs:SendMessage",
                   "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"},
    "worker": {"s3:PutObject", "dynamodb:UpdateItem", "logs:CreateLogGroup",
               "logs:CreateLogStream", "logs:PutLogEvents"},
    "rearm": {"dynamodb:GetItem", "dynamodb:PutItem", "lambda:GetEventSourceMapping",
              "lambda:UpdateEventSourceMapping", "lambda:ListEventSourceMappings",
              "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"},
    "kickoff": {"s3:GetObject", "kinesis:PutRecords", "kinesis:PutRecord", "dynamodb:PutItem",
                "dynamodb:UpdateItem", "logs:CreateLogGroup", "logs:CreateLogStream",
                "logs:PutLogEvents"},
}
UNSCOPED = {"lambda:ListEventSourceMappings"}  # AWS offers no resource-level permission


def statements(document, with_condition=False):
    for st in document["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        yield (set(actions), resources, st.get("Condition", {})) if with_condition else (
            set(actions), resources)


@pytest.mark.parametrize("provider", provider_names())
def test_each_policy_grants_what_its_function_needs_and_no_more(provider):
    settings = provider_settings(provider, "dev")
    policies = function_policies(settings, literal_arn("eu-west-1", "111122223333"))
    assert set(policies) == set(NEEDED)
    for handler, document in policies.items():
        granted = set().union(*(actions for actions, _ in statements(document)))
        needed = set(NEEDED[handler])
        if handler == "worker" and settings.secret_id:  # a provider with credentials
            needed.add("secretsmanager:GetSecretValue")
        assert granted == needed, handler
        for actions, resources, condition in statements(document, with_condition=True):
            assert not any("*" in a for a in actions), (handler, actions)
            if resources == ["*"]:
                assert actions <= UNSCOPED, (handler, actions)
                continue
            for arn in resources:
                assert ":eu-west-1:111122223333:" in arn or arn.startswith("arn:aws:s3:::")
                if arn.endswith(":event-source-mapping:*"):
                    # Mapping ARNs are random UUIDs: scoped to its own function instead.
                    owner = condition["StringEquals"]["lambda:FunctionArn"]
                    assert owner.endswith(f":function:{settings.ventilator_function}")
                    continue
                assert (f"sluice-{provider}" in arn or settings.stream_name in arn
                        or f"secret:sluice/{provider}/" in arn), arn


def test_no_policy_touches_another_providers_resources():
    settings = provider_settings("demo", "dev")
    other = settings.model_copy(update={
        "provider": "other", "stream_name": "sluice-other", "table_name": "sluice-other-ledger",
        "result_bucket": "sluice-other-results"})
    mine = json.dumps(function_policies(settings, literal_arn()))
    for name in (other.stream_name, other.table_name, other.result_bucket):
        assert name not in mine
    table_arn = "arn:aws:dynamodb:eu-west-1:111122223333:table/sluice-other-ledger"
    for document in function_policies(settings, literal_arn("eu-west-1", "111122223333")).values():
        for _, resources in statements(document):
            assert not any(fnmatch.fnmatch(table_arn, r) for r in resources if r != "*")


def test_resources_only_stack_for_the_plain_chalice_path(aws):
    from sluice_tools.deploy.package import deploy_resources

    settings = provider_settings("demo", "dev")
    result = deploy_resources(settings, "dev", session=boto3.session.Session(),
                              progress=lambda line: None, poll_s=0)
    assert result["stack"] == "sluice-demo-dev-resources"
    assert set(result["resources"]) == {"RequestStream", "Ledger", "Results", "ParkedQueue"}
    again = deploy_resources(settings, "dev", session=boto3.session.Session(),
                             progress=lambda line: None, poll_s=0)
    assert again["resources"] == result["resources"]  # a redeploy changes nothing
