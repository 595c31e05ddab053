"""A provider's access window: when it may be called, in its own timezone. Pure, clock-free.

    allowed_hours       = "22:00-06:00"                 every day (may cross midnight)
                        = "mon-fri 22:00-06:00, sat-sun 00:00-24:00"   per weekday
    maintenance_windows = ["sun 02:00-04:00"]           never called then, even inside allowed

Times are the provider's wall clock: "22:00" is 22:00 local on DST days too. A span that crosses
midnight belongs to the day it starts on ("fri 22:00-06:00" runs into Saturday morning).
Unset allowed hours mean always allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^(?:(?P<days>[a-z]{3}(?:-[a-z]{3})?(?:\+[a-z]{3}(?:-[a-z]{3})?)*)\s+)?"
                   r"(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})$")


class WindowError(ValueError):
    """A window setting that cannot be parsed; the message says what a valid one looks like."""


@dataclass(frozen=True)
class Span:
    days: frozenset[int]  # weekdays (0 = Monday) the span starts on
    start_min: int  # minutes after local midnight
    end_min: int  # <= start_min: ends the next day; 1440 = midnight

    def occurrences(self, around: date) -> Iterable[tuple[datetime, datetime]]:
        """Naive local (start, end) of the occurrences starting the day before to 8 days on."""
        for offset in range(-1, 9):
            day = around + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            start = datetime.combine(day, datetime.min.time()) + timedelta(minutes=self.start_min)
            end_day = day if self.end_min > self.start_min else day + timedelta(days=1)
            end = datetime.combine(end_day, datetime.min.time()) + timedelta(minutes=self.end_min)
            yield start, end


def _minutes(text: str, where: str) -> int:
    hours, minutes = (int(x) for x in text.split(":"))
    if not (0 <= hours <= 24 and 0 <= minutes < 60) or (hours == 24 and minutes):
        raise WindowError(f"{where}: {text!r} is not a time of day (00:00 to 24:00)")
    return hours * 60 + minutes


def _days(text: str | None, where: str) -> frozenset[int]:
    if not text:
        return frozenset(range(7))
    out: set[int] = set()
    for part in text.split("+"):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise WindowError(f"{where}: unknown day in {text!r}; use {', '.join(DAYS)}")
        a, b = DAYS.index(first), DAYS.index(last or first)
        out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(out)


def parse_span(text: str, where: str, need_day: bool = False) -> Span:
    cleaned = " ".join(text.strip().lower().split())
    match = _SPAN.match(cleaned)
    if not match:
        example = "sun 02:00-04:00" if need_day else "22:00-06:00 or mon-fri 22:00-06:00"
        raise WindowError(f"{where}: {text!r} is not a window like {example!r}")
    if need_day and not match["days"]:
        raise WindowError(f"{where}: {text!r} needs a day, like 'sun 02:00-04:00'")
    start, end = _minutes(match["start"], where), _minutes(match["end"], where)
    if start == end:
        raise WindowError(f"{where}: {text!r} is empty (start equals end)")
    return Span(_days(match["days"], where), start, end)


@dataclass(frozen=True)
class AccessWindow:
    zone: ZoneInfo
    allowed: tuple[Span, ...] = ()  # empty = always allowed
    maintenance: tuple[Span, ...] = ()

    @classmethod
    def parse(cls, timezone: str, allowed_hours: str = "",
              maintenance_windows: Iterable[str] = ()) -> AccessWindow:
        allowed = tuple(parse_span(part, "allowed_hours")
                        for part in allowed_hours.split(",") if part.strip())
        maintenance = tuple(parse_span(part, "maintenance_windows", need_day=True)
                            for part in maintenance_windows if part.strip())
        return cls(ZoneInfo(timezone), allowed, maintenance)

    @property
    def always_open(self) -> bool:
        return not self.allowed and not self.maintenance

    def _local(self, epoch_s: float) -> datetime:
        return datetime.fromtimestamp(epoch_s, self.zone).replace(tzinfo=None)

    @staticmethod
    def _inside(spans: Iterable[Span], local: datetime) -> bool:
        return any(start <= local < end
                   for span in spans for start, end in span.occurrences(local.date()))

    def is_open(self, epoch_s: float) -> bool:
        if self.always_open:
            return True
        local = self._local(epoch_s)
        if self.allowed and not self._inside(self.allowed, local):
            return False
        return not self._inside(self.maintenance, local)

    def next_change(self, epoch_s: float) -> float | None:
        """When the window next opens (if closed now) or closes (if open); None if never."""
        if self.always_open:
            return None
        now_open = self.is_open(epoch_s)
        local_day = self._local(epoch_s).date()
        boundaries = sorted({
            edge.replace(tzinfo=self.zone).timestamp()
            for span in (*self.allowed, *self.maintenance)
            for occurrence in span.occurrences(local_day)
            for edge in occurrence
        })
        for boundary in boundaries:
            if boundary > epoch_s and self.is_open(boundary) != now_open:
                return boundary
        return None
