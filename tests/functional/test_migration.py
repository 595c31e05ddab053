"""Migration against the local stack: cutover, rollback, cutover again the same day, and no
record is ever fetched twice; dry runs change nothing."""

import json
import shutil
import time

import boto3
import pytest

from sluice.enqueue import ADHOC, enqueue
from sluice.intake import encode_request
from sluice_tools.local.events import KinesisItem, kinesis_event
from sluice_tools.migration import MigrationRefused, Registry, cutover, rollback
from sluice_tools.provider_config import PROVIDERS_DIR


@pytest.fixture
def registry(tmp_path):
    (tmp_path / "demo").mkdir()
    shutil.copy(PROVIDERS_DIR / "demo" / "migration.json", tmp_path / "demo")
    return Registry(tmp_path)


def assert_rolled_back_calls_nobody(stack, ids, wait_until):
    """Without waiting for nothing to happen: the paused mapping delivers nothing (one step
    of each poller), and a delivery already under way is handed back without a call."""
    lambdas, deployed = stack.stack.lambdas, stack.deployed
    assert wait_until(lambda: all(lambdas.get_mapping(uuid)["State"] == "Disabled"
                                  for uuid in deployed.mapping_uuids))
    assert [poller.poll_once() for poller in stack.pollers] == [False] * len(stack.pollers)
    calls = stack.api.stats()["calls"]
    items = [KinesisItem("shardId-000000000000", str(10**9 + n), "pk", encode_request(rid),
                         time.time()) for n, rid in enumerate(ids)]
    result = lambdas.invoke(deployed.functions["ventilator"],
                            kinesis_event(deployed.stream_arn, items))
    handed_back = json.loads(result.payload)["batchItemFailures"]
    assert [f["itemIdentifier"] for f in handed_back] == [i.sequence_number for i in items]
    assert stack.api.stats()["calls"] == calls


def test_cutover_rollback_cutover_the_same_day_fetches_nothing_twice(stack, registry,
                                                                    wait_until):
    settings, api = stack.deployed.settings, stack.api
    aws = boto3.session.Session()
    kinesis = aws.client("kinesis")
    rollback("demo", "local", settings, aws, registry=registry)  # start on the old system
    enqueue(kinesis, settings.stream_name, [f"m{i}" for i in range(20)])
    assert_rolled_back_calls_nobody(stack, [f"m{i}" for i in range(20)], wait_until)
    assert api.stats()["calls"] == 0

    cutover("demo", "local", settings, aws, registry=registry)
    assert wait_until(lambda: api.stats()["distinct_served"] == 20)
    assert registry.get("demo").state == "live"

    rollback("demo", "local", settings, aws, registry=registry)
    # Advisers keep asking while rolled back: same ids again, and some new ones.
    enqueue(kinesis, settings.stream_name, [f"m{i}" for i in range(10)], ADHOC)
    enqueue(kinesis, settings.stream_name, [f"n{i}" for i in range(5)])
    assert_rolled_back_calls_nobody(stack, [f"n{i}" for i in range(5)], wait_until)
    assert api.stats()["distinct_served"] == 20

    cutover("demo", "local", settings, aws, registry=registry)
    assert wait_until(lambda: api.stats()["distinct_served"] == 25)
    assert api.duplicates() == {}  # the ledger survived both switches
    entry = registry.get("demo")
    assert entry.state == "live"
    assert [h["to"] for h in entry.history] == ["deployed", "live", "deployed", "live"]


def test_dry_runs_change_nothing(stack, registry):
    settings, aws = stack.deployed.settings, boto3.session.Session()
    lam = aws.client("lambda")
    before = lam.get_event_source_mapping(UUID=stack.deployed.mapping_uuids[0])["State"]
    saved = json.loads(registry.path("demo").read_text())
    for action in (cutover, rollback):
        result = action("demo", "local", settings, aws, dry_run=True, registry=registry)
        assert all(c.ok for c in result["checks"]) and result["would"]
    assert lam.get_event_source_mapping(UUID=stack.deployed.mapping_uuids[0])["State"] == before
    assert json.loads(registry.path("demo").read_text()) == saved


def test_cutover_refuses_when_the_stack_is_missing(stack, registry):
    missing = stack.deployed.settings.model_copy(update={"stream_name": "sluice-nowhere"})
    with pytest.raises(MigrationRefused, match="stream exists"):
        cutover("demo", "local", missing, boto3.session.Session(), registry=registry)
    assert registry.get("demo").state == "not_migrated"
