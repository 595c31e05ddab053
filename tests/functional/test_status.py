"""`sluice status` tells an on-call engineer whether each provider is moving and, if not, why,
with a backlog that is observed now (never the age at the last batch), on an 80-column
terminal."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime

import boto3
import pytest
from rich.console import Console

from sluice.clock import local_day
from sluice.day_counts import DayCounts
from sluice.enqueue import enqueue
from sluice_tools.cli import main
from sluice_tools.commands.status import ProviderStatus, observe, provider_status, render


def rendered(rows: list[ProviderStatus], width: int = 80) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    render(rows, console)
    return console.file.getvalue()


def assert_fits(text: str, width: int = 80) -> None:
    assert "…" not in text  # nothing cut to "provi…" / "mappi…"
    assert all(len(line) <= width for line in text.splitlines())


# -- on the whole local stack (pollers, checkpoints, the real ventilator) --------------------


def mapping_uuid(stack) -> str:
    return stack.deployed.mapping_uuids[0]


def set_enabled(stack, enabled: bool, wait_until) -> None:
    """What an engineer does by hand in the console: disable or enable the mapping."""
    client = boto3.client("lambda")

    def update() -> bool:
        # The ventilator or the rearm may be converging the mapping (an update settling):
        # AWS answers ResourceConflictException then, and the engineer tries again.
        try:
            client.update_event_source_mapping(UUID=mapping_uuid(stack), Enabled=enabled)
        except client.exceptions.ResourceConflictException:
            return False
        return True

    assert wait_until(update, timeout_s=30)
    wanted = "Enabled" if enabled else "Disabled"
    assert wait_until(lambda: client.get_event_source_mapping(
        UUID=mapping_uuid(stack))["State"] == wanted, timeout_s=30)


def put(stack, ids: list[str]) -> float:
    enqueue(boto3.client("kinesis"), stack.deployed.settings.stream_name, ids,
            lock=stack.stream_lock)
    return time.time()


def test_a_mapping_disabled_by_hand_is_stuck_with_the_real_backlog(stack, wait_until,
                                                                   monkeypatch):
    monkeypatch.setenv("SLUICE_STAGE", "local")
    put(stack, [f"moving-{i}" for i in range(5)])
    assert wait_until(lambda: provider_status("demo", "local").waiting == 0, timeout_s=60)
    moving = provider_status("demo", "local")
    assert (moving.stuck, moving.label, moving.oldest_s) == (False, "closed", None)
    assert moving.last_batch_s is not None  # batches were delivered: IteratorAge exists

    set_enabled(stack, False, wait_until)
    put_at = put(stack, [f"waiting-{i}" for i in range(10)])
    an_hour_later = put_at + 3600
    row = provider_status("demo", "local", now=an_hour_later)

    assert row.stuck and row.label == "STUCK"
    assert (row.waiting, row.waiting_exact) == (10, True)
    # The real age of the oldest waiting record, not the last batch's IteratorAge (~0 s).
    assert 3600 <= row.oldest_s < 3600 + 60 and row.oldest_source == "checkpoints"
    assert (row.mapping, row.wanted_enabled, row.breaker) == ("Disabled", True, "closed")
    assert "Disabled but the control item wants it Enabled" in row.why[0]

    text = rendered([row])
    assert_fits(text)
    assert "STUCK" in text and "Disabled" in text and "1:00:0" in text
    for header in ("provider", "state", "mapping", "size", "waiting", "oldest", "fetched",
                   "parked"):
        assert header in text

    set_enabled(stack, True, wait_until)
    assert wait_until(lambda: provider_status("demo", "local").waiting == 0, timeout_s=60)
    healthy = provider_status("demo", "local")
    assert not healthy.stuck and healthy.oldest_s is None


def test_a_failing_ventilator_is_stuck_and_its_errors_are_shown(stack, wait_until,
                                                                monkeypatch):
    monkeypatch.setenv("SLUICE_STAGE", "local")
    ventilator = stack.deployed.functions["ventilator"]
    function = stack.stack.lambdas.function(ventilator)
    real = function.handler

    def broken(event, context):
        raise RuntimeError("ventilator cannot start")

    monkeypatch.setattr(function, "handler", broken)
    put(stack, ["blocked-1", "blocked-2"])
    # Errors are looked for over the last --stuck-after seconds: shrink it instead of the clock.
    assert wait_until(lambda: provider_status("demo", "local", stuck_after_s=1.0).stuck,
                      timeout_s=60)
    row = provider_status("demo", "local", stuck_after_s=1.0)
    function.handler = real
    assert row.stuck and row.waiting == 2 and row.mapping == "Enabled"
    assert "the ventilator is failing" in row.why[0]
    text = rendered([row])
    assert_fits(text)
    assert "function RuntimeError" in text
    assert wait_until(lambda: provider_status("demo", "local").waiting == 0, timeout_s=60)


def test_the_cli_exits_1_and_says_stuck_on_an_80_column_terminal(stack, wait_until, capsys,
                                                                 monkeypatch):
    monkeypatch.setenv("SLUICE_STAGE", "local")
    monkeypatch.setenv("COLUMNS", "80")
    set_enabled(stack, False, wait_until)
    try:
        put(stack, ["cli-1"])
        assert main(["status", "demo"]) == 1
        out = capsys.readouterr().out
        assert_fits(out)
        assert "STUCK" in out and "wants it Enabled" in out
        assert main(["status", "demo", "--json"]) == 1
        doc = json.loads(capsys.readouterr().out)["providers"][0]
        assert (doc["state"], doc["waiting"], doc["mapping"]) == ("STUCK", 1, "Disabled")
    finally:
        set_enabled(stack, True, wait_until)
    assert wait_until(lambda: provider_status("demo", "local").waiting == 0, timeout_s=60)


# -- against AWS's APIs only (no checkpoints): counters and IteratorAge -----------------------


def iterator_age(seconds: float, at: float) -> None:
    boto3.client("cloudwatch").put_metric_data(Namespace="AWS/Lambda", MetricData=[{
        "MetricName": "IteratorAge", "Value": seconds * 1000, "Unit": "Milliseconds",
        "Timestamp": datetime.fromtimestamp(at, UTC),
        "Dimensions": [{"Name": "FunctionName", "Value": "sluice-demo-local-ventilator"}]}])


@pytest.fixture
def now(demo) -> float:
    return time.time()


def test_without_checkpoints_waiting_is_estimated_from_todays_counters(demo, now):
    day = local_day(now, demo.settings.zone)
    DayCounts(demo.settings.table_name).add(
        day, {"enqueued": 40, "fetched": 30, "skipped": 2, "parked": 1, "failed": 3}, now)
    row = observe(demo.settings, now=now)
    assert (row.waiting, row.waiting_exact) == (7, False)
    text = rendered([row])
    assert_fits(text)
    assert "~7" in text and "3 failed attempt(s)" in text


def test_without_an_enqueued_counter_waiting_is_unknown_not_zero(demo, now):
    DayCounts(demo.settings.table_name).add(local_day(now, demo.settings.zone),
                                            {"fetched": 3}, now)
    row = observe(demo.settings, now=now)
    assert row.waiting is None and not row.stuck
    assert " ? " in rendered([row])


def test_iterator_age_is_shown_only_while_it_is_current(demo, now):
    DayCounts(demo.settings.table_name).add(local_day(now, demo.settings.zone),
                                            {"enqueued": 10}, now)
    iterator_age(5.8, at=now - 30)
    fresh = observe(demo.settings, now=now)
    assert (fresh.oldest_s, fresh.oldest_source) == (5.8, "IteratorAge")

    # The mapping disabled by hand: the 5.8 s of the last batch is not the age now.
    demo.aws.lambdas.update_mapping(demo.deployed.mapping_uuids[0], {"Enabled": False})
    disabled = observe(demo.settings, now=now)
    assert disabled.oldest_s is None and disabled.mapping == "Disabled"
    assert disabled.stuck and "wants it Enabled" in disabled.why[0]
    assert " - " in rendered([disabled])

    # Enabled again but no batch since: the datapoint is from the past, and nothing moves.
    demo.aws.lambdas.update_mapping(demo.deployed.mapping_uuids[0], {"Enabled": True})
    later = observe(demo.settings, now=now + 1800)
    assert later.oldest_s is None and later.last_batch_s >= 1800
    assert later.stuck and "no batch delivered" in later.why[0]


def test_an_open_circuit_is_not_stuck_and_says_why(demo, now):
    from sluice.control import ControlStore

    ControlStore(demo.settings.table_name).update(lambda s: type(s)(
        breaker="open", batch_size=1, reason="error_rate 0.9", opens=1))
    DayCounts(demo.settings.table_name).add(local_day(now, demo.settings.zone),
                                            {"enqueued": 10}, now)
    row = observe(demo.settings, now=now)
    assert not row.stuck and row.label == "open" and row.wanted_enabled is False
    text = rendered([row])
    assert_fits(text)
    assert "circuit open: error_rate 0.9" in text


def test_many_providers_and_long_notes_fit_80_columns():
    rows = [
        ProviderStatus("a-provider-with-a-long-name", mapping="Disabling", batch_size=10,
                       wanted_size=1, breaker="half_open", waiting=123456, oldest_s=200000.0,
                       counts={"fetched": 123456, "parked": 12345},
                       errors={"function RuntimeError": 12, "timeout": 3, "http_503": 99}),
        ProviderStatus("quotes", error="ResourceNotFoundException: " + "x" * 140),
        ProviderStatus("filings", mapping="Enabled", batch_size=1, wanted_size=1,
                       breaker="closed", waiting=5, waiting_exact=True, oldest_s=7200.0,
                       stuck=True, why=["the oldest record has waited 2:00:00 and no batch "
                                        "was delivered for 1:00:00"]),
    ]
    text = rendered(rows)
    assert_fits(text)
    for expected in ("half-open", "10->1", "~123456", "2 d 7 h", "unreachable", "STUCK"):
        assert expected in text
