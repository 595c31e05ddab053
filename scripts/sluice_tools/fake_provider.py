"""A fake provider API: a real HTTP server on 127.0.0.1 that is slow and fails on purpose.

``GET /<anything>/<id>`` answers one record after a latency drawn from its behaviour, or
fails (503; 504 for a call that timed out in the provider's queue; 429 with a ``Retry-After``
header, in seconds, for a provider that rate-limits): JSON, or XML when the path ends in
``.xml`` (``/filings/<id>.xml``), so every provider's API shape is served. With
``bearer_token`` set, a call without ``Authorization: Bearer <token>`` gets 401 and is not
served. It counts every record it served per provider-local day, as a real provider's usage
meter would: a record served twice in a day is a duplicate fetch, caught by the provider
itself rather than by sluice's own bookkeeping. ``GET /stats`` returns the counters.

Behaviours are pluggable: ``PercentBehaviour`` reproduces the original demo's
SLOW_PERCENTAGE / ERROR_PERCENTAGE knobs; the local stack plugs in a scenario over time
(``ScenarioBehaviour``: the simulator's provider model, ``provider_model``, on the wall clock).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import unquote, urlparse
from xml.sax.saxutils import escape

from sluice_tools.provider_model import RealTimeServer
from sluice_tools.scenario import Scenario


@dataclass(frozen=True)
class Reply:
    latency_s: float
    fail: bool
    status: int = 503  # when it fails: 503, 504 (queue timeout) or 429 (rate limited)
    retry_after_s: float | None = None  # with a 429: the Retry-After header's seconds


class Behaviour(Protocol):
    def reply(self, record_id: str, in_flight: int) -> Reply:
        """How the call that just arrived (making ``in_flight`` calls) will go."""


class PercentBehaviour:
    """The original demo's knobs: a share of calls is slow, a share fails."""

    def __init__(
        self,
        slow_percentage: float = 0.0,
        error_percentage: float = 0.0,
        *,
        base_ms: float = 5.0,
        slow_ms: float = 1500.0,
        seed: int | None = None,
    ) -> None:
        self.slow_percentage = slow_percentage
        self.error_percentage = error_percentage
        self.base_ms = base_ms
        self.slow_ms = slow_ms
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def reply(self, record_id: str, in_flight: int) -> Reply:
        with self._lock:
            slow = self._rng.random() * 100 < self.slow_percentage
            fail = self._rng.random() * 100 < self.error_percentage
        return Reply((self.slow_ms if slow else self.base_ms) / 1000, fail)


class ScenarioBehaviour:
    """The provider a scenario describes (``provider_model.ProviderServer``), on the wall
    clock: ``capacity`` slots, a call beyond them waits for one (its latency is the real wait
    plus its service time), congestion, overload errors, the queue timeout, 429 with
    Retry-After, error bursts and outages, at the scenario time of each call.

    Scenario time runs ``time_scale`` times faster than the wall clock (phases and bursts
    compress); latencies and waits are real seconds (thresholds keep their meaning).
    """

    def __init__(self, scenario: Scenario, scenario_time: Callable[[], float],
                 seed: int | None = None, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.scenario = scenario
        self.scenario_time = scenario_time
        self.server = RealTimeServer(scenario, scenario_time, random.Random(seed),
                                     monotonic=monotonic)

    def reply(self, record_id: str, in_flight: int) -> Reply:
        answer = self.server.call()
        return Reply(answer.latency_s, not answer.ok, answer.status if not answer.ok else 503,
                     answer.retry_after_s)


class FailingIds:
    """Wraps a behaviour so that some record ids always fail (a record that keeps failing)."""

    def __init__(self, inner: Behaviour, failing: set[str]) -> None:
        self.inner = inner
        self.failing = failing

    def reply(self, record_id: str, in_flight: int) -> Reply:
        reply = self.inner.reply(record_id, in_flight)
        if record_id in self.failing and not reply.fail:
            return replace(reply, fail=True, status=503, retry_after_s=None)
        return reply


def utc_day() -> str:
    return datetime.now(UTC).date().isoformat()


def record_body(record_id: str, day: str) -> dict[str, Any]:
    digest = hashlib.sha256(record_id.encode()).hexdigest()
    return {"id": record_id, "as_of": day, "data": {"value": int(digest[:8], 16) % 100_000}}


def record_xml(record_id: str, day: str) -> bytes:
    body = record_body(record_id, day)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<filing id="{escape(record_id)}" '
            f'date="{day}"><amount currency="EUR">{body["data"]["value"] / 100:.2f}</amount>'
            f"<status>final</status></filing>").encode()


class FakeProvider:
    def __init__(
        self,
        behaviour: Behaviour,
        *,
        day: Callable[[], str] = utc_day,
        sleep: Callable[[float], None] = time.sleep,
        port: int = 0,
        bearer_token: str = "",
    ) -> None:
        self.behaviour = behaviour
        self.bearer_token = bearer_token
        self.unauthorized = 0
        self._day = day
        self._sleep = sleep
        self._lock = threading.Lock()
        self.served: Counter[tuple[str, str]] = Counter()
        self.calls = 0
        self.failures = 0
        self.rate_limited = 0  # of the failures, 429s
        self.in_flight = 0
        self.max_in_flight = 0
        self.on_call: Callable[[float, float, bool, int], None] | None = None  # t, ms, ok, n
        handler = type("BoundHandler", (_Handler,), {"provider": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-provider",
                                        daemon=True)

    def start(self) -> FakeProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def serve(self, record_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            in_flight = self.in_flight
        started = time.perf_counter()
        try:
            reply = self.behaviour.reply(record_id, in_flight)
            self._sleep(reply.latency_s)
            day = self._day()
            with self._lock:
                if reply.fail:
                    self.failures += 1
                    self.rate_limited += reply.status == 429
                else:
                    self.served[(record_id, day)] += 1
        finally:
            with self._lock:
                self.in_flight -= 1
        if self.on_call:
            self.on_call(time.time(), (time.perf_counter() - started) * 1000, not reply.fail,
                         in_flight)
        if reply.fail and reply.status == 429:
            retry_after = math.ceil(reply.retry_after_s or 1)
            return 429, {"error": "rate_limited", "retry_after_s": retry_after}
        if reply.fail:
            return reply.status, {"error": "unavailable" if reply.status == 503 else "timeout"}
        return 200, record_body(record_id, day)

    def duplicates(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return {key: n for key, n in self.served.items() if n > 1}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": self.calls,
                "failures": self.failures,
                "rate_limited": self.rate_limited,
                "served": sum(self.served.values()),
                "distinct_served": len(self.served),
                "duplicates": sum(n - 1 for n in self.served.values() if n > 1),
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
            }


class _Handler(BaseHTTPRequestHandler):
    provider: FakeProvider
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = unquote(urlparse(self.path).path)
        content_type, doc = "application/json", {}
        token = self.provider.bearer_token
        if path == "/stats":
            status, body = 200, json.dumps(self.provider.stats()).encode()
        elif path.count("/") < 2 or path.endswith("/"):
            status, body = 404, b'{"error": "not found"}'
        elif token and self.headers.get("Authorization") != f"Bearer {token}":
            with self.provider._lock:
                self.provider.unauthorized += 1
            status, body = 401, b'{"error": "unauthorized"}'
        else:
            record_id = path.rsplit("/", 1)[1]
            xml = record_id.endswith(".xml")
            record_id = record_id.removesuffix(".xml")
            status, doc = self.provider.serve(record_id)
            if xml and status == 200:
                content_type, body = "application/xml", record_xml(record_id, doc["as_of"])
            else:
                body = json.dumps(doc).encode()
        self.send_response(status)
        if status == 429 and "retry_after_s" in doc:
            self.send_header("Retry-After", str(doc["retry_after_s"]))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
