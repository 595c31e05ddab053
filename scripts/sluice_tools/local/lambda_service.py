"""A local stand-in for the Lambda service: functions run in process, mappings behave like AWS.

moto's Lambda cannot run functions without Docker and turns every Kinesis put into a Docker
call once a mapping exists (PITFALLS.md), so the local stack owns functions and event source
mappings here. ``lambda_api`` serves this over Lambda's own REST API, so the runtime reaches it
with the same boto3 calls as in AWS (``AWS_ENDPOINT_URL_LAMBDA``).

Mapping semantics kept from AWS:
- ``update`` puts the mapping in Updating / Enabling / Disabling for ``update_delay_s``; the new
  configuration takes effect only when that period ends, and another update meanwhile gets
  ResourceConflictException. As in AWS, the API (the update's answer, Get, List) shows the
  *requested* configuration with the transitional State at once; what the poller delivers by
  (``mapping()``: BatchSize, Enabled) stays the old one until the update settles.
- ``Invoke`` runs the handler in its own thread with a real context, and a handler still
  running at the function's timeout is reported as ``Sandbox.Timedout`` (the thread cannot be
  killed: it is abandoned, as a frozen Lambda sandbox would be; its concurrency is freed).
- Reserved concurrency (Put/Get/DeleteFunctionConcurrency): with that many invocations of a
  function in flight, ``Invoke`` answers 429 TooManyRequestsException, Reason
  ReservedFunctionConcurrentInvocationLimitExceeded (0 throttles every call).
- With ``telemetry`` set, what Lambda itself writes to CloudWatch goes to moto's: a function
  error as an ``[ERROR]`` line in ``/aws/lambda/<function>`` and an ``Errors`` datapoint,
  a throttle as a ``Throttles`` datapoint (AWS/Lambda namespace, FunctionName dimension).
- The shards' checkpoints (kept by the pollers) can be registered with ``track_shard`` and are
  served by the local API (not an AWS operation): ``sluice status`` reads the exact backlog
  from them on the local stack.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ACCOUNT = "123456789012"
ACCOUNT_CONCURRENCY = 1000  # AWS's default account limit
MIN_UNRESERVED = 100  # AWS keeps this much of the account's concurrency unreserved


class LambdaError(Exception):
    """An API error: ``code`` is AWS's error type, ``status`` its HTTP status, ``fields``
    extra members of the error body (e.g. ``Reason`` of a TooManyRequestsException)."""

    def __init__(self, code: str, message: str, status: int,
                 fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.fields = dict(fields or {})


def not_found(what: str) -> LambdaError:
    return LambdaError("ResourceNotFoundException", f"{what} not found", 404)


@dataclass
class LocalFunction:
    name: str
    handler: Callable[[Any, Any], Any]
    timeout_s: float = 60.0
    memory_mb: int = 128
    region: str = "us-east-1"
    reserved_concurrency: int | None = None  # PutFunctionConcurrency; None = unreserved

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{self.name}"


class LambdaContext:
    """The attributes and method a Python Lambda handler's context has."""

    def __init__(self, function: LocalFunction, clock: Callable[[], float]) -> None:
        self._deadline = clock() + function.timeout_s
        self._clock = clock
        self.function_name = function.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function.arn
        self.memory_limit_in_mb = function.memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function.name}"
        self.log_stream_name = f"local/{self.aws_request_id}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock()) * 1000))


@dataclass
class InvokeResult:
    payload: bytes
    function_error: str = ""  # "Unhandled" when the handler raised or timed out
    duration_s: float = 0.0

    @property
    def error_type(self) -> str:
        if not self.function_error:
            return ""
        try:
            return json.loads(self.payload).get("errorType", "")
        except ValueError:
            return ""


@dataclass
class Mapping:
    uuid: str
    function: LocalFunction
    event_source_arn: str
    batch_size: int
    enabled: bool
    starting_position: str = "TRIM_HORIZON"
    function_response_types: list[str] = field(default_factory=list)
    maximum_retry_attempts: int = -1
    bisect_on_error: bool = False
    parallelization_factor: int = 1
    last_modified: float = 0.0
    settling_until: float = 0.0
    transition: str = ""  # Updating | Enabling | Disabling while settling
    pending: dict[str, Any] = field(default_factory=dict)  # requested, not yet in effect

    def requested(self, attr: str) -> Any:
        """The configuration as the API shows it: what was asked for, settled or not."""
        return self.pending.get(attr, getattr(self, attr))


UPDATABLE = {
    "BatchSize": "batch_size",
    "Enabled": "enabled",
    "FunctionResponseTypes": "function_response_types",
    "MaximumRetryAttempts": "maximum_retry_attempts",
    "BisectBatchOnFunctionError": "bisect_on_error",
    "ParallelizationFactor": "parallelization_factor",
}


class LambdaService:
    def __init__(
        self,
        *,
        update_delay_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.update_delay_s = update_delay_s
        self.clock = clock
        self.wall = wall
        self.functions: dict[str, LocalFunction] = {}
        self.mappings: dict[str, Mapping] = {}
        self._lock = threading.RLock()
        self.invocations: dict[str, int] = {}
        self.in_flight: dict[str, int] = {}
        self.throttles: dict[str, int] = {}
        self.update_calls = 0
        self.conflicts = 0
        # Fault injection: a callable consulted on each update; True = answer a conflict.
        self.conflict_injector: Callable[[Mapping], bool] | None = None
        self._shards: dict[str, dict[str, Callable[[], str | None]]] = {}
        self._logs: Any = None
        self._cloudwatch: Any = None
        self._log_streams: set[str] = set()

    def telemetry(self, *, logs: Any = None, cloudwatch: Any = None) -> None:
        """Write what Lambda writes (error lines, Errors/Throttles metrics) to these clients."""
        self._logs, self._cloudwatch = logs, cloudwatch

    # -- functions -----------------------------------------------------------------------------

    def add_function(self, function: LocalFunction) -> LocalFunction:
        with self._lock:
            self.functions[function.name] = function
        return function

    def function(self, name_or_arn: str) -> LocalFunction:
        name = name_or_arn.split(":function:", 1)[-1].split(":", 1)[0]
        try:
            return self.functions[name]
        except KeyError:
            raise not_found(f"Function {name}") from None

    def invoke(self, name_or_arn: str, event: Any) -> InvokeResult:
        """Run the handler with a real context; report errors and timeouts as Lambda does."""
        function = self.function(name_or_arn)
        self._admit(function)
        try:
            result = self._run(function, event)
        finally:
            with self._lock:
                self.in_flight[function.name] -= 1
        if result.function_error:
            self._record_error(function, result)
        return result

    def _admit(self, function: LocalFunction) -> None:
        """Count the invocation in flight, or throttle it as AWS does at reserved concurrency."""
        with self._lock:
            running = self.in_flight.get(function.name, 0)
            limit = function.reserved_concurrency
            if limit is not None and running >= limit:
                self.throttles[function.name] = self.throttles.get(function.name, 0) + 1
                throttled = True
            else:
                self.in_flight[function.name] = running + 1
                self.invocations[function.name] = self.invocations.get(function.name, 0) + 1
                throttled = False
        if throttled:
            self._metric(function, "Throttles")
            raise LambdaError(
                "TooManyRequestsException", "Rate Exceeded.", 429,
                {"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"},
            )

    def _run(self, function: LocalFunction, event: Any) -> InvokeResult:
        context = LambdaContext(function, self.clock)
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["result"] = function.handler(event, context)
            except BaseException as exc:  # a handler's crash is the caller's FunctionError
                box["error"] = exc

        started = self.clock()
        thread = threading.Thread(target=run, name=f"lambda-{function.name}", daemon=True)
        thread.start()
        thread.join(function.timeout_s)
        duration = self.clock() - started
        if thread.is_alive():
            body = {"errorType": "Sandbox.Timedout",
                    "errorMessage": f"Task timed out after {function.timeout_s:.2f} seconds"}
            return InvokeResult(json.dumps(body).encode(), "Unhandled", duration)
        if "error" in box:
            exc = box["error"]
            body = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
            return InvokeResult(json.dumps(body).encode(), "Unhandled", duration)
        return InvokeResult(json.dumps(box.get("result")).encode(), "", duration)

    # -- reserved concurrency --------------------------------------------------------------------

    def put_concurrency(self, name_or_arn: str, reserved: int) -> dict[str, Any]:
        function = self.function(name_or_arn)
        with self._lock:
            others = sum(f.reserved_concurrency or 0 for f in self.functions.values()
                         if f is not function)
            if reserved < 0 or others + reserved > ACCOUNT_CONCURRENCY - MIN_UNRESERVED:
                raise LambdaError(
                    "InvalidParameterValueException",
                    "Specified ReservedConcurrentExecutions for function decreases account's "
                    f"UnreservedConcurrentExecution below its minimum value of [{MIN_UNRESERVED}].",
                    400,
                )
            function.reserved_concurrency = reserved
        return {"ReservedConcurrentExecutions": reserved}

    def get_concurrency(self, name_or_arn: str) -> dict[str, Any]:
        reserved = self.function(name_or_arn).reserved_concurrency
        return {} if reserved is None else {"ReservedConcurrentExecutions": reserved}

    def delete_concurrency(self, name_or_arn: str) -> None:
        self.function(name_or_arn).reserved_concurrency = None

    # -- what Lambda writes to CloudWatch ---------------------------------------------------------

    def _record_error(self, function: LocalFunction, result: InvokeResult) -> None:
        self._metric(function, "Errors")
        if self._logs is None:
            return
        try:
            body = json.loads(result.payload)
        except ValueError:
            body = {}
        self.log(function.name, f"[ERROR] {body.get('errorType', 'Error')}: "
                                f"{body.get('errorMessage', '')}")

    def log(self, function_name: str, message: str) -> None:
        """One line in the function's log group, as its stdout would be in AWS."""
        if self._logs is None:
            return
        group, stream = f"/aws/lambda/{function_name}", "local"
        with contextlib.suppress(Exception):  # telemetry is not worth failing a call for
            if group not in self._log_streams:
                with contextlib.suppress(self._logs.exceptions.ResourceAlreadyExistsException):
                    self._logs.create_log_group(logGroupName=group)
                with contextlib.suppress(self._logs.exceptions.ResourceAlreadyExistsException):
                    self._logs.create_log_stream(logGroupName=group, logStreamName=stream)
                self._log_streams.add(group)
            self._logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
                {"timestamp": int(self.wall() * 1000), "message": message}])

    def _metric(self, function: LocalFunction, name: str) -> None:
        if self._cloudwatch is None:
            return
        with contextlib.suppress(Exception):
            self._cloudwatch.put_metric_data(Namespace="AWS/Lambda", MetricData=[{
                "MetricName": name, "Value": 1.0, "Unit": "Count",
                "Dimensions": [{"Name": "FunctionName", "Value": function.name}]}])

    # -- shard checkpoints (kept by the pollers; a local extension of the API) -----------------

    def track_shard(self, uuid_: str, shard_id: str,
                    checkpoint: Callable[[], str | None]) -> None:
        """Register where a mapping's poller is on a shard: the last sequence number it
        checkpointed (None: nothing yet, it starts at the mapping's StartingPosition)."""
        with self._lock:
            self._shards.setdefault(uuid_, {})[shard_id] = checkpoint

    def shard_positions(self, uuid_: str) -> list[dict[str, Any]]:
        with self._lock:
            mapping = self.mapping(uuid_)
            tracked = dict(self._shards.get(uuid_, {}))
        return [{"ShardId": shard_id, "Checkpoint": checkpoint(),
                 "StartingPosition": mapping.starting_position}
                for shard_id, checkpoint in sorted(tracked.items())]

    # -- event source mappings -------------------------------------------------------------------

    def create_mapping(
        self,
        function_name: str,
        event_source_arn: str,
        *,
        batch_size: int = 100,
        enabled: bool = True,
        starting_position: str = "TRIM_HORIZON",
        function_response_types: list[str] | None = None,
        maximum_retry_attempts: int = -1,
        bisect_on_error: bool = False,
        parallelization_factor: int = 1,
    ) -> dict[str, Any]:
        function = self.function(function_name)
        _check_batch_size(batch_size)
        mapping = Mapping(
            uuid=str(uuid.uuid4()),
            function=function,
            event_source_arn=event_source_arn,
            batch_size=batch_size,
            enabled=enabled,
            starting_position=starting_position,
            function_response_types=list(function_response_types or []),
            maximum_retry_attempts=maximum_retry_attempts,
            bisect_on_error=bisect_on_error,
            parallelization_factor=parallelization_factor,
            last_modified=self.wall(),
        )
        with self._lock:
            self.mappings[mapping.uuid] = mapping
            return self._describe(mapping)

    def mapping(self, uuid_: str) -> Mapping:
        """The live mapping object, settled up to now (the poller reads this)."""
        with self._lock:
            try:
                mapping = self.mappings[uuid_]
            except KeyError:
                raise not_found(f"Event source mapping {uuid_}") from None
            self._settle(mapping)
            return mapping

    def get_mapping(self, uuid_: str) -> dict[str, Any]:
        with self._lock:
            return self._describe(self.mapping(uuid_))

    def list_mappings(
        self, function_name: str | None = None, event_source_arn: str | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            wanted = self.function(function_name).name if function_name else None
            out = []
            for mapping in self.mappings.values():
                if wanted and mapping.function.name != wanted:
                    continue
                if event_source_arn and mapping.event_source_arn != event_source_arn:
                    continue
                self._settle(mapping)
                out.append(self._describe(mapping))
            return out

    def update_mapping(self, uuid_: str, changes: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            mapping = self.mapping(uuid_)
            self.update_calls += 1
            injected = self.conflict_injector is not None and self.conflict_injector(mapping)
            if mapping.transition or injected:
                self.conflicts += 1
                raise LambdaError(
                    "ResourceConflictException",
                    f"The operation cannot be performed at this time. The event source mapping "
                    f"is currently in an {mapping.transition or 'Updating'} state.",
                    409,
                )
            pending = {}
            for key, value in changes.items():
                if key not in UPDATABLE:
                    continue
                if key == "BatchSize":
                    _check_batch_size(int(value))
                pending[UPDATABLE[key]] = value
            if "enabled" in pending and bool(pending["enabled"]) != mapping.enabled:
                mapping.transition = "Enabling" if pending["enabled"] else "Disabling"
            else:
                mapping.transition = "Updating"
            mapping.pending = pending
            mapping.settling_until = self.clock() + self.update_delay_s
            mapping.last_modified = self.wall()
            self._settle(mapping)
            return self._describe(mapping)

    def delete_mapping(self, uuid_: str) -> dict[str, Any]:
        with self._lock:
            mapping = self.mapping(uuid_)
            del self.mappings[uuid_]
            return self._describe(mapping)

    def _settle(self, mapping: Mapping) -> None:
        if mapping.transition and self.clock() >= mapping.settling_until:
            for attr, value in mapping.pending.items():
                setattr(mapping, attr, value)
            mapping.pending = {}
            mapping.transition = ""

    def _describe(self, mapping: Mapping) -> dict[str, Any]:
        """What the API answers: the requested configuration, and the transitional State while
        it settles (AWS answers an update with the new values and State Updating)."""
        state = mapping.transition or ("Enabled" if mapping.enabled else "Disabled")
        return {
            "UUID": mapping.uuid,
            "BatchSize": mapping.requested("batch_size"),
            "EventSourceArn": mapping.event_source_arn,
            "FunctionArn": mapping.function.arn,
            "LastModified": datetime.fromtimestamp(mapping.last_modified, UTC).isoformat(),
            "State": state,
            "StateTransitionReason": "USER_INITIATED",
            "StartingPosition": mapping.starting_position,
            "MaximumRetryAttempts": mapping.requested("maximum_retry_attempts"),
            "BisectBatchOnFunctionError": mapping.requested("bisect_on_error"),
            "ParallelizationFactor": mapping.requested("parallelization_factor"),
            "FunctionResponseTypes": list(mapping.requested("function_response_types")),
            "MaximumBatchingWindowInSeconds": 0,
        }


def _check_batch_size(size: int) -> None:
    if not 1 <= size <= 10_000:
        raise LambdaError(
            "InvalidParameterValueException", "BatchSize must be between 1 and 10000", 400
        )
