"""The ledger against DynamoDB (moto server): claims, leases, outcomes, batched lookups."""

import threading

import boto3
import pytest

from sluice.day_counts import DayCounts
from sluice.ledger import FAILED, FETCHED, IN_PROGRESS, PARKED, ClaimLost, Ledger
from sluice.settings import load_settings
from sluice_tools.resources import create_locally, provider_resources

DAY = "2026-11-27"


@pytest.fixture
def ledger(aws):
    settings = load_settings(stream_name="s", table_name="ledger-t", result_bucket="b-t")
    resources = provider_resources(settings)
    create_locally({"Ledger": resources["Ledger"]}, boto3.session.Session())
    return Ledger("ledger-t", sleep=lambda s: None)


def test_claim_complete_then_nobody_can_claim_again_that_day(ledger):
    entry = ledger.claim("r1", DAY, "tok-a", now=100.0, lease_s=60)
    assert (entry.status, entry.attempts) == (IN_PROGRESS, 1)
    assert ledger.complete("r1", DAY, "tok-a", now=101.0)
    with pytest.raises(ClaimLost) as lost:
        ledger.claim("r1", DAY, "tok-b", now=5000.0, lease_s=60)
    assert lost.value.existing.status == FETCHED
    ledger.claim("r1", "2026-11-28", "tok-c", now=90000.0, lease_s=60)  # a new day


def test_only_one_of_many_concurrent_claims_wins(ledger):
    wins, barrier = [], threading.Barrier(8)

    def contender(i):
        barrier.wait()
        try:
            ledger.claim("hot", DAY, f"tok-{i}", now=100.0, lease_s=60)
            wins.append(i)
        except ClaimLost:
            pass

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_a_live_lease_blocks_and_an_expired_one_is_taken_over(ledger):
    ledger.claim("r", DAY, "dead", now=100.0, lease_s=60)
    with pytest.raises(ClaimLost) as lost:
        ledger.claim("r", DAY, "next", now=150.0, lease_s=60)
    assert lost.value.existing.is_leased(150.0)
    entry = ledger.claim("r", DAY, "next", now=161.0, lease_s=60)
    assert entry.attempts == 2 and entry.claim_token == "next"
    assert not ledger.complete("r", DAY, "dead", now=162.0)  # the old holder lost it


def test_failures_retry_then_park(ledger):
    ledger.claim("r", DAY, "t1", now=1.0, lease_s=60)
    assert ledger.fail("r", DAY, "t1", now=2.0, error="timeout", park=False) == FAILED
    entry = ledger.claim("r", DAY, "t2", now=3.0, lease_s=60)
    assert entry.attempts == 2
    assert ledger.fail("r", DAY, "t2", now=4.0, error="http_503", park=True) == PARKED
    parked = ledger.get("r", DAY)
    assert (parked.status, parked.reason) == (PARKED, "http_503")
    with pytest.raises(ClaimLost):
        ledger.claim("r", DAY, "t3", now=5.0, lease_s=60)


def test_lookup_batches_of_100_and_dedupes(ledger):
    ids = [f"id-{i:03}" for i in range(250)]
    for rid in ids[::10]:
        ledger.claim(rid, DAY, "t", now=1.0, lease_s=60)
    found = ledger.lookup(ids + ids[:30], DAY)  # duplicates would make BatchGetItem fail
    assert set(found) == set(ids[::10])


def test_items_carry_a_ttl_a_few_days_out(ledger):
    ledger.claim("r", DAY, "t", now=1000.0, lease_s=60)
    item = boto3.client("dynamodb").get_item(
        TableName="ledger-t", Key={"pk": {"S": "r"}, "sk": {"S": DAY}})["Item"]
    assert int(item["expires_at"]["N"]) == 1000 + 7 * 86400


def test_day_counters_add_up(ledger):
    counts = DayCounts("ledger-t")
    counts.add(DAY, {"fetched": 3, "calls": 4, "parked": 0}, now=1.0)
    counts.add(DAY, {"fetched": 2, "calls": 2}, now=2.0)
    assert counts.get(DAY) == {"fetched": 5, "calls": 6}


def test_lookup_retries_unprocessed_keys_with_backoff():
    """moto never returns UnprocessedKeys: botocore's Stubber plays DynamoDB throttling."""
    from botocore.stub import Stubber

    client = boto3.client("dynamodb", region_name="us-east-1")
    sleeps = []
    ledger = Ledger("t", client=client, sleep=sleeps.append)
    keys = [{"pk": {"S": f"r{i}"}, "sk": {"S": DAY}} for i in range(2)]
    item = {"pk": {"S": "r1"}, "sk": {"S": DAY}, "status": {"S": "fetched"},
            "attempts": {"N": "1"}}
    with Stubber(client) as stub:
        stub.add_response(
            "batch_get_item",
            {"Responses": {"t": []}, "UnprocessedKeys": {"t": {"Keys": [keys[1]]}}},
            {"RequestItems": {"t": {"Keys": keys, "ConsistentRead": True}}})
        stub.add_response(
            "batch_get_item", {"Responses": {"t": [item]}, "UnprocessedKeys": {}},
            {"RequestItems": {"t": {"Keys": [keys[1]]}}})
        found = ledger.lookup(["r0", "r1"], DAY)
        stub.assert_no_pending_responses()
    assert list(found) == ["r1"] and found["r1"].status == FETCHED
    assert sleeps == [0.05]
