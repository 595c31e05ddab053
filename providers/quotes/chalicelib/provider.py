"""Quotes: end-of-day prices from a JSON API with a bearer token (from Secrets Manager).

The API answers ``{"id": ..., "as_of": "YYYY-MM-DD", "data": {"value": <price in cents>}}``;
sluice stores ``{"instrument", "as_of", "price", "currency"}`` with the price as a decimal
string (never a float: this is money). A quote for another instrument, or a negative price,
is the provider's mistake, not a reason to store garbage: it fails the attempt.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from sluice.errors import ProviderError
from sluice.provider_http import get_json
from sluice.secrets import bearer_headers
from sluice.settings import ProviderSettings

# The decorator needs the name at import; the deploy sets the stage-scoped one.
STREAM = os.environ.get("SLUICE_STREAM_NAME", "sluice-quotes")
CURRENCY = "USD"


def fetch_record(record_id: str, settings: ProviderSettings) -> dict[str, Any]:
    settings.require("api_base_url", "secret_id")
    url = f"{settings.api_base_url.rstrip('/')}/quotes/{quote(record_id, safe='')}"
    doc = get_json(url, timeout_s=settings.worker_timeout_s * 0.8,
                   headers=bearer_headers(settings.secret_id))
    return to_result(record_id, doc)


def to_result(record_id: str, doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("id") != record_id:
        raise ProviderError("invalid_response")
    cents = (doc.get("data") or {}).get("value")
    if not isinstance(cents, int) or cents < 0:
        raise ProviderError("invalid_price")
    return {
        "instrument": record_id,
        "as_of": doc.get("as_of"),
        "price": str(Decimal(cents) / 100),
        "currency": CURRENCY,
    }
