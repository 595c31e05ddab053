"""The provider HTTP client against real local HTTP servers: a deadline for the whole call, a
size cap, credentials that never leave their origin, and error kinds that leak nothing.

Each server runs in threads; whatever a server thread raises (other than the client hanging
up early, which is what caps and deadlines do) fails the test at teardown.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sluice import provider_http
from sluice.errors import ProviderError
from sluice.provider_http import MAX_REDIRECTS, get, get_json

TOKEN = "Bearer s3cret-token"
CREDENTIALS = {"Authorization": TOKEN, "X-Api-Key": "k3y-value"}

Route = Callable[["Handler"], None]


# -- servers -----------------------------------------------------------------------------------


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


class Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        owner = self.server.owner
        owner.requests.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}))
        route = owner.routes.get(urlsplit(self.path).path, not_found)
        # The client hanging up early is what the cap and the deadline are for.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            route(self)

    def log_message(self, *args: object) -> None:
        pass

    def send_body(self, body: bytes, status: int = 200, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close, so their errors are all seen before the test ends.
    daemon_threads = False
    block_on_close = True
    owner: Server

    def handle_error(self, request: object, client_address: object) -> None:
        self.owner.errors.append(sys.exc_info()[1])


@dataclass
class Server:
    routes: dict[str, Route]
    tls: ssl.SSLContext | None = None
    requests: list[Seen] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Server:
        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.owner = self
        if self.tls:
            self.httpd.socket = self.tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self._serve, name="test-http-server")
        self.thread.start()
        return self

    def _serve(self) -> None:
        try:
            self.httpd.serve_forever(poll_interval=0.05)
        except BaseException as exc:
            self.errors.append(exc)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    def stop(self) -> None:
        """Stop serving, join every thread, and raise the first error a thread hit."""
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the server thread did not stop"
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(routes: dict[str, Route], tls: ssl.SSLContext | None = None) -> Server:
        server = Server(routes, tls).start()
        servers.append(server)
        return server

    yield start
    errors = []
    for server in servers:
        try:
            server.stop()
        except BaseException as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


# -- routes ------------------------------------------------------------------------------------


def not_found(h: Handler) -> None:
    h.send_body(b"no such record", 404)


def ok(body: bytes) -> Route:
    return lambda h: h.send_body(body)


def status(code: int) -> Route:
    return lambda h: h.send_body(b"provider says no", code)


def redirect(location: str | Callable[[], str], code: int = 302) -> Route:
    def route(h: Handler) -> None:
        h.send_body(b"", code, Location=location() if callable(location) else location)

    return route


def needs_token(body: bytes) -> Route:
    def route(h: Handler) -> None:
        if h.headers.get("Authorization") == TOKEN:
            h.send_body(body)
        else:
            h.send_body(b"who are you", 401)

    return route


def drip_body(h: Handler) -> None:
    """Headers at once, then one byte of the body every 0.2 s: each socket read succeeds."""
    h.send_response(200)
    h.send_header("Content-Length", "100")
    h.end_headers()
    for _ in range(100):
        if h.server.owner.stopping.wait(0.2):
            return
        h.wfile.write(b"x")


def drip_status_line(h: Handler) -> None:
    """Even the status line comes one byte every 0.2 s."""
    for byte in b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok":
        if h.server.owner.stopping.wait(0.2):
            return
        h.wfile.write(bytes([byte]))


def endless_body(h: Handler) -> None:
    """A body with no length that never ends (HTTP/1.0: it would end when the server closes)."""
    h.send_response(200)
    h.end_headers()
    chunk = b"z" * 16384
    while not h.server.owner.stopping.is_set():
        h.wfile.write(chunk)


def truncated_body(h: Handler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "100")
    h.end_headers()
    h.wfile.write(b"only ten b")


def garbage_status_line(h: Handler) -> None:
    h.wfile.write(b"NOT-HTTP at all\r\n\r\n")


class SteppingClock:
    """A monotonic clock that moves ``step`` seconds each time it is read: time passes only
    as the client works, so a deadline is reached without waiting for it."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class ManualClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def kind_of(call: Callable[[], object]) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        call()
    return info.value


# -- the deadline ------------------------------------------------------------------------------


@pytest.mark.parametrize("route", [drip_body, drip_status_line], ids=["body", "status line"])
def test_a_dripping_server_cannot_stretch_the_call_past_its_timeout(serve, route):
    server = serve({"/drip": route})
    started = time.monotonic()
    error = kind_of(lambda: get(server.url("/drip"), timeout_s=0.5))
    assert error.kind == "timeout" and not error.permanent
    # A per-read timeout would wait 100 x 0.2 s here; the bound is generous for a busy CI box.
    assert time.monotonic() - started < 2.0


def test_a_body_that_keeps_flowing_stops_at_the_deadline(serve):
    server = serve({"/stream": endless_body})
    error = kind_of(lambda: get(server.url("/stream"), timeout_s=1.0, max_bytes=2**40,
                                monotonic=SteppingClock(0.01)))
    assert error.kind == "timeout"


def test_the_deadline_covers_the_whole_redirect_chain(serve):
    clock = ManualClock()

    def hop(route: Route) -> Route:
        def slow(h: Handler) -> None:
            clock.advance(1.0)  # each hop takes the provider one (fake) second
            route(h)

        return slow

    server = serve({"/a": hop(redirect("/b")), "/b": hop(redirect("/c")), "/c": hop(ok(b"late"))})
    # Three hops of 1 s each do not fit in 2.5 s, though each one alone would.
    error = kind_of(lambda: get(server.url("/a"), timeout_s=2.5, monotonic=clock))
    assert error.kind == "timeout"
    assert [seen.path for seen in server.requests] == ["/a", "/b", "/c"]


def test_a_fast_answer_is_returned_whole(serve):
    body = bytes(range(256)) * 1000
    server = serve({"/record": ok(body)})
    assert get(server.url("/record"), timeout_s=5) == body


# -- the size cap ------------------------------------------------------------------------------


def test_a_declared_body_over_the_cap_is_refused_before_it_is_read(serve):
    server = serve({"/big": ok(b"b" * (2 * 1024 * 1024))})
    error = kind_of(lambda: get(server.url("/big"), timeout_s=5, max_bytes=1024 * 1024))
    assert error.kind == "response_too_large" and not error.permanent


def test_an_undeclared_endless_body_stops_at_the_cap(serve):
    server = serve({"/stream": endless_body})
    # Without the cap this would read until the 30 s deadline: the kind says it did not.
    error = kind_of(lambda: get(server.url("/stream"), timeout_s=30, max_bytes=100_000))
    assert error.kind == "response_too_large"


def test_a_body_exactly_at_the_cap_is_accepted(serve):
    server = serve({"/exact": ok(b"e" * 5000)})
    assert get(server.url("/exact"), timeout_s=5, max_bytes=5000) == b"e" * 5000


def test_the_default_cap_is_five_mib(serve):
    server = serve({"/big": ok(b"b" * (5 * 1024 * 1024 + 1))})
    assert kind_of(lambda: get(server.url("/big"), timeout_s=10)).kind == "response_too_large"


# -- redirects and credentials -----------------------------------------------------------------


def test_a_same_origin_redirect_is_followed_with_the_credentials(serve):
    server = serve({"/old": redirect("/new", 301), "/new": needs_token(b"the record")})
    assert get(server.url("/old"), timeout_s=5, headers=CREDENTIALS) == b"the record"
    assert [seen.path for seen in server.requests] == ["/old", "/new"]
    assert all(seen.headers.get("authorization") == TOKEN for seen in server.requests)


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_every_redirect_status_to_another_port_is_refused(serve, code):
    elsewhere = serve({"/steal": ok(b"thanks")})
    server = serve({"/start": redirect(elsewhere.url("/steal"), code)})
    error = kind_of(lambda: get(server.url("/start"), timeout_s=5, headers=CREDENTIALS))
    assert error.kind == "redirect_refused" and not error.permanent
    assert server.requests[0].headers["authorization"] == TOKEN
    # The other origin was never contacted: get() returned, so any request would be recorded.
    assert elsewhere.requests == []


@pytest.mark.parametrize(
    "target",
    [
        lambda server, other: other.url("/steal"),  # another port
        lambda server, other: f"//127.0.0.1:{other.port}/steal",  # scheme-relative
        lambda server, other: server.url("/steal", host="localhost"),  # another host name
        lambda server, other: f"https://127.0.0.1:{server.port}/steal",  # another scheme
        lambda server, other: f"http://user@127.0.0.1:{other.port}/steal",  # userinfo
        lambda server, other: "file:///etc/passwd",
        lambda server, other: "http://127.0.0.1:notaport/",
    ],
    ids=["port", "scheme-relative", "host", "scheme", "userinfo", "file", "bad port"],
)
def test_a_redirect_to_another_origin_sends_nothing_there(serve, target):
    other = serve({"/steal": ok(b"thanks")})
    server = serve({})
    server.routes["/start"] = redirect(lambda: target(server, other))
    error = kind_of(lambda: get(server.url("/start"), timeout_s=5, headers=CREDENTIALS))
    assert error.kind == "redirect_refused"
    assert other.requests == []
    assert [seen.path for seen in server.requests] == ["/start"]


def test_a_redirect_loop_ends_after_the_maximum(serve):
    server = serve({"/loop": redirect("/loop")})
    error = kind_of(lambda: get(server.url("/loop"), timeout_s=5, headers=CREDENTIALS))
    assert error.kind == "too_many_redirects" and not error.permanent
    assert len(server.requests) == MAX_REDIRECTS + 1


def test_a_redirect_without_a_location_is_an_http_error(serve):
    server = serve({"/nowhere": status(302)})
    assert kind_of(lambda: get(server.url("/nowhere"), timeout_s=5)).kind == "http_302"


# -- TLS: a downgrade to http is refused ---------------------------------------------------


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1 that the client trusts
    (through SSL_CERT_FILE, which the default context reads on every connection)."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sluice test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


def test_https_works_with_the_deadline_and_the_credentials(serve, tls):
    server = serve({"/old": redirect("/new"), "/new": needs_token(b"over tls")}, tls=tls)
    assert server.url().startswith("https://")
    assert get(server.url("/old"), timeout_s=5, headers=CREDENTIALS) == b"over tls"


def test_an_https_to_http_downgrade_is_refused(serve, tls):
    plain = serve({"/steal": ok(b"thanks")})
    server = serve({"/start": redirect(plain.url("/steal"))}, tls=tls)
    error = kind_of(lambda: get(server.url("/start"), timeout_s=5, headers=CREDENTIALS))
    assert error.kind == "redirect_refused"
    assert server.requests[0].headers["authorization"] == TOKEN
    assert plain.requests == []


def test_a_dripping_tls_server_times_out_too(serve, tls):
    server = serve({"/drip": drip_body}, tls=tls)
    assert kind_of(lambda: get(server.url("/drip"), timeout_s=0.5)).kind == "timeout"


# -- error kinds -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "permanent"),
    [(404, True), (410, True), (400, True), (422, True), (401, False), (429, False),
     (500, False), (503, False)],
)
def test_http_errors_keep_their_kinds(serve, code, permanent):
    server = serve({"/r": status(code)})
    error = kind_of(lambda: get(server.url("/r"), timeout_s=5))
    assert (error.kind, error.permanent) == (f"http_{code}", permanent)


def test_a_refused_connection_is_a_connection_error():
    with socket.socket() as probe:  # a port nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert kind_of(lambda: get(f"http://127.0.0.1:{port}/", timeout_s=5)).kind == "connection"


@pytest.mark.parametrize(
    ("route", "kind"),
    [(truncated_body, "connection"), (garbage_status_line, "invalid_response")],
    ids=["truncated body", "garbage status line"],
)
def test_a_broken_response_has_a_kind(serve, route, kind):
    server = serve({"/r": route})
    assert kind_of(lambda: get(server.url("/r"), timeout_s=5)).kind == kind


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "data:,hi",
                                 "http:///no-host", "not a url"])
def test_only_http_and_https_are_fetched(url):
    assert kind_of(lambda: get(url, timeout_s=5)).kind == "invalid_url"


@pytest.mark.parametrize(
    "body", [b"[" * 100_000, b"1" * 5000, b"\xff\xfe not json", b"{'single': 'quotes'}"],
    ids=["nesting bomb", "5,000-digit integer", "not UTF-8", "not JSON"],
)
def test_get_json_turns_a_hostile_body_into_invalid_response(serve, body):
    server = serve({"/r": ok(body)})
    assert kind_of(lambda: get_json(server.url("/r"), timeout_s=5)).kind == "invalid_response"


def test_get_json_decodes_a_json_body(serve):
    server = serve({"/r": ok(b'{"id": "X", "data": {"value": 1}}')})
    assert get_json(server.url("/r"), timeout_s=5) == {"id": "X", "data": {"value": 1}}


@pytest.mark.parametrize("path", ["/missing", "/slow", "/big", "/away", "/broken"])
def test_errors_carry_no_url_credentials_or_body(serve, path):
    other = serve({})
    server = serve({"/missing": status(404), "/slow": drip_body, "/big": ok(b"SECRET-BODY" * 100),
                    "/away": redirect(other.url("/SECRET-PATH")), "/broken": truncated_body})
    url, secret = server.url(path + "?token=SECRET-QUERY"), {"Authorization": "SECRET-TOKEN"}
    error = kind_of(lambda: get(url, timeout_s=0.5, max_bytes=100, headers=secret))
    assert str(error) == error.kind and "SECRET" not in repr(error)
    # Nothing rides along either: an HTTPError or a URLError would carry the URL.
    assert error.__cause__ is None and error.__context__ is None
    logged = "".join(traceback.format_exception(error))
    assert "SECRET" not in logged and "127.0.0.1" not in logged


# -- the harness itself ------------------------------------------------------------------------


def test_an_error_in_a_server_thread_fails_the_test():
    def crash(h: Handler) -> None:
        raise RuntimeError("route crashed")

    server = Server({"/crash": crash}).start()
    try:
        assert kind_of(lambda: get(server.url("/crash"), timeout_s=5)).kind == "connection"
    finally:
        with pytest.raises(RuntimeError, match="route crashed"):
            server.stop()


# -- a busy provider's Retry-After ---------------------------------------------------------------


def busy(code: int, retry_after: str | None) -> Route:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return lambda h: h.send_body(b"slow down", code, **headers)


@pytest.mark.parametrize(("code", "header", "expected"), [
    (429, "7", 7.0),
    (503, "120", 120.0),
    (429, None, 0.0),
    (429, "soon", 0.0),  # unreadable: no pause, the verdicts still see a 429
    (429, "999999", provider_http.MAX_RETRY_AFTER_S),
    (500, "7", 0.0),  # only 429 and 503 ask for a pause
])
def test_a_busy_answer_carries_the_providers_retry_after(serve, code, header, expected):
    server = serve({"/r": busy(code, header)})
    error = kind_of(lambda: provider_http.get(server.url("/r"), timeout_s=5))
    assert (error.kind, error.retry_after_s) == (f"http_{code}", expected)


def test_retry_after_as_an_http_date_counts_from_now():
    assert provider_http.retry_after("Wed, 21 Oct 2026 07:28:30 GMT",
                                     now=lambda: 1792567700.0) == 10.0
    assert provider_http.retry_after("Wed, 21 Oct 2026 07:28:30 GMT",
                                     now=lambda: 1792567800.0) == 0.0  # already past
