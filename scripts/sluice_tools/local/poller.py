"""The event source mapping's poller: reads a shard and invokes the function, as Lambda does.

One poller per (mapping, shard), one invocation at a time per shard (parallelization factor
1), honouring the mapping as it is *now*: BatchSize, Enabled/Disabled (a disabled mapping
delivers nothing and keeps its checkpoint), and the function's answer:
- success: checkpoint after the last record;
- ``batchItemFailures`` (only when the mapping has ReportBatchItemFailures): checkpoint just
  before the lowest failed sequence number, and deliver again from there;
- a function error (raised, timed out): nothing is checkpointed and the batch is retried from
  the same checkpoint, after a short backoff, until it succeeds (MaximumRetryAttempts -1, the
  Kinesis default) or the mapping's retry budget runs out.
Sequence numbers are opaque strings compared as integers (moto's are small, AWS's are long).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sluice_tools.local.events import KinesisItem, kinesis_event
from sluice_tools.local.lambda_service import LambdaService


@dataclass
class PollerStats:
    batches: int = 0
    records_delivered: int = 0
    function_errors: int = 0
    partial_failures: int = 0
    discarded: int = 0  # records dropped after MaximumRetryAttempts (never with -1)
    last_batch_at: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


class ShardPoller:
    def __init__(
        self,
        service: LambdaService,
        mapping_uuid: str,
        kinesis: Any,
        stream_name: str,
        shard_id: str,
        *,
        idle_s: float = 0.05,
        retry_backoff_s: float = 0.1,
        stream_lock: threading.Lock | None = None,
        on_invoke: Callable[[str, dict[str, Any]], None] | None = None,
        cloudwatch: Any = None,
    ) -> None:
        self.service = service
        self.mapping_uuid = mapping_uuid
        self.kinesis = kinesis
        self.stream_name = stream_name
        self.shard_id = shard_id
        self.idle_s = idle_s
        self.retry_backoff_s = retry_backoff_s
        self.stream_lock = stream_lock or threading.Lock()
        self.on_invoke = on_invoke
        self.cloudwatch = cloudwatch
        self.checkpoint: str | None = None  # last sequence number fully processed
        self.stats = PollerStats()
        self._next_iterator: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"poller-{shard_id}", daemon=True)
        self._retries = 0

    def start(self) -> ShardPoller:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                delivered = self.poll_once()
            except Exception:
                delivered = False  # moto hiccup: try again shortly, like the real poller
            if not delivered:
                self._stop.wait(self.idle_s)

    # -- one step, usable directly by tests ------------------------------------------------------

    def poll_once(self) -> bool:
        """Deliver at most one batch; True if a batch was delivered."""
        mapping = self.service.mapping(self.mapping_uuid)
        if not mapping.enabled:
            return False
        items = self._read(mapping.batch_size, mapping.starting_position)
        if not items:
            return False
        event = kinesis_event(mapping.event_source_arn, items)
        if self.on_invoke:
            self.on_invoke("before", event)
        self._report_iterator_age(mapping.function.name, items)
        result = self.service.invoke(mapping.function.name, event)
        self.stats.batches += 1
        self.stats.records_delivered += len(items)
        self.stats.batch_sizes.append(len(items))
        self.stats.last_batch_at = time.time()
        if result.function_error:
            self.stats.function_errors += 1
            self._retries += 1
            self._next_iterator = None
            if 0 <= mapping.maximum_retry_attempts < self._retries:
                self.stats.discarded += len(items)  # AWS would send them to on-failure
                self._advance(items[-1].sequence_number)
            else:
                self._stop.wait(min(self.retry_backoff_s * 2 ** min(self._retries, 4), 2.0))
            return True
        self._retries = 0
        failed = _failed_sequences(result.payload, mapping.function_response_types)
        if failed:
            self.stats.partial_failures += 1
            lowest = min(failed, key=int)
            before = [i.sequence_number for i in items if int(i.sequence_number) < int(lowest)]
            self._next_iterator = None
            if before:
                self._advance(before[-1], keep_iterator=False)
            self._stop.wait(self.retry_backoff_s)
            return True
        self._advance(items[-1].sequence_number, keep_iterator=True)
        return True

    def _report_iterator_age(self, function_name: str, items: list[KinesisItem]) -> None:
        """Publish Lambda's IteratorAge metric (age of the newest record read), as AWS does."""
        if self.cloudwatch is None:
            return
        age_ms = max(0.0, (time.time() - items[-1].arrival) * 1000)
        with contextlib.suppress(Exception):  # a metric is not worth failing a delivery for
            self.cloudwatch.put_metric_data(Namespace="AWS/Lambda", MetricData=[{
                "MetricName": "IteratorAge", "Value": age_ms, "Unit": "Milliseconds",
                "Dimensions": [{"Name": "FunctionName", "Value": function_name}]}])

    def _advance(self, sequence_number: str, keep_iterator: bool = False) -> None:
        self.checkpoint = sequence_number
        if not keep_iterator:
            self._next_iterator = None

    def _read(self, limit: int, starting_position: str) -> list[KinesisItem]:
        iterator = self._next_iterator or self._iterator(starting_position)
        with self.stream_lock:  # moto's Kinesis is not thread-safe
            response = self.kinesis.get_records(ShardIterator=iterator, Limit=limit)
        records = response.get("Records", [])
        # Keep the iterator only while everything read so far gets checkpointed.
        self._next_iterator = response.get("NextShardIterator")
        return [
            KinesisItem(
                shard_id=self.shard_id,
                sequence_number=r["SequenceNumber"],
                partition_key=r["PartitionKey"],
                data=r["Data"],
                arrival=r["ApproximateArrivalTimestamp"].timestamp(),
            )
            for r in records
        ]

    def _iterator(self, starting_position: str) -> str:
        kwargs: dict[str, Any] = {"StreamName": self.stream_name, "ShardId": self.shard_id}
        if self.checkpoint is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                          StartingSequenceNumber=self.checkpoint)
        else:
            kwargs["ShardIteratorType"] = starting_position
        with self.stream_lock:
            return self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"]


def _failed_sequences(payload: bytes, response_types: list[str]) -> list[str]:
    if "ReportBatchItemFailures" not in response_types:
        return []  # without it, Lambda ignores whatever the function returned
    try:
        doc = json.loads(payload)
        return [str(f["itemIdentifier"]) for f in doc.get("batchItemFailures") or []]
    except (ValueError, TypeError, KeyError, AttributeError):
        return []
