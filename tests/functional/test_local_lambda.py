"""The local Lambda service's mapping semantics, driven step by step through a shard poller
against moto's Kinesis: what AWS does, the local stack must do."""

import base64
import json

import boto3
import pytest

from sluice_tools.local.lambda_service import LambdaService, LocalFunction
from sluice_tools.local.poller import ShardPoller


class Recorder:
    """A handler that records what it was given and answers as told."""

    def __init__(self):
        self.batches = []
        self.answer = lambda records: {"batchItemFailures": []}

    def __call__(self, event, context):
        ids = [base64.b64decode(r["kinesis"]["data"]).decode() for r in event["Records"]]
        self.batches.append(ids)
        return self.answer(event["Records"])


@pytest.fixture
def shard(aws):
    kinesis = boto3.client("kinesis")
    kinesis.create_stream(StreamName="s", ShardCount=1)
    arn = kinesis.describe_stream_summary(StreamName="s")["StreamDescriptionSummary"]["StreamARN"]
    for i in range(12):
        kinesis.put_record(StreamName="s", PartitionKey="k", Data=f"r{i}".encode())
    shard_id = kinesis.list_shards(StreamName="s")["Shards"][0]["ShardId"]
    return kinesis, arn, shard_id


def setup(shard, batch_size=5, response_types=None, update_delay_s=0.0):
    kinesis, arn, shard_id = shard
    service = LambdaService(update_delay_s=update_delay_s)
    recorder = Recorder()
    service.add_function(LocalFunction("fn", recorder))
    uuid = service.create_mapping("fn", arn, batch_size=batch_size,
                                  function_response_types=response_types)["UUID"]
    poller = ShardPoller(service, uuid, kinesis, "s", shard_id, retry_backoff_s=0)
    return service, uuid, recorder, poller


def test_batch_size_is_honoured_and_changes_take_effect(shard):
    service, uuid, recorder, poller = setup(shard, batch_size=5)
    poller.poll_once()
    service.update_mapping(uuid, {"BatchSize": 2})
    poller.poll_once()
    assert [len(b) for b in recorder.batches] == [5, 2]
    assert recorder.batches[1] == ["r5", "r6"]


def test_disabled_delivers_nothing_and_keeps_its_checkpoint(shard):
    service, uuid, recorder, poller = setup(shard, batch_size=4)
    poller.poll_once()
    service.update_mapping(uuid, {"Enabled": False})
    assert poller.poll_once() is False
    assert service.get_mapping(uuid)["State"] == "Disabled"
    service.update_mapping(uuid, {"Enabled": True})
    poller.poll_once()
    assert recorder.batches == [["r0", "r1", "r2", "r3"], ["r4", "r5", "r6", "r7"]]


def test_updates_settle_after_a_delay_and_conflict_meanwhile(shard):
    service, uuid, recorder, poller = setup(shard, batch_size=4, update_delay_s=60)
    service.update_mapping(uuid, {"BatchSize": 1})
    assert service.get_mapping(uuid)["State"] == "Updating"
    with pytest.raises(Exception, match="Updating") as info:
        service.update_mapping(uuid, {"BatchSize": 2})
    assert info.value.code == "ResourceConflictException"
    poller.poll_once()
    assert len(recorder.batches[0]) == 4  # the old size until the update settles


def test_a_function_error_retries_the_same_records(shard):
    *_, recorder, poller = setup(shard, batch_size=3)
    calls = {"n": 0}

    def flaky(records):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return None

    recorder.answer = flaky
    poller.poll_once()
    poller.poll_once()
    assert recorder.batches == [["r0", "r1", "r2"], ["r0", "r1", "r2"]]
    assert poller.stats.function_errors == 1


def test_partial_failures_resume_from_the_lowest_failed_record(shard):
    *_, recorder, poller = setup(shard, batch_size=4,
                                 response_types=["ReportBatchItemFailures"])
    recorder.answer = lambda records: {"batchItemFailures": [
        {"itemIdentifier": records[2]["kinesis"]["sequenceNumber"]}]}
    poller.poll_once()
    recorder.answer = lambda records: {"batchItemFailures": []}
    poller.poll_once()
    assert recorder.batches == [["r0", "r1", "r2", "r3"], ["r2", "r3", "r4", "r5"]]


def test_item_failures_are_ignored_without_report_batch_item_failures(shard):
    *_, recorder, poller = setup(shard, batch_size=2)
    recorder.answer = lambda records: {"batchItemFailures": [
        {"itemIdentifier": records[0]["kinesis"]["sequenceNumber"]}]}
    poller.poll_once()
    poller.poll_once()
    assert recorder.batches == [["r0", "r1"], ["r2", "r3"]]  # as AWS: the answer is ignored


def test_invoke_enforces_the_timeout():
    import time

    service = LambdaService()
    service.add_function(LocalFunction("slow", lambda e, c: time.sleep(1), timeout_s=0.05))
    result = service.invoke("slow", {})
    assert result.function_error == "Unhandled"
    assert result.error_type == "Sandbox.Timedout"


def test_invoke_passes_a_real_context():
    service = LambdaService()
    seen = {}

    def handler(event, context):
        seen.update(name=context.function_name, left=context.get_remaining_time_in_millis())
        return {"echo": event}

    service.add_function(LocalFunction("f", handler, timeout_s=30))
    result = service.invoke("arn:aws:lambda:us-east-1:123456789012:function:f", {"a": 1})
    assert json.loads(result.payload) == {"echo": {"a": 1}}
    assert seen["name"] == "f" and 0 < seen["left"] <= 30_000
