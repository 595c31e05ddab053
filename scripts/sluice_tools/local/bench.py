"""The pipeline's own cost: records per second and AWS calls per fetched record, against an
instant provider (1 ms), so what is measured is sluice and the local stack, not the API.

AWS calls are counted on the boto3 session the runtime uses (by service and operation),
after the stack's own tooling clients (the poller's Kinesis reads, metrics) are created, so
the count is what the ventilator, worker and rearm would make in AWS.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import boto3

from sluice.enqueue import entries_for, put_entries
from sluice.metrics import Emit
from sluice_tools.local.session import StackSession
from sluice_tools.scenario import parse_scenario


def instant_scenario(records: int, max_concurrency: int) -> Any:
    return parse_scenario({
        "name": "instant",
        "records": records,
        "provider": {"capacity": 10_000, "latency_ms": {"p50": 1, "p90": 1},
                     "error_rate": 0.0},
        "settings": {"max_concurrency": max_concurrency},
    })


def run_bench(records: int = 1000, provider: str = "demo", max_concurrency: int = 10,
              emit: Emit = lambda doc: None, timeout_s: float = 600) -> dict[str, Any]:
    scenario = instant_scenario(records, max_concurrency)
    session = StackSession(provider=provider, scenario=scenario, emit=emit,
                           update_delay_s=0.05)
    calls: Counter[str] = Counter()
    try:
        session.start(deliver=False)
        assert session.deployed is not None
        settings = session.deployed.settings

        def count(model: Any, **_: Any) -> None:
            calls[f"{model.service_model.service_name}:{model.name}"] += 1

        put_entries(boto3.client("kinesis"), settings.stream_name,
             entries_for(f"{settings.provider}-{i:06d}" for i in range(records)),
             lock=session.stream_lock)
        boto3.DEFAULT_SESSION.events.register("before-call", count)
        started = time.perf_counter()
        session.start_delivery()
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            delivered = sum(p.stats.records_delivered for p in session.pollers)
            if delivered >= records and session.idle_for(0.3):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started - 0.3
        boto3.DEFAULT_SESSION.events.unregister("before-call", count)
        fetched = session.api.stats()["distinct_served"] if session.api else 0
        batches = sum(p.stats.batches for p in session.pollers)
    finally:
        session.stop()
    per_record = {k: round(v / max(fetched, 1), 3) for k, v in sorted(calls.items())}
    return {
        "records": records,
        "fetched": fetched,
        "batches": batches,
        "max_concurrency": max_concurrency,
        "seconds": round(elapsed, 2),
        "records_per_s": round(fetched / elapsed, 1) if elapsed > 0 else None,
        "aws_calls": sum(calls.values()),
        "aws_calls_per_record": round(sum(calls.values()) / max(fetched, 1), 3),
        "by_operation_per_record": per_record,
    }
