"""Where a provider's daily list of record ids can come from, for scheduled ingestion.

``ids_from_bucket``: a text file (one id per line) that the firm's portfolio system drops in
the provider's results bucket under ``inputs/<provider>/<day>.txt``. It returns ``None`` when
there is no file for the day (yet): the kickoff then leaves the day open, and a later run inside
the window enqueues a file that lands later. An empty file is a list of no ids: the day is done
with 0. (Ad-hoc requests still come in via `sluice feed --adhoc` either way.)

"No file" must never look like a failure: S3 answers a missing key with 404 only to a caller
that may also list the bucket, and with 403 AccessDenied otherwise. The deploy grants the
kickoff ``s3:ListBucket`` on its own ``inputs/<provider>/`` prefix, so the answer is 404; a 403
is still told apart here, by listing that one key: absent -> no file (``None``); present -> a
real denial (raised: the day's ids exist and we cannot read them); the listing denied too -> we
cannot tell, so no file, with a warning that names the missing permission.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.exceptions import ClientError

from sluice.settings import ProviderSettings

log = logging.getLogger(__name__)
MISSING = ("NoSuchKey", "404", "NotFound")
DENIED = ("AccessDenied", "403", "Forbidden")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def input_key(day: str, settings: ProviderSettings) -> str:
    return f"inputs/{settings.provider}/{day}.txt"


def ids_from_bucket(day: str, settings: ProviderSettings, *,
                    client: Any = None) -> Iterator[str] | None:
    """The day's ids in the file's order (a resumed kickoff skips the ones already put), or
    ``None`` when the day's file is not there."""
    s3 = client or boto3.client("s3")
    key = input_key(day, settings)
    try:
        body = s3.get_object(Bucket=settings.result_bucket, Key=key)["Body"]
    except ClientError as exc:
        if _code(exc) in MISSING:
            return None
        if _code(exc) in DENIED and not _exists(s3, settings.result_bucket, key):
            return None
        raise
    return (line.strip() for line in body.read().decode().splitlines() if line.strip())


def _exists(s3: Any, bucket: str, key: str) -> bool:
    """Whether the key is there, for a GetObject that was denied."""
    try:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    except ClientError as exc:
        if _code(exc) not in DENIED:
            raise
        log.warning("reading %s answered AccessDenied and listing it is denied too: treated as "
                    "no input yet; grant s3:ListBucket on the inputs prefix to tell them apart",
                    key)
        return False
    return any(obj.get("Key") == key for obj in listed.get("Contents", []))
