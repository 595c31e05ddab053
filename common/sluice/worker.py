"""The worker's side of one record: call the provider, store the result, mark it fetched.

The worker (not the ventilator) writes "fetched" to the ledger, right after the result is
stored. So a ventilator that dies after its workers succeeded loses nothing and, on the
batch's retry, finds those records fetched instead of calling the provider again.
It never raises for a provider failure: the ventilator gets a small outcome document instead
(error kinds only, never the provider's response body).

Idempotent: before calling the provider it looks for today's result object. A worker that
died after storing but before marking (or whose answer was lost) left it there: the record is
marked fetched without a second, billed call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sluice.clock import Clock, system_clock
from sluice.errors import ProviderError
from sluice.ledger import Ledger
from sluice.results import ResultStore

Fetch = Callable[[str], Any]  # record id -> the record, in the common result format


def run_worker(
    event: dict[str, Any],
    *,
    fetch: Fetch,
    store: ResultStore,
    ledger: Ledger,
    clock: Clock = system_clock,
    perf: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    record_id, day, token = event["record_id"], event["day"], event["claim_token"]
    started = perf()
    try:
        found = store.exists(record_id, day)
    except Exception as exc:  # cannot tell: do not risk a second billed call
        return _failed(f"store_{type(exc).__name__}", perf() - started)
    if found:
        recorded = _complete(ledger, record_id, day, token, clock)
        return {"ok": True, "latency_ms": 0.0, "recorded": recorded, "found": True}
    try:
        record = fetch(record_id)
    except ProviderError as exc:
        return _failed(exc.kind, perf() - started, permanent=exc.permanent)
    except Exception as exc:  # provider logic bug: classify, never leak the message
        return _failed(f"worker_{type(exc).__name__}", perf() - started)
    latency_ms = (perf() - started) * 1000
    try:
        store.put(record_id, day, record)
    except Exception as exc:
        return _failed(f"store_{type(exc).__name__}", latency_ms / 1000)
    recorded = _complete(ledger, record_id, day, token, clock)
    return {"ok": True, "latency_ms": round(latency_ms, 2), "recorded": recorded}


def _complete(ledger: Ledger, record_id: str, day: str, token: str, clock: Clock) -> bool:
    try:
        return ledger.complete(record_id, day, token, clock())
    except Exception:
        return False  # the ventilator records it instead


def _failed(kind: str, elapsed_s: float, *, permanent: bool = False) -> dict[str, Any]:
    return {
        "ok": False,
        "error": kind,
        "permanent": permanent,
        "latency_ms": round(elapsed_s * 1000, 2),
    }
