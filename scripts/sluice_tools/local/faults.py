"""Fault injection for ``sluice local demo --faults``: the invariants must hold regardless.

Every fault is injected at the edge of the real code, never inside it:
- ventilator killed mid-batch: after a worker call returned, the ventilator dies (the batch
  fails; Lambda retries it; the records the workers finished are already in the ledger);
- worker timeouts: the worker hangs past its Lambda timeout before calling the provider;
- DynamoDB throttling: a botocore hook answers ProvisionedThroughputExceededException before
  the request leaves (botocore's retries and the batch retry must absorb it);
- ESM update conflicts: the local Lambda service answers ResourceConflictException;
- malformed records: garbage payloads are put on the stream between valid ones.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from botocore.awsrequest import AWSResponse

from sluice.invoker import WorkerResult


class VentilatorKilled(BaseException):
    """BaseException: like a real crash, nothing in the ventilator may catch and survive it."""


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any):
        yield self._data

    def read(self, *_: Any) -> bytes:
        return self._data


class Faults:
    def __init__(self, seed: int = 0, *, kill: float = 0.01, worker_timeout: float = 0.01,
                 throttle: float = 0.02, conflict: float = 0.2, malformed: float = 0.01) -> None:
        self.rng = random.Random(seed)
        self.rates = {"ventilator_killed": kill, "worker_timeout": worker_timeout,
                      "dynamodb_throttled": throttle, "esm_update_conflict": conflict,
                      "malformed_record": malformed}
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()

    def roll(self, kind: str) -> bool:
        with self._lock:
            hit = self.rng.random() < self.rates[kind]
            if hit:
                self.injected[kind] += 1
            return hit

    # -- the hooks -----------------------------------------------------------------------------

    def wrap_invoke(self, invoke: Callable[[dict[str, Any]], WorkerResult]):
        def invoke_or_die(payload: dict[str, Any]) -> WorkerResult:
            result = invoke(payload)
            if self.roll("ventilator_killed"):
                raise VentilatorKilled("fault injection: ventilator killed mid-batch")
            return result

        return invoke_or_die

    def wrap_worker(self, handler: Callable[..., Any], timeout_s: float):
        def worker(event: Any, context: Any) -> Any:
            if self.roll("worker_timeout"):
                time.sleep(timeout_s + 0.5)  # Lambda kills it first: no provider call made
                return {"ok": False, "error": "abandoned"}
            return handler(event, context)

        return worker

    def throttle_dynamodb(self, client: Any) -> None:
        def maybe_throttle(request: Any, **_: Any) -> AWSResponse | None:
            if not self.roll("dynamodb_throttled"):
                return None
            body = json.dumps({
                "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "message": "fault injection: throttled",
            }).encode()
            return AWSResponse(request.url, 400, {"x-amzn-RequestId": "fault"}, _Body(body))

        client.meta.events.register("before-send.dynamodb", maybe_throttle)

    def esm_conflict(self, _mapping: Any) -> bool:
        return self.roll("esm_update_conflict")

    def malformed_payload(self) -> bytes | None:
        if not self.roll("malformed_record"):
            return None
        return self.rng.choice([b"not json at all", b"[1,2,3]", b'{"record_id": ""}',
                                b'{"id": "wrong-field"}'])

    def summary(self) -> dict[str, int]:
        return {kind: self.injected.get(kind, 0) for kind in self.rates}
