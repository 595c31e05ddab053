"""The fake provider as a Lambda function URL, for `sluice smoke` on a real account.

The same API as ``sluice_tools.fake_provider`` (``GET /<anything>/<id>`` answers a record,
JSON, or XML when the path ends in ``.xml``; ``GET /stats`` the counters), but its counters
live in a DynamoDB table, because concurrent calls land on separate Lambda instances: calls
served per record and (UTC) day, calls in flight and the most ever in flight. So duplicates
and the concurrency cap are measured by the provider side, as a real provider's meter would.

This file is zipped alone (stdlib and boto3 only). It accepts any ``Authorization`` header:
providers with a bearer secret reach it too (their secret is read, not checked).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote
from xml.sax.saxutils import escape

import boto3
from botocore.exceptions import ClientError

TABLE = os.environ.get("FAKE_TABLE", "")
LATENCY_MS = float(os.environ.get("FAKE_LATENCY_MS", "200"))
_dynamodb: Any = None


def db() -> Any:
    global _dynamodb
    if _dynamodb is None:
        _dynamodb = boto3.client("dynamodb")
    return _dynamodb


def _add(pk: str, n: int) -> int:
    out = db().update_item(TableName=TABLE, Key={"pk": {"S": pk}}, UpdateExpression="ADD n :n",
                           ExpressionAttributeValues={":n": {"N": str(n)}},
                           ReturnValues="UPDATED_NEW")
    return int(out["Attributes"]["n"]["N"])


def _raise_max(in_flight: int) -> None:
    try:
        db().update_item(TableName=TABLE, Key={"pk": {"S": "#max_in_flight"}},
                         UpdateExpression="SET n = :n",
                         ConditionExpression="attribute_not_exists(n) OR n < :n",
                         ExpressionAttributeValues={":n": {"N": str(in_flight)}})
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise


def record_body(record_id: str, day: str) -> dict[str, Any]:
    digest = hashlib.sha256(record_id.encode()).hexdigest()
    return {"id": record_id, "as_of": day, "data": {"value": int(digest[:8], 16) % 100_000}}


def record_xml(record_id: str, day: str) -> str:
    value = record_body(record_id, day)["data"]["value"]
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<filing id="{escape(record_id)}" '
            f'date="{day}"><amount currency="EUR">{value / 100:.2f}</amount>'
            "<status>final</status></filing>")


def stats() -> dict[str, int]:
    counts: dict[str, int] = {}
    served = distinct = duplicates = 0
    pages = db().get_paginator("scan").paginate(TableName=TABLE)
    for item in (i for page in pages for i in page["Items"]):
        pk, n = item["pk"]["S"], int(item["n"]["N"])
        if pk.startswith("served#"):
            served += n
            distinct += 1
            duplicates += max(0, n - 1)
        else:
            counts[pk.lstrip("#")] = n
    return {"calls": counts.get("calls", 0), "failures": 0, "served": served,
            "distinct_served": distinct, "duplicates": duplicates,
            "in_flight": counts.get("in_flight", 0),
            "max_in_flight": counts.get("max_in_flight", 0)}


def _reply(status: int, body: str, content_type: str = "application/json") -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": content_type}, "body": body}


def handler(event: dict[str, Any], context: Any = None,
            sleep: Any = time.sleep) -> dict[str, Any]:
    path = unquote(event.get("rawPath", "/"))
    if path == "/stats":
        return _reply(200, json.dumps(stats()))
    if path.count("/") < 2 or path.endswith("/"):
        return _reply(404, '{"error": "not found"}')
    record_id = path.rsplit("/", 1)[1]
    xml = record_id.endswith(".xml")
    record_id = record_id.removesuffix(".xml")
    _add("#calls", 1)
    _raise_max(_add("#in_flight", 1))
    try:
        sleep(random.uniform(0.5, 1.5) * LATENCY_MS / 1000)
        day = datetime.now(UTC).date().isoformat()
        _add(f"served#{record_id}#{day}", 1)
    finally:
        _add("#in_flight", -1)
    if xml:
        return _reply(200, record_xml(record_id, day), "application/xml")
    return _reply(200, json.dumps(record_body(record_id, day)))
