"""One contract, two adapters: the in-memory ports behave like the DynamoDB ones, so the
simulator and the unit tests run on fakes that provably match production."""

from dataclasses import replace

import boto3
import pytest

from sluice.control import ControlStore
from sluice.ledger import FAILED, FETCHED, IN_PROGRESS, PARKED, ClaimLost, Ledger
from sluice.mapping import DEFERRED, UNCHANGED, UPDATED, MappingClient
from sluice.settings import load_settings
from sluice_tools.local.lambda_service import LocalFunction
from sluice_tools.memory import MemoryControl, MemoryLedger, MemoryMapping
from sluice_tools.resources import create_locally, provider_resources

DAY = "2026-11-27"
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/s"


@pytest.fixture(params=["dynamodb", "memory"])
def adapters(request):
    if request.param == "memory":
        return MemoryLedger(), MemoryControl()
    request.getfixturevalue("aws")
    settings = load_settings(stream_name="s", table_name="contract-t", result_bucket="b-t")
    create_locally({"Ledger": provider_resources(settings)["Ledger"]}, boto3.session.Session())
    return Ledger("contract-t", sleep=lambda s: None), ControlStore("contract-t")


def test_claims_leases_and_outcomes(adapters):
    ledger, _ = adapters
    entry = ledger.claim("r", DAY, "a", now=100.0, lease_s=60)
    assert (entry.status, entry.attempts) == (IN_PROGRESS, 1)
    with pytest.raises(ClaimLost) as lost:
        ledger.claim("r", DAY, "b", now=150.0, lease_s=60)  # a live lease
    assert lost.value.existing.is_leased(150.0)
    assert ledger.claim("r", DAY, "b", now=161.0, lease_s=60).attempts == 2  # lapsed
    assert not ledger.complete("r", DAY, "a", now=162.0)  # the old holder lost it
    assert ledger.fail("r", DAY, "b", now=163.0, error="http_503", park=False) == FAILED
    assert ledger.settle_failure("r", DAY, 164.0, blamed=True, park=False, reason="",
                                 suspect=True)
    again = ledger.claim("r", DAY, "c", now=165.0, lease_s=60)
    assert (again.attempts, again.blamed, again.suspects) == (3, 1, 1)
    assert ledger.release("r", DAY, "c", now=166.0)  # never started: attempt given back
    assert ledger.get("r", DAY).attempts == 2 and ledger.get("r", DAY).status == FAILED
    ledger.claim("r", DAY, "d", now=167.0, lease_s=60)
    assert ledger.complete("r", DAY, "d", now=168.0)
    assert ledger.get("r", DAY).status == FETCHED
    assert set(ledger.lookup(["r", "x", "r"], DAY)) == {"r"}


def test_settle_only_while_failed_and_park_is_final(adapters):
    ledger, _ = adapters
    ledger.claim("p", DAY, "a", now=1.0, lease_s=60)
    assert not ledger.settle_failure("p", DAY, 2.0, blamed=True, park=True, reason="x")
    ledger.fail("p", DAY, "a", now=3.0, error="http_503", park=False)
    assert ledger.settle_failure("p", DAY, 4.0, blamed=True, park=True, reason="poison")
    parked = ledger.get("p", DAY)
    assert (parked.status, parked.reason) == (PARKED, "poison")
    with pytest.raises(ClaimLost):
        ledger.claim("p", DAY, "b", now=5.0, lease_s=60)


def test_control_updates_under_an_optimistic_lock(adapters):
    _, control = adapters
    first = control.update(lambda s: replace(s, batch_size=4))
    assert first.batch_size == 4 and first.version == 1
    stale = first
    control.update(lambda s: replace(s, batch_size=s.batch_size + 1))  # another shard
    # A stale read is re-read and the change re-applied to the winner's state.
    result = control.update(lambda s: replace(s, batch_size=s.batch_size * 2), current=stale)
    assert result.batch_size == 10 and control.load() == result


class Ticker:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["lambda", "memory"])
def mapping_world(request):
    """(mapping port, clock) with a mapping at BatchSize 10, Enabled, updates settling in 5 s."""
    clock = Ticker()
    if request.param == "memory":
        return MemoryMapping(10, clock, update_delay_s=5.0), clock
    aws = request.getfixturevalue("aws")
    aws.lambdas.clock, aws.lambdas.update_delay_s = clock, 5.0
    aws.lambdas.add_function(LocalFunction("vent", lambda e, c: None))
    aws.lambdas.create_mapping("vent", STREAM_ARN, batch_size=10,
                               function_response_types=["ReportBatchItemFailures"])
    return MappingClient("vent"), clock


def test_a_mapping_update_settles_late_and_refuses_changes_meanwhile(mapping_world):
    mapping, clock = mapping_world
    view = mapping.find(STREAM_ARN)
    assert (view.batch_size, view.state) == (10, "Enabled")
    assert mapping.apply(view, enabled=True, batch_size=10) == UNCHANGED
    assert mapping.apply(view, enabled=False, batch_size=10) == UPDATED
    settling = mapping.find(STREAM_ARN)
    assert settling.state == "Disabling" and not settling.enabled  # the new values, at once
    assert mapping.apply(settling, enabled=True, batch_size=10) == DEFERRED  # in progress
    clock.t += 6
    settled = mapping.find(STREAM_ARN)
    assert settled.state == "Disabled"
    assert mapping.apply(settled, enabled=True, batch_size=3) == UPDATED
    clock.t += 6
    assert (mapping.find(STREAM_ARN).state, mapping.find(STREAM_ARN).batch_size) == ("Enabled", 3)
