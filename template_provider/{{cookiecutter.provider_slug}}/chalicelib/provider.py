"""{{ cookiecutter.provider_name }}'s business logic: fetch one record and reshape it into the
common result format. This is the file to edit: the rest of the provider is plumbing."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote
{%- if cookiecutter.api_format == "xml" %}
from xml.etree import ElementTree
{%- endif %}

from sluice.errors import ProviderError
{%- if cookiecutter.api_format == "json" %}
from sluice.provider_http import get_json
{%- else %}
from sluice.provider_http import get
{%- endif %}
{%- if cookiecutter.auth == "bearer-secret" %}
from sluice.secrets import bearer_headers
{%- endif %}
from sluice.settings import ProviderSettings

# The stage's stream: `chalice package/deploy --stage S` imports app.py with the stage's
# environment (.chalice/config.json), so a plain `chalice deploy` maps the stage's own stream.
STREAM = os.environ.get("SLUICE_STREAM_NAME", "sluice-{{ cookiecutter.provider_slug }}")


def fetch_record(record_id: str, settings: ProviderSettings) -> dict[str, Any]:
    settings.require("api_base_url"{% if cookiecutter.auth == "bearer-secret" %}, "secret_id"{% endif %})
    {%- if cookiecutter.auth == "bearer-secret" %}
    headers = bearer_headers(settings.secret_id)
    {%- else %}
    headers: dict[str, str] = {}
    {%- endif %}
    {%- if cookiecutter.api_format == "json" %}
    url = f"{settings.api_base_url.rstrip('/')}/records/{quote(record_id, safe='')}"
    doc = get_json(url, timeout_s=settings.worker_timeout_s * 0.8, headers=headers)
    if not isinstance(doc, dict) or doc.get("id") != record_id:
        raise ProviderError("invalid_response")
    data = doc.get("data", {})
    as_of = doc.get("as_of")
    {%- else %}
    url = f"{settings.api_base_url.rstrip('/')}/records/{quote(record_id, safe='')}.xml"
    body = get(url, timeout_s=settings.worker_timeout_s * 0.8, headers=headers)
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise ProviderError("invalid_response") from None
    if root.get("id") != record_id:
        raise ProviderError("invalid_response")
    data = {child.tag: child.text for child in root}
    as_of = root.get("date")
    {%- endif %}
    return {"record_id": record_id, "provider": settings.provider, "as_of": as_of, "data": data}
