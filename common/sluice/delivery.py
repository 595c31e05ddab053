"""How many records one delivery should bring in window dispatch. Pure.

In window dispatch the mapping's BatchSize is no longer the concurrency: the ventilator keeps
up to its limit in flight across the whole delivery, so a delivery's size only decides how
often the stream's one-batch-per-shard rhythm makes it drain (its last calls run with no new
ones starting). Bigger deliveries drain less often, but one delivery's expected work
(records x mean latency / limit) should fit the time the ventilator may start calls in (its
Lambda timeout minus one worker call and the lease margin, the deadline rule): what does not
fit is handed back unstarted, which costs a redelivery and its ledger reads, nothing else.

The size is rounded down to a power of two so that small moves of the limit or the latency
do not update the mapping at every delivery (each update settles for a while).
"""

from __future__ import annotations

from collections.abc import Sequence

from sluice.policies import Sample

MAX_DELIVERY = 1024  # Kinesis allows 10,000; the ledger reads 100 ids per BatchGetItem
MIN_SAMPLES = 5  # below this, the latency threshold stands in for the mean latency


def delivery_size(limit: int, recent: Sequence[Sample], *, budget_s: float,
                  prior_latency_ms: float) -> int:
    """Records per delivery: what ``limit`` calls in flight finish in ``budget_s``."""
    latencies = [s.latency_ms for s in recent]
    mean_ms = sum(latencies) / len(latencies) if len(latencies) >= MIN_SAMPLES \
        else prior_latency_ms
    fits = int(max(1, limit) * max(0.0, budget_s) * 1000 / max(mean_ms, 1.0))
    size = max(1, min(MAX_DELIVERY, fits))
    size = 1 << (size.bit_length() - 1)  # a power of two at or below
    return max(limit, size)
