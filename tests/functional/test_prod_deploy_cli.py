"""`sluice deploy` end to end through its command line, on moto: account and region from STS,
the account's concurrency reported, the stack created with ingestion off, and a redeploy that
keeps the mapping as it found it (off before the cutover, on after it)."""

import shutil

import boto3
from botocore.awsrequest import AWSResponse

from sluice_tools.cli import build_parser
from sluice_tools.provider_config import PROVIDERS_DIR, REPO_ROOT


def copy_provider(name, dest):
    shutil.copytree(PROVIDERS_DIR / name, dest, symlinks=True, ignore=shutil.ignore_patterns(
        "vendor", "deploy", "deployments", "deployed", "__pycache__"))
    (dest / "vendor").mkdir()
    (dest / "vendor" / "sluice").symlink_to(REPO_ROOT / "common" / "sluice")
    return dest


def deploy(argv, unreserved=1000):
    """`sluice deploy ARGV` with moto, which lacks GetAccountSettings: that one call is
    answered on botocore's before-call hook (what Stubber does), the rest goes to moto."""
    session = boto3.session.Session()
    limits = {"AccountLimit": {"ConcurrentExecutions": 1000,
                               "UnreservedConcurrentExecutions": unreserved}}
    session.events.register("before-call.lambda.GetAccountSettings",
                            lambda **_: (AWSResponse("", 200, {}, None), limits))
    args = build_parser().parse_args(["deploy", *argv])
    args.session = session
    return args.run(args)


def test_deploy_then_cutover_then_redeploy_keeps_ingestion_as_it_was(aws, monkeypatch, tmp_path,
                                                                     capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", aws.moto.url)  # moto's Lambda this time
    project = copy_provider("demo", tmp_path / "demo")
    args = [str(project), "--stage", "dev", "--out", str(tmp_path / "build")]
    assert deploy(args) == 0
    out = capsys.readouterr().out
    assert "unreserved" in out and "after reserving 10 for the worker" in out
    assert "mapping: none yet -> created/kept disabled" in out
    lam = boto3.client("lambda")
    (mapping,) = lam.list_event_source_mappings(
        FunctionName="sluice-demo-dev-ventilator")["EventSourceMappings"]
    assert mapping["State"] == "Disabled"
    # The cutover enables it; a redeploy must not turn it off again.
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)
    assert deploy(args) == 0
    assert "mapping: Enabled -> created/kept enabled" in capsys.readouterr().out
    assert lam.get_event_source_mapping(UUID=mapping["UUID"])["State"] == "Enabled"


def test_deploy_refuses_below_the_concurrency_floor(aws, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", aws.moto.url)
    project = copy_provider("demo", tmp_path / "demo")
    assert deploy([str(project), "--stage", "dev", "--out", str(tmp_path / "b"),
                   "--concurrency-floor", "100"], unreserved=105) == 2
    assert "would leave 95 unreserved, below the floor of 100" in capsys.readouterr().err
    assert not boto3.client("cloudformation").list_stacks()["StackSummaries"]
