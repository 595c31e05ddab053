"""Scheduled ingestion: when the provider's window is open, enqueue the day's records once.

Declared in each provider's app as a schedule (every 10 minutes); the first run inside the
window takes the day's kickoff marker in the ledger (a conditional write with a lease), asks
the provider's own source (its chalicelib) for the day's ids and puts them on the stream.
A run that dies midway is taken over when its lease lapses; what it had already put is
deduped by the ledger, so once a day holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sluice.clock import Clock, local_day, system_clock
from sluice.day_counts import DayCounts
from sluice.enqueue import SCHEDULED, enqueue
from sluice.kickoff_marker import KickoffMarker
from sluice.metrics import Emit, stdout_emit
from sluice.settings import ProviderSettings

DaySource = Callable[[str, ProviderSettings], Iterable[str]]
KICKOFF_LEASE_S = 900  # the kickoff Lambda's own timeout is well under 15 minutes


def kickoff(
    *,
    settings: ProviderSettings,
    marker: KickoffMarker,
    kinesis: Any,
    todays_ids: DaySource,
    counts: DayCounts | None = None,
    clock: Clock = system_clock,
    window_clock: Clock | None = None,
    emit: Emit = stdout_emit,
) -> dict[str, Any]:
    now = clock()
    if not settings.window.is_open((window_clock or clock)()):
        result: dict[str, Any] = {"action": "none", "why": "outside the access window"}
    else:
        day = local_day(now, settings.zone)
        if not marker.start(day, now, KICKOFF_LEASE_S):
            result = {"action": "none", "why": f"kickoff for {day} already done or running"}
        else:
            count = enqueue(kinesis, settings.stream_name, todays_ids(day, settings), SCHEDULED)
            if counts is not None:  # the backlog the rearm reports: enqueued - finished
                counts.add(day, {"enqueued": count}, clock())
            marker.finish(day, clock(), count)
            result = {"action": "enqueued", "day": day, "records": count}
    emit({"event": "kickoff", "Provider": settings.provider, **result})
    return result
