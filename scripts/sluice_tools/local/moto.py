"""moto in server mode on 127.0.0.1: the local data plane (Kinesis, DynamoDB, S3, SQS, ...)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from moto.server import ThreadedMotoServer

REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


class MotoServer:
    """moto's server in its own process by default (it then has a core to itself instead of
    sharing the GIL with the Lambda handlers: about twice the throughput on 2 cores), or in a
    thread of this process with ``in_process=True``."""

    def __init__(self, port: int = 0, *, in_process: bool = False) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self._port = port
        self._in_process = in_process
        self._server: ThreadedMotoServer | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout_s: float = 30.0) -> MotoServer:
        if self._in_process:
            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self._port,
                                              verbose=False)
            self._server.start()
            host, port = self._server.get_host_and_port()
            self.url = f"http://{host}:{port}"
            return self
        port = self._port or _free_port()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
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
        if self._server is not None:
            self._server.stop()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()


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


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block, restoring them afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
