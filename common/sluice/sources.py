"""Where a provider's daily list of record ids can come from, for scheduled ingestion.

``ids_from_bucket``: a text file (one id per line) that the firm's portfolio system drops in
the provider's results bucket under ``inputs/<provider>/<day>.txt``. No file for the day means
nothing to enqueue (ad-hoc requests still come in via `sluice feed --adhoc`).
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
from botocore.exceptions import ClientError

from sluice.settings import ProviderSettings


def ids_from_bucket(day: str, settings: ProviderSettings) -> Iterator[str]:
    key = f"inputs/{settings.provider}/{day}.txt"
    try:
        body = boto3.client("s3").get_object(Bucket=settings.result_bucket, Key=key)["Body"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return iter(())
        raise
    return (line.strip() for line in body.read().decode().splitlines() if line.strip())
