"""Lambda event shapes, built exactly as AWS delivers them to a handler."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sluice_tools.local.lambda_service import ACCOUNT


@dataclass(frozen=True)
class KinesisItem:
    shard_id: str
    sequence_number: str
    partition_key: str
    data: bytes
    arrival: float


def kinesis_event(stream_arn: str, items: Iterable[KinesisItem]) -> dict[str, Any]:
    region = stream_arn.split(":")[3]
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": item.partition_key,
                    "sequenceNumber": item.sequence_number,
                    "data": base64.b64encode(item.data).decode(),
                    "approximateArrivalTimestamp": item.arrival,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{item.shard_id}:{item.sequence_number}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/local-ventilator",
                "awsRegion": region,
                "eventSourceARN": stream_arn,
            }
            for item in items
        ]
    }


def scheduled_event(region: str, rule: str, time_iso: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "local",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": time_iso,
        "region": region,
        "resources": [f"arn:aws:events:{region}:{ACCOUNT}:rule/{rule}"],
        "detail": {},
    }
