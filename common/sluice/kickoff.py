"""Scheduled ingestion: when the provider's window is open, enqueue the day's records once.

Declared in each provider's app as a schedule (every 10 minutes). The first run inside the
window claims the day's kickoff marker in the ledger (a conditional write with a lease, see
``kickoff_marker``), asks the provider's own source (its chalicelib) for the day's ids and puts
them on the stream in chunks of 500 (PutRecords). After each chunk the stream accepted, one
conditional write on the marker records how many ids of the day's list are put, renews the lease
and is the day's ``enqueued`` count (``DayCounts.get`` reads it): progress and count move
together, so the rearm's backlog (enqueued - finished) is never inflated by a resumed run.

- A run that dies is taken over by the first run after its lease lapses; the taker skips the
  ids already put (the source reads the same file in the same order) and goes on.
- A live run renews its lease with every chunk, so a long enqueue (hundreds of thousands of
  ids) is never taken over while it progresses. A run whose lease lapsed anyway (stalled
  longer than ``KICKOFF_LEASE_S`` on one chunk) and was taken over stops at its next progress
  write (``stopped``): it never marks the day done nor counts.
- No input for the day yet (the source returns ``None``) leaves the day open (``waiting``): a
  file that lands later is enqueued by a later run inside the window. An empty input is the
  day done with 0.

What can still be put twice: the ids of one chunk, when a run dies (or loses its lease) after
PutRecords accepted that chunk and before its progress write. The taker puts them again; the
ledger dedupes their fetches (once a day holds) and the count has them once, since it moves
with the progress; their second copies end as "skipped", so the backlog estimate can read up
to one chunk (500) *low*, never high. A source whose list changes between two runs (a file
replaced mid-day) is not detected: the taker skips the first ``put`` ids of the new list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

from sluice.clock import Clock, local_day, system_clock
from sluice.enqueue import SCHEDULED, entries_for, put_entries
from sluice.kickoff_marker import Claim, KickoffMarker, LostKickoff
from sluice.metrics import Emit, stdout_emit
from sluice.settings import ProviderSettings

# ``todays_ids(day, settings)``: the day's ids, in the same order on every call, or None when
# the day's input is not there yet (a generator function cannot say None: return one instead).
DaySource = Callable[[str, ProviderSettings], Iterable[str] | None]
# Renewed with every chunk, so it only has to outlast one chunk's PutRecords (retries included)
# and the read of the input before the first: a run killed at its Lambda timeout (5 minutes) is
# resumed by the first scheduled run after the lease lapses.
KICKOFF_LEASE_S = 900


def kickoff(
    *,
    settings: ProviderSettings,
    marker: KickoffMarker,
    kinesis: Any,
    todays_ids: DaySource,
    clock: Clock = system_clock,
    window_clock: Clock | None = None,
    emit: Emit = stdout_emit,
) -> dict[str, Any]:
    """The day's scheduled ``enqueued`` count is the marker's progress, which
    ``DayCounts.get`` adds: no counter row is written here."""
    now = clock()
    if not settings.window.is_open((window_clock or clock)()):
        result: dict[str, Any] = {"action": "none", "why": "outside the access window"}
    else:
        day = local_day(now, settings.zone)
        claim = marker.start(day, now, KICKOFF_LEASE_S)
        if claim is None:
            result = {"action": "none", "why": f"kickoff for {day} already done or running"}
        else:
            result = _enqueue_day(claim, settings, marker, kinesis, todays_ids, clock)
    emit({"event": "kickoff", "Provider": settings.provider, **result})
    return result


def _enqueue_day(claim: Claim, settings: ProviderSettings, marker: KickoffMarker, kinesis: Any,
                 todays_ids: DaySource, clock: Clock) -> dict[str, Any]:
    """Put the day's ids after the ``claim.put`` already on the stream; ``records`` in the
    result is the day's total, ``resumed_from`` how many an earlier run had put."""
    day, resumed_from = claim.day, claim.put
    ids = todays_ids(day, settings)
    if ids is None:
        marker.release(claim, clock())
        return {"action": "none", "why": f"no input for {day} yet", "day": day}
    held = claim

    def accepted(done: int, _total: int) -> None:  # after each chunk PutRecords accepted
        nonlocal held
        held = marker.advance(held, resumed_from + done, clock(), KICKOFF_LEASE_S)

    try:
        put_entries(kinesis, settings.stream_name,
                    entries_for(islice(ids, resumed_from, None), SCHEDULED), progress=accepted)
        marker.finish(held, clock())
    except LostKickoff:
        return {"action": "stopped", "why": f"kickoff for {day} taken over by another run",
                "day": day, "records": held.put}
    result: dict[str, Any] = {"action": "enqueued", "day": day, "records": held.put}
    if resumed_from:
        result["resumed_from"] = resumed_from
    return result
