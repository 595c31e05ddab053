"""Where the breaker's state lives: one item (``#control``) in the provider's ledger table.

What the controller learned must outlive a warm container and be shared by every shard's
ventilator, so it is read at the start of each batch and written back with an optimistic lock
(``version``). Two shards deciding at once cannot clobber each other: the loser re-reads and
re-applies its own batch to the winner's state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import boto3
from botocore.exceptions import ClientError

from sluice.breaker import ControlState
from sluice.policies import Sample

CONTROL_KEY = {"pk": {"S": "#control"}, "sk": {"S": "breaker"}}


class ControlConflict(RuntimeError):
    """Someone else kept changing the control item; the update was not applied."""


class ControlStore:
    def __init__(self, table_name: str, *, client: Any = None, max_tries: int = 8) -> None:
        self.table_name = table_name
        self._client = client
        self._max_tries = max_tries

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client("dynamodb")
        return self._client

    def load(self) -> ControlState:
        item = self.client.get_item(
            TableName=self.table_name, Key=CONTROL_KEY, ConsistentRead=True
        ).get("Item")
        return _decode(item) if item else ControlState()

    def update(
        self, change: Callable[[ControlState], ControlState], current: ControlState | None = None
    ) -> ControlState:
        """Apply ``change`` to the stored state under an optimistic lock; returns the result.

        ``current`` is a state just loaded (saves a read); if it is stale the write fails and
        the loop re-reads. ``change`` must be pure: it runs again on a fresh read.
        """
        for _ in range(self._max_tries):
            current = current if current is not None else self.load()
            wanted = change(current)
            if wanted == current:
                return current
            stored = replace(wanted, version=current.version + 1)
            try:
                self.client.put_item(
                    TableName=self.table_name,
                    Item=_encode(stored),
                    ConditionExpression="attribute_not_exists(pk) OR version = :v",
                    ExpressionAttributeValues={":v": {"N": str(current.version)}},
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                current = None
                continue
            return stored
        raise ControlConflict(f"control item kept changing after {self._max_tries} tries")


def _encode(state: ControlState) -> dict[str, Any]:
    window = [[round(s.latency_ms, 1), int(s.ok)] for s in state.window]
    return {
        **CONTROL_KEY,
        "breaker": {"S": state.breaker},
        "batch_size": {"N": str(state.batch_size)},
        "paused": {"BOOL": state.paused},
        "pause_reason": {"S": state.pause_reason},
        "window_closed": {"BOOL": state.window_closed},
        "window_pauses": {"N": str(state.window_pauses)},
        "reason": {"S": state.reason},
        # A compact JSON list: 20 samples stay far below DynamoDB's item size limit.
        "window": {"S": json.dumps(window, separators=(",", ":"))},
        "opened_at": {"N": repr(state.opened_at)},
        "changed_at": {"N": repr(state.changed_at)},
        "opens": {"N": str(state.opens)},
        "version": {"N": str(state.version)},
    }


def _decode(item: dict[str, Any]) -> ControlState:
    def num(name: str, default: float = 0) -> float:
        return float(item[name]["N"]) if name in item else default

    def text(name: str) -> str:
        return item[name]["S"] if name in item else ""

    window = tuple(Sample(float(lat), bool(ok)) for lat, ok in json.loads(text("window") or "[]"))
    return ControlState(
        breaker=text("breaker") or "closed",
        batch_size=int(num("batch_size")),
        paused=item.get("paused", {}).get("BOOL", False),
        pause_reason=text("pause_reason"),
        window_closed=item.get("window_closed", {}).get("BOOL", False),
        window_pauses=int(num("window_pauses")),
        reason=text("reason"),
        window=window,
        opened_at=num("opened_at"),
        changed_at=num("changed_at"),
        opens=int(num("opens")),
        version=int(num("version")),
    )
