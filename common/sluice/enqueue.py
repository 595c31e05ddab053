"""Putting record ids on a provider's stream: scheduled (the day's kickoff) or ad-hoc (an
adviser's request). The ledger dedupes them against each other: once a day holds either way.

Batches of 500 (PutRecords' limit); throttled entries are put again after a backoff. The id is
the partition key, so one id always lands on one shard. ``lock`` serializes writers when many
threads share a stream (moto's Kinesis loses records otherwise; AWS does not mind).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from typing import Any

from sluice.intake import encode_request

PUT_RECORDS_LIMIT = 500
SCHEDULED, ADHOC = "scheduled", "adhoc"


class EnqueueError(RuntimeError):
    pass


def entries_for(ids: Iterable[str], source: str = SCHEDULED) -> list[tuple[str, bytes]]:
    """(partition key, payload) pairs for these ids, tagged with their source."""
    return [(rid, encode_request(rid, source)) for rid in ids]


def put_entries(
    kinesis: Any,
    stream_name: str,
    entries: Sequence[tuple[str, bytes]],
    *,
    lock: threading.Lock | None = None,
    progress: Callable[[int, int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_rounds: int = 10,
) -> int:
    """Put every (partition key, payload) entry; returns how many were put."""
    guard = lock or nullcontext()
    done = 0
    for start in range(0, len(entries), PUT_RECORDS_LIMIT):
        pending = [{"PartitionKey": pk, "Data": data}
                   for pk, data in entries[start : start + PUT_RECORDS_LIMIT]]
        for round_ in range(max_rounds):
            with guard:
                response = kinesis.put_records(StreamName=stream_name, Records=pending)
            if not response.get("FailedRecordCount"):
                break
            pending = [entry for entry, result in zip(pending, response["Records"], strict=True)
                       if "ErrorCode" in result]
            sleep(min(0.1 * 2**round_, 5.0))
        else:
            raise EnqueueError(f"{len(pending)} record(s) still throttled after {max_rounds} tries")
        done = min(len(entries), start + PUT_RECORDS_LIMIT)
        if progress:
            progress(done, len(entries))
    return done


def enqueue(kinesis: Any, stream_name: str, ids: Iterable[str], source: str = SCHEDULED,
            **kwargs: Any) -> int:
    if source not in (SCHEDULED, ADHOC):
        raise ValueError(f"source must be {SCHEDULED!r} or {ADHOC!r}, not {source!r}")
    return put_entries(kinesis, stream_name, entries_for(ids, source), **kwargs)
