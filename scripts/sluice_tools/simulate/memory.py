"""In-memory stand-ins for the ledger, the control item and the mapping, for virtual time.

Each subclasses the real class and keeps its contract (conditional claims, leases, optimistic
versions, settling updates), so the ventilator and rearm run unchanged on top of them.
The functional tests hold the real classes to the same behaviour against DynamoDB and Lambda.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from sluice.breaker import ControlState
from sluice.control import ControlConflict, ControlStore
from sluice.ledger import FAILED, FETCHED, IN_PROGRESS, PARKED, ClaimLost, Entry, Ledger
from sluice.mapping import DEFERRED, UNCHANGED, UPDATED, MappingClient, MappingView


class MemoryLedger(Ledger):
    def __init__(self) -> None:
        super().__init__("memory", client=object())
        self.entries: dict[tuple[str, str], Entry] = {}
        self.malformed_items: list[dict[str, Any]] = []
        self.counters: dict[str, dict[str, int]] = {}

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
        entry = Entry(record_id, day, IN_PROGRESS, attempts=(old.attempts if old else 0) + 1,
                      blamed=old.blamed if old else 0, lease_until=now + lease_s,
                      claim_token=token, reason=old.reason if old else "")
        self.entries[(record_id, day)] = entry
        return entry

    def _finish(self, record_id, day, token, now, status, reason) -> bool:
        old = self.entries.get((record_id, day))
        if old is None or old.claim_token != token or old.status != IN_PROGRESS:
            return False
        self.entries[(record_id, day)] = replace(old, status=status, reason=reason,
                                                 lease_until=0.0)
        return True

    def settle_failure(self, record_id, day, now, *, blamed, park, reason) -> bool:
        old = self.entries.get((record_id, day))
        if old is None or old.status != FAILED:
            return False
        self.entries[(record_id, day)] = replace(
            old, blamed=old.blamed + int(blamed), status=PARKED if park else FAILED,
            reason=reason if park else old.reason)
        return True

    def park_malformed(self, *, shard_id, sequence_number, day, reason, data, now) -> None:
        self.malformed_items.append({"pk": "#malformed", "sk": f"{day}#{shard_id}#"
                                     f"{sequence_number}", "status": PARKED, "reason": reason})

    def malformed(self, day: str) -> list[dict[str, Any]]:
        return [i for i in self.malformed_items if i["sk"].startswith(day)]

    def count(self, day: str, counts: Mapping[str, int], now: float) -> None:
        day_counts = self.counters.setdefault(day, {})
        for key, n in counts.items():
            if n:
                day_counts[key] = day_counts.get(key, 0) + n

    def day_counts(self, day: str) -> dict[str, int]:
        return dict(self.counters.get(day, {}))

    def final_states(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for (rid, _day), entry in self.entries.items():
            if entry.status in (FETCHED, PARKED) and out.get(rid) != FETCHED:
                out[rid] = entry.status
        return out


class MemoryControl(ControlStore):
    def __init__(self) -> None:
        super().__init__("memory", client=object())
        self.state = ControlState()

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
        raise ControlConflict("control item kept changing")


@dataclass
class _Config:
    batch_size: int
    enabled: bool


class SimMapping(MappingClient):
    """A mapping whose updates take ``update_delay_s`` of virtual time to settle, conflicting
    meanwhile, like Lambda's Updating / Enabling / Disabling states."""

    def __init__(self, batch_size: int, clock: Callable[[], float], update_delay_s: float,
                 stream_arn: str = "arn:aws:kinesis:sim:0:stream/sim") -> None:
        super().__init__("sim-ventilator", client=object())
        self.config = _Config(batch_size, True)
        self.clock = clock
        self.update_delay_s = update_delay_s
        self.stream_arn = stream_arn
        self.pending: tuple[float, _Config] | None = None
        self.updates = 0
        self.transition = ""

    def _settle(self) -> None:
        if self.pending and self.clock() >= self.pending[0]:
            self.config, self.pending, self.transition = self.pending[1], None, ""

    def effective(self) -> _Config:
        self._settle()
        return self.config

    def find(self, stream_arn: str | None = None, stream_name: str | None = None) -> MappingView:
        return self.get("sim")

    def get(self, uuid: str) -> MappingView:
        self._settle()
        state = self.transition or ("Enabled" if self.config.enabled else "Disabled")
        return MappingView("sim", self.config.batch_size, state, self.stream_arn, True)

    def apply(self, view: MappingView, *, enabled: bool, batch_size: int) -> str:
        self._settle()
        if batch_size == self.config.batch_size and enabled == self.config.enabled:
            return UNCHANGED
        if self.pending is not None:
            return DEFERRED
        self.updates += 1
        self.transition = ("Updating" if enabled == self.config.enabled
                           else "Enabling" if enabled else "Disabling")
        self.pending = (self.clock() + self.update_delay_s, _Config(batch_size, enabled))
        return UPDATED
