"""Shared fixtures: moto in server mode, the local Lambda service, the fake provider, a clock.

Functional tests reach AWS only through moto's server (reset before each test) and the local
Lambda service's real HTTP API; the provider is a real HTTP server. No boto3 mocks.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from chalice.test import Client

from sluice.clock import local_day
from sluice_tools.fake_provider import FakeProvider, PercentBehaviour
from sluice_tools.local.events import KinesisItem, kinesis_event, scheduled_event
from sluice_tools.local.lambda_api import LambdaApiServer
from sluice_tools.local.lambda_service import LambdaContext, LambdaService
from sluice_tools.local.moto import MotoServer, stack_environment
from sluice_tools.local.provider_app import load_provider
from sluice_tools.local.stack import DeployedProvider, deploy_provider

TIERS = ("unit", "functional", "packaging", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its tier folder, so ``-m unit`` or ``-m "not e2e"`` mean what they say.
    Provider tests (providers/*/tests) run against the fake provider over HTTP: functional."""
    for item in items:
        parts = item.path.parts
        tier = next((t for t in TIERS if "tests" in parts and t in parts), "functional")
        item.add_marker(getattr(pytest.mark, tier))


def wait_for(predicate, timeout_s: float = 60.0) -> bool:
    """Wait for background threads (pollers) to make ``predicate`` true; no fixed sleeps."""
    deadline, tick = time.monotonic() + timeout_s, threading.Event()
    while time.monotonic() < deadline:
        if predicate():
            return True
        tick.wait(0.05)
    return predicate()


@pytest.fixture
def wait_until():
    return wait_for


@pytest.fixture(scope="module")
def stack():
    """The demo provider running on a whole local stack (pollers and schedules included), shared
    by a test module: for what goes through the CLI and the operator tools."""
    from sluice_tools.local.session import StackSession
    from sluice_tools.scenario import load_scenario

    session = StackSession(provider="demo", scenario=load_scenario("steady"),
                           update_delay_s=0.05, emit=lambda doc: None).start()
    yield session
    session.stop()


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 27, 9, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.stop()


@dataclass
class Aws:
    moto: MotoServer
    lambdas: LambdaService
    lambda_url: str

    def client(self, service: str) -> Any:
        return boto3.client(service)


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    moto_server.reset()
    lambdas = LambdaService(update_delay_s=0.0)
    api = LambdaApiServer(lambdas).start()
    for key, value in stack_environment(moto_server.url, api.url).items():
        monkeypatch.setenv(key, value)
    yield Aws(moto_server, lambdas, api.url)
    api.stop()


@pytest.fixture
def behaviour() -> PercentBehaviour:
    return PercentBehaviour(seed=7)


@pytest.fixture
def provider_api(behaviour: PercentBehaviour, clock: FakeClock) -> Iterator[FakeProvider]:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Europe/London")  # the demo provider's timezone
    api = FakeProvider(behaviour, day=lambda: local_day(clock(), zone)).start()
    yield api
    api.stop()


@dataclass
class Demo:
    """The demo provider deployed on the local stack, driven batch by batch by a test."""

    deployed: DeployedProvider
    aws: Aws
    provider: FakeProvider
    clock: FakeClock
    logs: list[dict[str, Any]] = field(default_factory=list)
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1000))

    @property
    def settings(self):
        return self.deployed.settings

    @property
    def client(self) -> Client:
        return Client(self.deployed.provider.app, stage_name="local",
                      project_dir=str(self.deployed.provider.project_dir))

    def items(self, payloads: list[bytes], shard: str = "shardId-000000000000") -> list:
        return [
            KinesisItem(shard, str(next(self._seq)), "pk", data, self.clock())
            for data in payloads
        ]

    def event(self, ids: list[str], shard: str = "shardId-000000000000") -> dict[str, Any]:
        payloads = [json.dumps({"record_id": i}).encode() for i in ids]
        return kinesis_event(self.deployed.stream_arn, self.items(payloads, shard))

    def ventilate(self, event: dict[str, Any]) -> Any:
        """Deliver one batch to the real ventilator handler of the provider's Chalice app,
        with a Lambda context of the ventilator's real timeout (Chalice's test client gives
        every function 3 s, so the deadline rule would start no call)."""
        name = self.deployed.functions["ventilator"]
        function = self.aws.lambdas.functions[name]
        handler = self.deployed.provider.app.handler_map["ventilator"]
        return handler(event, LambdaContext(function, self.clock))

    def rearm(self) -> Any:
        event = scheduled_event("us-east-1", "sluice-demo-local-rearm", "2026-11-27T09:00:00Z")
        return self.client.lambda_.invoke("rearm", event).payload

    def kickoff(self) -> Any:
        event = scheduled_event("us-east-1", "sluice-demo-local-kickoff", "2026-11-27T22:00:00Z")
        return self.client.lambda_.invoke("kickoff", event).payload

    def mapping(self) -> dict[str, Any]:
        return self.aws.lambdas.get_mapping(self.deployed.mapping_uuids[0])

    def batches(self) -> list[dict[str, Any]]:
        return [doc for doc in self.logs if doc.get("event") == "batch"]

    @property
    def day(self) -> str:
        return local_day(self.clock(), self.settings.zone)


@pytest.fixture
def demo_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def demo(aws: Aws, provider_api: FakeProvider, clock: FakeClock,
         demo_overrides: dict[str, Any]) -> Demo:
    logs: list[dict[str, Any]] = []
    deployed = deploy_provider(
        load_provider("demo"),
        aws.lambdas,
        api_base_url=provider_api.url,
        # Well above a loaded CI machine's local HTTP round trip, well below the slow calls.
        overrides={"latency_threshold_ms": 600, **demo_overrides},
        clock=clock,
        emit=logs.append,
        function_response_types=["ReportBatchItemFailures"],
    )
    return Demo(deployed, aws, provider_api, clock, logs)
