"""Filings: regulatory filings from an XML registry, reshaped into sluice's result format.

The registry answers ``<filing id=".." date=".."><amount currency="EUR">12.34</amount>
<status>final</status></filing>``. Only final filings are stored: a draft is retried on a
later attempt (the registry finalises them during the night). Amounts stay decimal strings.
XML comes from outside: the standard library's parser (expat >= 2.4.1) refuses entity
expansion bombs, and nothing of the body reaches an error message or a log.
"""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

from sluice.errors import ProviderError
from sluice.provider_http import get
from sluice.settings import ProviderSettings

# The decorator needs the name at import; the deploy sets the stage-scoped one.
STREAM = os.environ.get("SLUICE_STREAM_NAME", "sluice-filings")


def fetch_record(record_id: str, settings: ProviderSettings) -> dict[str, Any]:
    settings.require("api_base_url")
    url = f"{settings.api_base_url.rstrip('/')}/filings/{quote(record_id, safe='')}.xml"
    return to_result(record_id, get(url, timeout_s=settings.worker_timeout_s * 0.8))


def to_result(record_id: str, body: bytes) -> dict[str, Any]:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise ProviderError("invalid_xml") from None
    if root.tag != "filing" or root.get("id") != record_id:
        raise ProviderError("invalid_response")
    status = (root.findtext("status") or "").strip()
    if status != "final":
        raise ProviderError("filing_not_final")
    amount = root.find("amount")
    try:
        value = Decimal((amount.text or "").strip()) if amount is not None else None
    except InvalidOperation:
        value = None
    if value is None:
        raise ProviderError("invalid_amount")
    return {
        "filing_id": record_id,
        "filed_on": root.get("date"),
        "amount": str(value),
        "currency": amount.get("currency", "EUR"),
        "status": status,
    }
