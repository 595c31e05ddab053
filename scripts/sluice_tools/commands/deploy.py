"""`sluice deploy`: one provider's CloudFormation stack, from its folder."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from sluice_tools.deploy.checks import DEFAULT_CONCURRENCY_FLOOR


def register(commands: Any) -> None:
    p = commands.add_parser(
        "deploy", help="package and deploy one provider's stack (CloudFormation)",
        description="Check the settings, package a staged copy of the provider with `chalice "
        "package --merge-template` (nothing in the provider's folder changes), translate SAM "
        "locally, then create or update the stack sluice-<provider>-<stage> with boto3 and "
        "wait, showing its events. A first deploy leaves ingestion off (mapping disabled, "
        "provider paused) until `sluice migrate cutover`.")
    p.add_argument("provider", help="a provider name, or the folder of one")
    p.add_argument("--stage", default="dev")
    p.add_argument("--dry-run", action="store_true",
                   help="plan and package only: no AWS call; prints what would be deployed")
    p.add_argument("--account", default="", help="dry run: the account to name in the plan")
    p.add_argument("--region", default="", help="dry run: the region to name in the plan")
    p.add_argument("--artifacts-bucket",
                   help="S3 bucket for the code (default: sluice-artifacts-<account>-<region>, "
                   "created if missing)")
    p.add_argument("--out", type=Path,
                   help="build folder (staged project, merge template, packaged template); "
                   "default: a temporary folder")
    p.add_argument("--concurrency-floor", type=int, default=DEFAULT_CONCURRENCY_FLOOR,
                   help="refuse a deploy that would leave the account fewer unreserved "
                   f"concurrent executions than this (default {DEFAULT_CONCURRENCY_FLOOR})")
    p.add_argument("--resources-only", action="store_true",
                   help="deploy only the data resources (sluice-<provider>-<stage>-resources) "
                   "and write what a plain `chalice deploy` needs (environment, resolved IAM "
                   "policy files) under .chalice/deploy/ (untracked)")
    p.add_argument("--write-config", action="store_true",
                   help="with --resources-only: also merge the stage's environment into "
                   ".chalice/config.json (a tracked file: review and commit it)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sluice_tools.deploy.checks import DeployRefused

    out = args.out or Path(tempfile.mkdtemp(prefix="sluice-build-"))
    try:
        if args.dry_run:
            return _dry_run(args, out)
        return _deploy(args, out)
    except DeployRefused as exc:
        print(f"sluice deploy: {exc}", file=sys.stderr)
        return 2
    except LookupError as exc:
        print(f"sluice deploy: {exc}", file=sys.stderr)
        return 2


def _dry_run(args: argparse.Namespace, out: Path) -> int:
    from sluice_tools.deploy.package import package, plan

    the_plan = plan(args.provider, args.stage, region=args.region, account=args.account)
    sam = package(the_plan, out)
    described = the_plan.describe()
    described["packaged"] = str(sam)
    described["packaged_resources"] = sorted(json.loads(sam.read_text())["Resources"])
    print(json.dumps(described, indent=2))
    print("dry run: nothing was deployed", file=sys.stderr)
    return 0


def _deploy(args: argparse.Namespace, out: Path) -> int:
    import boto3

    from sluice_tools.deploy.checks import account_headroom
    from sluice_tools.deploy.package import (
        deploy,
        deploy_resources,
        keep_mapping_enabled,
        mapping_state,
        package,
        plan,
        write_config,
    )

    session = getattr(args, "session", None) or boto3.session.Session()
    account = session.client("sts").get_caller_identity()["Account"]
    region = session.region_name or "us-east-1"
    if args.resources_only:
        the_plan = plan(args.provider, args.stage, region=region, account=account)
        result = deploy_resources(the_plan, session=session)
        _print_resources(result)
        print(f"\nenvironment for stages.{args.stage} (also in {result['files'][-1]}):")
        print(json.dumps(result["environment"], indent=2))
        if args.write_config:
            print(f"merged into {write_config(the_plan, result['environment'])}: review and "
                  "commit it")
        print(f"\nnext: cd {the_plan.provider.project_dir} && chalice deploy --stage "
              f"{args.stage}   (see README: what this path lacks)")
        return 0
    lam = session.client("lambda")
    probe = plan(args.provider, args.stage, region=region, account=account)
    state = mapping_state(lam, probe.names.function("ventilator"))
    the_plan = plan(args.provider, args.stage, region=region, account=account,
                    mapping_enabled=keep_mapping_enabled(state))
    room = account_headroom(lam, the_plan.names.function("worker"),
                            the_plan.settings.max_concurrency, args.concurrency_floor)
    print(room.describe())
    print(f"mapping: {state or 'none yet'} -> created/kept "
          f"{'enabled' if the_plan.mapping_enabled else 'disabled'}")
    sam = package(the_plan, out)
    bucket = args.artifacts_bucket or f"sluice-artifacts-{account}-{region}"
    _ensure_bucket(session.client("s3"), bucket, region)
    result = deploy(the_plan, sam, artifacts_bucket=bucket, session=session)
    _print_resources(result)
    return 0


def _print_resources(result: dict[str, Any]) -> None:
    for logical, physical in sorted(result["resources"].items()):
        print(f"  {logical:32} {physical}")


def _ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True})
