"""Scheduled kickoff on moto's server: a run that dies is resumed after its lease without
putting the day's ids twice, a live run renews its lease, a run that lost its lease stops, and
"no file yet" is not "done".

The demo provider is deployed on the local stack (the ``demo`` fixture: stream, table, bucket);
the kickoff runs with the real (moto) clients. A death is a failure raised by a wrapper around
the real Kinesis client's ``put_records``, before or after the real call.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from sluice.day_counts import DayCounts
from sluice.kickoff import KICKOFF_LEASE_S, kickoff
from sluice.kickoff_marker import KICKOFF_PK, KickoffMarker
from sluice.sources import ids_from_bucket

CHUNK = 500  # PutRecords' limit: one chunk per call
IDS = [f"acct-{i:05d}" for i in range(1600)]  # four chunks: 500, 500, 500, 100


class Killed(Exception):
    """The process running the kickoff died here."""


class PutRecordsHook:
    """The real Kinesis client (moto), with hooks around each ``put_records`` call."""

    def __init__(self, client: Any, *, before: Callable[[int], None] | None = None,
                 after: Callable[[int], None] | None = None) -> None:
        self.client, self.before, self.after, self.calls = client, before, after, 0

    def put_records(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.before:
            self.before(self.calls)
        response = self.client.put_records(**kwargs)
        if self.after:
            self.after(self.calls)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def die_at(call: int) -> Callable[[int], None]:
    def hook(n: int) -> None:
        if n == call:
            raise Killed(f"put_records call {n}")
    return hook


@pytest.fixture
def run(demo):
    """``run(kinesis=None)``: one scheduled kickoff of the demo provider, as its Lambda runs it
    (same marker and source), on the demo's clock."""
    s = demo.settings
    dynamodb = boto3.client("dynamodb")

    def _run(kinesis: Any = None) -> dict[str, Any]:
        return kickoff(settings=s, marker=KickoffMarker(s.table_name, client=dynamodb),
                       kinesis=kinesis or boto3.client("kinesis"), todays_ids=ids_from_bucket,
                       clock=demo.clock,
                       emit=lambda doc: None)
    return _run


def drop_input(demo, ids: list[str]) -> None:
    boto3.client("s3").put_object(Bucket=demo.settings.result_bucket,
                                  Key=f"inputs/demo/{demo.day}.txt",
                                  Body="".join(f"{i}\n" for i in ids).encode())


def on_stream(demo) -> Counter:
    """How many times each id is on the stream (every shard, read from the start)."""
    kinesis, name, seen = boto3.client("kinesis"), demo.settings.stream_name, Counter()
    for shard in kinesis.list_shards(StreamName=name)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=name, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while True:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            seen.update(json.loads(r["Data"])["record_id"] for r in page["Records"])
            if not page["Records"]:
                break
            iterator = page["NextShardIterator"]
    return seen


def enqueued(demo) -> int | None:
    return DayCounts(demo.settings.table_name).get(demo.day).get("enqueued")


def marker_row(demo) -> dict[str, Any]:
    item = boto3.client("dynamodb").get_item(
        TableName=demo.settings.table_name,
        Key={"pk": {"S": KICKOFF_PK}, "sk": {"S": demo.day}}).get("Item", {})
    return {k: next(iter(v.values())) for k, v in item.items()}


def test_a_killed_kickoff_is_resumed_after_its_lease_and_puts_every_id_once(demo, run):
    drop_input(demo, IDS)
    dying = PutRecordsHook(boto3.client("kinesis"), before=die_at(3))  # after 2 chunks
    with pytest.raises(Killed):
        run(dying)
    assert sum(on_stream(demo).values()) == 2 * CHUNK
    assert run()["action"] == "none"  # its lease is live: not taken over yet

    demo.clock.advance(KICKOFF_LEASE_S + 1)
    result = run()
    assert (result["action"], result["records"]) == ("enqueued", len(IDS))
    seen = on_stream(demo)
    assert set(seen) == set(IDS) and set(seen.values()) == {1}  # every id exactly once
    assert enqueued(demo) == len(IDS)  # the backlog's count is not inflated by the takeover
    assert (marker_row(demo)["status"], int(marker_row(demo)["enqueued"])) == ("done", len(IDS))
    assert run()["action"] == "none"  # once a day


def test_death_between_an_accepted_chunk_and_its_progress_puts_that_chunk_twice_counted_once(
        demo, run):
    drop_input(demo, IDS)
    with pytest.raises(Killed):  # PutRecords accepted chunk 2, then the process died
        run(PutRecordsHook(boto3.client("kinesis"), after=die_at(2)))
    demo.clock.advance(KICKOFF_LEASE_S + 1)
    assert run()["action"] == "enqueued"
    seen = on_stream(demo)
    assert set(seen) == set(IDS)
    twice = sorted(rid for rid, n in seen.items() if n == 2)
    assert twice == IDS[CHUNK : 2 * CHUNK] and max(seen.values()) == 2  # that one chunk only
    assert enqueued(demo) == len(IDS)  # counted once: the count moves with the progress


def test_a_long_enqueue_renews_its_lease_so_a_live_run_is_never_taken_over(demo, run):
    drop_input(demo, IDS)
    competing: list[dict[str, Any]] = []

    def slow_chunks(n: int) -> None:
        demo.clock.advance(400)  # each chunk takes 400 s: past the first lease by chunk 3
        if n == 3:
            competing.append(run())  # the next scheduled run fires meanwhile

    result = run(PutRecordsHook(boto3.client("kinesis"), before=slow_chunks))
    assert competing[0]["action"] == "none"
    assert (result["action"], result["records"]) == ("enqueued", len(IDS))
    assert set(on_stream(demo).values()) == {1} and enqueued(demo) == len(IDS)


def test_a_run_that_lost_its_lease_stops_and_the_taker_finishes_the_day(demo, run):
    drop_input(demo, IDS)
    taker: list[dict[str, Any]] = []

    def stall_then_taken_over(n: int) -> None:
        if n == 2:  # stalled past its lease after chunk 1; the next run takes the day over
            demo.clock.advance(KICKOFF_LEASE_S + 1)
            taker.append(run())

    stalled = run(PutRecordsHook(boto3.client("kinesis"), before=stall_then_taken_over))
    assert (taker[0]["action"], taker[0]["records"]) == ("enqueued", len(IDS))
    assert stalled["action"] == "stopped"  # no more chunks, no "done", no count
    seen = on_stream(demo)
    assert set(seen) == set(IDS)
    # The stalled run's one chunk in flight when it lost the lease is the only one put twice.
    assert sorted(rid for rid, n in seen.items() if n > 1) == IDS[CHUNK : 2 * CHUNK]
    assert enqueued(demo) == len(IDS)
    assert (marker_row(demo)["status"], int(marker_row(demo)["enqueued"])) == ("done", len(IDS))


def test_no_input_yet_is_not_done_and_a_file_landing_later_is_enqueued(demo):
    first = demo.kickoff()  # through the provider's Chalice handler and runtime
    assert first["action"] == "none" and "no input" in first["why"]
    assert marker_row(demo)["status"] != "done"
    assert not enqueued(demo)  # nothing enqueued yet (0 or not counted), not "done with 0"
    demo.clock.advance(600)  # the next scheduled run, the file has landed meanwhile
    drop_input(demo, ["late-1", "late-2", "late-3"])
    assert demo.kickoff() == {"action": "enqueued", "day": demo.day, "records": 3}
    assert set(on_stream(demo)) == {"late-1", "late-2", "late-3"}
    assert enqueued(demo) == 3


def test_an_empty_input_file_is_the_day_done_with_zero(demo, run):
    drop_input(demo, [])
    assert run() == {"action": "enqueued", "day": demo.day, "records": 0}
    assert (marker_row(demo)["status"], int(marker_row(demo)["enqueued"])) == ("done", 0)
    demo.clock.advance(600)
    drop_input(demo, ["too-late"])  # a file replaced after the day was done is not re-read
    assert run()["action"] == "none"
