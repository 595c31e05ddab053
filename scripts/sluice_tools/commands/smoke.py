"""`sluice smoke`: a deployed provider, proven on its account in minutes (then tidied up)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(commands: Any) -> None:
    p = commands.add_parser(
        "smoke", help="prove a deployed provider end to end against a fake provider",
        description="Deploy the fake provider as a Lambda function URL (or use --url), point "
        "the stage's worker at it, feed N records, wait for the ledger to settle, check the "
        "invariants from the ledger and the fake's own counters, then delete what the run "
        "created and put the worker and the pause back as they were.")
    p.add_argument("provider")
    p.add_argument("--stage", required=True)
    p.add_argument("--records", type=int, default=20)
    p.add_argument("--url", help="an already running fake provider (GET /stats), instead of "
                   "deploying one")
    p.add_argument("--keep-endpoint", action="store_true",
                   help="leave the worker's SLUICE_API_BASE_URL alone (it already calls --url)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (600)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import boto3

    from sluice_tools.deploy.package import stack_outputs
    from sluice_tools.deploy.smoke import run_smoke
    from sluice_tools.provider_config import provider_settings, stage_names

    session = boto3.session.Session()
    account = session.client("sts").get_caller_identity()["Account"]
    region = session.region_name or "us-east-1"
    names = stage_names(args.provider, args.stage)
    cfn = session.client("cloudformation")
    outputs: dict[str, str] = {}
    for stack in (names.stack, names.resources_stack):
        try:
            outputs = stack_outputs(cfn, stack)
            break
        except cfn.exceptions.ClientError:
            continue
    if not outputs:
        print(f"sluice smoke: no stack {names.stack} (deploy it first)", file=sys.stderr)
        return 2
    settings = provider_settings(args.provider, args.stage, account=account, region=region)
    settings = settings.model_copy(update={
        "stream_name": outputs["StreamName"], "table_name": outputs["LedgerTable"],
        "result_bucket": outputs["ResultsBucket"],
        "parked_queue_url": outputs["ParkedQueueUrl"]})
    try:
        report = run_smoke(settings, session=session, records=args.records, url=args.url,
                           repoint=not args.keep_endpoint, timeout_s=args.timeout)
    except RuntimeError as exc:
        print(f"sluice smoke: {exc}", file=sys.stderr)
        return 2
    for check in report.checks:
        mark = {True: "ok  ", False: "FAIL", None: "n/a "}[check.ok]
        print(f"  {mark} {check.name}: {check.detail}")
    print(f"cleaned up: {'; '.join(report.cleaned) or 'nothing'}")
    return 0 if report.ok else 1
