"""The demo provider's business logic: one record per GET, reshaped into sluice's result format."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from sluice.errors import ProviderError
from sluice.provider_http import get_json
from sluice.settings import ProviderSettings

# The decorator needs the name at import; the deploy sets the stage-scoped one.
STREAM = os.environ.get("SLUICE_STREAM_NAME", "sluice-demo")


def fetch_record(record_id: str, settings: ProviderSettings) -> dict[str, Any]:
    settings.require("api_base_url")
    url = f"{settings.api_base_url.rstrip('/')}/records/{quote(record_id, safe='')}"
    # Stay well under the worker's own Lambda timeout (90 s -> 72 s, above the slowest
    # provider's 70 s) so a slow call ends as a clean "timeout" instead of a killed worker.
    doc = get_json(url, timeout_s=settings.worker_timeout_s * 0.8)
    if not isinstance(doc, dict) or doc.get("id") != record_id:
        raise ProviderError("invalid_response")
    return {
        "record_id": record_id,
        "provider": settings.provider,
        "as_of": doc.get("as_of"),
        "data": doc.get("data", {}),
    }
