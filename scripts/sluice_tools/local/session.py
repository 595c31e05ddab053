"""A running local stack with one provider deployed: the pieces `demo` and `up` share.

moto + the local Lambda service + a fake provider following a scenario, the provider's
Chalice app deployed onto them, one poller per shard and the app's schedules.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import boto3

from sluice.metrics import Emit, stdout_emit
from sluice_tools.fake_provider import FailingIds, FakeProvider, ScenarioBehaviour
from sluice_tools.local.faults import Faults
from sluice_tools.local.poller import ShardPoller
from sluice_tools.local.provider_app import load_provider
from sluice_tools.local.scheduler import Scheduler
from sluice_tools.local.stack import LOCAL_STAGE, DeployedProvider, LocalStack, deploy_provider
from sluice_tools.scenario import Scenario

# The local stack shrinks the worker's timeout (90 s in AWS) so a hung worker costs seconds,
# and the lease margin (30 s in AWS: time for an Invoke to start) since a local Invoke starts
# at once: a claim left by a killed ventilator then lapses in 15 s, not 2 minutes.
LOCAL_WORKER_TIMEOUT_S = 10
LOCAL_LEASE_MARGIN_S = 5
REARM_PERIOD_S = 600.0  # the rearm schedule's period (scenario seconds)


class Observer(Protocol):
    """What a run report wants to see beyond the logs (``report.Trace`` is one)."""

    def control_stored(self, t: float, state: Any) -> None:
        """A ventilator or the rearm stored the control state: the breaker's exact
        transitions, and when each probe was issued."""

    def invoke_sent(self, t: float, record_id: str) -> None:
        """A ventilator sent the Invoke of a worker for this record: it decided to call."""

    def provider_called(self, t: float, record_id: str) -> None:
        """The provider received a call for this record."""


class StackSession:
    def __init__(
        self,
        *,
        provider: str,
        scenario: Scenario,
        time_scale: float = 1.0,
        moto_port: int = 0,
        lambda_port: int = 0,
        update_delay_s: float = 0.5,
        faults: Faults | None = None,
        emit: Emit = stdout_emit,
        seed: int = 1,
        report_batch_item_failures: bool = True,
        scenario_time: Callable[[], float] | None = None,
        window_clock: Callable[[], float] | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.provider_name = provider
        self.scenario = scenario
        self.time_scale = time_scale
        self.faults = faults
        self.emit = emit
        self.seed = seed
        self.report_batch_item_failures = report_batch_item_failures
        self.window_clock = window_clock
        self.observer = observer
        self.started = time.time()
        self.scenario_time = scenario_time or (lambda: (time.time() - self.started) * time_scale)
        self.stack = LocalStack(update_delay_s=update_delay_s, moto_port=moto_port,
                                lambda_port=lambda_port)
        self.api: FakeProvider | None = None
        self.deployed: DeployedProvider | None = None
        self.pollers: list[ShardPoller] = []
        self.scheduler: Scheduler | None = None
        self.stream_lock = threading.Lock()

    def start(self, deliver: bool = True) -> StackSession:
        """Start everything; with ``deliver=False`` pollers and schedules wait for
        ``start_delivery`` (so a demo can fill the stream first)."""
        self.stack.start()
        # What Lambda writes to CloudWatch in AWS (function errors, throttles) goes to moto's.
        self.stack.lambdas.telemetry(logs=boto3.client("logs"),
                                     cloudwatch=boto3.client("cloudwatch"))
        behaviour: Any = ScenarioBehaviour(self.scenario, self.scenario_time, seed=self.seed)
        if self.faults is not None and self.faults.poison:
            # Filled by the demo before delivery starts: records the provider always fails.
            behaviour = FailingIds(behaviour, self.faults.poison_ids)
        self.api = FakeProvider(behaviour).start()
        self.deployed = self._deploy()
        kinesis, cloudwatch = boto3.client("kinesis"), boto3.client("cloudwatch")
        shards = kinesis.list_shards(StreamName=self.deployed.settings.stream_name)["Shards"]
        self.pollers = [
            ShardPoller(self.stack.lambdas, uuid, kinesis, self.deployed.settings.stream_name,
                        shard["ShardId"], stream_lock=self.stream_lock, cloudwatch=cloudwatch,
                        on_invoke=self.faults.corrupt_envelopes if self.faults else None)
            for uuid in self.deployed.mapping_uuids
            for shard in shards
        ]
        for poller in self.pollers:  # `sluice status` reads the exact backlog from these
            self.stack.lambdas.track_shard(poller.mapping_uuid, poller.shard_id,
                                           lambda p=poller: p.checkpoint)
        self.scheduler = Scheduler(self.stack.lambdas, time_scale=self.time_scale)
        for handler, period in self.deployed.provider.schedules():
            self.scheduler.add(self.deployed.functions[handler], period)
        if deliver:
            self.start_delivery()
        return self

    def start_delivery(self) -> None:
        self.started = time.time()
        for poller in self.pollers:
            poller.start()
        assert self.scheduler is not None
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        for poller in self.pollers:
            poller.stop()
        if self.api is not None:
            self.api.stop()
        self.stack.stop()

    def _deploy(self) -> DeployedProvider:
        assert self.api is not None
        overrides: dict[str, Any] = {"worker_timeout_s": LOCAL_WORKER_TIMEOUT_S,
                                     "lease_margin_s": LOCAL_LEASE_MARGIN_S}
        if self.faults is not None:
            overrides["shards"] = self.faults.shards  # a fault of its own: two shards
        overrides.update(self.scenario.settings)
        wrapper = None
        if self.faults is not None:
            faults, timeout = self.faults, float(overrides["worker_timeout_s"])
            wrapper = lambda fn: faults.wrap_worker(fn, timeout)  # noqa: E731
        provider = load_provider(self.provider_name)
        deployed = deploy_provider(
            provider,
            self.stack.lambdas,
            api_base_url=self.api.url,
            overrides=overrides,
            emit=self._emit_for(provider.function_name("ventilator", LOCAL_STAGE)),
            window_clock=self.window_clock,
            function_response_types=(["ReportBatchItemFailures"]
                                     if self.report_batch_item_failures else None),
            worker_wrapper=wrapper,
        )
        if deployed.settings.secret_id:
            # The provider's credentials live in Secrets Manager (here moto's), never in config.
            token = secrets.token_urlsafe(24)
            boto3.client("secretsmanager").create_secret(
                Name=deployed.settings.secret_id, SecretString=json.dumps({"token": token}))
            self.api.bearer_token = token
        if self.observer is not None:
            self._observe(deployed, self.observer)
        if self.faults is not None:
            self.faults.install(service=self.stack.lambdas, deployed=deployed,
                                rearm_period_s=REARM_PERIOD_S / self.time_scale)
        return deployed

    def _observe(self, deployed: DeployedProvider, observer: Observer) -> None:
        """Watch the control store (as the ventilator and the rearm use it), the ventilator's
        Invokes and the provider's door, at their edges."""
        runtime = deployed.runtime
        make_control = runtime.control
        runtime.control = lambda: _WatchedControl(make_control(), observer)  # type: ignore
        ventilator = runtime.ventilator(deployed.settings.ventilator_function)

        def invoke_sent(request: Any, **_: Any) -> None:
            try:
                record_id = json.loads(request.body)["record_id"]
            except (TypeError, ValueError, KeyError):
                return
            observer.invoke_sent(time.time(), str(record_id))

        ventilator.invoke.client.meta.events.register("before-send.lambda.Invoke", invoke_sent)
        api = self.api
        if api is not None:
            serve = api.serve

            def served(record_id: str) -> Any:
                observer.provider_called(time.time(), record_id)
                return serve(record_id)

            api.serve = served  # type: ignore[method-assign]

    def _emit_for(self, ventilator: str) -> Emit:
        """The runtime's log lines go where they went (stdout, the demo's collector); a batch
        line that reports errors also goes to the ventilator's log group, as in AWS, where
        `sluice status` looks for recent errors. (AWS keeps every line; here only those, to
        spare the local stack a call per batch.)"""
        emit, lambdas = self.emit, self.stack.lambdas

        def emit_and_log(doc: Any) -> None:
            emit(doc)
            if doc.get("event") == "batch" and doc.get("errors"):
                lambdas.log(ventilator, json.dumps(doc, separators=(",", ":"), default=str))

        return emit_and_log

    def idle_for(self, seconds: float) -> bool:
        return all(time.time() - p.stats.last_batch_at > seconds for p in self.pollers)

    def exports(self) -> dict[str, str]:
        return {**self.stack.env, "SLUICE_STAGE": LOCAL_STAGE}

    def describe(self) -> dict[str, Any]:
        assert self.deployed is not None and self.api is not None
        s = self.deployed.settings
        return {
            "provider": s.provider,
            "stage": LOCAL_STAGE,
            "functions": self.deployed.functions,
            "stream": s.stream_name,
            "table": s.table_name,
            "bucket": s.result_bucket,
            "fake_provider_api": self.api.url,
            "scenario": self.scenario.name,
        }


class _WatchedControl:
    """A control store, unchanged, telling an observer what it stored."""

    def __init__(self, inner: Any, observer: Observer) -> None:
        self.inner = inner
        self.observer = observer

    def load(self) -> Any:
        return self.inner.load()

    def update(self, change: Callable[[Any], Any], current: Any = None) -> Any:
        state = self.inner.update(change, current)
        self.observer.control_stored(time.time(), state)
        return state
