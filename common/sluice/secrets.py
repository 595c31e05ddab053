"""Provider credentials from Secrets Manager, cached per container (never from config files,
never logged). A secret is either the token itself or a JSON object with a "token" field."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3

CACHE_S = 300.0  # a rotated secret is picked up within five minutes


class Secrets:
    def __init__(self, *, client: Any = None, clock: Callable[[], float] = time.monotonic):
        self._client = client
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client("secretsmanager")
        return self._client

    def value(self, secret_id: str) -> str:
        with self._lock:
            cached = self._cache.get(secret_id)
            if cached and self._clock() - cached[0] < CACHE_S:
                return cached[1]
        value = self.client.get_secret_value(SecretId=secret_id)["SecretString"]
        with self._lock:
            self._cache[secret_id] = (self._clock(), value)
        return value

    def token(self, secret_id: str) -> str:
        raw = self.value(secret_id)
        try:
            doc = json.loads(raw)
        except ValueError:
            return raw.strip()
        if isinstance(doc, dict) and isinstance(doc.get("token"), str):
            return doc["token"]
        raise ValueError(f"secret {secret_id} is JSON without a string 'token' field")


_shared = Secrets()


def bearer_headers(secret_id: str) -> dict[str, str]:
    """The Authorization header for a provider whose token lives in ``secret_id``."""
    return {"Authorization": f"Bearer {_shared.token(secret_id)}"}
