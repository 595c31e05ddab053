"""moto in server mode on 127.0.0.1: the local data plane (Kinesis, DynamoDB, S3, SQS, ...).

moto's own server (``python -m moto.server``) runs its WSGI app on a threaded werkzeug server,
and moto's backends are not thread-safe: a DynamoDB conditional write is "read the item, check
the condition, write", so two racing claims could both pass the check (8 threads claiming one
record: 9 rounds in 100 had two winners), and Kinesis lost records under concurrent puts
(PITFALLS.md). DynamoDB makes a conditional write atomic, so the local stack serves moto's app
behind one lock (``serve``, run by ``MotoServer`` as ``python -m sluice_tools.local.moto``):
one request at a time, as atomic as AWS, connections still kept alive per client thread.

The server process also watches its parent: if whatever started it dies without stopping it
(SIGKILL, a crash), it shuts down instead of holding the port.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
PARENT_POLL_S = 0.5


class MotoServer:
    """moto's server in its own process: it has a core to itself instead of sharing the GIL
    with the Lambda handlers (52 vs 39 records/s in `sluice local bench` on 2 cores)."""

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout_s: float = 30.0) -> MotoServer:
        port = self._port or _free_port()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "sluice_tools.local.moto", "--port", str(port),
             "--parent-pid", str(os.getpid())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto server exited at start (port {port} in use?)")
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.url} within {timeout_s:.0f} s")

    def reset(self) -> None:
        """Forget every resource (moto's own reset endpoint): a clean account per test."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_environment(moto_url: str, lambda_url: str) -> dict[str, str]:
    """What a process needs to reach the local stack with unchanged boto3 code."""
    return {
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ENDPOINT_URL_LAMBDA": lambda_url,
    }


# -- the server process ------------------------------------------------------------------------

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialized(app: WsgiApp, lock: threading.Lock | None = None) -> WsgiApp:
    """``app`` one request at a time: the whole request, body included, runs under ``lock``."""
    guard = lock or threading.Lock()

    def serve_one(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with guard:
            result = app(environ, start_response)
            try:
                return list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()

    return serve_one


def serve(host: str, port: int, parent_pid: int | None = None) -> None:
    """moto's WSGI app, serialized, on a threaded werkzeug server (threads keep each client's
    connection alive; the lock keeps moto's backends consistent)."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    os.environ.setdefault("MOTO_PORT", str(port))  # moto builds some URLs from it
    app = serialized(DomainDispatcherApplication(create_backend_app))
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    server.daemon_threads = True

    def stop(*_: Any) -> None:
        # shutdown() waits for serve_forever to return: never call it on the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if parent_pid:
        def watch_parent() -> None:
            while os.getppid() == parent_pid:
                time.sleep(PARENT_POLL_S)
            server.shutdown()  # orphaned: whoever started us is gone

        threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="moto's server, one request at a time")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.parent_pid)


if __name__ == "__main__":
    main()
