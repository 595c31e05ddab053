"""Where fetched records go: one S3 object per record and provider-local day."""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.exceptions import ClientError

MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


class ResultStore:
    def __init__(self, bucket: str, *, provider: str, prefix: str = "results", client: Any = None):
        self.bucket = bucket
        self.provider = provider
        self.prefix = prefix.strip("/")
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client("s3")
        return self._client

    def key(self, record_id: str, day: str) -> str:
        return f"{self.prefix}/{self.provider}/{day}/{record_id}.json"

    def put(self, record_id: str, day: str, result: Any) -> str:
        key = self.key(record_id, day)
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(result, separators=(",", ":"), default=str).encode(),
            ContentType="application/json",
        )
        return key

    def exists(self, record_id: str, day: str) -> bool:
        """Whether today's result is already stored (a worker died before marking it).
        Needs s3:ListBucket on the prefix, or S3 answers 403 instead of 404 (PITFALLS.md)."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(record_id, day))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in MISSING:
                return False
            raise
        return True
