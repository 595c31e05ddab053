"""The parked-records queue: every record given up on is announced there (id, day, reason,
stream position), so an operator can see and replay it. Never the record's contents."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import boto3

SEND_BATCH_LIMIT = 10


class ParkedQueue:
    def __init__(self, queue_url: str, *, client: Any = None) -> None:
        self.queue_url = queue_url
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client("sqs")
        return self._client

    def announce(self, notices: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(notices), SEND_BATCH_LIMIT):
            chunk = notices[start : start + SEND_BATCH_LIMIT]
            response = self.client.send_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "MessageBody": json.dumps(n, separators=(",", ":"))}
                         for i, n in enumerate(chunk)],
            )
            if response.get("Failed"):
                # The ledger already holds the parked state: the queue is a notice board, so a
                # failed notice is reported, not retried forever.
                raise RuntimeError(f"{len(response['Failed'])} parked notice(s) not sent")
