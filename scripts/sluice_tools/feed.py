"""Putting record ids on a provider's stream: in batches of 500, retrying throttled entries.

The same code feeds the local stack and AWS (boto3 decides where by AWS_ENDPOINT_URL).
Writes are serialized per stream (one lock) because moto's Kinesis loses records under
concurrent writers (PITFALLS.md); against AWS the lock costs nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sluice.intake import encode_request

PUT_RECORDS_LIMIT = 500


class FeedError(RuntimeError):
    pass


def payloads_for(ids: Iterable[str], source: str = "scheduled") -> list[tuple[str, bytes]]:
    """(partition key, payload) pairs; the id is the partition key, so one id -> one shard."""
    return [(rid, encode_request(rid, source)) for rid in ids]


def feed(
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
    lock = lock or threading.Lock()
    done = 0
    for start in range(0, len(entries), PUT_RECORDS_LIMIT):
        pending = [{"PartitionKey": pk, "Data": data}
                   for pk, data in entries[start : start + PUT_RECORDS_LIMIT]]
        for round_ in range(max_rounds):
            with lock:
                response = kinesis.put_records(StreamName=stream_name, Records=pending)
            if not response.get("FailedRecordCount"):
                break
            # Throttled entries come back with an ErrorCode: put just those again, later.
            pending = [entry for entry, result in zip(pending, response["Records"], strict=True)
                       if "ErrorCode" in result]
            sleep(min(0.1 * 2**round_, 5.0))
        else:
            raise FeedError(f"{len(pending)} record(s) still throttled after {max_rounds} tries")
        done = min(len(entries), start + PUT_RECORDS_LIMIT)
        if progress:
            progress(done, len(entries))
    return done
