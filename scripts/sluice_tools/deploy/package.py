"""Plan, package and deploy one provider's stack: `sluice deploy NAME --stage STAGE`.

plan      settings checked, IAM policy files and the merge template written (no AWS call)
package   `chalice package --merge-template` (SAM template + deployment.zip)
deploy    zip uploaded, SAM translated locally with aws-sam-translator (so moto's
          CloudFormation, which has no SAM transform, can run it too), stack created or
          updated with boto3, events shown while it waits, resources listed at the end
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluice.settings import ProviderSettings
from sluice_tools.deploy.iam import function_policies, literal_arn
from sluice_tools.deploy.template import merge_template
from sluice_tools.local.provider_app import ProviderApp, load_provider
from sluice_tools.provider_config import provider_settings
from sluice_tools.resources import provider_resources


class DeployRefused(ValueError):
    """Settings that must not reach AWS; the message says what to change."""


@dataclass
class Plan:
    provider: ProviderApp
    stage: str
    settings: ProviderSettings
    merge_template_path: Path
    policy_files: dict[str, Path]
    stack_name: str

    def describe(self) -> dict[str, Any]:
        template = json.loads(self.merge_template_path.read_text())
        return {
            "provider": self.settings.provider,
            "stage": self.stage,
            "stack": self.stack_name,
            "functions": {h: f"{self.provider.app_name}-{self.stage}-{h}"
                          for h in self.provider.handler_names()},
            "resources": sorted(template["Resources"]),
            "policy_files": {h: str(p) for h, p in self.policy_files.items()},
            "merge_template": str(self.merge_template_path),
        }


def plan(name: str, stage: str, *, region: str = "*", account: str = "*",
         overrides: dict[str, Any] | None = None) -> Plan:
    provider = load_provider(name)
    settings = provider_settings(name, stage)
    if overrides:
        settings = settings.model_copy(update=overrides)
    sources = provider.kinesis_sources()
    if len(sources) != 1:
        raise DeployRefused(f"{name}: expected one @app.on_kinesis_record, found {len(sources)}")
    fan_out = settings.shards * settings.parallelization_factor
    if fan_out * sources[0].batch_size > settings.max_concurrency:
        raise DeployRefused(
            f"{name}/{stage}: shards ({settings.shards}) x parallelization_factor "
            f"({settings.parallelization_factor}) x batch size ({sources[0].batch_size}, "
            f"from @app.on_kinesis_record) = {fan_out * sources[0].batch_size} exceeds "
            f"max_concurrency ({settings.max_concurrency}): lower batch_size in app.py to "
            f"{settings.max_batch_size} or raise SLUICE_MAX_CONCURRENCY")
    chalice_dir = provider.project_dir / ".chalice"
    stage_config = provider.config.get("stages", {}).get(stage)
    if stage_config is None:
        raise DeployRefused(f"{name}: no stage {stage!r} in .chalice/config.json")
    # Chalice's own policy files (used by a plain `chalice deploy` too), one per function.
    policy_files = {}
    for handler, document in function_policies(settings, literal_arn(region, account)).items():
        configured = stage_config.get("lambda_functions", {}).get(handler, {}).get(
            "iam_policy_file")
        expected = f"policy-{stage}-{handler}.json"
        if configured != expected:
            raise DeployRefused(f"{name}: stages.{stage}.lambda_functions.{handler}."
                                f"iam_policy_file must be {expected!r} (autogen_policy is off)")
        path = chalice_dir / expected
        path.write_text(json.dumps(document, indent=2) + "\n")
        policy_files[handler] = path
    out = chalice_dir / "deploy"
    out.mkdir(exist_ok=True)
    merge_path = out / f"resources-{stage}.json"
    merge = merge_template(settings, app_name=provider.app_name, stage=stage,
                           handlers=provider.handler_names(),
                           stream_event_handler=sources[0].name)
    merge_path.write_text(json.dumps(merge, indent=2) + "\n")
    return Plan(provider, stage, settings, merge_path, policy_files,
                stack_name=f"sluice-{settings.provider}-{stage}")


def package(p: Plan, out_dir: Path) -> Path:
    """Run `chalice package`; returns the SAM template's path (deployment.zip beside it)."""
    chalice = Path(sys.executable).with_name("chalice")
    env = {**os.environ}
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # chalice imports app.py
    done = subprocess.run(
        [str(chalice), "package", "--stage", p.stage, "--merge-template",
         str(p.merge_template_path), str(out_dir)],
        cwd=p.provider.project_dir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"chalice package failed:\n{done.stderr.strip()}")
    return out_dir / "sam.json"


def translate(sam: dict[str, Any], code_uri: dict[str, str]) -> dict[str, Any]:
    """SAM -> plain CloudFormation, locally, with the code's S3 location filled in."""
    from samtranslator.translator.transform import transform

    for resource in sam["Resources"].values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = code_uri

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    return transform(sam, {}, NoManagedPolicies())


def deploy(p: Plan, sam_path: Path, *, artifacts_bucket: str, session: Any,
           progress: Callable[[str], None] = print, poll_s: float = 3.0) -> dict[str, Any]:
    s3, cfn = session.client("s3"), session.client("cloudformation")
    key = f"sluice/{p.settings.provider}/{p.stage}/deployment-{int(time.time())}.zip"
    s3.upload_file(str(sam_path.with_name("deployment.zip")), artifacts_bucket, key)
    template = translate(json.loads(sam_path.read_text()),
                         {"Bucket": artifacts_bucket, "Key": key})
    tags = {"sluice:provider": p.settings.provider, "sluice:stage": p.stage}
    return apply_stack(cfn, p.stack_name, template, tags, progress=progress, poll_s=poll_s)


def deploy_resources(settings: ProviderSettings, stage: str, *, session: Any,
                     progress: Callable[[str], None] = print,
                     poll_s: float = 3.0) -> dict[str, Any]:
    """Only the data resources (stream, table, bucket, queue), as their own stack: the first
    step of the plain `chalice deploy` path, where Chalice then creates the functions."""
    template = {"AWSTemplateFormatVersion": "2010-09-09",
                "Resources": provider_resources(settings)}
    tags = {"sluice:provider": settings.provider, "sluice:stage": stage}
    return apply_stack(session.client("cloudformation"),
                       f"sluice-{settings.provider}-{stage}-resources", template, tags,
                       progress=progress, poll_s=poll_s)


def apply_stack(cfn: Any, name: str, template: dict[str, Any], tags: dict[str, str], *,
                progress: Callable[[str], None] = print, poll_s: float = 3.0) -> dict[str, Any]:
    """Create or update a stack and wait for it, showing its events as they come."""
    exists = _stack_exists(cfn, name)
    args = {"StackName": name, "TemplateBody": json.dumps(template),
            "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
    started = time.time()
    if exists:
        try:
            cfn.update_stack(**args)
        except cfn.exceptions.ClientError as exc:
            if "No updates are to be performed" in str(exc):
                progress(f"{name}: no changes")
                return _outcome(cfn, name)
            raise
    else:
        cfn.create_stack(**args)
    progress(f"{'updating' if exists else 'creating'} stack {name}")
    seen: set[str] = set()
    while True:
        status = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
        for event in reversed(cfn.describe_stack_events(StackName=name)["StackEvents"]):
            if event["EventId"] in seen or event["Timestamp"].timestamp() < started - 5:
                continue
            seen.add(event["EventId"])
            reason = f" ({event['ResourceStatusReason']})" if event.get("ResourceStatusReason") \
                else ""
            progress(f"  {event.get('LogicalResourceId', '?')}: {event['ResourceStatus']}"
                     f"{reason}")
        if not status.endswith("_IN_PROGRESS"):
            break
        time.sleep(poll_s)
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        raise RuntimeError(f"stack {name} ended in {status}")
    progress(f"{name}: {status}")
    return _outcome(cfn, name)


def _stack_exists(cfn: Any, name: str) -> bool:
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except cfn.exceptions.ClientError:
        return False
    return bool(stacks) and stacks[0]["StackStatus"] != "DELETE_COMPLETE"


def _outcome(cfn: Any, name: str) -> dict[str, Any]:
    resources = cfn.describe_stack_resources(StackName=name)["StackResources"]
    return {"stack": name,
            "resources": {r["LogicalResourceId"]: r.get("PhysicalResourceId", "")
                          for r in resources if r.get("LogicalResourceId")}}
