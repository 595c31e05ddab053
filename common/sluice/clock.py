"""Time as the ledger sees it: epoch seconds in, provider-local days out."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

Clock = Callable[[], float]  # epoch seconds; injected everywhere so tests never sleep

system_clock: Clock = time.time


def local_day(epoch_s: float, zone: ZoneInfo) -> str:
    """The provider's calendar day at that instant: "once a day" means once per this value."""
    return datetime.fromtimestamp(epoch_s, zone).date().isoformat()
