"""Deploy, proven offline: the packaged stack lints, translates, creates in moto's
CloudFormation with everything configured as intended (dev and prod side by side in one
account), its IAM is least privilege, and a deploy changes no file in the repository."""

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from sluice_tools.cli import main
from sluice_tools.deploy.iam import function_policies, literal_arn
from sluice_tools.deploy.names import StageNames
from sluice_tools.deploy.package import (
    DeployRefused,
    deploy,
    deploy_resources,
    package,
    plan,
    stage_project,
)
from sluice_tools.provider_config import PROVIDERS_DIR, REPO_ROOT, provider_names, provider_settings

CFN_LINT = Path(sys.executable).with_name("cfn-lint")
ACCOUNT, REGION = "123456789012", "us-east-1"  # moto's


def copy_provider(name: str, dest: Path) -> Path:
    """A provider folder elsewhere (its vendor link made absolute), for tests that write."""
    source = PROVIDERS_DIR / name
    shutil.copytree(source, dest, symlinks=True,
                    ignore=shutil.ignore_patterns("vendor", "deploy", "deployments", "deployed",
                                                  "__pycache__"))
    (dest / "vendor").mkdir()
    (dest / "vendor" / "sluice").symlink_to(REPO_ROOT / "common" / "sluice")
    return dest


@pytest.fixture(scope="module", params=provider_names())
def packaged(request, tmp_path_factory):
    """Every provider, planned and packaged for its dev stage."""
    the_plan = plan(request.param, "dev")
    return the_plan, package(the_plan, tmp_path_factory.mktemp("pkg"))


def test_packaged_template_passes_cfn_lint(packaged):
    _, sam = packaged
    done = subprocess.run([str(CFN_LINT), str(sam)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_stage_names_mapping_extras_and_limits_are_merged(packaged):
    the_plan, sam = packaged
    name, s = the_plan.settings.provider, the_plan.settings
    resources = json.loads(sam.read_text())["Resources"]
    event = resources["Ventilator"]["Properties"]["Events"]["VentilatorKinesisEventSource"]
    props = event["Properties"]
    assert props["Stream"]["Fn::Sub"].endswith(f":stream/sluice-{name}-dev")
    assert props["Enabled"] is False  # ingestion off until cutover
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["MaximumRetryAttempts"] == -1 and props["BisectBatchOnFunctionError"] is False
    assert props["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["ParkedQueue", "Arn"]}
    variables = resources["Ventilator"]["Properties"]["Environment"]["Variables"]
    # The mapping comes with the function, which names (so waits for) the stream and table.
    assert variables["SLUICE_STREAM_NAME"] == {"Ref": "RequestStream"}
    assert variables["SLUICE_TABLE_NAME"] == {"Ref": "Ledger"}
    worker = resources["Worker"]["Properties"]
    assert worker["FunctionName"] == f"sluice-{name}-dev-worker"
    assert worker["ReservedConcurrentExecutions"] == s.max_concurrency
    assert worker["Timeout"] == s.worker_timeout_s
    assert resources["Ventilator"]["Properties"]["Timeout"] >= s.min_ventilator_timeout_s
    env = worker["Environment"]["Variables"]
    assert env["SLUICE_STAGE"] == "dev" and env["SLUICE_RESULT_BUCKET"] == {"Ref": "Results"}
    assert env["SLUICE_PARKED_QUEUE_URL"] == {"Ref": "ParkedQueue"}
    assert resources["RequestStream"]["Properties"]["RetentionPeriodHours"] == 168
    for data in ("RequestStream", "Ledger", "Results", "ParkedQueue"):
        assert resources[data]["DeletionPolicy"] == "Retain", data
        assert resources[data]["UpdateReplacePolicy"] == "Retain", data
    bucket = resources["Results"]["Properties"]["BucketName"]["Fn::Sub"]
    assert bucket == f"sluice-{name}-dev-${{AWS::AccountId}}-${{AWS::Region}}"
    alarms = [r["Properties"] for r in resources.values()
              if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert alarms and all(a["AlarmName"].startswith(f"sluice-{name}-dev-") for a in alarms)


def test_deploy_refuses_a_fan_out_above_x():
    with pytest.raises(DeployRefused, match="exceeds max_concurrency"):
        plan("demo", "dev", overrides={"max_concurrency": 5})


def test_a_stage_the_config_does_not_declare_is_refused():
    with pytest.raises(DeployRefused, match="no stage 'qa'"):
        plan("demo", "qa")


def _tree(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.lstat().st_mtime for p in root.rglob("*")
            if "__pycache__" not in p.parts}


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all",
                           "--ignored", "--", "providers/demo"], cwd=REPO_ROOT,
                          capture_output=True, text=True).stdout


def test_a_dry_run_deploy_writes_nothing_in_the_repository(capsys, tmp_path):
    before_status, before_tree = _git_status(), _tree(PROVIDERS_DIR / "demo")
    assert main(["deploy", "demo", "--stage", "prod", "--dry-run", "--out",
                 str(tmp_path / "build")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stack"] == "sluice-demo-prod" and "VentilatorRole" in out["packaged_resources"]
    assert out["names"]["bucket"] == "sluice-demo-prod-${AWS::AccountId}-${AWS::Region}"
    assert _tree(PROVIDERS_DIR / "demo") == before_tree  # not even an ignored file
    assert _git_status() == before_status


def test_staging_refuses_a_dangling_vendor_link(tmp_path):
    project = copy_provider("demo", tmp_path / "demo")
    (project / "vendor" / "sluice").unlink()
    (project / "vendor" / "sluice").symlink_to(tmp_path / "nowhere")
    with pytest.raises(DeployRefused, match="does not exist"):
        stage_project(plan(project, "dev"), tmp_path / "stage")


@pytest.fixture(scope="module")
def demo_stages(tmp_path_factory):
    """The demo provider (a copy: a deploy notes what it deployed, untracked, in the
    provider's .chalice/deploy/) packaged for dev and for prod."""
    project = copy_provider("demo", tmp_path_factory.mktemp("providers") / "demo")
    return {stage: (p := plan(project, stage, region=REGION, account=ACCOUNT),
                    package(p, tmp_path_factory.mktemp(stage)))
            for stage in ("dev", "prod")}


def test_dev_and_prod_deploy_side_by_side_in_one_account(demo_stages, aws, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", aws.moto.url)  # moto's Lambda this time
    session = boto3.session.Session()
    session.client("s3").create_bucket(Bucket="artifacts")
    project = demo_stages["dev"][0].provider.project_dir
    before = _tree(project)
    results = {}
    for stage, (the_plan, sam) in demo_stages.items():
        lines = []
        results[stage] = deploy(the_plan, sam, artifacts_bucket="artifacts", session=session,
                                progress=lines.append, poll_s=0)
        assert any("CREATE_COMPLETE" in line for line in lines), lines
    lam, dynamodb = session.client("lambda"), session.client("dynamodb")
    for stage, result in results.items():
        names = StageNames.of("demo", stage)
        physical, outputs = result["resources"], result["outputs"]
        assert physical["RequestStream"] == names.stream == f"sluice-demo-{stage}"
        assert outputs["ResultsBucket"] == f"sluice-demo-{stage}-{ACCOUNT}-{REGION}"
        assert outputs["LedgerTable"] == f"sluice-demo-{stage}-ledger"
        assert outputs["ParkedQueueUrl"].endswith(f"/sluice-demo-{stage}-parked")
        session.client("s3").head_bucket(Bucket=outputs["ResultsBucket"])
        ventilator = lam.get_function(FunctionName=names.function("ventilator"))
        env = ventilator["Configuration"]["Environment"]["Variables"]
        assert env["SLUICE_STREAM_NAME"] == names.stream and env["SLUICE_STAGE"] == stage
        assert env["SLUICE_RESULT_BUCKET"] == outputs["ResultsBucket"]
        assert env["SLUICE_PARKED_QUEUE_URL"] == outputs["ParkedQueueUrl"]
        worker = lam.get_function(FunctionName=names.function("worker"))
        assert worker["Concurrency"]["ReservedConcurrentExecutions"] == 10
        (mapping,) = lam.list_event_source_mappings(
            FunctionName=names.function("ventilator"))["EventSourceMappings"]
        assert mapping["EventSourceArn"].endswith(f":stream/{names.stream}")
        assert mapping["State"] == "Disabled"  # ingestion off until cutover
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert outputs["MappingId"] == mapping["UUID"]
        assert result["paused"] is True  # the control item says so too: the rearm keeps it off
        control = dynamodb.get_item(TableName=names.table, Key={
            "pk": {"S": "#control"}, "sk": {"S": "breaker"}})["Item"]
        assert "cutover" in json.dumps(control)
    assert results["dev"]["outputs"]["ResultsBucket"] != results["prod"]["outputs"][
        "ResultsBucket"]
    # The deploy wrote only its untracked notes (.chalice/deploy/ is gitignored).
    after = _tree(project)
    changed = {path for path, mtime in after.items() if before.get(path) != mtime
               and (project / path).is_file()} | (set(before) - set(after))
    assert changed == {".chalice/deploy/deployed-dev.json", ".chalice/deploy/deployed-prod.json"}


# What each function's code calls (service:action), from the runtime package. Which rows each
# DynamoDB action may touch, and that the code really makes these calls (and no others), is
# checked against a recorded run on the local stack: tests/functional/test_iam_calls.py.
NEEDED = {
    "ventilator": {"dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem",
                   "dynamodb:UpdateItem", "lambda:InvokeFunction",
                   "lambda:GetEventSourceMapping", "lambda:UpdateEventSourceMapping",
                   "lambda:ListEventSourceMappings", "kinesis:GetRecords",
                   "kinesis:GetShardIterator", "kinesis:DescribeStream",
                   "kinesis:DescribeStreamSummary", "kinesis:ListShards", "sqs:SendMessage",
                   "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"},
    "worker": {"s3:PutObject", "s3:GetObject", "s3:ListBucket", "dynamodb:UpdateItem",
               "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"},
    "rearm": {"dynamodb:GetItem", "dynamodb:PutItem", "kinesis:DescribeStreamSummary",
              "lambda:GetEventSourceMapping", "lambda:UpdateEventSourceMapping",
              "lambda:ListEventSourceMappings",
              "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"},
    "kickoff": {"s3:GetObject", "s3:ListBucket", "kinesis:PutRecords", "dynamodb:UpdateItem",
                "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"},
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
    settings = provider_settings(provider, "dev", account="111122223333", region="eu-west-1")
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
                    # Chalice's files: the UUID does not exist yet; scoped to its function.
                    owners = condition["ArnLike"]["lambda:FunctionArn"]
                    assert owners[0].endswith(f":function:{settings.ventilator_function}")
                    continue
                assert (f"sluice-{provider}-dev" in arn
                        or f"secret:sluice/{provider}/" in arn), arn
            if "s3:ListBucket" in actions:  # so a missing key answers 404, on our prefix only
                (prefix,) = condition["StringLike"]["s3:prefix"]
                assert prefix.startswith((f"results/{provider}/", f"inputs/{provider}/"))


# DynamoDB action -> the rows it may touch ("record": ids, never a '#' row), per function.
ROWS = {
    "ventilator": {"dynamodb:BatchGetItem": {"record"},
                   "dynamodb:UpdateItem": {"record", "#stats"},
                   "dynamodb:GetItem": {"#control"},
                   "dynamodb:PutItem": {"#control", "#malformed"}},
    "worker": {"dynamodb:UpdateItem": {"record"}},
    # The Backlog metric: DayCounts.get reads #stats and the day's #kickoff (its ``put``).
    "rearm": {"dynamodb:GetItem": {"#control", "#stats", "#kickoff"},
              "dynamodb:PutItem": {"#control"}},
    # start, advance, release, finish: conditional UpdateItems on the day's marker only.
    "kickoff": {"dynamodb:UpdateItem": {"#kickoff"}},
}


def test_each_dynamodb_grant_names_the_rows_it_may_touch():
    settings = provider_settings("demo", "dev", account=ACCOUNT, region=REGION)
    found: dict[str, dict[str, set[str]]] = {}
    for handler, document in function_policies(settings, literal_arn(REGION, ACCOUNT)).items():
        rows = found[handler] = {}
        for actions, _, condition in statements(document, with_condition=True):
            for action in (a for a in actions if a.startswith("dynamodb:")):
                if condition == {"ForAllValues:StringNotLike": {"dynamodb:LeadingKeys": ["#*"]}}:
                    keys = ["record"]
                else:  # no LeadingKeys condition: every row of the table ("*")
                    keys = condition.get("ForAllValues:StringEquals", {}).get(
                        "dynamodb:LeadingKeys", ["*"])
                rows.setdefault(action, set()).update(keys)
    assert {h: r for h, r in found.items() if r} == ROWS


def test_the_worker_may_update_record_items_only():
    settings = provider_settings("demo", "dev", account=ACCOUNT, region=REGION)
    worker = function_policies(settings, literal_arn(REGION, ACCOUNT))["worker"]
    (update,) = [st for st in worker["Statement"] if st["Action"] == "dynamodb:UpdateItem"]
    assert update["Condition"] == {
        "ForAllValues:StringNotLike": {"dynamodb:LeadingKeys": ["#*"]}}


def test_the_stack_manages_exactly_its_own_mapping(packaged):
    """The deployed form names the mapping's own ARN with no condition: nothing about how
    Lambda fills lambda:FunctionArn can deny it, and no other mapping is granted."""
    _, sam = packaged
    resources = json.loads(sam.read_text())["Resources"]
    policy = resources["ManageOwnMappingPolicy"]["Properties"]
    assert policy["Roles"] == [{"Ref": "VentilatorRole"}, {"Ref": "RearmRole"}]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:lambda:${AWS::Region}:"
                                     "${AWS::AccountId}:event-source-mapping:"
                                     "${VentilatorVentilatorKinesisEventSource}"}
    assert "Condition" not in statement
    for role in ("VentilatorRole", "RearmRole"):
        (inline,) = resources[role]["Properties"]["Policies"]
        assert "ManageOwnMapping" not in json.dumps(inline)


def test_template_policies_name_no_wildcard_account_or_region(packaged):
    _, sam = packaged
    resources = json.loads(sam.read_text())["Resources"]
    text = json.dumps({k: v for k, v in resources.items() if k.endswith(("Role", "Policy"))})
    assert ":*:*:" not in text and "arn:aws:" not in text  # ${AWS::...} substitutions only


def test_no_policy_touches_another_providers_resources():
    settings = provider_settings("demo", "dev", account=ACCOUNT, region=REGION)
    other = provider_settings("quotes", "dev", account=ACCOUNT, region=REGION)
    prod = provider_settings("demo", "prod", account=ACCOUNT, region=REGION)
    mine = json.dumps(function_policies(settings, literal_arn(REGION, ACCOUNT)))
    for theirs in (other, prod):
        for name in (theirs.stream_name + '"', theirs.table_name, theirs.result_bucket):
            assert name not in mine
    table_arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{prod.table_name}"
    for document in function_policies(settings, literal_arn(REGION, ACCOUNT)).values():
        for _, resources in statements(document):
            assert not any(fnmatch.fnmatch(table_arn, r) for r in resources if r != "*")


def test_resources_only_for_the_plain_chalice_path(aws, tmp_path):
    project = copy_provider("demo", tmp_path / "demo")
    the_plan = plan(project, "dev", region=REGION, account=ACCOUNT)
    session = boto3.session.Session()
    result = deploy_resources(the_plan, session=session, progress=lambda line: None, poll_s=0)
    assert result["stack"] == "sluice-demo-dev-resources"
    assert set(result["resources"]) == {"RequestStream", "Ledger", "Results", "ParkedQueue"}
    env = result["environment"]
    assert env["SLUICE_PARKED_QUEUE_URL"].endswith("/sluice-demo-dev-parked")
    assert env["SLUICE_RESULT_BUCKET"] == f"sluice-demo-dev-{ACCOUNT}-{REGION}"
    fragment = json.loads((project / ".chalice" / "deploy" / "env-dev.json").read_text())
    assert fragment["stages"]["dev"]["environment_variables"] == env
    policy = json.loads((project / ".chalice" / "deploy" / "policy-dev-worker.json").read_text())
    assert f":{REGION}:{ACCOUNT}:" in json.dumps(policy) and ":*:*:" not in json.dumps(policy)
    again = deploy_resources(the_plan, session=session, progress=lambda line: None, poll_s=0)
    assert again["resources"] == result["resources"]  # a redeploy changes nothing
    # With the environment merged into the stage, `chalice package` builds the plain path.
    from sluice_tools.deploy.package import write_config

    write_config(the_plan, env)
    chalice = Path(sys.executable).with_name("chalice")
    done = subprocess.run([str(chalice), "package", "--stage", "dev", str(tmp_path / "out")],
                          cwd=project, capture_output=True, text=True,
                          env={**os.environ, "AWS_DEFAULT_REGION": REGION})
    assert done.returncode == 0, done.stderr
    sam = json.loads((tmp_path / "out" / "sam.json").read_text())
    variables = sam["Resources"]["Ventilator"]["Properties"]["Environment"]["Variables"]
    assert variables["SLUICE_PARKED_QUEUE_URL"] == env["SLUICE_PARKED_QUEUE_URL"]
    assert sam["Resources"]["Worker"]["Properties"]["ReservedConcurrentExecutions"] == 10
