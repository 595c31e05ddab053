"""Access windows end to end (demo app, local Lambda, moto), with the clock injected: the
provider is called only inside its allowed hours and never in maintenance."""

import json
from dataclasses import replace

import boto3
import pytest

from sluice.breaker import OPENED, PROBE_DELIVERY

NIGHTS = {"allowed_hours": "22:00-06:00", "maintenance_windows": "sun 02:00-04:00"}
pytestmark = pytest.mark.parametrize("demo_overrides", [NIGHTS])


def failures(response):
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def set_time(demo, hhmm, day="2026-11-27"):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    demo.clock.now = datetime.fromisoformat(f"{day}T{hhmm}").replace(
        tzinfo=ZoneInfo("Europe/London")).timestamp()


def test_a_batch_just_after_close_makes_no_call(demo):
    set_time(demo, "05:59")
    demo.ventilate(demo.event(["early"]))
    assert demo.provider.stats()["calls"] == 1
    set_time(demo, "06:00:30")
    response = demo.ventilate(demo.event(["late-1", "late-2"]))
    assert len(failures(response)) == 2  # handed back to the stream, not lost
    assert demo.provider.stats()["calls"] == 1
    assert demo.mapping()["State"] == "Disabled"
    state = demo.deployed.runtime.control().load()
    assert (state.label, state.window_closed, state.window_pauses) == ("window", True, 1)
    assert state.breaker == "closed"  # the window is not the provider's fault


def test_resume_at_the_next_opening_at_the_size_reached(demo):
    set_time(demo, "23:00", day="2026-11-26")
    control = demo.deployed.runtime.control()
    control.update(lambda s: replace(s, batch_size=7))
    demo.aws.lambdas.update_mapping(demo.deployed.mapping_uuids[0], {"BatchSize": 7})
    set_time(demo, "07:00")
    event = demo.event([f"q{i}" for i in range(5)])
    assert len(failures(demo.ventilate(event))) == 5
    assert demo.rearm()["action"] == "window_closed"  # still closed: stays disabled
    set_time(demo, "22:05")
    assert demo.rearm()["action"] == "window_opened"
    assert (demo.mapping()["State"], demo.mapping()["BatchSize"]) == ("Enabled", 7)
    assert failures(demo.ventilate(event)) == []  # the queue was intact
    assert {demo.provider.served[(f"q{i}", demo.day)] for i in range(5)} == {1}


def test_an_open_circuit_reopens_half_open_when_the_window_opens(demo):
    set_time(demo, "12:00")
    control = demo.deployed.runtime.control()
    control.update(lambda s: replace(s, breaker=OPENED, batch_size=1, window_closed=True))
    demo.aws.lambdas.update_mapping(demo.deployed.mapping_uuids[0], {"Enabled": False})
    set_time(demo, "22:10")
    assert demo.rearm()["action"] == "half_open"
    # Half-open: one probe call, chosen from a whole delivery.
    assert (demo.mapping()["State"], demo.mapping()["BatchSize"]) == ("Enabled",
                                                                       PROBE_DELIVERY)
    assert demo.deployed.runtime.control().load().probe_available


def test_maintenance_inside_allowed_hours_closes_too(demo):
    set_time(demo, "02:30", day="2026-11-29")  # a Sunday
    response = demo.ventilate(demo.event(["maint"]))
    assert len(failures(response)) == 1 and demo.provider.stats()["calls"] == 0


def test_a_window_opening_never_overrides_an_operator_pause(demo):
    from sluice.operators import pause

    runtime = demo.deployed.runtime
    set_time(demo, "12:00")
    pause(runtime.control(), runtime.mapping(demo.settings.ventilator_function),
          demo.settings.stream_name, "contract dispute")
    set_time(demo, "22:30")
    assert demo.rearm()["why"] == "paused by operator"
    assert demo.mapping()["State"] == "Disabled"
    assert runtime.control().load().label == "paused"


def test_an_adhoc_duplicate_of_a_scheduled_record_is_fetched_once(demo):
    set_time(demo, "23:00")
    payloads = [json.dumps({"record_id": "acct-9", "source": "scheduled"}).encode()]
    from sluice_tools.local.events import kinesis_event

    demo.ventilate(kinesis_event(demo.deployed.stream_arn, demo.items(payloads)))
    adhoc = [json.dumps({"record_id": "acct-9", "source": "adhoc"}).encode()]
    response = demo.ventilate(kinesis_event(demo.deployed.stream_arn, demo.items(adhoc)))
    assert failures(response) == []
    assert demo.provider.served[("acct-9", demo.day)] == 1


def test_kickoff_enqueues_the_day_once_and_only_inside_the_window(demo):
    s3, kinesis = boto3.client("s3"), boto3.client("kinesis")
    set_time(demo, "21:00")
    s3.put_object(Bucket=demo.settings.result_bucket, Key=f"inputs/demo/{demo.day}.txt",
                  Body=b"k1\nk2\n\nk3\n")
    assert demo.kickoff()["why"] == "outside the access window"
    set_time(demo, "22:01")
    assert demo.kickoff() == {"action": "enqueued", "day": "2026-11-27", "records": 3}
    assert demo.kickoff()["action"] == "none"  # once a day
    shard = kinesis.list_shards(StreamName="sluice-demo")["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName="sluice-demo", ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = kinesis.get_records(ShardIterator=iterator)["Records"]
    assert [json.loads(r["Data"]) for r in records] == [
        {"record_id": f"k{i}", "source": "scheduled"} for i in (1, 2, 3)]
