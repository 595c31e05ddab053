"""`sluice deploy`: one provider's CloudFormation stack, from its folder."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    p = commands.add_parser(
        "deploy", help="package and deploy one provider's stack (CloudFormation)",
        description="Write the provider's IAM policies and resources template, run `chalice "
        "package --merge-template`, translate SAM locally, then create or update the stack "
        "sluice-<provider>-<stage> with boto3 and wait, showing its events.")
    p.add_argument("provider")
    p.add_argument("--stage", default="dev")
    p.add_argument("--dry-run", action="store_true",
                   help="plan and package only: no AWS call; prints what would be deployed")
    p.add_argument("--artifacts-bucket",
                   help="S3 bucket for the code (default: sluice-artifacts-<account>-<region>, "
                   "created if missing)")
    p.add_argument("--out", type=Path, help="keep the packaged template here")
    p.add_argument("--resources-only", action="store_true",
                   help="deploy only the data resources (sluice-<provider>-<stage>-resources), "
                   "for the plain `chalice deploy` path")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sluice_tools.deploy.package import DeployRefused, deploy, package, plan

    out = args.out or Path(tempfile.mkdtemp(prefix="sluice-package-"))
    try:
        if args.dry_run:
            the_plan = plan(args.provider, args.stage)
            sam = package(the_plan, out)
            described = the_plan.describe()
            described["packaged"] = str(sam)
            described["packaged_resources"] = sorted(json.loads(sam.read_text())["Resources"])
            print(json.dumps(described, indent=2))
            print("dry run: nothing was deployed", file=sys.stderr)
            return 0
        import boto3

        session = boto3.session.Session()
        if args.resources_only:
            from sluice_tools.deploy.package import deploy_resources
            from sluice_tools.provider_config import provider_settings

            result = deploy_resources(provider_settings(args.provider, args.stage), args.stage,
                                      session=session)
            for logical, physical in sorted(result["resources"].items()):
                print(f"  {logical:32} {physical}")
            return 0
        account = session.client("sts").get_caller_identity()["Account"]
        region = session.region_name or "us-east-1"
        the_plan = plan(args.provider, args.stage, region=region, account=account)
        sam = package(the_plan, out)
        bucket = args.artifacts_bucket or f"sluice-artifacts-{account}-{region}"
        _ensure_bucket(session.client("s3"), bucket, region)
        result = deploy(the_plan, sam, artifacts_bucket=bucket, session=session)
        _record_deployed(args.provider, args.stage)
    except DeployRefused as exc:
        print(f"sluice deploy: refused: {exc}", file=sys.stderr)
        return 2
    for logical, physical in sorted(result["resources"].items()):
        print(f"  {logical:32} {physical}")
    return 0


def _ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)


def _record_deployed(provider: str, stage: str) -> None:
    """A first deploy moves the provider to `deployed`; a live one stays live."""
    from sluice_tools.migration import Registry

    registry = Registry()
    entry = registry.get(provider)
    if entry.state == "not_migrated":
        registry.put(entry.moved("deployed", stage, "sluice deploy"))
