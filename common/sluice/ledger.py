"""The ledger: per record id and provider-local day, was it fetched, and how many attempts.

One DynamoDB table per provider, keyed ``pk`` (record id) + ``sk`` (day, ``YYYY-MM-DD``).
Items expire by TTL (``expires_at``) a few days after their day.

A record moves through these states within a day::

    (absent) --claim--> in_progress --complete--> fetched            (final: skip for the day)
                            |  ^
                            |  +---claim (lease expired: its holder died)
                            +--fail--> failed --claim--> in_progress ...
                            |            +--settle_failure(park)--> parked (final, a reason)
                            +--fail(park: permanent error)--> parked

A claim is one conditional write, made before any provider call. Its lease outlives the
worker's Lambda timeout, so while a lease is live its holder may still be calling the
provider and nobody else may claim the record; once it has lapsed no worker can be running:

    claim ---- worker runs (killed at worker_timeout_s at the latest) ---- lease_until
    |<------------------------- lease_s = worker_timeout_s + 30 --------------------->|

Rows whose ``pk`` starts with ``#`` are not records (record ids must start with a letter or
digit): ``#control`` holds the breaker, ``#stats`` the day's counters, ``#malformed`` the
payloads parked before they had an id.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

IN_PROGRESS = "in_progress"
FETCHED = "fetched"
FAILED = "failed"
PARKED = "parked"

STATS_PK = "#stats"
KICKOFF_PK = "#kickoff"
DONE = "done"
MALFORMED_PK = "#malformed"
BATCH_GET_LIMIT = 100
MALFORMED_KEEP_BYTES = 4096

_ser = TypeSerializer()
_de = TypeDeserializer()


@dataclass(frozen=True)
class Entry:
    record_id: str
    day: str
    status: str
    attempts: int = 0
    blamed: int = 0  # failed attempts held against the record itself (see ventilator)
    lease_until: float = 0.0
    claim_token: str = ""
    reason: str = ""

    def is_final(self) -> bool:
        return self.status in (FETCHED, PARKED)

    def is_leased(self, now: float) -> bool:
        """Someone may be calling the provider for this record right now."""
        return self.status == IN_PROGRESS and self.lease_until > now


class ClaimLost(Exception):
    """The record was not ours to claim; ``existing`` says why (fetched, parked or leased)."""

    def __init__(self, existing: Entry | None) -> None:
        super().__init__(existing.status if existing else "unknown")
        self.existing = existing


class Ledger:
    def __init__(
        self,
        table_name: str,
        *,
        client: Any = None,
        ttl_days: int = 7,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.table_name = table_name
        self._client = client
        self._ttl_s = ttl_days * 86400
        self._sleep = sleep

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client("dynamodb")
        return self._client

    # -- reads -----------------------------------------------------------------------------

    def lookup(self, record_ids: Iterable[str], day: str) -> dict[str, Entry]:
        """Today's entries for these ids (absent ids are simply missing), 100 keys a request.

        Consistent reads: a record fetched a moment ago on another shard must show up.
        """
        unique = list(dict.fromkeys(record_ids))  # BatchGetItem rejects duplicate keys
        found: dict[str, Entry] = {}
        for start in range(0, len(unique), BATCH_GET_LIMIT):
            keys = [_key(rid, day) for rid in unique[start : start + BATCH_GET_LIMIT]]
            request = {self.table_name: {"Keys": keys, "ConsistentRead": True}}
            for attempt in range(8):
                response = self.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    entry = _entry(item)
                    found[entry.record_id] = entry
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                self._sleep(min(0.05 * 2**attempt, 2.0))  # throttled: back off, then retry
            else:
                raise RuntimeError("ledger lookup: DynamoDB kept keys unprocessed")
        return found

    def get(self, record_id: str, day: str) -> Entry | None:
        item = self.client.get_item(
            TableName=self.table_name, Key=_key(record_id, day), ConsistentRead=True
        ).get("Item")
        return _entry(item) if item else None

    # -- the record's life -------------------------------------------------------------------

    def claim(self, record_id: str, day: str, token: str, now: float, lease_s: float) -> Entry:
        """Take the record for one provider call, or raise ClaimLost with the current entry."""
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=_key(record_id, day),
                UpdateExpression=(
                    "SET #st = :ip, lease_until = :lease, claim_token = :tok, "
                    "expires_at = :ttl, updated_at = :now ADD attempts :one"
                ),
                ConditionExpression=(
                    "attribute_not_exists(pk) OR #st = :failed "
                    "OR (#st = :ip AND lease_until < :now)"
                ),
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=_values(
                    ip=IN_PROGRESS,
                    failed=FAILED,
                    lease=round(now + lease_s, 3),
                    tok=token,
                    ttl=int(now) + self._ttl_s,
                    now=round(now, 3),
                    one=1,
                ),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item")
            raise ClaimLost(_entry(old) if old else None) from None
        return _entry(response["Attributes"])

    def complete(self, record_id: str, day: str, token: str, now: float) -> bool:
        """Mark fetched, if the claim is still ours. Called by the worker right after storing."""
        return self._finish(record_id, day, token, now, FETCHED, "")

    def fail(
        self, record_id: str, day: str, token: str, now: float, *, error: str, park: bool
    ) -> str:
        """Record a failed attempt: ``failed`` (to retry) or ``parked`` (given up, with reason)."""
        status = PARKED if park else FAILED
        self._finish(record_id, day, token, now, status, error)
        return status

    def _finish(
        self, record_id: str, day: str, token: str, now: float, status: str, reason: str
    ) -> bool:
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(record_id, day),
                UpdateExpression="SET #st = :st, reason = :reason, updated_at = :now "
                "REMOVE lease_until",
                ConditionExpression="claim_token = :tok AND #st = :ip",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=_values(
                    st=status, reason=reason, now=round(now, 3), tok=token, ip=IN_PROGRESS
                ),
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            return False  # the claim was no longer ours; whoever holds it records the outcome
        return True

    def settle_failure(
        self, record_id: str, day: str, now: float, *, blamed: bool, park: bool, reason: str
    ) -> bool:
        """After its batch is judged: hold a failed attempt against the record (``blamed``),
        and/or give up on it (``park``). Only while it is still ``failed`` (not re-claimed)."""
        sets = ["updated_at = :now"]
        values: dict[str, Any] = {"now": round(now, 3), "failed": FAILED}
        if park:
            sets += ["#st = :parked", "reason = :reason"]
            values.update(parked=PARKED, reason=reason)
        update = "SET " + ", ".join(sets) + (" ADD blamed :one" if blamed else "")
        if blamed:
            values["one"] = 1
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(record_id, day),
                UpdateExpression=update,
                ConditionExpression="#st = :failed",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=_values(**values),
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            return False  # claimed again meanwhile (another shard): that attempt decides
        return True

    def park_malformed(
        self, *, shard_id: str, sequence_number: str, day: str, reason: str, data: bytes, now: float
    ) -> None:
        """Keep an undecodable payload (base64, capped) with its reason, keyed by its position.

        Idempotent: a retried batch writes the same item again.
        """
        item = {
            "pk": MALFORMED_PK,
            "sk": f"{day}#{shard_id}#{sequence_number}",
            "status": PARKED,
            "reason": reason,
            "size": len(data),
            "payload_b64": base64.b64encode(data[:MALFORMED_KEEP_BYTES]).decode(),
            "updated_at": round(now, 3),
            "expires_at": int(now) + self._ttl_s,
        }
        self.client.put_item(TableName=self.table_name, Item=_item(item))

    def malformed(self, day: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :day)",
            "ExpressionAttributeValues": _values(pk=MALFORMED_PK, day=day),
        }
        while True:
            page = self.client.query(**kwargs)
            items += [_plain(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- the day's kickoff (scheduled ingestion: at most one complete run per day) ------------

    def start_kickoff(self, day: str, now: float, lease_s: float) -> bool:
        """Take the day's kickoff, unless it is done or another run holds a live lease."""
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=_item({"pk": KICKOFF_PK, "sk": day, "status": IN_PROGRESS,
                            "lease_until": round(now + lease_s, 3), "started_at": round(now, 3),
                            "expires_at": int(now) + self._ttl_s}),
                ConditionExpression="attribute_not_exists(pk) OR "
                "(#st = :ip AND lease_until < :now)",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=_values(ip=IN_PROGRESS, now=round(now, 3)),
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def finish_kickoff(self, day: str, now: float, enqueued: int) -> None:
        self.client.update_item(
            TableName=self.table_name,
            Key=_key(KICKOFF_PK, day),
            UpdateExpression="SET #st = :done, enqueued = :n, finished_at = :now "
            "REMOVE lease_until",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues=_values(done=DONE, n=enqueued, now=round(now, 3)),
        )

    # -- the day's counters (one write per batch, for `sluice status`) ------------------------

    def count(self, day: str, counts: Mapping[str, int], now: float) -> None:
        parts, names, values = [], {}, {":ttl": _value(int(now) + self._ttl_s)}
        for i, (name, n) in enumerate(kv for kv in counts.items() if kv[1]):
            names[f"#c{i}"] = name
            values[f":c{i}"] = _value(n)
            parts.append(f"#c{i} :c{i}")
        if not parts:
            return
        self.client.update_item(
            TableName=self.table_name,
            Key=_key(STATS_PK, day),
            UpdateExpression="SET expires_at = :ttl ADD " + ", ".join(parts),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def day_counts(self, day: str) -> dict[str, int]:
        item = self.client.get_item(TableName=self.table_name, Key=_key(STATS_PK, day)).get("Item")
        plain = _plain(item) if item else {}
        return {k: int(v) for k, v in plain.items() if k not in ("pk", "sk", "expires_at")}


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, float):  # boto3's serializer wants Decimal; DynamoDB wants a string
        return {"N": repr(value)}
    return _ser.serialize(value)


def _values(**values: Any) -> dict[str, Any]:
    return {f":{k}": _value(v) for k, v in values.items()}


def _item(plain: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _value(v) for k, v in plain.items()}


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: _de.deserialize(v) for k, v in item.items()}
    return {k: (float(v) if hasattr(v, "as_tuple") else v) for k, v in out.items()}


def _entry(item: Mapping[str, Any]) -> Entry:
    plain = _plain(item)
    return Entry(
        record_id=plain["pk"],
        day=plain["sk"],
        status=plain.get("status", ""),
        attempts=int(plain.get("attempts", 0)),
        blamed=int(plain.get("blamed", 0)),
        lease_until=float(plain.get("lease_until", 0.0)),
        claim_token=plain.get("claim_token", ""),
        reason=plain.get("reason", ""),
    )


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")
