"""Invoking the provider's worker Lambda for one record, synchronously.

The client's read timeout outlives the worker's own timeout and its retries are off: boto3's
defaults (60 s, retried) would invoke a 70 s call a second time, a duplicate fetch billed by
the provider (PITFALLS.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ParamValidationError,
)

from sluice import verdicts

# Lambda's answers that mean the function never ran: the claim can be given back at once.
REJECTED_CODES = frozenset({
    "TooManyRequestsException",  # throttled (reserved concurrency = X, or the account's)
    "ResourceNotFoundException",
    "ResourceConflictException",  # the function is being updated
    "InvalidParameterValueException",
    "RequestTooLargeException",
    "AccessDeniedException",
})


@dataclass(frozen=True)
class WorkerResult:
    ok: bool
    latency_ms: float
    error: str = ""
    permanent: bool = False
    recorded: bool = False
    found: bool = False  # today's result was already stored: no provider call was made
    retry_after_s: float = 0.0  # the provider asked to be left alone this long (Retry-After)
    # ok | failed | permanent (the worker answered) | rejected (it never ran) | ambiguous (the
    # request may have reached it: it may still be running, so its claim must be kept)
    kind: str = ""

    @property
    def outcome(self) -> str:
        if self.kind:
            return self.kind
        if self.ok:
            return verdicts.FOUND if self.found else verdicts.OK
        return verdicts.PERMANENT if self.permanent else verdicts.FAILED


def classify_invoke_error(exc: BaseException) -> str:
    """Rejected only when the request provably never started the function; else ambiguous."""
    if isinstance(exc, (ConnectTimeoutError, EndpointConnectionError, ParamValidationError)):
        return verdicts.REJECTED  # never connected, or never sent
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        return verdicts.REJECTED if code in REJECTED_CODES else verdicts.AMBIGUOUS
    return verdicts.AMBIGUOUS  # read timeout, connection dropped after send, anything else


def lambda_client_for_invoke(worker_timeout_s: int, pool: int) -> Any:
    return boto3.client(
        "lambda",
        config=Config(
            read_timeout=worker_timeout_s + 15,
            connect_timeout=5,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=max(10, pool),
        ),
    )


class WorkerInvoker:
    def __init__(
        self,
        function_name: str,
        *,
        client: Any,
        perf: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.function_name = function_name
        self.client = client
        self._perf = perf

    def __call__(self, payload: dict[str, Any]) -> WorkerResult:
        started = self._perf()
        try:
            response = self.client.invoke(
                FunctionName=self.function_name,
                InvocationType="RequestResponse",
                Payload=json.dumps(payload).encode(),
            )
            body = response["Payload"].read()
        except Exception as exc:
            kind = classify_invoke_error(exc)
            code = exc.response.get("Error", {}).get("Code", "") \
                if isinstance(exc, ClientError) else type(exc).__name__
            return WorkerResult(False, self._ms(started), error=f"invoke_{code}", kind=kind)
        if response.get("FunctionError"):
            # Crashed or timed out inside Lambda: the error type only, never the message.
            try:
                kind = json.loads(body).get("errorType", "Unhandled")
            except (ValueError, AttributeError):
                kind = "Unhandled"
            return WorkerResult(False, self._ms(started), error=f"worker_{kind}")
        try:
            doc = json.loads(body)
            return WorkerResult(
                ok=bool(doc["ok"]),
                latency_ms=float(doc.get("latency_ms", self._ms(started))),
                error=str(doc.get("error", "")),
                permanent=bool(doc.get("permanent", False)),
                recorded=bool(doc.get("recorded", False)),
                found=bool(doc.get("found", False)),
                retry_after_s=max(0.0, float(doc.get("retry_after_s", 0.0))),
            )
        except (ValueError, KeyError, TypeError):
            return WorkerResult(False, self._ms(started), error="worker_bad_reply")

    def _ms(self, started: float) -> float:
        return round((self._perf() - started) * 1000, 2)
