"""Payloads parked before they had an id (``#malformed`` / day#shard#sequence).

Kept (base64, capped) with a content-free reason so an operator can inspect and replay them;
keyed by stream position, so a retried batch writes the same item again (idempotent).
"""

from __future__ import annotations

import base64
from typing import Any

from sluice import items
from sluice.ledger import PARKED

MALFORMED_PK = "#malformed"
KEEP_BYTES = 4096


class MalformedStore(items.TableRows):
    def park(self, *, shard_id: str, sequence_number: str, day: str, reason: str, data: bytes,
             now: float) -> None:
        item = {
            "pk": MALFORMED_PK,
            "sk": f"{day}#{shard_id}#{sequence_number}",
            "status": PARKED,
            "reason": reason,
            "size": len(data),
            "payload_b64": base64.b64encode(data[:KEEP_BYTES]).decode(),
            "updated_at": round(now, 3),
            "expires_at": int(now) + self._ttl_s,
        }
        self.client.put_item(TableName=self.table_name, Item=items.encode(item))

    def list(self, day: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :day)",
            "ExpressionAttributeValues": items.values(pk=MALFORMED_PK, day=day),
        }
        while True:
            page = self.client.query(**kwargs)
            found += [items.decode(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
