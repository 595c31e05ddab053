"""The demo provider's business logic: one record per GET, reshaped into sluice's result format."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sluice.errors import ProviderError
from sluice.provider_http import get_json
from sluice.settings import ProviderSettings

STREAM = "sluice-demo"


def fetch_record(record_id: str, settings: ProviderSettings) -> dict[str, Any]:
    settings.require("api_base_url")
    url = f"{settings.api_base_url.rstrip('/')}/records/{quote(record_id, safe='')}"
    # Stay under the worker's own Lambda timeout so a slow call ends as a clean "timeout".
    doc = get_json(url, timeout_s=max(1, settings.worker_timeout_s - 10))
    if not isinstance(doc, dict) or doc.get("id") != record_id:
        raise ProviderError("invalid_response")
    return {
        "record_id": record_id,
        "provider": settings.provider,
        "as_of": doc.get("as_of"),
        "data": doc.get("data", {}),
    }
