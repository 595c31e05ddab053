"""The access window calculator: pure, with times given as instants (no clock inside)."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from sluice.window import AccessWindow, WindowError

PARIS = ZoneInfo("Europe/Paris")


def at(text: str, zone=PARIS) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def local(epoch: float, zone=PARIS) -> str:
    return datetime.fromtimestamp(epoch, zone).strftime("%a %Y-%m-%d %H:%M")


NIGHTS = AccessWindow.parse("Europe/Paris", "22:00-06:00", ["sun 02:00-04:00"])


@pytest.mark.parametrize(("when", "open_"), [
    ("2026-03-25T21:59", False),
    ("2026-03-25T22:00", True),  # Wednesday night
    ("2026-03-26T00:30", True),  # after midnight: still Wednesday's span
    ("2026-03-26T05:59", True),
    ("2026-03-26T06:00", False),
    ("2026-03-26T12:00", False),
    ("2026-03-22T01:59", True),  # Sunday, before maintenance
    ("2026-03-22T02:00", False),  # maintenance inside allowed hours wins
    ("2026-03-22T03:59", False),
    ("2026-03-22T04:00", True),
])
def test_crossing_midnight_and_maintenance(when, open_):
    assert NIGHTS.is_open(at(when)) is open_


def test_next_change_opens_and_closes():
    assert local(NIGHTS.next_change(at("2026-03-25T12:00"))) == "Wed 2026-03-25 22:00"
    assert local(NIGHTS.next_change(at("2026-03-25T23:00"))) == "Thu 2026-03-26 06:00"
    # Saturday night: the window closes for maintenance at 02:00, reopens at 04:00.
    assert local(NIGHTS.next_change(at("2026-03-21T23:00"))) == "Sun 2026-03-22 02:00"
    assert local(NIGHTS.next_change(at("2026-03-22T02:30"))) == "Sun 2026-03-22 04:00"


def test_a_dst_change_keeps_the_wall_clock():
    # Paris springs forward on 2026-03-29 (02:00 -> 03:00): the night is an hour shorter,
    # but the window still closes at 06:00 local, which is now 04:00 UTC, not 05:00.
    # Sunday maintenance 02:00-04:00 starts in the skipped hour: it closes the window when the
    # clock jumps to 03:00 local (01:00 UTC) and is still closed at 03:30 local.
    close = NIGHTS.next_change(at("2026-03-28T23:00"))
    assert local(close) == "Sun 2026-03-29 03:00"
    assert datetime.fromtimestamp(close, ZoneInfo("UTC")).hour == 1
    assert not NIGHTS.is_open(at("2026-03-29T03:30"))
    assert local(NIGHTS.next_change(at("2026-03-29T04:30"))) == "Sun 2026-03-29 06:00"
    assert datetime.fromtimestamp(NIGHTS.next_change(at("2026-03-29T04:30")),
                                  ZoneInfo("UTC")).hour == 4


def test_per_weekday_hours():
    window = AccessWindow.parse("UTC", "mon-fri 18:00-20:00, sat+sun 00:00-24:00")
    utc = ZoneInfo("UTC")
    assert window.is_open(at("2026-03-27T19:00", utc))  # Friday evening
    assert not window.is_open(at("2026-03-27T21:00", utc))
    assert window.is_open(at("2026-03-28T11:00", utc))  # Saturday all day
    assert window.is_open(at("2026-03-29T23:59", utc))  # Sunday, last minute


def test_unset_means_always_open():
    window = AccessWindow.parse("UTC")
    assert window.is_open(0.0) and window.next_change(0.0) is None


@pytest.mark.parametrize(("allowed", "maintenance", "message"), [
    ("22-06", [], "is not a window like"),
    ("10:00-10:00", [], "empty"),
    ("fri-xyz 10:00-11:00", [], "unknown day"),
    ("noon-night 10:00-11:00", [], "is not a window like"),
    ("", ["02:00-04:00"], "needs a day"),
    ("24:30-01:00", [], "not a time of day"),
])
def test_nonsense_is_a_clear_error(allowed, maintenance, message):
    with pytest.raises(WindowError, match=message):
        AccessWindow.parse("UTC", allowed, maintenance)
