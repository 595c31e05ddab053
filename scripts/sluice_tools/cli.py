"""The `sluice` command: operator and developer tools.

Each subcommand lives in its own module and registers itself here; heavy imports (moto,
matplotlib) happen only when that subcommand runs, so `sluice --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sluice import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice",
        description="Adaptive, once-a-day ingestion from fragile provider APIs on AWS.",
    )
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    from sluice_tools.commands import (
        deploy,
        feed,
        local,
        migrate,
        new_provider,
        operate,
        simulate,
        smoke,
        status,
    )

    local.register(commands)
    feed.register(commands)
    status.register(commands)
    operate.register(commands)
    simulate.register(commands)
    deploy.register(commands)
    migrate.register(commands)
    new_provider.register(commands)
    smoke.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
