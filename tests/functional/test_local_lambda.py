"""The local Lambda service's mapping semantics, driven step by step through a shard poller
against moto's Kinesis: what AWS does, the local stack must do."""

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sluice_tools.local.lambda_api import LambdaApiServer
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


# -- the API's answers while an update settles, as AWS gives them ----------------------------


class StepClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def settling(shard, aws):
    """A mapping behind the local Lambda API whose updates take 60 s (of a test clock) to
    settle, a boto3 client on that API and a poller on the shard."""
    kinesis, arn, shard_id = shard
    clock = StepClock()
    service = LambdaService(update_delay_s=60, clock=clock)
    recorder = Recorder()
    service.add_function(LocalFunction("fn", recorder))
    api = LambdaApiServer(service).start()
    client = boto3.client("lambda", endpoint_url=api.url)
    uuid = client.create_event_source_mapping(FunctionName="fn", EventSourceArn=arn,
                                              BatchSize=5, StartingPosition="TRIM_HORIZON")["UUID"]
    poller = ShardPoller(service, uuid, kinesis, "s", shard_id, retry_backoff_s=0)
    yield client, uuid, clock, recorder, poller
    api.stop()


def test_an_update_answers_the_requested_values_while_the_old_ones_stay_in_effect(settling):
    client, uuid, clock, recorder, poller = settling
    answer = client.update_event_source_mapping(UUID=uuid, BatchSize=2)
    assert (answer["BatchSize"], answer["State"]) == (2, "Updating")
    got = client.get_event_source_mapping(UUID=uuid)
    assert (got["BatchSize"], got["State"]) == (2, "Updating")
    listed = client.list_event_source_mappings(FunctionName="fn")["EventSourceMappings"]
    assert [(m["BatchSize"], m["State"]) for m in listed] == [(2, "Updating")]
    poller.poll_once()
    assert len(recorder.batches[-1]) == 5  # the poller still delivers by the old size
    clock.now += 60
    assert client.get_event_source_mapping(UUID=uuid)["State"] == "Enabled"
    poller.poll_once()
    assert len(recorder.batches[-1]) == 2


def test_disabling_shows_disabling_and_delivers_until_it_settles(settling):
    client, uuid, clock, recorder, poller = settling
    answer = client.update_event_source_mapping(UUID=uuid, Enabled=False, BatchSize=3)
    assert (answer["State"], answer["BatchSize"]) == ("Disabling", 3)
    assert poller.poll_once() is True  # still Enabled in effect, at the old size
    assert len(recorder.batches[-1]) == 5
    clock.now += 60
    assert client.get_event_source_mapping(UUID=uuid)["State"] == "Disabled"
    assert poller.poll_once() is False
    answer = client.update_event_source_mapping(UUID=uuid, Enabled=True)
    assert (answer["State"], answer["BatchSize"]) == ("Enabling", 3)
    assert poller.poll_once() is False  # still Disabled in effect until Enabling settles
    with pytest.raises(ClientError, match="ResourceConflictException"):
        client.update_event_source_mapping(UUID=uuid, BatchSize=4)


# -- reserved concurrency: Invoke throttles as AWS does ---------------------------------------


def test_invoke_is_throttled_at_the_reserved_concurrency(aws, wait_until):
    release = threading.Event()

    def hold(event, context):
        release.wait(30)
        return {"ok": event["n"]}

    aws.lambdas.add_function(LocalFunction("held", hold, timeout_s=60))
    client = boto3.client("lambda", config=Config(retries={"total_max_attempts": 1},
                                                  read_timeout=70))
    assert client.get_function_concurrency(FunctionName="held").get(
        "ReservedConcurrentExecutions") is None
    assert client.put_function_concurrency(
        FunctionName="held", ReservedConcurrentExecutions=2)["ReservedConcurrentExecutions"] == 2
    assert client.get_function_concurrency(
        FunctionName="held")["ReservedConcurrentExecutions"] == 2

    def invoke(n):
        response = client.invoke(FunctionName="held", Payload=json.dumps({"n": n}))
        return json.loads(response["Payload"].read())

    with ThreadPoolExecutor(2) as pool:
        running = [pool.submit(invoke, n) for n in range(2)]
        assert wait_until(lambda: aws.lambdas.in_flight.get("held") == 2, timeout_s=30)
        with pytest.raises(ClientError) as throttled:
            invoke(3)
        release.set()
        answers = [f.result(timeout=30) for f in running]  # re-raises what a thread died of
    error = throttled.value.response
    assert error["Error"]["Code"] == "TooManyRequestsException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert error["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert sorted(a["ok"] for a in answers) == [0, 1]
    assert aws.lambdas.throttles["held"] == 1 and aws.lambdas.invocations["held"] == 2
    assert invoke(4) == {"ok": 4}  # the slots are free again

    client.put_function_concurrency(FunctionName="held", ReservedConcurrentExecutions=0)
    with pytest.raises(ClientError, match="TooManyRequestsException"):
        invoke(5)  # 0 reserved: the function is switched off
    client.delete_function_concurrency(FunctionName="held")
    assert "ReservedConcurrentExecutions" not in client.get_function_concurrency(
        FunctionName="held")
    assert invoke(6) == {"ok": 6}


def test_reserved_concurrency_leaves_the_account_minimum_unreserved(aws):
    aws.lambdas.add_function(LocalFunction("f", lambda e, c: None))
    client = boto3.client("lambda")
    with pytest.raises(ClientError, match="InvalidParameterValueException"):
        client.put_function_concurrency(FunctionName="f", ReservedConcurrentExecutions=901)
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        client.put_function_concurrency(FunctionName="nope", ReservedConcurrentExecutions=1)
