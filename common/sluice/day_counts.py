"""The day's counters (``#stats`` / day): one ADD per batch, read by ``sluice status``.

Approximate by design (a ventilator killed mid-batch does not count its batch); the record
ledger is the truth, the counters are what an operator glances at.

``enqueued`` has two writers: ad-hoc feeds ADD here, and the scheduled kickoff keeps its count
in its own marker (``put``, written in the same conditional write as its progress, so a run
that dies and is resumed never counts a chunk twice, and no kickoff write touches this row
while ventilators ADD to it). ``get`` adds the two.
"""

from __future__ import annotations

from collections.abc import Mapping

from sluice import items
from sluice.kickoff_marker import KICKOFF_PK

STATS_PK = "#stats"


class DayCounts(items.TableRows):
    def add(self, day: str, counts: Mapping[str, int], now: float) -> None:
        parts, names, values = [], {}, {":ttl": items.value(int(now) + self._ttl_s)}
        for i, (name, n) in enumerate(kv for kv in counts.items() if kv[1]):
            names[f"#c{i}"] = name
            values[f":c{i}"] = items.value(n)
            parts.append(f"#c{i} :c{i}")
        if not parts:
            return
        self.client.update_item(
            TableName=self.table_name,
            Key=items.key(STATS_PK, day),
            UpdateExpression="SET expires_at = :ttl ADD " + ", ".join(parts),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def get(self, day: str) -> dict[str, int]:
        plain = self._row(STATS_PK, day)
        counts = {k: int(v) for k, v in plain.items() if k not in ("pk", "sk", "expires_at")}
        kickoff = self._row(KICKOFF_PK, day)
        # A marker without ``put`` (written before markers counted) was ADDed here instead.
        if "put" in kickoff:
            counts["enqueued"] = counts.get("enqueued", 0) + int(kickoff["put"])
        return counts

    def _row(self, pk: str, day: str) -> dict:
        item = self.client.get_item(TableName=self.table_name,
                                    Key=items.key(pk, day)).get("Item")
        return items.decode(item) if item else {}


def backlog(counts: dict[str, int]) -> int | None:
    """Records enqueued today and not yet finished (fetched, skipped or parked); None when
    nothing counted today's enqueues (records put by other producers are not counted)."""
    if "enqueued" not in counts:
        return None
    done = sum(counts.get(k, 0) for k in ("fetched", "skipped", "parked"))
    return max(0, counts["enqueued"] - done)
