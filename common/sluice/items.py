"""The one codec between plain Python values and DynamoDB items, shared by every store.

The provider's ledger table holds several kinds of item, told apart by ``pk``: record ids
(letters or digits first) and rows that are not records, whose ``pk`` starts with ``#``
(``#control``, ``#stats``, ``#kickoff``, ``#malformed``). Each kind has its own module; this
one only turns values into attribute values and back, the same way for all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

_ser = TypeSerializer()
_de = TypeDeserializer()

CONDITION_FAILED = "ConditionalCheckFailedException"


def key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def value(plain: Any) -> dict[str, Any]:
    if isinstance(plain, float):  # boto3's serializer wants Decimal; DynamoDB wants a string
        return {"N": repr(plain)}
    return _ser.serialize(plain)


def values(**plain: Any) -> dict[str, Any]:
    """``ExpressionAttributeValues`` from keyword arguments (``now=1.0`` -> ``:now``)."""
    return {f":{k}": value(v) for k, v in plain.items()}


def encode(plain: Mapping[str, Any]) -> dict[str, Any]:
    return {k: value(v) for k, v in plain.items()}


def decode(item: Mapping[str, Any]) -> dict[str, Any]:
    """Numbers come back as float or int (never Decimal), so callers compare plain values."""
    out = {k: _de.deserialize(v) for k, v in item.items()}
    return {k: _number(v) if hasattr(v, "as_tuple") else v for k, v in out.items()}


def _number(decimal: Any) -> float | int:
    return int(decimal) if decimal == decimal.to_integral_value() else float(decimal)


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def condition_failed(exc: Exception) -> bool:
    return isinstance(exc, ClientError) and error_code(exc) == CONDITION_FAILED


class TableRows:
    """Base of the stores of non-record rows (day counts, kickoff marker, malformed payloads):
    the table, an injected client (built lazily when absent) and the rows' time to live."""

    def __init__(self, table_name: str, *, client: Any = None, ttl_days: int = 7) -> None:
        self.table_name = table_name
        self._client = client
        self._ttl_s = ttl_days * 86400

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client("dynamodb")
        return self._client
