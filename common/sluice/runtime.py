"""Wiring for a provider's Lambda handlers: built once per container from the environment.

``providers/<name>/app.py`` hands each decorated handler straight to one of these methods.
Settings are read (and validated) on the first invocation, i.e. at cold start; boto3 clients
are created once and shared by the ventilator's threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3

from sluice.clock import Clock, local_day, system_clock
from sluice.control import ControlStore
from sluice.day_counts import DayCounts, backlog
from sluice.errors import RetryBatch
from sluice.invoker import WorkerInvoker, lambda_client_for_invoke
from sluice.kickoff import DaySource, kickoff
from sluice.kickoff_marker import KickoffMarker
from sluice.ledger import Ledger
from sluice.malformed import MalformedStore
from sluice.mapping import MappingClient
from sluice.metrics import Emit, stdout_emit
from sluice.parking import ParkedQueue
from sluice.rearm import rearm
from sluice.results import ResultStore
from sluice.settings import ProviderSettings, load_settings
from sluice.stream import StreamShards
from sluice.ventilator import StreamRecord, Ventilator
from sluice.worker import run_worker

ProviderFetch = Callable[[str, ProviderSettings], Any]


class Runtime:
    def __init__(
        self,
        settings: ProviderSettings | None = None,
        *,
        clock: Clock = system_clock,
        emit: Emit = stdout_emit,
        window_clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings or load_settings()
        self.sleep = sleep
        self.clock = clock
        self.window_clock = window_clock or clock
        self.emit = emit
        self._dynamodb = None
        self._ventilators: dict[str, Ventilator] = {}
        self._mappings: dict[str, MappingClient] = {}
        self._invoke_client = None
        self._store: ResultStore | None = None
        self._kinesis: Any = None

    @property
    def dynamodb(self) -> Any:
        if self._dynamodb is None:
            self._dynamodb = boto3.client("dynamodb")
        return self._dynamodb

    def ledger(self) -> Ledger:
        self.settings.require("table_name")
        return Ledger(self.settings.table_name, client=self.dynamodb,
                      ttl_days=self.settings.ledger_ttl_days)

    def _table(self, kind: Any) -> Any:
        self.settings.require("table_name")
        return kind(self.settings.table_name, client=self.dynamodb,
                    ttl_days=self.settings.ledger_ttl_days)

    def malformed(self) -> MalformedStore:
        return self._table(MalformedStore)

    def day_counts(self) -> DayCounts:
        return self._table(DayCounts)

    def control(self) -> ControlStore:
        self.settings.require("table_name")
        return ControlStore(self.settings.table_name, client=self.dynamodb)

    def mapping(self, function_name: str) -> MappingClient:
        if function_name not in self._mappings:
            self._mappings[function_name] = MappingClient(function_name)
        return self._mappings[function_name]

    def ventilator(self, function_name: str) -> Ventilator:
        if function_name not in self._ventilators:
            s = self.settings
            s.require("worker_function", "table_name")
            if self._invoke_client is None:
                self._invoke_client = lambda_client_for_invoke(s.worker_timeout_s,
                                                               s.max_batch_size)
            self._ventilators[function_name] = Ventilator(
                s,
                ledger=self.ledger(),
                control=self.control(),
                mapping=self.mapping(function_name),
                invoke=WorkerInvoker(s.worker_function, client=self._invoke_client),
                counts=self._table(DayCounts),
                malformed=self._table(MalformedStore),
                clock=self.clock,
                emit=self.emit,
                window_clock=self.window_clock,
                parked_queue=ParkedQueue(s.parked_queue_url) if s.parked_queue_url else None,
            )
        return self._ventilators[function_name]

    # -- handlers ------------------------------------------------------------------------------

    def ventilate(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        raw = event.get("Records", [])
        if not raw:
            return {"batchItemFailures": []}
        records = [StreamRecord.from_event(r) for r in raw]
        # Its own name from settings (the mapping is keyed by it); the context's as a fallback.
        name = self.settings.ventilator_function or context.function_name
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        report = self.ventilator(name).handle(records, raw[0].get("eventSourceARN", ""),
                                              remaining_ms=remaining)
        if report.backoff_s:
            # Nothing could be called (leased, held, probe elsewhere): not a busy loop.
            spare_s = (remaining() / 1000 - 5) if remaining else report.backoff_s
            self.sleep(max(0.0, min(report.backoff_s, spare_s)))
        if report.retry and not report.reports_item_failures:
            raise RetryBatch(f"{len(report.retry)} record(s) to retry; batch handed back")
        return report.response()

    def work(self, event: dict[str, Any], fetch: ProviderFetch) -> dict[str, Any]:
        """Run the worker for one record; ``fetch(record_id, settings)`` is the provider's own
        logic from its chalicelib/."""
        s = self.settings
        s.require("result_bucket", "table_name")
        if self._store is None:
            self._store = ResultStore(s.result_bucket, provider=s.provider, prefix=s.result_prefix)
        return run_worker(event, fetch=lambda rid: fetch(rid, s), store=self._store,
                          ledger=self.ledger(), clock=self.clock, emit=self.emit,
                          provider=s.provider)

    def kickoff(self, todays_ids: DaySource) -> dict[str, Any]:
        """Scheduled ingestion; ``todays_ids(day, settings)`` is the provider's own source."""
        s = self.settings
        s.require("stream_name", "table_name")
        if self._kinesis is None:
            self._kinesis = boto3.client("kinesis")
        return kickoff(settings=s, marker=self._table(KickoffMarker), kinesis=self._kinesis,
                       todays_ids=todays_ids, clock=self.clock, window_clock=self.window_clock,
                       emit=self.emit)

    def rearm(self) -> dict[str, Any]:
        s = self.settings
        s.require("stream_name", "ventilator_function", "table_name")
        return rearm(stream_name=s.stream_name, provider=s.provider, control=self.control(),
                     mapping=self.mapping(s.ventilator_function), clock=self.clock,
                     emit=self.emit, window=s.window, window_clock=self.window_clock,
                     max_size=s.max_batch_size, probe_lease_s=s.lease_s,
                     shards=StreamShards(s.stream_name),
                     max_concurrency=s.max_concurrency,
                     parallelization_factor=s.parallelization_factor, min_shards=s.shards,
                     stage=s.stage, backlog=self._backlog)

    def _backlog(self) -> int | None:
        day = local_day(self.clock(), self.settings.zone)
        return backlog(self.day_counts().get(day))


class LazyRuntime:
    """What a provider's app.py holds: its Runtime, built from the environment on first use
    (the cold start), or installed ready-made by tests and the local stack."""

    def __init__(self) -> None:
        self._runtime: Runtime | None = None

    def __call__(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime()
        return self._runtime

    def install(self, runtime: Runtime | None) -> None:
        self._runtime = runtime
