"""Production checks with no IO: stage-scoped, account-safe names; what a deploy refuses
(deadlines, reserved concurrency, the account's unreserved pool); the stage as an EMF
dimension; a missing input file that S3 answers with 403. AWS answers come through botocore's
Stubber."""

from __future__ import annotations

import io
import re

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from sluice.metrics import emf_document
from sluice.settings import SettingsError, load_settings
from sluice.sources import ids_from_bucket
from sluice_tools.deploy.checks import (
    DeployRefused,
    account_headroom,
    fan_out_problems,
    headroom,
    reserved_concurrency_problems,
    timeout_problems,
)
from sluice_tools.deploy.names import StageNames

BUCKET_RULE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def test_names_are_stage_scoped_and_the_bucket_account_and_region_scoped():
    dev, prod = StageNames.of("quotes", "dev"), StageNames.of("quotes", "prod")
    for attr in ("stack", "stream", "table", "queue", "resources_stack"):
        assert getattr(dev, attr) != getattr(prod, attr)
    assert dev.function("worker") == "sluice-quotes-dev-worker"
    assert dev.alarm("parked") == "sluice-quotes-dev-parked"
    a = dev.bucket("111122223333", "eu-west-1")
    b = dev.bucket("444455556666", "eu-west-1")
    c = dev.bucket("111122223333", "ap-southeast-2")
    assert len({a, b, c}) == 3 and a == "sluice-quotes-dev-111122223333-eu-west-1"
    assert dev.bucket_sub == "sluice-quotes-dev-${AWS::AccountId}-${AWS::Region}"
    assert dev.dashboard_sub.endswith("-${AWS::Region}")  # dashboards are per account


def test_a_long_provider_name_still_makes_a_valid_distinct_bucket():
    long_a = StageNames.of("a" * 40, "staging")
    long_b = StageNames.of("a" * 39 + "b", "staging")
    for names in (long_a, long_b):
        bucket = names.bucket("111122223333", "ap-southeast-5")
        assert len(bucket) <= 63 and BUCKET_RULE.match(bucket), bucket
    assert long_a.bucket("1" * 12, "x") != long_b.bucket("1" * 12, "x")
    assert long_a.bucket_sub.startswith(long_a.bucket_prefix)


def settings(**overrides):
    base = {"provider": "demo", "stream_name": "s", "table_name": "t", "result_bucket": "b"}
    return load_settings(**{**base, **overrides})


def test_the_stage_is_a_setting_and_a_short_slug():
    assert settings().stage == "dev"
    assert settings(stage="prod").stage == "prod"
    with pytest.raises(SettingsError, match="SLUICE_STAGE"):
        settings(stage="Prod-EU")


def test_a_worker_timeout_no_ventilator_can_outlive_is_refused_by_the_settings():
    with pytest.raises(SettingsError, match="no ventilator could outlive"):
        settings(worker_timeout_s=850)
    assert settings(worker_timeout_s=90).min_ventilator_timeout_s == 90 + 30 + 60


@pytest.mark.parametrize(("ventilator", "worker", "message"), [
    (300, 90, None),
    (180, 90, None),  # exactly worker + lease margin + 60 s
    (179, 90, "ventilator's Lambda timeout (179 s) is too short"),
    (300, 60, "differs from SLUICE_WORKER_TIMEOUT_S"),
    (901, 90, "exceeds Lambda's maximum"),
])
def test_deadlines_are_checked(ventilator, worker, message):
    problems = timeout_problems(settings(worker_timeout_s=90), ventilator_timeout_s=ventilator,
                                worker_timeout_s=worker, where="demo/dev")
    if message is None:
        assert problems == []
    else:
        assert any(message in p for p in problems), problems


def test_fan_out_and_reserved_concurrency_checks():
    s = settings(max_concurrency=8, shards=2)
    assert fan_out_problems(s, 4, "x") == []
    assert "exceeds max_concurrency" in fan_out_problems(s, 5, "x")[0]
    assert reserved_concurrency_problems(s, 8, "x") == []
    assert reserved_concurrency_problems(s, None, "x") == []
    assert "must equal" in reserved_concurrency_problems(s, 10, "x")[0]


ACCOUNT = {"AccountLimit": {"TotalCodeSize": 1, "CodeSizeUnzipped": 1, "CodeSizeZipped": 1,
                            "ConcurrentExecutions": 1000, "UnreservedConcurrentExecutions": 130},
           "AccountUsage": {"TotalCodeSize": 1, "FunctionCount": 50}}


def test_headroom_counts_the_workers_own_reservation_back():
    room = headroom(ACCOUNT, reserved_now=10, wanted=10, floor=100)
    assert room.unreserved_after == 130 and room.ok  # a redeploy changes nothing
    assert not headroom(ACCOUNT, reserved_now=0, wanted=40, floor=100).ok


def lambda_stubbed():
    client = boto3.client("lambda", region_name="eu-west-1", aws_access_key_id="x",
                          aws_secret_access_key="x", endpoint_url="https://lambda.invalid")
    return client, Stubber(client)


def test_deploy_reports_the_accounts_unreserved_concurrency():
    client, stub = lambda_stubbed()
    stub.add_response("get_function_concurrency", {"ReservedConcurrentExecutions": 8},
                      {"FunctionName": "sluice-quotes-prod-worker"})
    stub.add_response("get_account_settings", ACCOUNT, {})
    with stub:
        room = account_headroom(client, "sluice-quotes-prod-worker", 8, floor=100)
    assert "unreserved 130 now, 130 after reserving 8" in room.describe()


def test_deploy_refuses_to_go_below_the_floor_even_on_a_first_deploy():
    client, stub = lambda_stubbed()
    stub.add_client_error("get_function_concurrency", "ResourceNotFoundException",
                          http_status_code=404)
    stub.add_response("get_account_settings", ACCOUNT, {})
    with stub, pytest.raises(DeployRefused, match="would leave 90 unreserved, below the floor"):
        account_headroom(client, "sluice-new-prod-worker", 40, floor=100)


def test_the_stage_is_an_emf_dimension_when_given():
    doc = emf_document("quotes", 1, {"Paused": 1, "Backlog": 3}, {"event": "rearm"},
                       stage="prod")
    directive = doc["_aws"]["CloudWatchMetrics"][0]
    assert directive["Dimensions"] == [["Provider", "Stage"]]
    assert doc["Provider"] == "quotes" and doc["Stage"] == "prod"
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {"Paused": "Count",
                                                                     "Backlog": "Count"}
    legacy = emf_document("quotes", 1, {"Calls": 1}, {})
    assert legacy["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Provider"]]
    assert "Stage" not in legacy


def s3_stubbed():
    client = boto3.client("s3", region_name="eu-west-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    return client, Stubber(client)


DAY = "2026-11-27"
KEY = f"inputs/demo/{DAY}.txt"


def test_a_missing_input_file_is_nothing_today_even_when_s3_says_403():
    client, stub = s3_stubbed()
    stub.add_client_error("get_object", "AccessDenied", http_status_code=403,
                          expected_params={"Bucket": "b", "Key": KEY})
    stub.add_response("list_objects_v2", {"KeyCount": 0},
                      {"Bucket": "b", "Prefix": KEY, "MaxKeys": 1})
    with stub:
        assert ids_from_bucket(DAY, settings(), client=client) is None  # no file (yet)


def test_a_404_is_nothing_today():
    client, stub = s3_stubbed()
    stub.add_client_error("get_object", "NoSuchKey", http_status_code=404)
    with stub:
        assert ids_from_bucket(DAY, settings(), client=client) is None  # no file (yet)


def test_a_403_on_a_file_that_exists_is_a_real_denial():
    client, stub = s3_stubbed()
    stub.add_client_error("get_object", "AccessDenied", http_status_code=403)
    stub.add_response("list_objects_v2", {"KeyCount": 1, "Contents": [{"Key": KEY}]})
    with stub, pytest.raises(Exception, match="AccessDenied"):
        ids_from_bucket(DAY, settings(), client=client)


def test_a_403_we_cannot_tell_apart_is_nothing_today_with_a_warning(caplog):
    client, stub = s3_stubbed()
    stub.add_client_error("get_object", "AccessDenied", http_status_code=403)
    stub.add_client_error("list_objects_v2", "AccessDenied", http_status_code=403)
    with stub:
        assert ids_from_bucket(DAY, settings(), client=client) is None  # no file (yet)
    assert "s3:ListBucket" in caplog.text


def test_the_day_file_is_read_line_by_line():
    client, stub = s3_stubbed()
    body = b"a1\n\n b2 \n"
    stub.add_response("get_object", {"Body": StreamingBody(io.BytesIO(body), len(body))})
    with stub:
        assert list(ids_from_bucket(DAY, settings(), client=client)) == ["a1", "b2"]


def test_migrate_status_shows_an_untracked_deploy_note(tmp_path):
    import json

    from sluice_tools.migration import Entry, Registry

    (tmp_path / "acme" / ".chalice" / "deploy").mkdir(parents=True)
    registry = Registry(tmp_path)
    registry.put(Entry("acme"))
    assert registry.shown_state(registry.get("acme")) == "not_migrated"
    (tmp_path / "acme" / ".chalice" / "deploy" / "deployed-prod.json").write_text(json.dumps({}))
    assert registry.deployed_stages("acme") == ["prod"]
    assert registry.shown_state(registry.get("acme")) == "deployed"
    assert json.loads(registry.path("acme").read_text())["state"] == "not_migrated"
