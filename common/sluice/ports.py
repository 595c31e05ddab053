"""The ports of the runtime: what the ventilator, worker and rearm need from the world.

Each has two adapters that pass one contract suite (tests/functional/test_contracts.py):
DynamoDB / Lambda / Kinesis here (``ledger.Ledger``, ``control.ControlStore``,
``mapping.MappingClient``, ``stream.StreamShards``, ``fanout.ThreadFanOut``), and in-memory ones
in the tooling (``sluice_tools.memory``) that the simulator and unit tests run on. So a
simulated number is a claim about this code, not about a look-alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from sluice.breaker import ControlState
from sluice.ledger import Entry
from sluice.mapping import MappingView

T = TypeVar("T")


class LedgerPort(Protocol):
    def lookup(self, record_ids: Iterable[str], day: str) -> dict[str, Entry]: ...
    def get(self, record_id: str, day: str) -> Entry | None: ...
    def claim(self, record_id: str, day: str, token: str, now: float,
              lease_s: float) -> Entry: ...
    def complete(self, record_id: str, day: str, token: str, now: float) -> bool: ...
    def fail(self, record_id: str, day: str, token: str, now: float, *, error: str,
             park: bool) -> str: ...
    def release(self, record_id: str, day: str, token: str, now: float) -> bool: ...
    def settle_failure(self, record_id: str, day: str, now: float, *, blamed: bool, park: bool,
                       reason: str, suspect: bool = False) -> bool: ...


class ControlPort(Protocol):
    def load(self) -> ControlState: ...
    def update(self, change: Callable[[ControlState], ControlState],
               current: ControlState | None = None) -> ControlState: ...


class MappingPort(Protocol):
    def find(self, stream_arn: str | None = None,
             stream_name: str | None = None) -> MappingView: ...
    def apply(self, view: MappingView, *, enabled: bool, batch_size: int) -> str: ...


class ShardsPort(Protocol):
    def open_shards(self) -> int: ...


class FanOutPort(Protocol):
    def run(self, tasks: Sequence[Callable[[], T]], limit: int | Callable[[], int], *,
            on_done: Callable[[int, object], None] | None = None,
            most: int | None = None) -> list[T | BaseException | None]:
        """Run the tasks, at most ``limit`` at a time (read before each start when callable;
        0 starts nothing more), starting the next as soon as one ends (a sliding window, not
        waves); results in task order, None for a task never started. A task that raises is
        returned as the exception; ``on_done(index, result)`` as each ends."""
        ...
