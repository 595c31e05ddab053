"""`sluice smoke`: prove a deployed provider on a real account in ten minutes, then tidy up.

1. a fake provider: deployed as a Lambda function URL (``fake_lambda.py``, its counters in a
   DynamoDB table of its own), or the URL given;
2. the stage's worker pointed at it (its ``SLUICE_API_BASE_URL``, restored afterwards);
3. ingestion on for the run (a paused provider, e.g. not cut over yet, is resumed, then
   paused again with its old reason);
4. N ad-hoc records fed on the stage's stream, progress shown until each is final in the
   ledger (or the time is up);
5. checks, from the ledger and from the fake provider's own counters: nothing lost (every
   record final, none parked), once a day (no duplicate served), the concurrency cap (the
   most the fake ever saw in flight <= X), one result object per record; and, where AWS
   shows them, the stage's EMF metrics (Provider + Stage) and alarms;
6. clean-up of everything it created: the fake (function, URL, permissions, role, table),
   the smoke records' ledger items and result objects. Records on the stream cannot be
   deleted; they are final, so nothing reads them again.

Every step talks to AWS through boto3 only, so it runs on the local stack (moto + the local
Lambda service) as far as those allow; see tests/functional/test_prod_smoke.py.
"""

from __future__ import annotations

import io
import json
import secrets
import time
import urllib.request
import zipfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.clock import local_day
from sluice.control import ControlStore
from sluice.enqueue import ADHOC, enqueue
from sluice.mapping import MappingClient
from sluice.metrics import NAMESPACE
from sluice.operators import pause, resume
from sluice.results import ResultStore
from sluice.settings import ProviderSettings

FINAL = ("fetched", "parked")
FAKE_SOURCE = Path(__file__).with_name("fake_lambda.py")


@dataclass
class Check:
    name: str
    ok: bool | None  # None: cannot be judged here (e.g. metrics not visible yet)
    detail: str = ""


@dataclass
class SmokeReport:
    run_id: str
    url: str
    ids: list[str]
    day: str
    statuses: dict[str, str] = field(default_factory=dict)
    fake: dict[str, int] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks) and bool(self.checks)


def fake_stats(url: str, timeout_s: float = 10.0) -> dict[str, int]:
    with urllib.request.urlopen(url.rstrip("/") + "/stats", timeout=timeout_s) as response:
        return json.loads(response.read())


class FakeOnLambda:
    """The fake provider deployed as a public Lambda function URL, and removed again."""

    def __init__(self, session: Any, name: str, *, sleep: Callable[[float], None] = time.sleep,
                 latency_ms: int = 200, progress: Callable[[str], None] = print) -> None:
        self.session, self.name, self.sleep = session, name[:64], sleep
        self.latency_ms, self.progress = latency_ms, progress
        self.url = ""
        self.created: list[str] = []

    def __enter__(self) -> FakeOnLambda:
        iam, lam, ddb = (self.session.client(s) for s in ("iam", "lambda", "dynamodb"))
        table = ddb.create_table(
            TableName=self.name, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])["TableDescription"]
        self.created.append(f"table {self.name}")
        ddb.get_waiter("table_exists").wait(TableName=self.name,
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        role = iam.create_role(RoleName=self.name, AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                   "Principal": {"Service":
                                                                 "lambda.amazonaws.com"}}]}),
            Description="sluice smoke: the fake provider (deleted at the end of the run)")
        self.created.append(f"role {self.name}")
        iam.put_role_policy(RoleName=self.name, PolicyName="fake-provider",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                                {"Effect": "Allow", "Action": ["dynamodb:UpdateItem",
                                                               "dynamodb:Scan"],
                                 "Resource": table["TableArn"]},
                                {"Effect": "Allow", "Action": ["logs:CreateLogGroup",
                                                               "logs:CreateLogStream",
                                                               "logs:PutLogEvents"],
                                 "Resource": "*"}]}))
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as zf:
            zf.writestr("fake.py", FAKE_SOURCE.read_text())
        for attempt in range(12):  # a new role takes a few seconds to be assumable
            try:
                lam.create_function(
                    FunctionName=self.name, Runtime="python3.11", Handler="fake.handler",
                    Role=role["Role"]["Arn"], Code={"ZipFile": code.getvalue()}, Timeout=30,
                    MemorySize=256, Environment={"Variables": {
                        "FAKE_TABLE": self.name, "FAKE_LATENCY_MS": str(self.latency_ms)}})
                break
            except lam.exceptions.InvalidParameterValueException:
                if attempt == 11:
                    raise
                self.sleep(5)
        self.created.append(f"function {self.name}")
        lam.get_waiter("function_active_v2").wait(FunctionName=self.name,
                                                  WaiterConfig={"Delay": 2, "MaxAttempts": 60})
        self.url = lam.create_function_url_config(FunctionName=self.name,
                                                  AuthType="NONE")["FunctionUrl"]
        # A public URL needs both permissions (InvokeFunction only through the URL).
        lam.add_permission(FunctionName=self.name, StatementId="url",
                           Action="lambda:InvokeFunctionUrl", Principal="*",
                           FunctionUrlAuthType="NONE")
        lam.add_permission(FunctionName=self.name, StatementId="invoke-via-url",
                           Action="lambda:InvokeFunction", Principal="*",
                           InvokedViaFunctionUrl=True)
        self.progress(f"fake provider: {self.url}")
        return self

    def __exit__(self, *exc: object) -> None:
        iam, lam, ddb = (self.session.client(s) for s in ("iam", "lambda", "dynamodb"))
        logs = self.session.client("logs")
        steps = [
            lambda: lam.delete_function_url_config(FunctionName=self.name),
            lambda: lam.delete_function(FunctionName=self.name),
            lambda: logs.delete_log_group(logGroupName=f"/aws/lambda/{self.name}"),
            lambda: iam.delete_role_policy(RoleName=self.name, PolicyName="fake-provider"),
            lambda: iam.delete_role(RoleName=self.name),
            lambda: ddb.delete_table(TableName=self.name),
        ]
        for step in steps:  # each is tried: one failure must not leave the rest behind
            try:
                step()
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                if code not in ("ResourceNotFoundException", "NoSuchEntity"):
                    self.progress(f"clean-up: {type(exc).__name__}: {exc}"[:200])


class WorkerEndpoint:
    """Point the stage's worker at the fake for the run, and back afterwards."""

    def __init__(self, lambda_client: Any, function: str, url: str) -> None:
        self.lam, self.function, self.url = lambda_client, function, url
        self.previous: dict[str, str] | None = None

    def _set(self, variables: dict[str, str]) -> None:
        self.lam.update_function_configuration(FunctionName=self.function,
                                               Environment={"Variables": variables})
        self.lam.get_waiter("function_updated_v2").wait(
            FunctionName=self.function, WaiterConfig={"Delay": 2, "MaxAttempts": 60})

    def __enter__(self) -> WorkerEndpoint:
        config = self.lam.get_function_configuration(FunctionName=self.function)
        self.previous = dict(config.get("Environment", {}).get("Variables", {}))
        if self.previous.get("SLUICE_API_BASE_URL") != self.url:
            self._set({**self.previous, "SLUICE_API_BASE_URL": self.url})
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None and self.previous.get("SLUICE_API_BASE_URL") != self.url:
            self._set(self.previous)


class IngestionOn:
    """Resume a paused provider for the run; pause it again with its reason afterwards."""

    def __init__(self, control: ControlStore, mapping: MappingClient, stream: str) -> None:
        self.control, self.mapping, self.stream = control, mapping, stream
        self.reason: str | None = None

    def __enter__(self) -> IngestionOn:
        state = self.control.load()
        if state.paused:
            self.reason = state.pause_reason or "paused"
            resume(self.control, self.mapping, self.stream)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.reason is not None:
            pause(self.control, self.mapping, self.stream, self.reason)


def run_smoke(settings: ProviderSettings, *, session: Any, records: int = 20,
              url: str | None = None, repoint: bool = True, timeout_s: float = 600.0,
              poll_s: float = 5.0, progress: Callable[[str], None] = print,
              clock: Callable[[], float] = time.time,
              sleep: Callable[[float], None] = time.sleep,
              run_id: str | None = None) -> SmokeReport:
    s = settings
    s.require("stream_name", "table_name", "result_bucket", "worker_function",
              "ventilator_function")
    if not s.window.is_open(clock()):
        raise RuntimeError(f"{s.provider}/{s.stage}: outside its access window now: the "
                           "provider may not be called; run the smoke inside the window")
    run_id = run_id or secrets.token_hex(3)
    ids = [f"smoke-{run_id}-{i:04d}" for i in range(records)]
    day = local_day(clock(), s.zone)
    report = SmokeReport(run_id, url or "", ids, day)
    dynamodb = session.client("dynamodb")
    with ExitStack() as stack:
        if url is None:
            fake = stack.enter_context(FakeOnLambda(
                session, f"sluice-smoke-{run_id}-{s.provider}-{s.stage}", sleep=sleep,
                progress=progress))
            report.url = fake.url
            stack.callback(lambda: report.cleaned.extend(fake.created))
        if repoint:
            stack.enter_context(WorkerEndpoint(session.client("lambda"), s.worker_function,
                                               report.url))
        stack.enter_context(IngestionOn(
            ControlStore(s.table_name, client=dynamodb),
            MappingClient(s.ventilator_function, client=session.client("lambda")),
            s.stream_name))
        stack.callback(_clean_records, session, s, ids, day, report)
        before = fake_stats(report.url)
        enqueue(session.client("kinesis"), s.stream_name, ids, ADHOC)
        progress(f"fed {records} record(s) on {s.stream_name} (run {run_id})")
        deadline = clock() + timeout_s
        while True:
            report.statuses = _statuses(dynamodb, s.table_name, ids, day)
            final = sum(1 for v in report.statuses.values() if v in FINAL)
            progress(f"  {final}/{records} final (fetched "
                     f"{sum(v == 'fetched' for v in report.statuses.values())}, parked "
                     f"{sum(v == 'parked' for v in report.statuses.values())})")
            if final == records or clock() >= deadline:
                break
            sleep(poll_s)
        after = fake_stats(report.url)
        report.fake = {k: after.get(k, 0) - (before.get(k, 0) if k not in (
            "max_in_flight", "in_flight") else 0) for k in after}
        report.checks = _checks(s, session, report)
    return report


def _statuses(dynamodb: Any, table: str, ids: list[str], day: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for start in range(0, len(ids), 100):
        keys = [{"pk": {"S": i}, "sk": {"S": day}} for i in ids[start:start + 100]]
        request = {table: {"Keys": keys, "ProjectionExpression": "pk, #st",
                           "ExpressionAttributeNames": {"#st": "status"}}}
        while request:
            response = dynamodb.batch_get_item(RequestItems=request)
            for item in response["Responses"].get(table, []):
                out[item["pk"]["S"]] = item.get("status", {}).get("S", "")
            request = response.get("UnprocessedKeys") or {}
    return out


def _checks(s: ProviderSettings, session: Any, report: SmokeReport) -> list[Check]:
    n, statuses = len(report.ids), report.statuses
    fetched = [i for i in report.ids if statuses.get(i) == "fetched"]
    parked = [i for i in report.ids if statuses.get(i) == "parked"]
    checks = [
        Check("nothing lost", len(fetched) + len(parked) == n and not parked,
              f"{len(fetched)} fetched, {len(parked)} parked, "
              f"{n - len(fetched) - len(parked)} not final, of {n}"),
        Check("once a day", report.fake.get("duplicates", 0) == 0,
              f"the provider served {report.fake.get('served', 0)} call(s), "
              f"{report.fake.get('duplicates', 0)} duplicate(s)"),
        Check("concurrency cap", report.fake.get("max_in_flight", 0) <= s.max_concurrency,
              f"the provider saw at most {report.fake.get('max_in_flight', 0)} in flight "
              f"(X = {s.max_concurrency})"),
    ]
    store = ResultStore(s.result_bucket, provider=s.provider, prefix=s.result_prefix,
                        client=session.client("s3"))
    missing = [i for i in fetched if not _exists(store, i, report.day)]
    checks.append(Check("one result per record", not missing,
                        f"{len(fetched) - len(missing)} object(s) in s3://{s.result_bucket}/"
                        f"{s.result_prefix}/{s.provider}/{report.day}/"))
    dims = [{"Name": "Provider", "Value": s.provider}, {"Name": "Stage", "Value": s.stage}]
    try:
        found = session.client("cloudwatch").list_metrics(Namespace=NAMESPACE,
                                                          Dimensions=dims)["Metrics"]
        names = sorted({m["MetricName"] for m in found})
        checks.append(Check("metrics (Provider + Stage)", True if names else None,
                            ", ".join(names) or "none visible yet: EMF metrics take a few "
                            "minutes to appear"))
    except Exception as exc:  # reported, never fatal
        checks.append(Check("metrics (Provider + Stage)", None, type(exc).__name__))
    prefix = f"sluice-{s.provider}-{s.stage}-"
    alarms = session.client("cloudwatch").describe_alarms(AlarmNamePrefix=prefix)
    states = {a["AlarmName"].removeprefix(prefix): a["StateValue"]
              for a in alarms.get("MetricAlarms", [])}
    checks.append(Check("alarms", True if states else None,
                        ", ".join(f"{k}: {v}" for k, v in sorted(states.items()))
                        or "none found (a plain `chalice deploy` has none)"))
    return checks


def _exists(store: ResultStore, record_id: str, day: str) -> bool:
    try:
        store.client.head_object(Bucket=store.bucket, Key=store.key(record_id, day))
    except Exception:
        return False
    return True


def _clean_records(session: Any, s: ProviderSettings, ids: list[str], day: str,
                   report: SmokeReport) -> None:
    """The smoke records' ledger items and result objects (it created them)."""
    dynamodb, s3 = session.client("dynamodb"), session.client("s3")
    for start in range(0, len(ids), 25):
        dynamodb.batch_write_item(RequestItems={s.table_name: [
            {"DeleteRequest": {"Key": {"pk": {"S": i}, "sk": {"S": day}}}}
            for i in ids[start:start + 25]]})
    store = ResultStore(s.result_bucket, provider=s.provider, prefix=s.result_prefix)
    keys = [{"Key": store.key(i, day)} for i in ids]
    for start in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=s.result_bucket, Delete={"Objects": keys[start:start + 1000],
                                                          "Quiet": True})
    report.cleaned.append(f"{len(ids)} ledger item(s) and result object(s)")
