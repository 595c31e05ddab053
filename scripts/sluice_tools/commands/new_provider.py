"""`sluice new-provider`: bake template_provider into providers/<slug> (cookiecutter)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def register(commands: Any) -> None:
    p = commands.add_parser("new-provider", help="create providers/<name> from the template",
                            description="Runs cookiecutter on template_provider/ into "
                            "providers/. Answers as key=value skip their questions.")
    p.add_argument("answers", nargs="*", metavar="KEY=VALUE",
                   help="e.g. provider_name='Acme Rates' api_format=xml max_concurrency=6")
    p.add_argument("--no-input", action="store_true", help="take defaults for the rest")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cookiecutter.exceptions import FailedHookException, OutputDirExistsException
    from cookiecutter.main import cookiecutter

    from sluice_tools.provider_config import PROVIDERS_DIR, REPO_ROOT

    bad = [a for a in args.answers if "=" not in a]
    if bad:
        print(f"sluice new-provider: expected KEY=VALUE, got {bad[0]!r}", file=sys.stderr)
        return 2
    context = dict(a.split("=", 1) for a in args.answers)
    logging.getLogger("cookiecutter").setLevel(logging.CRITICAL)  # the hook explains itself
    try:
        path = cookiecutter(str(REPO_ROOT / "template_provider"), no_input=args.no_input,
                            extra_context=context, output_dir=str(PROVIDERS_DIR))
    except FailedHookException:
        return 2  # the pre-generation hook already said what to change
    except OutputDirExistsException as exc:
        print(f"sluice new-provider: {exc}", file=sys.stderr)
        return 2
    print(f"created {path}: next, `sluice local demo --provider <name>`, then "
          "`sluice deploy <name> --stage dev --dry-run`")
    return 0
