"""Fault injection for ``sluice local demo --faults``: the invariants must hold regardless.

Every fault is injected at a real boundary of the unchanged runtime, never inside it: botocore
event hooks on the runtime's own clients (the ventilator's Lambda clients, the DynamoDB and S3
clients), wrappers around the Lambda handlers the local Lambda service runs, the Lambda API
itself (reserved concurrency, the mapping's settle time) and what is put on the stream. The
kinds and their names mirror the simulator's chaos mode (``sluice_tools.simulate.chaos``):

- ``worker_killed``: the worker dies after the provider answered and its result was stored
  (an ``after-call`` hook on S3 PutObject), before it marks the record fetched. Its next
  attempt must find the result and complete without a second provider call
  (``fault_observations.result_found`` counts those).
- ``connection_dropped``: the ventilator's Invoke is sent (the worker runs to completion in
  the background) and then answers ReadTimeoutError or ConnectionClosedError: the outcome is
  unknown, so the claim must be kept.
- ``invoke_throttled``: Lambda answers the Invoke 429 TooManyRequestsException (a hook, plus
  every throttle of ``concurrency_squeezed``: the worker's reserved concurrency is put to 0
  for a moment through PutFunctionConcurrency, and the local Lambda service throttles).
- ``ventilator_killed``: mid-wave: after 1-3 of its calls started, the ventilator's handler
  dies; the calls it started run on (their workers finish and mark their records), it writes
  nothing more, and the poller redelivers the batch.
- ``update_refused``: ResourceConflictException on UpdateEventSourceMapping at the worst
  moments: the run's first update that enables or disables the mapping (right after the
  breaker opened, when a rearm half-opens or repairs), then half of those, a tenth of the
  others.
- ``update_settled_late``: an enable or disable that went through (the first one, then
  three in ten) settles only after more than one rearm interval: an enable is deferred
  while a disable settles, and the reverse.
- ``mapping_throttled``: TooManyRequestsException on Get/List/UpdateEventSourceMapping, in
  storms of half a second (botocore's retries absorb some, not all).
- ``hostile``: payloads that must be parked, never fail their batch: nesting bombs, a
  5,000-digit integer, non-UTF-8, empty, oversized, ids too long or with path tricks, and
  invalid base64 in the Kinesis envelope itself (corrupted by the poller).
- ``two_shards``: the stream has two shards (ids spread by partition key): the count is the
  records put on the second one.
- kept from the first campaign: ``worker_timeout`` (a worker hangs past its Lambda timeout
  before calling the provider), ``dynamodb_throttled`` (ProvisionedThroughputExceeded before
  the request leaves) and ``malformed_record`` (garbage between valid records).
- ``poison`` (off unless asked): records the provider always fails; they may be parked.

Draws come from one random stream per kind, seeded by the run's seed, and every kind that is on
strikes for sure once (at its n-th opportunity, n from the seed; the update kinds at the run's
first enable or disable): a short run sees every kind, whatever the interleaving of threads.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError, ReadTimeoutError
from botocore.httpsession import URLLib3Session

from sluice.invoker import WorkerResult
from sluice_tools.simulate.chaos import HOSTILE_PAYLOADS

# Per-event probabilities (per worker run, Invoke, delivery, mapping call, ...).
DEFAULT_RATES = {
    "worker_killed": 0.03,
    "connection_dropped": 0.03,
    "invoke_throttled": 0.02,
    "concurrency_squeezed": 0.005,
    "ventilator_killed": 0.04,
    "update_refused": 0.5,  # of updates that toggle the mapping; a fifth of it otherwise
    "update_settled_late": 0.3,
    "mapping_throttled": 0.02,
    "worker_timeout": 0.01,
    "dynamodb_throttled": 0.02,
    "malformed_record": 0.01,
}
# Each kind strikes for sure once per run, at its n-th opportunity (n drawn from the seed, at
# most this): a short run sees every kind whatever the draws. The update kinds strike for sure
# at their worst moment instead (the run's first enable or disable).
SURE_WITHIN = 8
SURE_AT_FIRST_TOGGLE = frozenset({"update_refused", "update_settled_late"})
STORM_S = 0.5  # a Lambda API throttling storm lasts this long
SQUEEZE_S = 0.3  # the worker's reserved concurrency stays at 0 this long
LATE_SETTLE_REARMS = 1.3  # a late update settles after this many rearm intervals

# What is put on the stream besides the records: each must end parked as malformed.
INVALID_BASE64 = b"sluice-fault:invalid-base64-envelope"  # corrupted in the envelope
HOSTILE = tuple(dict.fromkeys((
    *HOSTILE_PAYLOADS,  # the simulator's corpus
    b"[" * 3000,  # a nesting bomb under the size cap: it reaches the JSON parser
    b'{"record_id": ' + b"9" * 4000 + b"}",  # a 4,000-digit integer under the cap
    b'{"record_id": "demo-oversized", "pad": "' + b"x" * 200_000 + b'"}',
    b'{"record_id": "\xc0\xaf\xc0\xaf"}',  # overlong UTF-8 ("/"): not UTF-8 at all
    INVALID_BASE64,
)))


class VentilatorKilled(BaseException):
    """BaseException: like a real crash, nothing in the ventilator may catch and survive it."""


class WorkerKilled(BaseException):
    """The worker's sandbox died (out of memory, a crash) after storing its result."""


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any):
        yield self._data

    def read(self, *_: Any) -> bytes:
        return self._data


def _error_response(request: Any, status: int, code: str, message: str,
                    **fields: str) -> AWSResponse:
    """An AWS error answered before the request leaves: it never reached the service."""
    body = json.dumps({"Type": "User", "message": message, "__type": code, **fields}).encode()
    return AWSResponse(request.url, status,
                       {"x-amzn-RequestId": "fault", "x-amzn-ErrorType": code}, _Body(body))


class _Doom:
    """A ventilator invocation chosen to die after ``after`` of its calls have started."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.started = 0
        self.dead = threading.Event()
        self.lock = threading.Lock()
        self._waiting: list[threading.Event] = []

    def watch(self, event: threading.Event) -> None:
        with self.lock:
            self._waiting.append(event)
            if self.dead.is_set():
                event.set()

    def kill(self) -> None:
        with self.lock:
            self.dead.set()
            for event in self._waiting:
                event.set()


class _DoomedFanOut:
    """The ventilator's fan-out, wrapped: the calls of a doomed invocation carry its doom into
    their threads, and none starts once it is dead."""

    def __init__(self, inner: Any, faults: Faults) -> None:
        self.inner = inner
        self.faults = faults

    def run(self, tasks: Sequence[Callable[[], Any]], limit: Any, **options: Any) -> list[Any]:
        """``FanOutPort.run``; its options (whatever the runtime's fan-out takes) pass through."""
        doom = getattr(self.faults._local, "doom", None)
        if doom is None:
            return self.inner.run(tasks, limit, **options)
        local = self.faults._local

        def bound(task: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> Any:
                if doom.dead.is_set():
                    raise VentilatorKilled("fault injection: ventilator killed mid-wave")
                local.doom = doom
                try:
                    return task()
                finally:
                    local.doom = None
            return run

        return self.inner.run([bound(t) for t in tasks], limit, **options)


class Faults:
    def __init__(self, seed: int = 0, *, rates: dict[str, float] | None = None,
                 hostile: int = 1, shards: int = 2, poison: int = 0,
                 kill_after: tuple[int, int] = (1, 3),
                 kill: float | None = None, worker_timeout: float | None = None,
                 throttle: float | None = None, conflict: float | None = None,
                 malformed: float | None = None) -> None:
        self.seed = seed
        # One random stream per kind (and one for what is put on the stream): how often a kind
        # strikes depends on its own opportunities only, not on how threads interleave the
        # draws of the others.
        self._rngs = {kind: random.Random(f"{seed}:{kind}")
                      for kind in (*DEFAULT_RATES, "stream")}
        self._sure_at = {kind: self._rngs[kind].randint(1, SURE_WITHIN) for kind in DEFAULT_RATES}
        self._chances: Counter[str] = Counter()
        self.rates = {**DEFAULT_RATES, **(rates or {})}
        # The first campaign's keyword names still work.
        for kind, rate in (("ventilator_killed", kill), ("worker_timeout", worker_timeout),
                           ("dynamodb_throttled", throttle), ("update_refused", conflict),
                           ("malformed_record", malformed)):
            if rate is not None:
                self.rates[kind] = rate
        self.hostile = hostile  # copies of the hostile corpus put on the stream
        self.shards = shards
        self.poison = poison
        self.kill_after = kill_after  # a killed ventilator dies after this many calls started
        self.poison_ids: set[str] = set()
        self.injected: Counter[str] = Counter()
        self.observed: Counter[str] = Counter()
        self.errors: list[BaseException] = []  # what a background thread died of
        self.active = True
        self._lock = threading.Lock()
        self._local = threading.local()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._arrivals: dict[str, list[threading.Event]] = {}
        self._storm_until = 0.0
        self._squeezed_until = 0.0
        self._late: set[str] = set()
        self._toggled: set[str] = set()  # kinds already struck the run's first toggle
        self._http = URLLib3Session()
        self._service: Any = None
        self._worker = ""
        self._api: Any = None
        self._base_delay_s = 0.0
        self._late_s = 0.0
        self._throttles_before = 0
        self._session: Any = None

    # -- dice ------------------------------------------------------------------------------------

    def _draw(self, kind: str, rate: float | None = None) -> bool:
        """Whether this opportunity gets the fault: drawn at the kind's rate, and for sure from
        the kind's n-th opportunity on until it has struck once (if the kind is on)."""
        if not self.active:
            return False
        with self._lock:
            self._chances[kind] += 1
            if (kind in self._sure_at and kind not in SURE_AT_FIRST_TOGGLE
                    and self.rates[kind] > 0 and not self.injected[kind]
                    and self._chances[kind] >= self._sure_at[kind]):
                return True
            return self._rngs[kind].random() < (self.rates[kind] if rate is None else rate)

    def _rng(self, kind: str) -> random.Random:
        return self._rngs[kind]  # callers hold self._lock

    def count(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.injected[kind] += n

    def roll(self, kind: str) -> bool:
        hit = self._draw(kind)
        if hit:
            self.count(kind)
        return hit

    # -- installing on a deployed provider -------------------------------------------------------

    def install(self, *, service: Any, deployed: Any, rearm_period_s: float) -> None:
        """Hook the runtime's clients and handlers (``deployed``: a DeployedProvider)."""
        runtime, settings = deployed.runtime, deployed.settings
        self._service = service
        self._worker = settings.worker_function
        self._throttles_before = service.throttles.get(self._worker, 0)
        self._base_delay_s = service.update_delay_s
        self._late_s = max(self._base_delay_s, rearm_period_s * LATE_SETTLE_REARMS)
        self._api = boto3.client("lambda")  # the operator's client, for PutFunctionConcurrency
        service.conflict_injector = self._settle_time
        runtime.dynamodb.meta.events.register("before-send.dynamodb", self._throttle_dynamodb)
        # The worker's result store creates its S3 client later, from the default session
        # (each client copies the session's hooks when it is created).
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        self._session = boto3.DEFAULT_SESSION
        self._session.events.register("after-call.s3.PutObject", self._after_store)
        ventilator = runtime.ventilator(settings.ventilator_function)
        invoke_client = ventilator.invoke.client
        invoke_client.meta.events.register("before-send.lambda.Invoke", self._before_invoke)
        mapping_client = runtime.mapping(settings.ventilator_function).client  # rearm's too
        for op in ("GetEventSourceMapping", "ListEventSourceMappings",
                   "UpdateEventSourceMapping"):
            mapping_client.meta.events.register(f"before-send.lambda.{op}", self._before_mapping)
        ventilator.invoke = self.wrap_invoke(ventilator.invoke)
        ventilator.fan_out = _DoomedFanOut(ventilator.fan_out, self)
        function = service.functions[settings.ventilator_function]
        function.handler = self.wrap_ventilator(function.handler)

    def stop(self, timeout_s: float = 30.0) -> None:
        """No more faults: lift a squeeze, let background calls finish, restore settle time."""
        self.active = False
        self._stop.set()
        if self._session is not None:
            self._session.events.unregister("after-call.s3.PutObject", self._after_store)
        if self._service is not None:
            self._service.update_delay_s = self._base_delay_s
            with self._lock:
                squeezed, self._squeezed_until = self._squeezed_until, 0.0
            if squeezed:
                self._api.delete_function_concurrency(FunctionName=self._worker)
        deadline = time.monotonic() + timeout_s
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def reraise(self) -> None:
        """Fail with the exception a background thread died of, if one did."""
        if self.errors:
            raise self.errors[0]

    # -- the worker --------------------------------------------------------------------------------

    def wrap_worker(self, handler: Callable[..., Any], timeout_s: float):
        def worker(event: Any, context: Any) -> Any:
            record_id = event.get("record_id") if isinstance(event, dict) else None
            self._arrived(record_id)
            if self.roll("worker_timeout"):
                self._stop.wait(timeout_s + 0.5)  # Lambda gives up first: no provider call
                return {"ok": False, "error": "abandoned"}
            self._local.kill_after_store = self._draw("worker_killed")
            try:
                result = handler(event, context)
            finally:
                self._local.kill_after_store = False
            if isinstance(result, dict) and result.get("found"):
                with self._lock:
                    self.observed["result_found"] += 1
            return result

        return worker

    def _after_store(self, http_response: Any = None, **_: Any) -> None:
        if getattr(self._local, "kill_after_store", False) and \
                http_response is not None and http_response.status_code < 300:
            self._local.kill_after_store = False
            self.count("worker_killed")
            raise WorkerKilled("fault injection: worker killed after storing its result")

    # -- the ventilator ----------------------------------------------------------------------------

    def wrap_ventilator(self, handler: Callable[..., Any]):
        def ventilator(event: Any, context: Any) -> Any:
            doom = None
            if self._draw("ventilator_killed"):
                with self._lock:
                    # Until one has died: after its first call, which every calling one makes.
                    after = self._rng("ventilator_killed").randint(*self.kill_after) \
                        if self.injected["ventilator_killed"] else min(self.kill_after)
                    doom = _Doom(after)
            self._local.doom = doom
            try:
                return handler(event, context)
            finally:
                self._local.doom = None

        return ventilator

    def wrap_invoke(self, invoke: Callable[[dict[str, Any]], WorkerResult]):
        """A call of a doomed ventilator runs in its own thread, so that the worker runs on
        when the ventilator dies; the k-th call started kills it."""

        def invoke_or_die(payload: dict[str, Any]) -> WorkerResult:
            doom: _Doom | None = getattr(self._local, "doom", None)
            if doom is None:
                return invoke(payload)
            with doom.lock:
                if doom.dead.is_set():
                    raise VentilatorKilled("fault injection: ventilator killed mid-wave")
                doom.started += 1
                last = doom.started == doom.after  # others may start until it is dead
            done, box = threading.Event(), {}
            doom.watch(done)
            arrived = self._expect(payload.get("record_id"), done)

            def call() -> None:
                try:
                    box["result"] = invoke(payload)
                finally:
                    done.set()
                    arrived.set()

            self._background(call, "orphaned-call")
            if last:
                arrived.wait(5.0)  # the request reached the worker: it runs on regardless
                self.count("ventilator_killed")
                doom.kill()
            done.wait()
            if doom.dead.is_set():
                raise VentilatorKilled("fault injection: ventilator killed mid-wave")
            return box["result"]

        return invoke_or_die

    # -- the ventilator's Lambda clients ---------------------------------------------------------

    def _before_invoke(self, request: Any, **_: Any) -> AWSResponse | None:
        if not self.active:
            return None
        self._lift_squeeze()
        if self._draw("concurrency_squeezed"):
            self._squeeze()
        if self.roll("invoke_throttled"):
            return _error_response(request, 429, "TooManyRequestsException", "Rate Exceeded.",
                                   Reason="ReservedFunctionConcurrentInvocationLimitExceeded")
        if not self.roll("connection_dropped"):
            return None
        # Send it for real, in the background: the worker runs to completion whatever the
        # ventilator hears. Then drop the connection, before or after the worker finished.
        record_id = _payload_id(request.body)
        done = threading.Event()
        arrived = self._expect(record_id, done)

        def send() -> None:
            try:
                self._http.send(request).content  # noqa: B018 (read the answer, discard it)
            finally:
                done.set()
                arrived.set()

        self._background(send, "dropped-invoke")
        arrived.wait(5.0)
        with self._lock:
            rng = self._rng("connection_dropped")
            linger, read_timeout = rng.uniform(0.0, 0.03), rng.random() < 0.5
        done.wait(linger)
        error = ReadTimeoutError if read_timeout else ConnectionClosedError
        raise error(endpoint_url=request.url)

    def _squeeze(self) -> None:
        with self._lock:
            fresh = not self._squeezed_until
            self._squeezed_until = time.monotonic() + SQUEEZE_S
        if fresh:
            self._api.put_function_concurrency(FunctionName=self._worker,
                                               ReservedConcurrentExecutions=0)
            self.count("concurrency_squeezed")

    def _lift_squeeze(self) -> None:
        with self._lock:
            due = self._squeezed_until and time.monotonic() >= self._squeezed_until
            if due:
                self._squeezed_until = 0.0
        if due:
            self._api.delete_function_concurrency(FunctionName=self._worker)

    def _before_mapping(self, request: Any, **_: Any) -> AWSResponse | None:
        if not self.active:
            return None
        now = time.monotonic()
        if now >= self._storm_until and self._draw("mapping_throttled"):
            self._storm_until = now + STORM_S
        if now < self._storm_until:
            self.count("mapping_throttled")
            return _error_response(request, 429, "TooManyRequestsException", "Rate exceeded",
                                   Reason="CallerRateLimitExceeded")
        if request.method != "PUT":  # UpdateEventSourceMapping
            return None
        changes = json.loads(request.body or b"{}")
        toggle = "Enabled" in changes
        rate = self.rates["update_refused"] * (1.0 if toggle else 0.2)
        if self._first("update_refused", toggle) or self._draw("update_refused", rate):
            self.count("update_refused")
            state = "Disabling" if changes.get("Enabled") else "Enabling"
            return _error_response(
                request, 409, "ResourceConflictException",
                f"The operation cannot be performed at this time. The event source mapping "
                f"is currently in an {state if toggle else 'Updating'} state.")
        uuid_ = request.url.rsplit("/", 1)[-1]
        if self._settling(uuid_):
            return None  # the service refuses it (ResourceConflict): nothing can settle late
        late = self._first("update_settled_late", toggle) or (
            toggle and self._draw("update_settled_late"))
        if late:
            with self._lock:
                self._late.add(request.url.rsplit("/", 1)[-1])
        return None

    def _settling(self, uuid_: str) -> bool:
        """Whether the mapping is still settling from an earlier update, so the service will
        refuse this one: a "late" mark on it would wait for some later update and could be
        lost when the faults stop (the e2e then saw no update_settled_late at all)."""
        try:
            return bool(self._service.mapping(uuid_).transition)
        except Exception:
            return False

    def _first(self, kind: str, toggle: bool) -> bool:
        """True once per run (if the kind is on): for the first update that enables or
        disables the mapping, so that a short run is sure to see the worst moment."""
        with self._lock:
            first = (toggle and self.active and self.rates[kind] > 0
                     and kind not in self._toggled)
            if first:
                self._toggled.add(kind)
        return first

    def _settle_time(self, mapping: Any) -> bool:
        """Consulted by the local Lambda service on every update, under its lock, just before
        it starts the update's settle period: picks how long this one takes. Never refuses
        (refusals come from the client hook, which knows what the update asks for)."""
        with self._lock:
            late = mapping.uuid in self._late
            self._late.discard(mapping.uuid)
        if late and self.active:
            self.count("update_settled_late")
        self._service.update_delay_s = self._late_s if late and self.active \
            else self._base_delay_s
        return False

    # -- DynamoDB ----------------------------------------------------------------------------------

    def _throttle_dynamodb(self, request: Any, **_: Any) -> AWSResponse | None:
        if not self.roll("dynamodb_throttled"):
            return None
        return _error_response(
            request, 400,
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "fault injection: throttled")

    # -- the stream --------------------------------------------------------------------------------

    def stream_entries(self, entries: list[tuple[str, bytes]]) -> tuple[list[tuple[str, bytes]],
                                                                        int]:
        """The records with malformed and hostile payloads mixed in; returns how many."""
        mixed: list[tuple[str, bytes]] = []
        bad = 0
        for entry in entries:
            mixed.append(entry)
            garbage = self.malformed_payload()
            if garbage is not None:
                mixed.append((f"fault-{len(mixed)}", garbage))
                bad += 1
        for copy in range(self.hostile):
            for i, payload in enumerate(HOSTILE):
                with self._lock:
                    at = self._rng("stream").randrange(len(mixed) + 1)
                mixed.insert(at, (f"hostile-{copy}-{i}", payload))
                self.count("hostile")
                bad += 1
        return mixed, bad

    def malformed_payload(self) -> bytes | None:
        if not self.roll("malformed_record"):
            return None
        with self._lock:
            return self._rng("malformed_record").choice(
                [b"not json at all", b"[1,2,3]", b'{"record_id": ""}', b'{"id": "wrong-field"}'])

    def pick_poison(self, ids: Sequence[str]) -> set[str]:
        with self._lock:
            self.poison_ids.update(self._rng("stream").sample(list(ids),
                                                                k=min(self.poison, len(ids))))
        return self.poison_ids

    def corrupt_envelopes(self, stage: str, event: dict[str, Any]) -> None:
        """The poller's hook: the marked record's Kinesis ``data`` becomes invalid base64."""
        marked = _b64(INVALID_BASE64)
        for record in event.get("Records", []):
            kinesis = record.get("kinesis", {})
            if kinesis.get("data") == marked:
                kinesis["data"] = "not*base64!"

    # -- reporting ---------------------------------------------------------------------------------

    def summary(self) -> dict[str, int]:
        counts = dict(self.injected)
        if self._service is not None:  # throttles the squeezes caused, counted by Lambda
            throttled = self._service.throttles.get(self._worker, 0) - self._throttles_before
            counts["invoke_throttled"] = counts.get("invoke_throttled", 0) + throttled
        kinds = [*DEFAULT_RATES, "hostile", "two_shards"] + (["poison"] if self.poison else [])
        out = {kind: counts.get(kind, 0) for kind in kinds}
        if self.poison:
            out["poison"] = len(self.poison_ids)
        return dict(sorted(out.items()))

    # -- plumbing ----------------------------------------------------------------------------------

    def _expect(self, record_id: Any, also: threading.Event) -> threading.Event:
        """An event set when the worker for ``record_id`` starts (or when ``also`` is)."""
        arrived = threading.Event()
        if also.is_set():
            arrived.set()
        if isinstance(record_id, str):
            with self._lock:
                self._arrivals.setdefault(record_id, []).append(arrived)
        return arrived

    def _arrived(self, record_id: Any) -> None:
        if not isinstance(record_id, str):
            return
        with self._lock:
            waiting = self._arrivals.pop(record_id, [])
        for event in waiting:
            event.set()

    def _background(self, target: Callable[[], None], name: str) -> None:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported by reraise()
                with self._lock:
                    self.errors.append(exc)

        thread = threading.Thread(target=run, name=f"fault-{name}", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()


def _payload_id(body: Any) -> str | None:
    try:
        return json.loads(body).get("record_id")
    except (TypeError, ValueError, AttributeError):
        return None


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
