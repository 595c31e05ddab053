"""Provider calls over HTTP with the standard library (no extra bytes in the Lambda bundle).

Three guarantees urllib alone does not give (see PITFALLS.md):

- ``timeout_s`` bounds the whole call, redirects included: every socket read gets only the
  time left before one deadline, so a server dripping a byte at a time cannot hold a worker.
- A response is read up to ``max_bytes`` and no further (``response_too_large``).
- Headers (the provider's credentials) are sent only to the origin (scheme, host, port) of
  the URL given: a redirect elsewhere, https -> http included, is refused, not followed.

Failures become ProviderError kinds; URLs, header values and response bodies never reach a
log line or an error message.
"""

from __future__ import annotations

import email.utils
import functools
import http.client
import io
import json
import string
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from sluice.errors import ProviderError

PERMANENT_STATUSES = frozenset({400, 404, 410, 422})
# Answers that may carry Retry-After ("come back later": busy or rate limited).
RETRY_AFTER_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER_S = 3600.0  # a provider asking for more is read as an hour, not obeyed blindly
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 3
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}

Monotonic = Callable[[], float]


def get(
    url: str,
    *,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    monotonic: Monotonic = time.monotonic,
) -> bytes:
    """The body of a 2xx answer to GET ``url``, or ProviderError.

    Kinds: ``timeout``, ``connection``, ``http_<status>`` (permanent for 400/404/410/422),
    ``response_too_large``, ``redirect_refused``, ``too_many_redirects``, ``invalid_url``,
    ``invalid_request``, ``invalid_response``.
    """
    deadline = _Deadline(timeout_s, monotonic)
    sent = dict(headers or {})
    for _ in range(MAX_REDIRECTS + 1):
        response, location = _exchange(url, sent, deadline)
        if location is None:
            return _guarded(_read_body, response, deadline, max_bytes)
        url = _redirect_target(url, location)
    raise ProviderError("too_many_redirects")


def get_json(
    url: str,
    *,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    monotonic: Monotonic = time.monotonic,
) -> Any:
    body = get(url, timeout_s=timeout_s, headers=headers, max_bytes=max_bytes,
               monotonic=monotonic)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError, but also
        pass  # a 5,000-digit number (ValueError) or a nesting bomb (RecursionError)
    raise ProviderError("invalid_response")  # outside the handler: no body in __context__


# -- one request/response exchange -------------------------------------------------------------


def _exchange(
    url: str, headers: Mapping[str, str], deadline: _Deadline
) -> tuple[http.client.HTTPResponse | None, str | None]:
    """Send one GET: (the open response, None) on 2xx, (None, Location) on a redirect."""
    _origin(url)  # http(s) with a host, or invalid_url
    request = urllib.request.Request(url, method="GET")
    for name, value in headers.items():
        # Belt and braces: urllib never copies unredirected headers onto a redirect.
        request.add_unredirected_header(name, value)
    try:
        return _guarded(_open, request, deadline), None
    except urllib.error.HTTPError as exc:
        location = exc.headers.get("Location") if exc.code in REDIRECT_STATUSES else None
        code = exc.code
        retry_after_s = retry_after(exc.headers.get("Retry-After")) \
            if code in RETRY_AFTER_STATUSES else 0.0
        exc.close()
    if location is None:
        raise ProviderError(f"http_{code}", permanent=code in PERMANENT_STATUSES,
                            retry_after_s=retry_after_s)
    return None, location


def retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float:
    """Seconds a ``Retry-After`` header asks for: delta-seconds or an HTTP-date (RFC 9110
    10.2.3), 0 when absent, unreadable or past, at most ``MAX_RETRY_AFTER_S``."""
    if not value:
        return 0.0
    value = value.strip()
    try:
        seconds = float(int(value)) if value.isdigit() else (
            email.utils.parsedate_to_datetime(value).timestamp() - now())
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    return max(0.0, min(MAX_RETRY_AFTER_S, seconds))


def _guarded(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``call``, turning whatever the network does into a ProviderError kind.

    The ProviderError is raised outside the handler so that no exception rides along as its
    ``__context__``: an HTTPError or URLError carries the URL, and error trackers walk chains.
    """
    try:
        return call(*args, **kwargs)
    except (ProviderError, urllib.error.HTTPError):
        raise
    except Exception as exc:
        kind = _kind(exc)
        if kind is None:
            raise
    raise ProviderError(kind)


def _kind(exc: Exception) -> str | None:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, urllib.error.URLError):
        return "timeout" if isinstance(exc.reason, TimeoutError) else "connection"
    if isinstance(exc, ConnectionError | http.client.IncompleteRead):
        return "connection"  # incl. RemoteDisconnected, though it is an HTTPException too
    if isinstance(exc, http.client.HTTPException):  # a bad status line, too many headers, ...
        return "invalid_response"
    if isinstance(exc, OSError):  # ssl.SSLError (e.g. a certificate refused), ...
        return "connection"
    if isinstance(exc, http.client.InvalidURL):
        return "invalid_url"
    if isinstance(exc, ValueError):  # e.g. a header value with a line break
        return "invalid_request"
    return None


def _open(request: urllib.request.Request, deadline: _Deadline) -> http.client.HTTPResponse:
    return _opener(deadline).open(request, timeout=deadline.remaining())


def _read_body(response: http.client.HTTPResponse, deadline: _Deadline, max_bytes: int) -> bytes:
    with response:
        declared = (response.headers.get("Content-Length") or "").strip()
        if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
            raise ProviderError("response_too_large")
        chunks: list[bytes] = []
        received = 0
        while True:
            deadline.remaining()  # data that keeps flowing must stop at the deadline too
            chunk = response.read1(min(CHUNK_BYTES, max_bytes + 1 - received))
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            if received > max_bytes:
                raise ProviderError("response_too_large")
        if response.length:  # the server closed before sending what Content-Length promised
            raise ProviderError("connection")
        return b"".join(chunks)


# -- redirects: same origin only ---------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int]:
    scheme, host, port = "", None, None
    try:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is not a number (the message quotes it)
        pass
    if scheme not in DEFAULT_PORTS or not host or port is None:
        raise ProviderError("invalid_url")  # file://, ftp://, data:, ... are never fetched
    return scheme, host, port


def _redirect_target(current: str, location: str) -> str:
    """The URL to follow, if it has the same origin as ``current``; an https -> http
    downgrade changes the scheme, so it is another origin too."""
    # As urllib does: a Location with spaces or non-ASCII characters is percent-encoded.
    target = urllib.parse.urljoin(current,
                                  urllib.parse.quote(location.strip(), safe=string.punctuation))
    try:
        same = _origin(target) == _origin(current)
    except ProviderError:
        same = False
    if not same:
        raise ProviderError("redirect_refused")
    return target


# -- the deadline, down to every socket read ---------------------------------------------------


class _Deadline:
    def __init__(self, timeout_s: float, monotonic: Monotonic) -> None:
        self._monotonic = monotonic
        self._at = monotonic() + timeout_s

    def remaining(self) -> float:
        """Seconds left, or TimeoutError once there are none."""
        left = self._at - self._monotonic()
        if left <= 0:
            raise TimeoutError
        return left


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """http and https only, no redirect handler (get follows same-origin redirects itself),
    proxies from the environment as urllib's default opener has them."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        _DeadlineHTTPHandler(deadline),
        _DeadlineHTTPSHandler(deadline),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _connection_factory(base: type[http.client.HTTPConnection], deadline: _Deadline):
    def connect(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        connection = base(host, **kwargs)
        connection.response_class = functools.partial(_DeadlineResponse, deadline=deadline)
        return connection

    return connect


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_connection_factory(http.client.HTTPConnection, self._deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        factory = _connection_factory(http.client.HTTPSConnection, self._deadline)
        return self.do_open(factory, req)


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTPResponse whose status line, headers and body are read under the deadline."""

    def __init__(self, sock: Any, debuglevel: int = 0, method: str | None = None,
                 url: str | None = None, *, deadline: _Deadline) -> None:
        super().__init__(_DeadlineSocket(sock, deadline), debuglevel, method, url)


class _DeadlineSocket:
    """What HTTPResponse needs of a socket: ``makefile("rb")``."""

    def __init__(self, sock: Any, deadline: _Deadline) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


class _DeadlineReader(io.RawIOBase):
    """Socket reads that each wait only for the time left: a per-read socket timeout alone
    lets a server that sends a byte just before every timeout keep a call open forever."""

    def __init__(self, sock: Any, deadline: _Deadline) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # holds the socket open until closed
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(self._deadline.remaining())
        return self._raw.readinto(buffer)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
