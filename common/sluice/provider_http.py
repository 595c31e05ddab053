"""Provider calls over HTTP with the standard library (no extra bytes in the Lambda bundle).

Failures become ProviderError kinds; response bodies and URLs with credentials never reach a
log line or an error message.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from sluice.errors import ProviderError

PERMANENT_STATUSES = frozenset({400, 404, 410, 422})


def get(url: str, *, timeout_s: float, headers: Mapping[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, headers=dict(headers or {}), method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        exc.close()
        raise ProviderError(f"http_{exc.code}", permanent=exc.code in PERMANENT_STATUSES) from None
    except TimeoutError:
        raise ProviderError("timeout") from None
    except urllib.error.URLError as exc:
        kind = "timeout" if isinstance(exc.reason, (TimeoutError, socket.timeout)) else "connection"
        raise ProviderError(kind) from None
    except (ConnectionError, OSError):
        raise ProviderError("connection") from None


def get_json(url: str, *, timeout_s: float, headers: Mapping[str, str] | None = None) -> Any:
    body = get(url, timeout_s=timeout_s, headers=headers)
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProviderError("invalid_response") from None
