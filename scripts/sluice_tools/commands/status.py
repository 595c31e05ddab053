"""`sluice status`: one row per provider: gate, breaker, backlog age and today's counts."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any


def register(commands: Any) -> None:
    p = commands.add_parser("status", help="mapping, breaker, iterator age and today's counts",
                            description="Per provider: the mapping's state and batch size, the "
                            "breaker's state and reason, the iterator age (how far behind the "
                            "stream the ventilator is) and today's fetched / failed / parked.")
    p.add_argument("provider", nargs="?", help="one provider (default: all)")
    p.add_argument("--stage")
    p.set_defaults(run=run)


def provider_status(name: str, stage: str | None) -> dict[str, Any]:
    import boto3

    from sluice.clock import local_day
    from sluice.control import ControlStore
    from sluice.ledger import Ledger
    from sluice.mapping import MappingClient
    from sluice_tools.provider_config import provider_settings

    s = provider_settings(name, stage)
    row: dict[str, Any] = {"provider": name}
    try:
        view = MappingClient(s.ventilator_function).find(stream_name=s.stream_name)
        state = ControlStore(s.table_name).load()
        counts = Ledger(s.table_name).day_counts(local_day(datetime.now(UTC).timestamp(), s.zone))
    except Exception as exc:  # not deployed in this stage, no credentials...
        row["error"] = f"{type(exc).__name__}: {exc}"[:120]
        return row
    if state.paused:
        reason = state.pause_reason
    elif state.window_closed:
        opens = s.window.next_change(datetime.now(UTC).timestamp())
        reason = "outside the access window" + (
            f"; opens {datetime.fromtimestamp(opens, s.zone):%a %H:%M %Z}" if opens else "")
    else:
        reason = state.reason if state.breaker != "closed" else ""
    row.update(
        mapping=view.state, batch_size=view.batch_size, target=state.batch_size,
        breaker=state.label, reason=reason, opens=state.opens,
        fetched=counts.get("fetched", 0), failed=counts.get("failed", 0),
        parked=counts.get("parked", 0),
        iterator_age_s=_iterator_age(boto3.client("cloudwatch"), s.ventilator_function),
    )
    return row


def _iterator_age(cloudwatch: Any, function_name: str) -> float | None:
    """Lambda's IteratorAge for the ventilator, max over the last 5 minutes (None if unknown)."""
    now = datetime.now(UTC)
    try:
        points = cloudwatch.get_metric_statistics(
            Namespace="AWS/Lambda", MetricName="IteratorAge",
            Dimensions=[{"Name": "FunctionName", "Value": function_name}],
            StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=1),
            Period=60, Statistics=["Maximum"],
        )["Datapoints"]
    except Exception:
        return None
    return round(max(p["Maximum"] for p in points) / 1000, 1) if points else None


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from sluice_tools.provider_config import provider_names

    names = [args.provider] if args.provider else provider_names()
    table = Table(title="sluice status")
    for col in ("provider", "mapping", "batch size", "breaker", "reason", "iterator age",
                "fetched", "failed", "parked"):
        table.add_column(col, justify="right" if col in ("batch size", "fetched", "failed",
                                                         "parked", "iterator age") else "left")
    worst = 0
    for name in names:
        row = provider_status(name, args.stage)
        if "error" in row:
            table.add_row(name, "[dim]unreachable[/]", "", "", row["error"], "", "", "", "")
            worst = 1
            continue
        age = "-" if row["iterator_age_s"] is None else f"{row['iterator_age_s']} s"
        size = str(row["batch_size"])
        if row["target"] and row["target"] != row["batch_size"]:
            size += f" (-> {row['target']})"
        table.add_row(name, row["mapping"], size, row["breaker"], row["reason"], age,
                      str(row["fetched"]), str(row["failed"]), str(row["parked"]))
    Console().print(table)
    return worst
