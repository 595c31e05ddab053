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

from sluice import items
from sluice.breaker import ControlState
from sluice.policies import Sample

CONTROL_KEY = items.key("#control", "breaker")


class ControlConflict(RuntimeError):
    """Someone else kept changing the control item; the update was not applied."""


class ControlStore:
    """The control item on DynamoDB (the ``ControlPort`` of ``sluice.ports``)."""

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
                if not items.condition_failed(exc):
                    raise
                current = None
                continue
            return stored
        raise ControlConflict(f"control item kept changing after {self._max_tries} tries")


_NUMBERS = ("batch_size", "window_pauses", "opened_at", "changed_at", "opens",
            "probe_issued_at", "probe_taken_at", "shards", "held_until", "held_misses",
            "lone_failures", "last_served_at", "delivery", "rate_limited_until", "version")
_TEXTS = ("breaker", "pause_reason", "reason", "probe_token")
_FLAGS = ("paused", "window_closed")


def _encode(state: ControlState) -> dict[str, Any]:
    # The recent samples as a compact JSON list: 20 stay far below DynamoDB's item size limit.
    recent = [[round(s.latency_ms, 1), int(s.ok)] for s in state.recent]
    plain: dict[str, Any] = {name: getattr(state, name) for name in _NUMBERS + _TEXTS + _FLAGS}
    plain["recent"] = json.dumps(recent, separators=(",", ":"))
    plain["memo"] = json.dumps(dict(state.memo), separators=(",", ":"))
    return {**CONTROL_KEY, **items.encode(plain)}


def _decode(item: dict[str, Any]) -> ControlState:
    plain = items.decode(item)
    defaults = ControlState()
    fields: dict[str, Any] = {}
    for name in _NUMBERS + _TEXTS + _FLAGS:
        default = getattr(defaults, name)
        fields[name] = type(default)(plain[name]) if name in plain else default
    fields["breaker"] = fields["breaker"] or defaults.breaker
    recent = json.loads(plain.get("recent") or "[]")
    fields["recent"] = tuple(Sample(float(lat), bool(ok)) for lat, ok in recent)
    memo = json.loads(plain.get("memo") or "{}")
    fields["memo"] = tuple(sorted((str(k), float(v)) for k, v in memo.items()))
    return ControlState(**fields)
