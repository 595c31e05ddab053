"""The mapping client against the local Lambda service's real API (AWS semantics), plus
botocore's Stubber for the error code the local service never returns."""

import boto3
import pytest
from botocore.stub import Stubber

from sluice.mapping import (
    DEFERRED,
    UNCHANGED,
    UPDATED,
    MappingClient,
    MappingNotFound,
    MappingView,
)
from sluice_tools.local.lambda_service import LambdaService, LocalFunction

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/s"


class Ticker:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def mapping(aws):
    aws.lambdas.add_function(LocalFunction("vent", lambda e, c: None))
    created = aws.lambdas.create_mapping("vent", STREAM_ARN, batch_size=10,
                                         function_response_types=["ReportBatchItemFailures"])
    return created["UUID"]


def test_a_mapping_that_retries_whole_batches_is_converged_to_report_item_failures(aws):
    # The plain `chalice deploy` path creates the mapping without ReportBatchItemFailures:
    # Lambda then retries whole batches, and a record held for a witness could never get one
    # (the same batch comes back, its other records already fetched). Part of the spec.
    aws.lambdas.add_function(LocalFunction("vent", lambda e, c: None))
    aws.lambdas.create_mapping("vent", STREAM_ARN, batch_size=10)
    client = MappingClient("vent")
    view = client.find(STREAM_ARN)
    assert not view.reports_item_failures
    assert client.apply(view, enabled=True, batch_size=10) == UPDATED
    view = client.find(STREAM_ARN)
    assert view.reports_item_failures and view.batch_size == 10 and view.enabled
    assert client.apply(view, enabled=True, batch_size=10) == UNCHANGED


def test_finds_its_own_mapping_and_updates_only_on_change(aws, mapping):
    client = MappingClient("vent")
    view = client.find(STREAM_ARN)
    assert (view.uuid, view.batch_size, view.enabled) == (mapping, 10, True)
    assert client.apply(view, enabled=True, batch_size=10) == UNCHANGED
    assert aws.lambdas.update_calls == 0
    assert client.apply(view, enabled=True, batch_size=4) == UPDATED
    assert client.find(STREAM_ARN).batch_size == 4  # cached UUID, fresh state


def test_finds_by_stream_name_for_rearm(aws, mapping):
    assert MappingClient("vent").find(stream_name="s").uuid == mapping
    with pytest.raises(MappingNotFound, match="is the provider deployed"):
        MappingClient("vent").find(stream_name="other")


def test_an_update_while_updating_is_deferred_not_an_error(aws, mapping):
    ticker = Ticker()
    aws.lambdas.clock = ticker
    aws.lambdas.update_delay_s = 5.0
    client = MappingClient("vent")
    assert client.apply(client.find(STREAM_ARN), enabled=True, batch_size=5) == UPDATED
    view = client.find(STREAM_ARN)
    assert view.state == "Updating" and view.batch_size == 5  # the API answers the new values
    assert client.apply(view, enabled=True, batch_size=2) == DEFERRED
    # Even a blind update (a stale view) gets AWS's conflict, and is deferred too.
    stale = view.__class__(view.uuid, 10, "Enabled", view.event_source_arn, False)
    assert client.apply(stale, enabled=True, batch_size=2) == DEFERRED
    assert aws.lambdas.conflicts == 1
    ticker.t = 6.0
    view = client.find(STREAM_ARN)
    assert (view.state, view.batch_size) == ("Enabled", 5)
    assert client.apply(view, enabled=False, batch_size=5) == UPDATED
    assert client.find(STREAM_ARN).state == "Disabling"


def test_resource_in_use_is_deferred_too():
    lam = boto3.client("lambda", region_name="us-east-1")
    client = MappingClient("vent", client=lam)
    uuid = "6f1c2d3e-0000-4000-8000-000000000001"
    with Stubber(lam) as stub:
        stub.add_client_error("update_event_source_mapping", "ResourceInUseException",
                              http_status_code=400,
                              expected_params={"UUID": uuid, "BatchSize": 3})
        result = client.apply(MappingView(uuid, 10, "Enabled", STREAM_ARN, True),
                              enabled=True, batch_size=3)
        stub.assert_no_pending_responses()
    assert result == DEFERRED


def test_local_service_rejects_out_of_range_batch_sizes():
    service = LambdaService()
    service.add_function(LocalFunction("f", lambda e, c: None))
    uuid = service.create_mapping("f", STREAM_ARN, batch_size=5)["UUID"]
    with pytest.raises(Exception, match="BatchSize"):
        service.update_mapping(uuid, {"BatchSize": 0})


def test_a_denied_get_falls_back_to_the_listing_granted_on_every_resource():
    # If IAM evaluated GetEventSourceMapping only on "*" (as an older Lambda guide says), the
    # exact-ARN grant would deny the ventilator its own mapping: the listing answers instead.
    lam = boto3.client("lambda", region_name="us-east-1")
    client = MappingClient("vent", client=lam)
    uuid = "6f1c2d3e-0000-4000-8000-000000000002"
    raw = {"UUID": uuid, "BatchSize": 4, "State": "Enabled", "EventSourceArn": STREAM_ARN,
           "FunctionResponseTypes": ["ReportBatchItemFailures"]}
    with Stubber(lam) as stub:
        stub.add_response("list_event_source_mappings", {"EventSourceMappings": [raw]},
                          {"FunctionName": "vent", "EventSourceArn": STREAM_ARN})
        stub.add_client_error("get_event_source_mapping", "AccessDeniedException",
                              http_status_code=403, expected_params={"UUID": uuid})
        stub.add_response("list_event_source_mappings", {"EventSourceMappings": [raw]},
                          {"FunctionName": "vent", "EventSourceArn": STREAM_ARN})
        stub.add_response("list_event_source_mappings", {"EventSourceMappings": [raw]},
                          {"FunctionName": "vent", "EventSourceArn": STREAM_ARN})
        assert client.find(STREAM_ARN).uuid == uuid  # cold start: the listing
        assert client.find(STREAM_ARN).batch_size == 4  # Get denied: listed instead
        assert client.find(STREAM_ARN).batch_size == 4  # and Get is not tried again
        stub.assert_no_pending_responses()
