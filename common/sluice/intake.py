"""What a stream record asks for: one record id to fetch, validated before anything else.

Anyone who can put on a provider's stream can put anything there, and one record that makes
the ventilator raise blocks its whole shard (invariant 4). So decoding never raises anything
but MalformedRecord, whatever the bytes, and its reason never echoes them (invariant 8).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# A real payload is {"record_id": <= 128 chars, "source": "scheduled"|"adhoc"}: well under 200
# bytes. The cap is checked before parsing, so nothing hostile ever reaches the JSON parser
# with room to hurt (a 10 MB payload, a deep nesting bomb, a 5,000-digit integer).
MAX_PAYLOAD_BYTES = 4096

# Ids become DynamoDB keys and S3 key parts: keep them printable, short and path-safe.
# ASCII only (no unicode lookalikes), no '/', no whitespace or control characters, and an
# alphanumeric first character, so no id is ever ".", ".." or hidden.
MAX_RECORD_ID_LENGTH = 128
RECORD_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class FetchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    record_id: str = Field(pattern=RECORD_ID_PATTERN, max_length=MAX_RECORD_ID_LENGTH)
    source: Literal["scheduled", "adhoc"] = "scheduled"


class MalformedRecord(ValueError):
    """A stream record that can never be fetched; ``reason`` is safe to log (no contents)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_kinesis_data(b64: str) -> bytes:
    """A Kinesis event record's ``data`` (base64) as bytes, or MalformedRecord."""
    if isinstance(b64, str | bytes | bytearray):
        try:
            # validate=True: a character outside the alphabet is an error, not skipped.
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError, TypeError):  # ValueError: a non-ASCII str
            pass
    raise MalformedRecord("data is not valid base64")


def parse_request(data: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> FetchRequest:
    """Decode one Kinesis payload, or raise MalformedRecord with a content-free reason."""
    try:
        return _parse(data, max_bytes)
    except MalformedRecord as bad:
        reason = bad.reason
    except Exception as exc:  # the guard of last resort: a shard must never block on a record
        reason = f"payload could not be decoded ({type(exc).__name__})"
    # Raised outside the handlers, so no exception rides along as __context__: a
    # UnicodeDecodeError, JSONDecodeError or ValidationError holds the payload itself, and
    # error trackers report the context even when a traceback would hide it.
    raise MalformedRecord(reason)


def encode_request(record_id: str, source: str = "scheduled") -> bytes:
    """The payload producers put on a provider's stream."""
    return json.dumps({"record_id": record_id, "source": source}).encode()


# -- decoding, step by step --------------------------------------------------------------------


class _Number:
    """Stands in for a JSON number: no field of a request is a number, so none is ever
    converted (no int/str digit limit, no float overflow, no cost)."""

    __slots__ = ()


_NUMBER = _Number()


def _number(literal: str) -> _Number:
    return _NUMBER


def _reject_constant(name: str) -> Any:
    raise MalformedRecord("payload is not strict JSON (NaN or Infinity)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins: a payload that means two things is refused.
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise MalformedRecord("payload has duplicate keys")
    return doc


def _parse(data: bytes, max_bytes: int) -> FetchRequest:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedRecord("payload is not bytes")
    size = memoryview(data).nbytes
    if size > max_bytes:
        raise MalformedRecord(f"payload too large ({size} bytes > {max_bytes})")
    try:
        # Strictly UTF-8: json.loads would otherwise guess UTF-16/32 from the first bytes.
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRecord("payload is not UTF-8") from None
    if not text.strip():
        raise MalformedRecord("payload is empty")
    try:
        doc = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_int=_number,
            parse_float=_number,
            parse_constant=_reject_constant,
        )
    except json.JSONDecodeError:
        raise MalformedRecord("payload is not JSON") from None
    except RecursionError:
        raise MalformedRecord("payload is nested too deeply") from None
    if not isinstance(doc, dict):
        raise MalformedRecord("payload is not a JSON object")
    try:
        return FetchRequest.model_validate(doc)
    except ValidationError as exc:
        raise MalformedRecord(_invalid_fields(exc)) from None


def _invalid_fields(exc: ValidationError) -> str:
    # Field names and error types only: the offending values may be customer data. Only the
    # model's own field names are named, so nothing of the payload can reach the reason.
    known = FetchRequest.model_fields
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    fields = sorted({str(e["loc"][0]) if e["loc"] and e["loc"][0] in known else "payload"
                     for e in errors})
    kinds = sorted({e["type"] for e in errors})
    return f"invalid field(s) {', '.join(fields)} ({', '.join(kinds)})"
