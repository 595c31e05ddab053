"""The four handlers of every provider and their schedules, named in one place.

``providers/<name>/app.py`` keeps each decorator visible (Chalice reads them at import, and the
file reads as the provider's table of contents) but takes the names and rates from here; so do
the template's ``app.py``, its pre-gen hook (function name lengths) and the tooling. Chalice
itself is not imported: the runtime imports only boto3 and pydantic.

``ProviderHandlers`` binds a provider's own logic (``fetch`` and ``todays_ids`` from its
chalicelib/) to its runtime once, so each decorated function is a single call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluice.kickoff import DaySource
    from sluice.runtime import ProviderFetch, Runtime

VENTILATOR = "ventilator"  # @app.on_kinesis_record: fans a delivery out to the worker
WORKER = "worker"  # @app.lambda_function: one provider call for one record
REARM = "rearm"  # @app.schedule: the reconcile loop (re-enables an open circuit half-open)
KICKOFF = "kickoff"  # @app.schedule: the day's first run inside the window enqueues its ids
HANDLERS = (VENTILATOR, WORKER, REARM, KICKOFF)

REARM_EVERY_MINUTES = 10
KICKOFF_EVERY_MINUTES = 10
REARM_EVERY_S = REARM_EVERY_MINUTES * 60


class ProviderHandlers:
    """A provider's handlers bound to its runtime (a ``LazyRuntime``: built at cold start, or
    installed ready-made by tests and the local stack) and to its own logic."""

    def __init__(self, runtime: Callable[[], Runtime], *, fetch: ProviderFetch,
                 todays_ids: DaySource) -> None:
        self._runtime = runtime
        self._fetch = fetch
        self._todays_ids = todays_ids

    def ventilator(self, event: Any) -> dict[str, Any]:
        """``event`` is Chalice's KinesisEvent."""
        return self._runtime().ventilate(event.to_dict(), event.context)

    def worker(self, event: dict[str, Any]) -> dict[str, Any]:
        return self._runtime().work(event, self._fetch)

    def rearm(self) -> dict[str, Any]:
        return self._runtime().rearm()

    def kickoff(self) -> dict[str, Any]:
        return self._runtime().kickoff(self._todays_ids)
