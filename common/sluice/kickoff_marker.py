"""The day's kickoff marker (``#kickoff`` / day): at most one complete scheduled run per day.

A run takes the marker with a conditional write and a lease; a run that dies is taken over
once its lease lapses (the ledger dedupes whatever it had already put on the stream).
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from sluice import items

KICKOFF_PK = "#kickoff"
RUNNING, DONE = "in_progress", "done"


class KickoffMarker(items.TableRows):
    def start(self, day: str, now: float, lease_s: float) -> bool:
        """Take the day's kickoff, unless it is done or another run holds a live lease."""
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=items.encode({"pk": KICKOFF_PK, "sk": day, "status": RUNNING,
                                   "lease_until": round(now + lease_s, 3),
                                   "started_at": round(now, 3),
                                   "expires_at": int(now) + self._ttl_s}),
                ConditionExpression="attribute_not_exists(pk) OR "
                "(#st = :ip AND lease_until < :now)",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=items.values(ip=RUNNING, now=round(now, 3)),
            )
        except ClientError as exc:
            if not items.condition_failed(exc):
                raise
            return False
        return True

    def finish(self, day: str, now: float, enqueued: int) -> None:
        self.client.update_item(
            TableName=self.table_name,
            Key=items.key(KICKOFF_PK, day),
            UpdateExpression="SET #st = :done, enqueued = :n, finished_at = :now "
            "REMOVE lease_until",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues=items.values(done=DONE, n=enqueued, now=round(now, 3)),
        )
