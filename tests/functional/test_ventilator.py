"""The ventilator end to end: Chalice test client -> demo app -> local Lambda (worker) ->
fake provider over HTTP -> S3 and the ledger in moto. The provider's own counters catch
duplicate fetches; the ledger and the mapping say what sluice decided."""

import json
import threading
from contextlib import contextmanager

import pytest

from sluice.breaker import CLOSED, HALF_OPEN, OPENED, PROBE_DELIVERY
from sluice.errors import RetryBatch
from sluice.ledger import FETCHED, PARKED
from sluice_tools.fake_provider import FailingIds
from sluice_tools.local.events import kinesis_event


def failures(response):
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def test_fetches_each_record_once_and_stores_it(demo):
    response = demo.ventilate(demo.event(["r1", "r2", "r3"]))
    assert failures(response) == []
    assert demo.provider.stats()["served"] == 3
    s3 = demo.aws.client("s3")
    key = f"results/demo/{demo.day}/r2.json"
    stored = json.loads(s3.get_object(Bucket=demo.settings.result_bucket, Key=key)["Body"].read())
    assert stored["record_id"] == "r2" and stored["provider"] == "demo"
    entry = demo.deployed.runtime.ledger().get("r2", demo.day)
    assert (entry.status, entry.attempts) == (FETCHED, 1)


def test_duplicate_ids_in_one_batch_cost_one_call(demo):
    response = demo.ventilate(demo.event(["dup", "x", "dup", "dup"]))
    assert failures(response) == []
    assert demo.provider.served[("dup", demo.day)] == 1
    assert demo.provider.stats()["calls"] == 2


def test_same_record_twice_a_day_is_fetched_once_and_again_the_next_day(demo):
    demo.ventilate(demo.event(["acct-1"]))
    demo.clock.advance(3600)
    demo.ventilate(demo.event(["acct-1"]))
    assert demo.provider.stats()["calls"] == 1
    demo.clock.advance(24 * 3600)
    demo.ventilate(demo.event(["acct-1"]))
    assert demo.provider.stats()["calls"] == 2
    assert demo.provider.duplicates() == {}


class HeldCall:
    """The provider holds its call for one record until released: two deliveries overlap by
    construction, not by a latency long enough to make an overlap likely."""

    def __init__(self, inner, record_id):
        self.inner, self.record_id = inner, record_id
        self.arrived, self.released = threading.Event(), threading.Event()

    def reply(self, record_id, in_flight):
        if record_id == self.record_id:
            self.arrived.set()
            self.released.wait(30)
        return self.inner.reply(record_id, in_flight)


def test_two_shards_racing_for_one_record_fetch_it_once(demo, behaviour):
    held = demo.provider.behaviour = HeldCall(behaviour, "hot")
    first, second = (demo.event(["hot", f"cold-{i}"], shard=f"shardId-00000000000{i}")
                     for i in range(2))
    name, answers = demo.settings.ventilator_function, {}

    def deliver(key, event):
        # Through the local Lambda service: Chalice's test client swaps os.environ globally
        # and is not safe to call from two threads at once.
        answers[key] = json.loads(demo.aws.lambdas.invoke(name, event).payload)

    racing = threading.Thread(target=deliver, args=("first", first))
    racing.start()
    try:
        assert held.arrived.wait(30)  # shard 0's call for "hot" is in flight, held there
        deliver("second", second)  # shard 1 meanwhile
    finally:
        held.released.set()
        racing.join()
    hot_on_shard_1 = second["Records"][0]["kinesis"]["sequenceNumber"]
    assert failures(answers["first"]) == []
    assert failures(answers["second"]) == [hot_on_shard_1]  # leased: handed back, not called
    deliver("redelivered", second)  # Lambda delivers shard 1 again from "hot"
    assert failures(answers["redelivered"]) == []  # fetched by shard 0 meanwhile: skipped
    assert demo.provider.served[("hot", demo.day)] == 1
    assert demo.provider.stats()["calls"] == 3  # hot, cold-0, cold-1
    assert demo.provider.duplicates() == {}


def test_malformed_record_is_parked_with_a_reason_and_does_not_block(demo):
    payloads = [b'{"record_id": "good-1"}', b"SECRET-ACCOUNT-DATA not json",
                b'{"record_id": "good-2"}']
    event = kinesis_event(demo.deployed.stream_arn, demo.items(payloads))
    response = demo.ventilate(event)
    assert failures(response) == []
    assert demo.provider.stats()["served"] == 2
    parked = demo.deployed.runtime.malformed().list(demo.day)
    assert len(parked) == 1 and parked[0]["reason"] == "payload is not JSON"
    assert "SECRET" not in json.dumps(demo.logs)


def test_failing_record_is_retried_held_then_parked_beside_a_witness(demo, behaviour):
    demo.ventilate(demo.event([f"warm-{i}" for i in range(10)]))  # a healthy history
    demo.provider.behaviour = FailingIds(behaviour, {"bad"})
    event = demo.event(["ok-1", "bad", *[f"ok-{i}" for i in range(2, 10)]])
    seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    attempts = []
    for _ in range(4):  # once beside served calls (blamed), then alone (suspect), then held
        response = demo.ventilate(event)
        attempts.append(failures(response))
        event = redeliver(demo, event, response)
    assert attempts == [[seqs[1]]] * 4
    entry = demo.deployed.runtime.ledger().get("bad", demo.day)
    assert (entry.status, entry.attempts, entry.blamed, entry.suspects) == ("failed", 3, 1, 2)
    # Held: not called alone again (a lone failure proves nothing either way) ...
    assert demo.provider.stats()["served"] == 19
    # ... but beside a witness that the provider serves, it fails once more and is parked.
    witness = demo.event(["witness"])["Records"]
    response = demo.ventilate({"Records": event["Records"] + witness})
    assert failures(response) == []
    entry = demo.deployed.runtime.ledger().get("bad", demo.day)
    assert (entry.status, entry.attempts) == (PARKED, 4)
    assert entry.reason == "http_503 after 4 attempts while others were served"
    assert all(demo.provider.served[(f"ok-{i}", demo.day)] == 1 for i in range(1, 10))
    assert demo.provider.served[("witness", demo.day)] == 1
    # One poison record is not an unhealthy provider: the batch size did not collapse.
    assert demo.deployed.runtime.control().load().batch_size == 10
    assert demo.deployed.runtime.control().load().breaker == CLOSED


def test_a_lone_failure_in_a_healthy_window_neither_shrinks_nor_opens(demo, behaviour):
    demo.ventilate(demo.event([f"warm-{i}" for i in range(10)]))
    demo.provider.behaviour = FailingIds(behaviour, {"tail"})
    event = demo.event(["tail"])  # the stream's tail: delivered alone, again and again
    for _ in range(5):
        demo.ventilate(event)
    state = demo.deployed.runtime.control().load()
    assert (state.breaker, state.batch_size) == (CLOSED, 10)


def redeliver(demo, event, response):
    lowest = min(failures(response), key=int)
    return {"Records": [r for r in event["Records"]
                        if int(r["kinesis"]["sequenceNumber"]) >= int(lowest)]}


def test_an_outage_parks_nothing_the_records_wait(demo, behaviour):
    behaviour.error_percentage = 100
    event = demo.event([f"o{i}" for i in range(10)])
    for _ in range(10):  # 10 -> 7 -> 4 -> 2 -> 1 -> open takes five batches
        if demo.mapping()["State"] != "Enabled":
            break
        response = demo.ventilate(event)
        event = redeliver(demo, event, response)
    assert demo.mapping()["State"] == "Disabled"
    ledger = demo.deployed.runtime.ledger()
    entries = ledger.lookup([f"o{i}" for i in range(10)], demo.day)
    assert {e.status for e in entries.values()} == {"failed"}
    assert max(e.attempts for e in entries.values()) > demo.settings.max_attempts
    assert all(e.blamed == 0 for e in entries.values())
    # The provider comes back: the next probe closes, and everything is fetched once.
    behaviour.error_percentage = 0
    demo.rearm()
    for _ in range(12):
        response = demo.ventilate(event)
        if not failures(response):
            break
        event = redeliver(demo, event, response)
    assert {demo.provider.served[(f"o{i}", demo.day)] for i in range(10)} == {1}


def test_an_outage_of_any_length_parks_nothing(demo, behaviour):
    behaviour.error_percentage = 100
    event = demo.event(["lonely"])
    for _ in range(4 * demo.settings.max_attempts):  # hours of probes through the breaker
        open_circuit(demo)
        demo.rearm()
        response = demo.ventilate(event)
    # Still waiting on the stream:
    assert failures(response) == [event["Records"][0]["kinesis"]["sequenceNumber"]]
    entry = demo.deployed.runtime.ledger().get("lonely", demo.day)
    assert (entry.status, entry.blamed) == ("failed", 0)


def test_ventilator_dying_after_its_workers_succeeded_fetches_nothing_twice(demo):
    ventilator = demo.deployed.runtime.ventilator(demo.settings.ventilator_function)
    real_invoke = ventilator.invoke

    def invoke_then_die(payload):
        real_invoke(payload)
        raise SystemExit("ventilator killed after the worker succeeded")

    ventilator.invoke = invoke_then_die
    event = demo.event(["v1", "v2", "v3"])
    with pytest.raises(SystemExit):
        demo.ventilate(event)
    ventilator.invoke = real_invoke
    response = demo.ventilate(event)  # Lambda retries the whole batch
    assert failures(response) == []
    assert demo.provider.stats()["served"] == 3
    assert demo.provider.duplicates() == {}


def test_a_claim_left_by_a_dead_ventilator_waits_for_its_lease(demo):
    ledger = demo.deployed.runtime.ledger()
    ledger.claim("orphan", demo.day, "dead-token", demo.clock(), demo.settings.lease_s)
    event = demo.event(["orphan"])
    assert len(failures(demo.ventilate(event))) == 1  # leased: its holder may still be calling
    assert demo.provider.stats()["calls"] == 0
    demo.clock.advance(demo.settings.lease_s + 1)
    assert failures(demo.ventilate(event)) == []
    assert demo.provider.served[("orphan", demo.day)] == 1


@contextmanager
def provider_latency(demo, ms):
    """Every provider call takes ``ms`` longer, as the worker reports it to the ventilator: a
    latency injected rather than slept (the fake provider still answers at once)."""
    worker = demo.aws.lambdas.function(demo.settings.worker_function)
    answer = worker.handler
    worker.handler = lambda event, context: slower(answer(event, context), ms)
    try:
        yield
    finally:
        worker.handler = answer


def slower(answer, ms):
    return {**answer, "latency_ms": answer["latency_ms"] + ms}


def test_slow_batches_shrink_the_batch_size(demo):
    with provider_latency(demo, 700):  # threshold is 600 ms here
        demo.ventilate(demo.event([f"s{i}" for i in range(10)]))
        assert demo.mapping()["BatchSize"] == 7
        demo.ventilate(demo.event([f"t{i}" for i in range(7)]))
    assert demo.mapping()["BatchSize"] == 4
    assert [b["decision"] for b in demo.batches()] == ["decrease", "decrease"]


def test_failing_batches_open_the_circuit_at_size_one(demo, behaviour):
    behaviour.error_percentage = 100
    sizes = []
    for i in range(8):
        size = demo.mapping()["BatchSize"]
        if demo.mapping()["State"] == "Disabled":
            break
        demo.ventilate(demo.event([f"e{i}-{j}" for j in range(size)]))
        sizes.append(demo.mapping()["BatchSize"])
    # The default needs two failures in a row at size 1 to open (one proves nothing).
    assert sizes == [7, 4, 2, 1, 1, 1]
    assert demo.mapping()["State"] == "Disabled"
    state = demo.deployed.runtime.control().load()
    assert (state.breaker, state.reason) == (OPENED, "errors")
    # A batch already on its way while open makes no call and hands every record back.
    calls = demo.provider.stats()["calls"]
    response = demo.ventilate(demo.event(["late-1", "late-2"]))
    assert len(failures(response)) == 2 and demo.provider.stats()["calls"] == calls


def open_circuit(demo):
    control = demo.deployed.runtime.control()
    control.update(lambda s: s.__class__(breaker=OPENED, batch_size=1, opens=s.opens + 1))
    demo.aws.lambdas.update_mapping(demo.deployed.mapping_uuids[0],
                                    {"Enabled": False, "BatchSize": 1})
    return control


def test_rearm_probes_at_one_and_a_healthy_probe_closes(demo):
    control = open_circuit(demo)
    assert demo.rearm()["action"] == "half_open"
    # One probe call, chosen from a whole delivery (a record that failed is a bad probe).
    assert (demo.mapping()["State"], demo.mapping()["BatchSize"]) == ("Enabled",
                                                                       PROBE_DELIVERY)
    assert control.load().breaker == HALF_OPEN
    demo.ventilate(demo.event(["probe"]))
    state = control.load()
    assert (state.breaker, state.batch_size) == (CLOSED, 2)
    assert demo.mapping()["BatchSize"] == 2
    assert demo.rearm()["action"] == "none"  # already enabled: nothing to do


def test_unhealthy_probe_reopens(demo, behaviour):
    control = open_circuit(demo)
    demo.rearm()
    behaviour.error_percentage = 100
    demo.ventilate(demo.event(["probe"]))
    assert control.load().breaker == OPENED and control.load().opens == 2
    assert demo.mapping()["State"] == "Disabled"


@pytest.mark.parametrize("demo_overrides", [{"max_concurrency": 4}])
def test_recovery_never_exceeds_x_even_when_a_bigger_batch_arrives(demo):
    assert demo.mapping()["BatchSize"] == 10  # the decorator's value, as after a redeploy
    demo.ventilate(demo.event([f"big-{i}" for i in range(10)]))
    assert demo.provider.max_in_flight <= 4
    for round_ in range(4):
        demo.ventilate(demo.event([f"r{round_}-{i}" for i in range(4)]))
    assert demo.mapping()["BatchSize"] == 4
    assert max(b["BatchSize"] for b in demo.batches()) == 4
    assert demo.provider.max_in_flight <= 4


def test_operator_pause_survives_rearm(demo):
    from sluice.operators import pause, resume

    runtime = demo.deployed.runtime
    mapping = runtime.mapping(demo.settings.ventilator_function)
    pause(runtime.control(), mapping, demo.settings.stream_name, "provider maintenance")
    assert demo.mapping()["State"] == "Disabled"
    assert demo.rearm()["why"] == "paused by operator"
    assert demo.mapping()["State"] == "Disabled"
    response = demo.ventilate(demo.event(["during-pause"]))
    assert len(failures(response)) == 1 and demo.provider.stats()["calls"] == 0
    resume(runtime.control(), mapping, demo.settings.stream_name)
    assert demo.mapping()["State"] == "Enabled"


def test_a_mapping_update_conflict_does_not_fail_the_batch(demo):
    demo.aws.lambdas.conflict_injector = lambda mapping: True  # still Updating
    with provider_latency(demo, 700):  # slow: 10 -> 7, an update the conflict defers
        response = demo.ventilate(demo.event([f"c{i}" for i in range(10)]))
    assert failures(response) == []
    assert demo.batches()[-1]["mapping_update"] == "deferred"
    assert demo.mapping()["BatchSize"] == 10
    assert demo.deployed.runtime.control().load().batch_size == 7  # what it still asks for
    demo.aws.lambdas.conflict_injector = None
    demo.ventilate(demo.event(["after"]))  # healthy: 7 -> 8, and now it lands
    assert demo.mapping()["BatchSize"] == demo.deployed.runtime.control().load().batch_size == 8


def test_without_report_batch_item_failures_a_retry_raises(demo, behaviour):
    demo.aws.lambdas.update_mapping(demo.deployed.mapping_uuids[0],
                                    {"FunctionResponseTypes": []})
    demo.provider.behaviour = FailingIds(behaviour, {"bad"})
    with pytest.raises(RetryBatch, match="1 record"):
        demo.ventilate(demo.event(["fine", "bad"]))
    assert demo.provider.served[("fine", demo.day)] == 1


def test_one_emf_line_per_batch_without_contents(demo):
    demo.ventilate(demo.event(["m1", "m2"]))
    (doc,) = demo.batches()
    metric_names = {m["Name"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"BatchSize", "LatencyP90", "ErrorRate", "Fetched"} <= metric_names
    assert doc["Provider"] == "demo" and doc["Fetched"] == 2 and doc["breaker"] == "closed"
    assert "m1" not in json.dumps(doc)
