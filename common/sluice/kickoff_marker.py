"""The day's kickoff marker (``#kickoff`` / day): at most one complete scheduled run per day,
and where a run that died had got to.

One row per provider-local day. A run *claims* it with a conditional write that gives it a
lease and an owner token; after each chunk the stream accepted it *advances* the row (``put``:
how many ids of the day's list are on the stream, and a renewed lease), conditional on still
owning it; at the end it *finishes* it (done). A run that dies is taken over once its lease
lapses: the taker owns the row from then on and resumes after ``put``; the old run, if it was
only stalled, fails its next conditional write (``LostKickoff``) and must stop. A day whose
input is not there yet is *released* as ``waiting``: the next run claims it at once.
``put`` is also the day's scheduled ``enqueued`` count (``DayCounts.get`` adds it): the count
moves in the same write as the progress.

    run A: claim(put=0) -> chunk -> advance(500) -> chunk -> advance(1000) -> dies
           lease:          renewed by each advance ..................... lapses LEASE later
    run B: claim -> None while A's lease is live;   claim -> put=1000 once it lapsed -> ...

Statuses: ``in_progress`` (owned, leased), ``waiting`` (no input yet: claimable at once),
``done`` (never claimed again that day).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import ClientError

from sluice import items

KICKOFF_PK = "#kickoff"
RUNNING, WAITING, DONE = "in_progress", "waiting", "done"
_NAMES = {"#st": "status", "#ow": "owner", "#put": "put"}  # status, owner: reserved words


@dataclass(frozen=True)
class Claim:
    """A run's hold on the day's kickoff: ``put`` ids of the day's list are on the stream."""

    day: str
    owner: str
    put: int


class LostKickoff(RuntimeError):
    """Another run took the day's kickoff over (this run's lease lapsed): stop writing."""

    def __init__(self, claim: Claim, current: Mapping[str, Any]) -> None:
        super().__init__(f"kickoff for {claim.day} is no longer this run's "
                         f"(status {current.get('status')!r})")
        self.current = dict(current)


class KickoffMarker(items.TableRows):
    def start(self, day: str, now: float, lease_s: float, *,
              owner: str | None = None) -> Claim | None:
        """Claim the day's kickoff, unless it is done or another run holds a live lease.
        A takeover keeps ``put`` (where the dead run had got to); a fresh day starts at 0."""
        owner = owner or uuid.uuid4().hex
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=items.key(KICKOFF_PK, day),
                UpdateExpression="SET #st = :ip, #ow = :me, lease_until = :lease, "
                "taken_at = :now, started_at = if_not_exists(started_at, :now), "
                "#put = if_not_exists(#put, :zero), expires_at = :ttl ADD runs :one",
                ConditionExpression="attribute_not_exists(pk) OR #st = :waiting OR "
                "(#st = :ip AND lease_until < :now)",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues=items.values(
                    ip=RUNNING, waiting=WAITING, me=owner, lease=round(now + lease_s, 3),
                    now=round(now, 3), zero=0, one=1, ttl=int(now) + self._ttl_s),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if not items.condition_failed(exc):
                raise
            return None
        return Claim(day, owner, int(items.decode(response["Attributes"]).get("put", 0)))

    def advance(self, claim: Claim, put: int, now: float, lease_s: float) -> Claim:
        """Record that ``put`` ids of the day's list are on the stream and renew the lease, if
        this run still owns the day. ``put`` is also the day's scheduled ``enqueued`` count
        (``DayCounts.get`` reads it): progress and count are one write, never one without the
        other."""
        self._update(claim, self._owned(
            claim, "SET #put = :put, lease_until = :lease, progressed_at = :now",
            put=put, lease=round(now + lease_s, 3), now=round(now, 3)), then=RUNNING)
        return replace(claim, put=put)

    def finish(self, claim: Claim, now: float) -> None:
        """The day is done: ``claim.put`` ids enqueued; never claimed again today."""
        self._update(claim, self._owned(
            claim, "SET #st = :done, enqueued = :n, finished_at = :now REMOVE lease_until",
            done=DONE, n=claim.put, now=round(now, 3)), then=DONE)

    def release(self, claim: Claim, now: float) -> None:
        """No input for the day yet: not done, and claimable by the next run at once."""
        self._update(claim, self._owned(
            claim, "SET #st = :waiting, checked_at = :now REMOVE lease_until",
            waiting=WAITING, now=round(now, 3)), then=WAITING)

    # -- primitives -----------------------------------------------------------------------------

    def _owned(self, claim: Claim, expression: str, **values: Any) -> dict[str, Any]:
        """An update of the day's row, conditional on this run still owning it."""
        names = {k: v for k, v in _NAMES.items() if k in expression or k in ("#st", "#ow")}
        return {
            "TableName": self.table_name,
            "Key": items.key(KICKOFF_PK, claim.day),
            "UpdateExpression": expression,
            "ConditionExpression": "#st = :ip AND #ow = :me",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": items.values(ip=RUNNING, me=claim.owner, **values),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def _update(self, claim: Claim, update: dict[str, Any], *, then: str) -> None:
        try:
            self.client.update_item(**update)
        except ClientError as exc:
            if not items.condition_failed(exc):
                raise
            current = items.decode(exc.response.get("Item") or {})
            # Our own earlier attempt already applied (boto3 retried after a lost answer).
            if current.get("owner") == claim.owner and current.get("status") == then:
                return
            raise LostKickoff(claim, current) from exc
