"""`sluice migrate`: status, cutover and rollback of providers moving off the old system."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(commands: Any) -> None:
    p = commands.add_parser("migrate", help="move providers off the old system, one at a time")
    sub = p.add_subparsers(dest="migrate_command", metavar="COMMAND")
    status = sub.add_parser("status", help="every provider's migration state")
    status.set_defaults(run=run_status)
    for name, helptext in (("cutover", "preflight, then turn the provider's ingestion on"),
                           ("rollback", "turn it off again, losing no queued record or ledger")):
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("provider")
        cmd.add_argument("--stage", help="default: $SLUICE_STAGE or dev")
        cmd.add_argument("--dry-run", action="store_true", help="check and say; change nothing")
        cmd.set_defaults(run=run_switch, action=name)
    p.set_defaults(run=lambda args: p.print_help() or 2)


def run_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from sluice_tools.migration import Registry

    table = Table(title="sluice migrate status")
    for col in ("provider", "state", "stage", "last change", "changes", "deployed here"):
        table.add_column(col)
    style = {"not_migrated": "dim", "deployed": "yellow", "live": "green"}
    registry = Registry()
    for entry in registry.all():
        state = registry.shown_state(entry)
        table.add_row(entry.provider, f"[{style[state]}]{state}[/]",
                      entry.stage or "-", entry.changed_at or "-", str(len(entry.history)),
                      ", ".join(registry.deployed_stages(entry.provider)) or "-")
    Console().print(table)
    return 0


def run_switch(args: argparse.Namespace) -> int:
    import boto3

    from sluice_tools.migration import MigrationRefused, cutover, rollback
    from sluice_tools.provider_config import default_stage, provider_settings

    stage = args.stage or default_stage()
    settings = provider_settings(args.provider, stage)
    action = cutover if args.action == "cutover" else rollback
    try:
        result = action(args.provider, stage, settings, boto3.session.Session(),
                        dry_run=args.dry_run)
    except MigrationRefused as exc:
        print(f"sluice migrate {args.action}: refused: {exc}", file=sys.stderr)
        return 2
    for check in result["checks"]:
        mark = "ok  " if check.ok else "FAIL"
        print(f"  {mark} {check.name}: {check.detail}")
    if args.dry_run:
        print(f"dry run: would {result['would']}")
    else:
        print(f"{args.provider}/{stage}: {result['state']} (breaker {result['breaker']}, "
              f"mapping {result['mapping_update']})")
    return 0
