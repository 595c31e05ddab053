"""The worker's side of one record: call the provider, store the result, mark it fetched.

The worker (not the ventilator) writes "fetched" to the ledger, right after the result is
stored. So a ventilator that dies after its workers succeeded loses nothing and, on the
batch's retry, finds those records fetched instead of calling the provider again.
It never raises for a provider failure: the ventilator gets a small outcome document instead
(error kinds only, never the provider's response body).

Idempotent: before calling the provider it looks for today's result object. A worker that
died after storing but before marking (or whose answer was lost) left it there: the record is
marked fetched without a second, billed call.

Every provider call is logged as exactly one ``provider_call`` line (``call_line``): when it
started, how long it took, whether it was served and, if not, a content-free error kind and
the HTTP status. `sluice simulate --fit` rebuilds the provider's behaviour (capacity, latency,
error rates over time) from these lines. A record whose result was already stored is not a
provider call and logs none: a zero-latency "call" would read as a fast, idle provider, and
the ventilator's batch line already counts it.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from typing import Any

from sluice.clock import Clock, system_clock
from sluice.errors import ProviderError
from sluice.ledger import Ledger
from sluice.metrics import Emit
from sluice.results import ResultStore

Fetch = Callable[[str], Any]  # record id -> the record, in the common result format

PROVIDER_CALL = "provider_call"
# What an error kind looks like: ``timeout``, ``http_503``, ``worker_KeyError``: words joined by
# underscores, no run of more than three digits. A provider's own ProviderError could carry
# anything; whatever is not shaped like a kind is logged as "unclassified", so a record id, a
# URL or a message cannot ride along in the line.
_SAFE_KIND = re.compile(r"^(?!.*[0-9]{4})[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*$")
MAX_KIND = 64
_HTTP_KIND = re.compile(r"^http_([1-5][0-9]{2})$")


def run_worker(
    event: dict[str, Any],
    *,
    fetch: Fetch,
    store: ResultStore,
    ledger: Ledger,
    clock: Clock = system_clock,
    perf: Callable[[], float] = time.perf_counter,
    emit: Emit | None = None,
    provider: str = "",
) -> dict[str, Any]:
    """``emit`` receives the one ``provider_call`` line of a call (none when it is None)."""
    record_id, day, token = event["record_id"], event["day"], event["claim_token"]
    started = perf()
    try:
        found = store.exists(record_id, day)
    except Exception as exc:  # cannot tell: do not risk a second billed call
        return _failed(f"store_{type(exc).__name__}", perf() - started)
    if found:
        recorded = _complete(ledger, record_id, day, token, clock)
        return {"ok": True, "latency_ms": 0.0, "recorded": recorded, "found": True}
    call_at, call_started = clock(), perf()
    try:
        record = fetch(record_id)
    except ProviderError as exc:
        _log_call(emit, provider, call_at, perf() - call_started, exc.kind, exc.permanent,
                  exc.retry_after_s)
        return _failed(exc.kind, perf() - started, permanent=exc.permanent,
                       retry_after_s=exc.retry_after_s)
    except Exception as exc:  # provider logic bug: classify, never leak the message
        kind = f"worker_{type(exc).__name__}"
        _log_call(emit, provider, call_at, perf() - call_started, kind, False)
        return _failed(kind, perf() - started)
    _log_call(emit, provider, call_at, perf() - call_started, None, False)
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


def call_line(provider: str, started_at: float, latency_s: float, error_kind: str | None,
              permanent: bool = False, retry_after_s: float = 0.0) -> dict[str, Any]:
    """The ``provider_call`` log line: timings, outcome and error kind, never an id, a URL,
    a payload or a message. ``started_at`` (epoch seconds) and ``latency_ms`` let a reader
    rebuild how many calls were in flight when each one started."""
    kind = None if error_kind is None else (
        error_kind if len(error_kind) <= MAX_KIND and _SAFE_KIND.match(error_kind)
        else "unclassified")
    status = _HTTP_KIND.match(kind) if kind else None
    return {
        "event": PROVIDER_CALL,
        "provider": provider,
        "started_at": round(started_at, 6),
        "latency_ms": round(latency_s * 1000, 2),
        "ok": error_kind is None,
        "error_kind": kind,
        # The HTTP status when the call's outcome shows it (``http_<status>`` kinds); a served
        # call went through the provider's own fetch, which does not say which 2xx it got.
        "status": int(status.group(1)) if status else None,
        "permanent": permanent,  # the provider answered "this record cannot be served"
        "retry_after_s": round(retry_after_s, 3),  # the provider asked to be left alone
    }


def _log_call(emit: Emit | None, provider: str, started_at: float, latency_s: float,
              error_kind: str | None, permanent: bool, retry_after_s: float = 0.0) -> None:
    if emit is None:
        return
    # A log line is never worth failing (and so re-billing) a call the provider served.
    with contextlib.suppress(Exception):
        emit(call_line(provider, started_at, latency_s, error_kind, permanent, retry_after_s))


def _failed(kind: str, elapsed_s: float, *, permanent: bool = False,
            retry_after_s: float = 0.0) -> dict[str, Any]:
    doc = {
        "ok": False,
        "error": kind,
        "permanent": permanent,
        "latency_ms": round(elapsed_s * 1000, 2),
    }
    if retry_after_s > 0:
        doc["retry_after_s"] = round(retry_after_s, 3)  # the provider is busy: see verdicts
    return doc
