"""The breaker's state in DynamoDB: survives cold starts, and concurrent shards never clobber
each other (optimistic lock on a version)."""

import threading
from dataclasses import replace

import boto3
import pytest

from sluice.breaker import OPENED, ControlState
from sluice.control import ControlStore
from sluice.policies import Sample
from sluice.settings import load_settings
from sluice_tools.resources import create_locally, provider_resources


@pytest.fixture
def table(aws):
    settings = load_settings(stream_name="s", table_name="ctl-t", result_bucket="b")
    create_locally({"Ledger": provider_resources(settings)["Ledger"]}, boto3.session.Session())
    return "ctl-t"


def test_state_survives_a_cold_start(table):
    ControlStore(table).update(lambda s: replace(
        s, breaker=OPENED, batch_size=1, reason="errors", opens=2,
        recent=(Sample(12.5, True), Sample(900.0, False))))
    fresh = ControlStore(table).load()  # a new container
    assert (fresh.breaker, fresh.batch_size, fresh.reason, fresh.opens) == (OPENED, 1, "errors", 2)
    assert fresh.recent == (Sample(12.5, True), Sample(900.0, False))
    assert fresh.version == 1


def test_a_stale_writer_re_reads_and_re_applies(table):
    store = ControlStore(table)
    store.update(lambda s: replace(s, batch_size=10))
    stale = store.load()
    store.update(lambda s: replace(s, batch_size=s.batch_size - 3))  # another shard wins
    result = store.update(lambda s: replace(s, batch_size=s.batch_size - 3), current=stale)
    assert result.batch_size == 4  # both decreases applied, none lost
    assert store.load().version == 3


def test_concurrent_shards_all_land(table):
    store = ControlStore(table, max_tries=50)
    store.update(lambda s: replace(s, batch_size=100))
    barrier = threading.Barrier(6)

    def shard():
        barrier.wait()
        ControlStore(table, max_tries=50).update(lambda s: replace(s, batch_size=s.batch_size - 1))

    threads = [threading.Thread(target=shard) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.load().batch_size == 94


def test_no_change_writes_nothing(table):
    store = ControlStore(table)
    assert store.update(lambda s: s) == ControlState()
    assert store.load().version == 0
