"""`sluice feed`: put record ids on a provider's stream (scheduled or ad-hoc)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    p = commands.add_parser("feed", help="put record ids on a provider's stream",
                            description="Put ids on the provider's Kinesis stream in batches of "
                            "500, with progress. Works against AWS or the local stack "
                            "(AWS_ENDPOINT_URL).")
    p.add_argument("provider")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--count", type=int, help="generate N ids: <provider>-000000, ...")
    source.add_argument("--ids", type=Path, help="a file with one record id per line")
    p.add_argument("--adhoc", action="store_true",
                   help="tag the records as ad-hoc requests (deduped against the schedule)")
    p.add_argument("--stage", help="stage whose config names the stream (default: $SLUICE_STAGE "
                   "or dev)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import boto3
    from rich.progress import Progress

    from sluice.clock import local_day
    from sluice.day_counts import DayCounts
    from sluice.enqueue import entries_for, put_entries
    from sluice.intake import FetchRequest
    from sluice_tools.provider_config import provider_settings

    settings = provider_settings(args.provider, args.stage)
    if args.count is not None:
        if args.count < 1:
            print("sluice feed: --count must be >= 1", file=sys.stderr)
            return 2
        ids = [f"{settings.provider}-{i:06d}" for i in range(args.count)]
    else:
        ids = [line.strip() for line in args.ids.read_text().splitlines() if line.strip()]
        bad = [i for i, rid in enumerate(ids, 1) if not _valid(FetchRequest, rid)]
        if bad:
            print(f"sluice feed: {len(bad)} invalid id(s) in {args.ids} (lines "
                  f"{', '.join(map(str, bad[:10]))}{'...' if len(bad) > 10 else ''}): ids are "
                  "1-128 letters, digits, '.', '_', ':' or '-'", file=sys.stderr)
            return 2
    entries = entries_for(ids, "adhoc" if args.adhoc else "scheduled")
    with Progress() as progress:
        task = progress.add_task(f"feeding {settings.stream_name}", total=len(entries))
        put_entries(boto3.client("kinesis"), settings.stream_name, entries,
                    progress=lambda done, total: progress.update(task, completed=done))
    # Today's enqueued count: the backlog `sluice status` and the rearm's Backlog metric show.
    day = local_day(time.time(), settings.zone)
    DayCounts(settings.table_name).add(day, {"enqueued": len(entries)}, time.time())
    print(f"put {len(entries)} record(s) on {settings.stream_name}")
    return 0


def _valid(model: Any, record_id: str) -> bool:
    try:
        model(record_id=record_id)
    except ValueError:
        return False
    return True
