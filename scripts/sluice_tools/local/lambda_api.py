"""Lambda's REST API (2015-03-31) over the local LambdaService, on 127.0.0.1.

Only the operations sluice and its tools use: Invoke, Create/Get/List/Update/Delete
EventSourceMapping and Put/Get/DeleteFunctionConcurrency. Errors carry AWS's error type in
``x-amzn-ErrorType`` (and members such as ``Reason`` in the body) so botocore raises the same
ClientError codes as in AWS.

One local extension, under ``/_local/`` (no AWS operation has that path):
``GET /_local/event-source-mappings/<uuid>/shards`` answers each shard's checkpoint, which AWS
does not expose; ``sluice status`` uses it for the exact backlog on the local stack.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from sluice_tools.local.lambda_service import LambdaError, LambdaService

PREFIX = "/2015-03-31"
INVOKE = re.compile(rf"^{PREFIX}/functions/(?P<name>[^/]+)/invocations$")
MAPPINGS = re.compile(rf"^{PREFIX}/event-source-mappings/?$")
MAPPING = re.compile(rf"^{PREFIX}/event-source-mappings/(?P<uuid>[^/]+)$")
# Put/Delete are /2017-10-31/..., Get is /2019-09-30/... (botocore's service model).
CONCURRENCY = re.compile(r"^/20(17-10-31|19-09-30)/functions/(?P<name>[^/]+)/concurrency$")
LOCAL_SHARDS = re.compile(r"^/_local/event-source-mappings/(?P<uuid>[^/]+)/shards$")


class _Handler(BaseHTTPRequestHandler):
    service: LambdaService  # set on the subclass made per server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the stack has its own UI
        pass

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, doc: Any) -> None:
        self._send(status, json.dumps(doc).encode())

    def _error(self, exc: LambdaError) -> None:
        doc = {"Type": "User", "message": str(exc), "__type": exc.code, **exc.fields}
        body = json.dumps(doc).encode()
        self._send(exc.status, body, {"x-amzn-ErrorType": exc.code})

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        try:
            if method == "POST" and (m := INVOKE.match(path)):
                payload = self._body()
                result = self.service.invoke(m["name"], payload)
                headers = {"X-Amz-Executed-Version": "$LATEST"}
                if result.function_error:
                    headers["X-Amz-Function-Error"] = result.function_error
                self._send(200, result.payload, headers)
            elif method == "GET" and MAPPINGS.match(path):
                found = self.service.list_mappings(
                    (query.get("FunctionName") or [None])[0],
                    (query.get("EventSourceArn") or [None])[0],
                )
                self._json(200, {"EventSourceMappings": found})
            elif method == "POST" and MAPPINGS.match(path):
                body = self._body()
                created = self.service.create_mapping(
                    body["FunctionName"],
                    body["EventSourceArn"],
                    batch_size=int(body.get("BatchSize", 100)),
                    enabled=bool(body.get("Enabled", True)),
                    starting_position=body.get("StartingPosition", "TRIM_HORIZON"),
                    function_response_types=body.get("FunctionResponseTypes"),
                    maximum_retry_attempts=int(body.get("MaximumRetryAttempts", -1)),
                    bisect_on_error=bool(body.get("BisectBatchOnFunctionError", False)),
                    parallelization_factor=int(body.get("ParallelizationFactor", 1)),
                )
                self._json(202, created)
            elif method == "GET" and (m := MAPPING.match(path)):
                self._json(200, self.service.get_mapping(m["uuid"]))
            elif method == "PUT" and (m := MAPPING.match(path)):
                self._json(202, self.service.update_mapping(m["uuid"], self._body()))
            elif method == "DELETE" and (m := MAPPING.match(path)):
                self._json(202, self.service.delete_mapping(m["uuid"]))
            elif method == "PUT" and (m := CONCURRENCY.match(path)):
                body = self._body()
                reserved = body.get("ReservedConcurrentExecutions")
                if not isinstance(reserved, int):
                    raise LambdaError("InvalidParameterValueException",
                                      "ReservedConcurrentExecutions must be an integer", 400)
                self._json(200, self.service.put_concurrency(m["name"], reserved))
            elif method == "GET" and (m := CONCURRENCY.match(path)):
                self._json(200, self.service.get_concurrency(m["name"]))
            elif method == "DELETE" and (m := CONCURRENCY.match(path)):
                self.service.delete_concurrency(m["name"])
                self._send(204, b"")
            elif method == "GET" and (m := LOCAL_SHARDS.match(path)):
                self._json(200, {"Shards": self.service.shard_positions(m["uuid"])})
            else:
                raise LambdaError("UnsupportedOperation", f"{method} {path} is not served "
                                  "by the local Lambda service", 400)
        except LambdaError as exc:
            self._error(exc)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")


class LambdaApiServer:
    """Serves a LambdaService on 127.0.0.1 (port 0 = any free port) in a daemon thread."""

    def __init__(self, service: LambdaService, port: int = 0) -> None:
        handler = type("BoundHandler", (_Handler,), {"service": service})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="lambda-api",
                                        daemon=True)

    def start(self) -> LambdaApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        # shutdown() waits for serve_forever: only when it runs (a start interrupted by
        # SIGTERM or Ctrl-C still closes the socket, and returns).
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
