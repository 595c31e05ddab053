"""`sluice smoke`, proven offline as far as moto and the local stack allow.

- The whole run (feed, wait, checks from the ledger and the fake's counters, clean-up, the
  pause restored) against the demo provider on the local stack, with the local fake's URL.
- The fake provider's Lambda handler counting like a provider, against moto's DynamoDB.
- Deploying the fake as a function URL and removing every piece again, on moto's Lambda/IAM.
What only AWS proves (the URL answering, the worker repointed, IAM, EMF metrics, alarms) is
listed in the README's Deploy section; the run reports those checks as n/a when absent.
"""

import threading

import boto3
import pytest

from sluice.control import ControlStore
from sluice.mapping import MappingClient
from sluice.operators import pause
from sluice_tools.deploy import fake_lambda
from sluice_tools.deploy.smoke import FakeOnLambda, run_smoke


def nap(seconds: float) -> None:  # pollers work in the background: wait on an event
    threading.Event().wait(min(seconds, 0.1))


def test_a_smoke_run_on_the_local_stack_proves_the_invariants_and_tidies_up(stack):
    s = stack.deployed.settings
    session = boto3.session.Session()
    control = ControlStore(s.table_name, client=session.client("dynamodb"))
    mapping = MappingClient(s.ventilator_function, client=session.client("lambda"))
    pause(control, mapping, s.stream_name, "deployed: ingestion off until cutover")
    lines = []
    report = run_smoke(s, session=session, records=15, url=stack.api.url, repoint=False,
                       timeout_s=60, poll_s=0.1, progress=lines.append, sleep=nap)
    checks = {c.name: c for c in report.checks}
    assert report.ok, [(c.name, c.ok, c.detail) for c in report.checks]
    assert checks["nothing lost"].detail.startswith("15 fetched, 0 parked")
    assert checks["once a day"].ok and checks["concurrency cap"].ok
    assert checks["one result per record"].ok
    assert checks["alarms"].ok is None  # the local stack has none: only AWS can show them
    assert any("15/15 final" in line for line in lines)
    # Tidied up: its ledger items and result objects are gone, the pause is back.
    dynamodb, s3 = session.client("dynamodb"), session.client("s3")
    for rid in report.ids[:3]:
        assert "Item" not in dynamodb.get_item(TableName=s.table_name, Key={
            "pk": {"S": rid}, "sk": {"S": report.day}})
    listed = s3.list_objects_v2(Bucket=s.result_bucket, Prefix=f"results/demo/{report.day}/"
                                f"smoke-{report.run_id}")
    assert listed.get("KeyCount", 0) == 0
    state = control.load()
    assert state.paused and state.pause_reason == "deployed: ingestion off until cutover"
    assert not mapping.find(stream_name=s.stream_name).enabled


@pytest.fixture
def fake_table(aws, monkeypatch):
    ddb = boto3.client("dynamodb")
    ddb.create_table(TableName="fake", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    monkeypatch.setattr(fake_lambda, "TABLE", "fake")
    monkeypatch.setattr(fake_lambda, "_dynamodb", None)
    return ddb


def call(path):
    return fake_lambda.handler({"rawPath": path}, sleep=lambda s: None)


def test_the_fake_on_lambda_counts_like_a_provider(fake_table):
    assert call("/records/a")["statusCode"] == 200
    assert call("/records/b")["statusCode"] == 200
    xml = call("/filings/c.xml")
    assert xml["headers"]["content-type"] == "application/xml" and 'id="c"' in xml["body"]
    call("/records/a")  # a duplicate fetch, as the provider's meter sees it
    assert call("/nothing")["statusCode"] == 404
    import json

    stats = json.loads(call("/stats")["body"])
    assert stats["calls"] == 4 and stats["served"] == 4 and stats["distinct_served"] == 3
    assert stats["duplicates"] == 1 and stats["in_flight"] == 0 and stats["max_in_flight"] == 1


def test_the_fake_is_deployed_as_a_function_url_and_removed_completely(aws, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", aws.moto.url)  # moto's Lambda this time
    session = boto3.session.Session()
    lam, iam, ddb = (session.client(s) for s in ("lambda", "iam", "dynamodb"))
    name = "sluice-smoke-abc123-demo-dev"
    with FakeOnLambda(session, name, sleep=lambda s: None, progress=lambda line: None) as fake:
        assert fake.url.startswith("https://")
        assert lam.get_function_url_config(FunctionName=name)["AuthType"] == "NONE"
        assert lam.get_function(FunctionName=name)["Configuration"]["Handler"] == "fake.handler"
        assert iam.get_role(RoleName=name)["Role"]["RoleName"] == name
        assert ddb.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE"
    assert name not in [f["FunctionName"] for f in lam.list_functions()["Functions"]]
    assert name not in [r["RoleName"] for r in iam.list_roles()["Roles"]]
    assert name not in ddb.list_tables()["TableNames"]
    assert fake.created == [f"table {name}", f"role {name}", f"function {name}"]
