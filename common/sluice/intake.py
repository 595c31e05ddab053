"""What a stream record asks for: one record id to fetch, validated before anything else."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Ids become DynamoDB keys and S3 key parts: keep them printable, short and path-safe.
RECORD_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class FetchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    record_id: str = Field(pattern=RECORD_ID_PATTERN)
    source: Literal["scheduled", "adhoc"] = "scheduled"


class MalformedRecord(ValueError):
    """A stream record that can never be fetched; ``reason`` is safe to log (no contents)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_request(data: bytes) -> FetchRequest:
    """Decode one Kinesis payload, or raise MalformedRecord with a content-free reason."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MalformedRecord("payload is not JSON") from None
    if not isinstance(doc, dict):
        raise MalformedRecord("payload is not a JSON object")
    try:
        return FetchRequest.model_validate(doc)
    except ValidationError as exc:
        # Field names and error types only: the offending values may be customer data.
        fields = sorted({".".join(str(p) for p in e["loc"]) or "payload" for e in exc.errors()})
        kinds = sorted({e["type"] for e in exc.errors()})
        reason = f"invalid field(s) {', '.join(fields)} ({', '.join(kinds)})"
        raise MalformedRecord(reason) from None


def encode_request(record_id: str, source: str = "scheduled") -> bytes:
    """The payload producers put on a provider's stream."""
    return json.dumps({"record_id": record_id, "source": source}).encode()
