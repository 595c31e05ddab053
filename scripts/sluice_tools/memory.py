"""In-memory adapters of the runtime's ports, for the simulator and unit tests.

They implement the same protocols as the DynamoDB / Lambda adapters (``sluice.ports``) and
pass the same contract suite (tests/functional/test_contracts.py), so code running on them is
the production code on a world that behaves like production: conditional claims and leases,
optimistic versions, mapping updates that settle late and refuse changes meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sluice.breaker import ControlState
from sluice.control import ControlConflict
from sluice.fanout import limit_now
from sluice.ledger import FAILED, FETCHED, IN_PROGRESS, PARKED, ClaimLost, Entry
from sluice.mapping import DEFERRED, ENABLED_STATES, UNCHANGED, UPDATED, MappingView

T = TypeVar("T")


class MemoryLedger:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Entry] = {}

    def lookup(self, record_ids: Iterable[str], day: str) -> dict[str, Entry]:
        return {rid: e for rid in dict.fromkeys(record_ids)
                if (e := self.entries.get((rid, day))) is not None}

    def get(self, record_id: str, day: str) -> Entry | None:
        return self.entries.get((record_id, day))

    def claim(self, record_id: str, day: str, token: str, now: float, lease_s: float) -> Entry:
        old = self.entries.get((record_id, day))
        free = old is None or old.status == FAILED or (
            old.status == IN_PROGRESS and old.lease_until < now)
        if not free:
            raise ClaimLost(old)
        base = old or Entry(record_id, day, IN_PROGRESS)
        entry = replace(base, status=IN_PROGRESS, attempts=base.attempts + 1,
                        lease_until=round(now + lease_s, 3), claim_token=token,
                        updated_at=round(now, 3), claimed_at=round(now, 3))
        self.entries[(record_id, day)] = entry
        return entry

    def complete(self, record_id: str, day: str, token: str, now: float) -> bool:
        return self._finish(record_id, day, token, FETCHED, "", now)

    def fail(self, record_id: str, day: str, token: str, now: float, *, error: str,
             park: bool) -> str:
        status = PARKED if park else FAILED
        self._finish(record_id, day, token, status, error, now)
        return status

    def release(self, record_id: str, day: str, token: str, now: float) -> bool:
        old = self._held_by(record_id, day, token)
        if old is None:
            return False
        self.entries[(record_id, day)] = replace(old, status=FAILED, lease_until=0.0,
                                                 attempts=old.attempts - 1,
                                                 updated_at=round(now, 3))
        return True

    def _held_by(self, record_id: str, day: str, token: str) -> Entry | None:
        old = self.entries.get((record_id, day))
        if old is None or old.claim_token != token or old.status != IN_PROGRESS:
            return None
        return old

    def _finish(self, record_id: str, day: str, token: str, status: str, reason: str,
                now: float) -> bool:
        old = self._held_by(record_id, day, token)
        if old is None:
            return False
        self.entries[(record_id, day)] = replace(old, status=status, reason=reason,
                                                 lease_until=0.0, updated_at=round(now, 3))
        return True

    def settle_failure(self, record_id: str, day: str, now: float, *, blamed: bool, park: bool,
                       reason: str, suspect: bool = False) -> bool:
        old = self.entries.get((record_id, day))
        if old is None or old.status != FAILED:
            return False
        self.entries[(record_id, day)] = replace(
            old, blamed=old.blamed + int(blamed), suspects=old.suspects + int(suspect),
            status=PARKED if park else FAILED, reason=reason if park else old.reason,
            updated_at=round(now, 3))
        return True

    def final_states(self) -> dict[str, str]:
        """Each record's best state over all days: fetched wins over parked."""
        out: dict[str, str] = {}
        for (rid, _day), entry in self.entries.items():
            if entry.status in (FETCHED, PARKED) and out.get(rid) != FETCHED:
                out[rid] = entry.status
        return out


class MemoryDayCounts:
    def __init__(self) -> None:
        self.counters: dict[str, dict[str, int]] = {}

    def add(self, day: str, counts: Mapping[str, int], now: float) -> None:
        day_counts = self.counters.setdefault(day, {})
        for key, n in counts.items():
            if n:
                day_counts[key] = day_counts.get(key, 0) + n

    def get(self, day: str) -> dict[str, int]:
        return dict(self.counters.get(day, {}))


class MemoryMalformed:
    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def park(self, *, shard_id: str, sequence_number: str, day: str, reason: str, data: bytes,
             now: float) -> None:
        sk = f"{day}#{shard_id}#{sequence_number}"  # keyed by position: idempotent
        self.items[sk] = {"pk": "#malformed", "sk": sk, "status": PARKED, "reason": reason,
                          "size": len(data)}

    def list(self, day: str) -> list[dict[str, Any]]:
        return [i for sk, i in sorted(self.items.items()) if sk.startswith(day)]


class MemoryControl:
    def __init__(self, max_tries: int = 8) -> None:
        self.state = ControlState()
        self._max_tries = max_tries

    def load(self) -> ControlState:
        return self.state

    def update(self, change: Callable[[ControlState], ControlState],
               current: ControlState | None = None) -> ControlState:
        for _ in range(self._max_tries):
            base = current if current is not None else self.state
            wanted = change(base)
            if wanted == base:
                return base
            if base.version != self.state.version:  # a stale read: re-read, re-apply
                current = None
                continue
            self.state = replace(wanted, version=base.version + 1)
            return self.state
        raise ControlConflict(f"control item kept changing after {self._max_tries} tries")


@dataclass(frozen=True)
class MappingConfig:
    batch_size: int
    enabled: bool
    reports_item_failures: bool = True


class MemoryMapping:
    """A mapping whose updates settle after ``update_delay_s`` (of the injected clock) and
    refuse changes meanwhile, like Lambda's Updating / Enabling / Disabling states. An update
    answers with the *new* values in a transitional state, as the Lambda API does; batches
    keep flowing with the old ones until it settles (``effective``)."""

    def __init__(self, batch_size: int, clock: Callable[[], float], update_delay_s: float,
                 stream_arn: str = "arn:aws:kinesis:sim:0:stream/sim",
                 reports_item_failures: bool = True,
                 delay: Callable[[], float] | None = None) -> None:
        self.config = MappingConfig(batch_size, True, reports_item_failures)
        self.clock = clock
        self.update_delay_s = update_delay_s
        self.delay = delay or (lambda: self.update_delay_s)
        self.stream_arn = stream_arn
        self.pending: tuple[float, MappingConfig, str] | None = None
        self.updates = 0
        self.refusals: list[Callable[[dict[str, Any]], str]] = []  # fault hooks -> error code

    def _settle(self) -> None:
        if self.pending and self.clock() >= self.pending[0]:
            self.config, self.pending = self.pending[1], None

    def effective(self) -> MappingConfig:
        self._settle()
        return self.config

    def find(self, stream_arn: str | None = None, stream_name: str | None = None) -> MappingView:
        self._settle()
        if self.pending:
            _, wanted, transition = self.pending
            return MappingView("mem", wanted.batch_size, transition, self.stream_arn,
                               wanted.reports_item_failures)
        state = "Enabled" if self.config.enabled else "Disabled"
        return MappingView("mem", self.config.batch_size, state, self.stream_arn,
                           self.config.reports_item_failures)

    def apply(self, view: MappingView, *, enabled: bool, batch_size: int) -> str:
        current = self.find()
        if batch_size == current.batch_size and enabled == (current.state in ENABLED_STATES) \
                and current.reports_item_failures:
            return UNCHANGED
        if self.pending is not None:
            return DEFERRED  # ResourceConflictException: still settling
        for refuse in self.refusals:
            if refuse({"enabled": enabled, "batch_size": batch_size}):
                return DEFERRED  # refused or throttled: the control state still asks for it
        self.updates += 1
        transition = ("Updating" if enabled == self.config.enabled
                      else "Enabling" if enabled else "Disabling")
        # ReportBatchItemFailures is always part of the spec (see ``MappingClient.apply``).
        self.pending = (self.clock() + self.delay(), MappingConfig(batch_size, enabled, True),
                        transition)
        return UPDATED


class MemoryShards:
    def __init__(self, count: int) -> None:
        self.count = count

    def open_shards(self) -> int:
        return self.count


class InlineFanOut:
    """Runs tasks one after another, in order: for unit tests that need no concurrency. A
    limit that falls to 0 (read before each task) starts nothing more."""

    def run(self, tasks: Sequence[Callable[[], T]], limit: int | Callable[[], int], *,
            on_done: Callable[[int, object], None] | None = None,
            most: int | None = None) -> list[T | BaseException | None]:
        results: list[T | BaseException | None] = [None] * len(tasks)
        for index, task in enumerate(tasks):
            if limit_now(limit) <= 0:
                break
            try:
                results[index] = task()
            except Exception as exc:
                results[index] = exc
            if on_done is not None:
                on_done(index, results[index])
        return results
