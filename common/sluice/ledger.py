"""The record ledger: per record id and provider-local day, was it fetched, and how many attempts.

One DynamoDB table per provider, keyed ``pk`` (record id) + ``sk`` (day, ``YYYY-MM-DD``).
Items expire by TTL (``expires_at``) a few days after their day. (Rows whose ``pk`` starts
with ``#`` are not records: see ``control``, ``day_counts``, ``kickoff_marker``, ``malformed``.)

A record moves through these states within a day::

    (absent) --claim--> in_progress --complete--> fetched            (final: skip for the day)
                          |  |  ^
                          |  |  +---claim (lease lapsed: its holder died, or its outcome
                          |  |            was never known)
                          |  +--release--> failed   (the call definitely never started:
                          |                          the attempt is given back)
                          +--fail--> failed --claim--> in_progress ...
                          |            +--settle_failure(park)--> parked (final, a reason)
                          +--fail(park: permanent error)--> parked

A claim is one conditional write, made before any provider call. Its lease outlives the
worker's Lambda timeout, so while a lease is live its holder may still be calling the
provider and nobody else may claim the record; once it has lapsed no worker can be running:

    claim ---- worker runs (killed at worker_timeout_s at the latest) ---- lease_until
    |<------------------------- lease_s = worker_timeout_s + margin ------------------>|

A call whose outcome is unknown (the Invoke's connection dropped after the request was sent)
writes nothing: the claim simply stays until its lease lapses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

from sluice import items

IN_PROGRESS = "in_progress"
FETCHED = "fetched"
FAILED = "failed"
PARKED = "parked"

BATCH_GET_LIMIT = 100


@dataclass(frozen=True)
class Entry:
    record_id: str
    day: str
    status: str
    attempts: int = 0
    blamed: int = 0  # failed while the provider served others: held against the record
    suspects: int = 0  # failed alone while the provider looked healthy: not yet proof
    lease_until: float = 0.0
    claim_token: str = ""
    reason: str = ""
    updated_at: float = 0.0
    claimed_at: float = 0.0  # when the latest attempt began

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
    """The record ledger on DynamoDB (the ``LedgerPort`` of ``sluice.ports``)."""

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
            keys = [items.key(rid, day) for rid in unique[start : start + BATCH_GET_LIMIT]]
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
            TableName=self.table_name, Key=items.key(record_id, day), ConsistentRead=True
        ).get("Item")
        return _entry(item) if item else None

    # -- the record's life -------------------------------------------------------------------

    def claim(self, record_id: str, day: str, token: str, now: float, lease_s: float) -> Entry:
        """Take the record for one provider call, or raise ClaimLost with the current entry."""
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=items.key(record_id, day),
                UpdateExpression=(
                    "SET #st = :ip, lease_until = :lease, claim_token = :tok, "
                    "expires_at = :ttl, updated_at = :now, claimed_at = :now ADD attempts :one"
                ),
                ConditionExpression=(
                    "attribute_not_exists(pk) OR #st = :failed "
                    "OR (#st = :ip AND lease_until < :now)"
                ),
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=items.values(
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
            if not items.condition_failed(exc):
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

    def release(self, record_id: str, day: str, token: str, now: float) -> bool:
        """Give the claim back: the call definitely never started (Invoke throttled, function
        not found), so the attempt is not counted and nobody is blamed."""
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=items.key(record_id, day),
                UpdateExpression="SET #st = :failed, updated_at = :now REMOVE lease_until "
                "ADD attempts :minus",
                ConditionExpression="claim_token = :tok AND #st = :ip",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=items.values(
                    failed=FAILED, now=round(now, 3), minus=-1, tok=token, ip=IN_PROGRESS),
            )
        except ClientError as exc:
            if not items.condition_failed(exc):
                raise
            return False
        return True

    def _finish(
        self, record_id: str, day: str, token: str, now: float, status: str, reason: str
    ) -> bool:
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=items.key(record_id, day),
                UpdateExpression="SET #st = :st, reason = :reason, updated_at = :now "
                "REMOVE lease_until",
                ConditionExpression="claim_token = :tok AND #st = :ip",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=items.values(
                    st=status, reason=reason, now=round(now, 3), tok=token, ip=IN_PROGRESS
                ),
            )
        except ClientError as exc:
            if not items.condition_failed(exc):
                raise
            return False  # the claim was no longer ours; whoever holds it records the outcome
        return True

    def settle_failure(
        self, record_id: str, day: str, now: float, *, blamed: bool, park: bool, reason: str,
        suspect: bool = False,
    ) -> bool:
        """After its batch is judged: hold a failed attempt against the record (``blamed``),
        note it failed alone (``suspect``), and/or give up on it (``park``). Only while it is
        still ``failed`` (not re-claimed meanwhile by another shard: that attempt decides)."""
        sets = ["updated_at = :now"]
        adds = []
        values: dict[str, Any] = {"now": round(now, 3), "failed": FAILED}
        if park:
            sets += ["#st = :parked", "reason = :reason"]
            values.update(parked=PARKED, reason=reason)
        if blamed:
            adds.append("blamed :one")
        if suspect:
            adds.append("suspects :one")
        if adds:
            values["one"] = 1
        update = "SET " + ", ".join(sets) + (" ADD " + ", ".join(adds) if adds else "")
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=items.key(record_id, day),
                UpdateExpression=update,
                ConditionExpression="#st = :failed",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=items.values(**values),
            )
        except ClientError as exc:
            if not items.condition_failed(exc):
                raise
            return False
        return True


def _entry(item: Mapping[str, Any]) -> Entry:
    plain = items.decode(item)
    return Entry(
        record_id=plain["pk"],
        day=plain["sk"],
        status=plain.get("status", ""),
        attempts=int(plain.get("attempts", 0)),
        blamed=int(plain.get("blamed", 0)),
        suspects=int(plain.get("suspects", 0)),
        lease_until=float(plain.get("lease_until", 0.0)),
        claim_token=plain.get("claim_token", ""),
        reason=plain.get("reason", ""),
        updated_at=float(plain.get("updated_at", 0.0)),
        claimed_at=float(plain.get("claimed_at", 0.0)),
    )
