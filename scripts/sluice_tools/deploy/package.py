"""Plan, package and deploy one provider's stack: `sluice deploy NAME --stage STAGE`.

plan      settings checked (fan-out, deadlines, reserved concurrency), the merge template
          built in memory (no AWS call, no file written)
package   a staged copy of the provider (app, chalicelib, vendor links, config, IAM policy
          files) in a build folder, then `chalice package --merge-template` there: the
          provider's own folder is never written, tracked or not
deploy    zip uploaded, SAM translated locally with aws-sam-translator (so moto's
          CloudFormation, which has no SAM transform, can run it too), stack created or
          updated with boto3, events shown while it waits, resources listed at the end; a
          first deploy then pauses the provider (ingestion off until `sluice migrate cutover`)

The plain `chalice deploy` path gets its data resources from ``deploy_resources`` (their own
stack) and, from that stack's outputs, the environment and the resolved IAM policy files it
needs, written under ``providers/<name>/.chalice/deploy/`` (untracked).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sluice.settings import ProviderSettings
from sluice_tools.deploy.checks import (
    DeployRefused,
    fan_out_problems,
    reserved_concurrency_problems,
    timeout_problems,
)
from sluice_tools.deploy.iam import function_policies, literal_arn
from sluice_tools.deploy.names import StageNames
from sluice_tools.deploy.template import merge_template, stage_settings
from sluice_tools.local.provider_app import ProviderApp, load_provider
from sluice_tools.provider_config import load_config, project_dir, provider_settings
from sluice_tools.resources import provider_resources, resource_outputs

__all__ = ["DeployRefused", "Plan", "apply_stack", "deploy", "deploy_resources", "package",
           "plan", "translate"]

FIRST_DEPLOY_REASON = "deployed: ingestion off until `sluice migrate cutover`"
UNTRACKED_DIR = Path(".chalice") / "deploy"  # gitignored: providers/*/.chalice/deploy/


def _function_config(config: dict[str, Any], handler: str, stage: str) -> dict[str, Any]:
    merged = dict(config.get("lambda_functions", {}).get(handler, {}))
    merged.update(config.get("stages", {}).get(stage, {}).get("lambda_functions", {})
                  .get(handler, {}))
    return merged


def _timeout(config: dict[str, Any], handler: str, stage: str) -> int:
    cfg = _function_config(config, handler, stage)
    stage_cfg = config.get("stages", {}).get(stage, {})
    return int(cfg.get("lambda_timeout", stage_cfg.get("lambda_timeout",
                                                       config.get("lambda_timeout", 60))))


@dataclass
class Plan:
    provider: ProviderApp
    stage: str
    names: StageNames
    settings: ProviderSettings  # as configured (the stage's names filled in)
    config: dict[str, Any]
    merge: dict[str, Any]
    region: str = ""
    account: str = ""
    mapping_enabled: bool = False
    checks: list[str] = field(default_factory=list)

    @property
    def stack_name(self) -> str:
        return self.names.stack

    @property
    def handlers(self) -> list[str]:
        return self.provider.handler_names()

    def policy_files(self) -> dict[str, str]:
        """Handler -> the policy file Chalice reads (relative to ``.chalice/``)."""
        return {h: _function_config(self.config, h, self.stage).get("iam_policy_file", "")
                for h in self.handlers}

    def chalice_policies(self) -> dict[str, dict[str, Any]]:
        """Chalice's own policy documents, with the account and region when known (they
        reach AWS only through a plain `chalice deploy`; the stack uses the template's)."""
        s = stage_settings(self.settings, self.names).model_copy(update={
            "result_bucket": self.names.bucket(self.account or "ACCOUNT",
                                               self.region or "REGION")})
        return function_policies(s, literal_arn(self.region or "*", self.account or "*"))

    def describe(self) -> dict[str, Any]:
        resources = self.merge["Resources"]
        return {
            "provider": self.settings.provider,
            "stage": self.stage,
            "stack": self.stack_name,
            "functions": {h: self.names.function(h) for h in self.handlers},
            "names": {"stream": self.names.stream, "table": self.names.table,
                      "queue": self.names.queue,
                      "bucket": (self.names.bucket(self.account, self.region)
                                 if self.account and self.region else self.names.bucket_sub),
                      "dashboard": (self.names.dashboard(self.region) if self.region
                                    else self.names.dashboard_sub)},
            "alarms": sorted(r["Properties"]["AlarmName"] for r in resources.values()
                             if r.get("Type") == "AWS::CloudWatch::Alarm"),
            "worker_reserved_concurrency": self.settings.max_concurrency,
            "mapping_enabled": self.mapping_enabled,
            "resources": sorted(resources),
            "checks": self.checks,
        }


def plan(name: str | Path, stage: str, *, region: str = "", account: str = "",
         overrides: dict[str, Any] | None = None, mapping_enabled: bool = False) -> Plan:
    """Everything decided before packaging. Refuses (``DeployRefused``) with what to change."""
    provider = load_provider(project_dir(name))
    config = load_config(provider.project_dir)
    if stage not in config.get("stages", {}):
        raise DeployRefused(f"{provider.name}: no stage {stage!r} in .chalice/config.json")
    settings = provider_settings(provider.project_dir, stage, account=account, region=region)
    if overrides:
        settings = settings.model_copy(update=overrides)
    names = StageNames.of(settings.provider, stage, provider.app_name)
    where = f"{settings.provider}/{stage}"
    sources = provider.kinesis_sources()
    if len(sources) != 1:
        raise DeployRefused(f"{where}: expected one @app.on_kinesis_record, found {len(sources)}")
    problems = fan_out_problems(settings, sources[0].batch_size, where)
    problems += timeout_problems(
        settings, ventilator_timeout_s=_timeout(config, sources[0].name, stage),
        worker_timeout_s=_timeout(config, "worker", stage), where=where)
    problems += reserved_concurrency_problems(
        settings, _function_config(config, "worker", stage).get("reserved_concurrency"), where)
    if too_long := names.too_long_functions(provider.handler_names()):
        problems.append(f"{where}: function names over 64 characters: {too_long}")
    for handler in provider.handler_names():
        configured = _function_config(config, handler, stage).get("iam_policy_file", "")
        if not configured:
            problems.append(f"{where}: stages.{stage}.lambda_functions.{handler}."
                            "iam_policy_file is missing (autogen_policy is off)")
    if problems:
        raise DeployRefused("\n  - ".join(["refused:", *problems]))
    merge = merge_template(settings, names, handlers=provider.handler_names(),
                           stream_event_handler=sources[0].name, mapping_enabled=mapping_enabled)
    checks = [f"fan-out {settings.shards} x {settings.parallelization_factor} x "
              f"{sources[0].batch_size} <= X = {settings.max_concurrency}",
              f"ventilator timeout {_timeout(config, sources[0].name, stage)} s >= "
              f"{settings.min_ventilator_timeout_s} s; worker timeout "
              f"{settings.worker_timeout_s} s"]
    return Plan(provider, stage, names, settings, config, merge, region, account,
                mapping_enabled, checks)


# -- package -----------------------------------------------------------------------------------

STAGED = ("app.py", "chalicelib", "requirements.txt")
CACHED_BUNDLES = 24


def build_cache() -> Path:
    """Chalice's bundles, kept between builds: their file names are hashes of the pinned
    requirements, the app and the vendored code, so a staged copy may reuse any of them, and
    dependencies are downloaded and zipped again only when one of those changed. A bundle
    enters the cache only once `chalice package` succeeded, by an atomic rename, so an
    interrupted or concurrent build never leaves a half-written zip to be reused."""
    root = Path(os.environ.get("SLUICE_BUILD_CACHE", Path.home() / ".cache" / "sluice"))
    path = root / "chalice-deployments"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _reuse_cached_bundles(deployments: Path) -> None:
    deployments.mkdir(parents=True, exist_ok=True)
    for cached in build_cache().glob("*.zip"):
        (deployments / cached.name).symlink_to(cached)


def _keep_new_bundles(deployments: Path) -> None:
    cache = build_cache()
    for built in deployments.glob("*.zip"):
        if built.is_symlink():
            continue
        partial = cache / f".{built.name}.{os.getpid()}.partial"
        shutil.copy2(built, partial)
        os.replace(partial, cache / built.name)
    # Each change of the runtime or a provider makes a new bundle: keep the recent ones.
    bundles = sorted(cache.glob("*.zip"), key=lambda f: f.stat().st_mtime, reverse=True)
    for old in bundles[CACHED_BUNDLES:]:
        old.unlink(missing_ok=True)


def stage_project(p: Plan, dest: Path) -> Path:
    """A copy of the provider that `chalice package` may write into: its code, links to its
    vendored packages (resolved, so they work from anywhere), its config and the policy
    files that config names."""
    source = p.provider.project_dir
    if dest.exists():
        shutil.rmtree(dest)
    (dest / ".chalice").mkdir(parents=True)
    for item in STAGED:
        if (source / item).is_dir():
            shutil.copytree(source / item, dest / item,
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif (source / item).exists():
            shutil.copy2(source / item, dest / item)
    if (source / "vendor").is_dir():
        (dest / "vendor").mkdir()
        for entry in (source / "vendor").iterdir():
            target = entry.resolve()
            if not target.exists():
                raise DeployRefused(
                    f"{p.settings.provider}: {entry} points to {os.readlink(entry)!r}, which "
                    "does not exist: the runtime package would be missing from the bundle")
            (dest / "vendor" / entry.name).symlink_to(target)
    shutil.copy2(source / ".chalice" / "config.json", dest / ".chalice" / "config.json")
    _reuse_cached_bundles(dest / ".chalice" / "deployments")
    for handler, document in p.chalice_policies().items():
        path = dest / ".chalice" / p.policy_files()[handler]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
    return dest


def package(p: Plan, out_dir: Path) -> Path:
    """Run `chalice package` on a staged copy; returns the SAM template's path
    (``deployment.zip`` beside it). Everything lands under ``out_dir``."""
    out_dir = Path(out_dir)
    project = stage_project(p, out_dir / "project")
    merge_path = out_dir / f"merge-{p.stage}.json"
    merge_path.write_text(json.dumps(p.merge, indent=2) + "\n")
    chalice = Path(sys.executable).with_name("chalice")
    env = {**os.environ}
    env.setdefault("AWS_DEFAULT_REGION", p.region or "us-east-1")  # chalice imports app.py
    packaged = out_dir / "package"
    done = subprocess.run(
        [str(chalice), "package", "--stage", p.stage, "--merge-template", str(merge_path),
         str(packaged)],
        cwd=project, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"chalice package failed:\n{done.stderr.strip()}")
    _keep_new_bundles(project / ".chalice" / "deployments")
    return packaged / "sam.json"


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


# -- deploy ------------------------------------------------------------------------------------

def mapping_state(lambda_client: Any, function_name: str) -> str | None:
    """The ventilator's mapping state (``Enabled``...), or None when it has none yet."""
    try:
        found = lambda_client.list_event_source_mappings(
            FunctionName=function_name)["EventSourceMappings"]
    except lambda_client.exceptions.ResourceNotFoundException:
        return None
    return found[0]["State"] if found else None


def keep_mapping_enabled(state: str | None) -> bool:
    """A redeploy leaves the mapping as it found it; a first deploy creates it disabled."""
    return state in ("Enabled", "Enabling", "Updating")


def deploy(p: Plan, sam_path: Path, *, artifacts_bucket: str, session: Any,
           progress: Callable[[str], None] = print, poll_s: float = 3.0) -> dict[str, Any]:
    s3, cfn = session.client("s3"), session.client("cloudformation")
    key = f"sluice/{p.settings.provider}/{p.stage}/deployment-{int(time.time())}.zip"
    s3.upload_file(str(sam_path.with_name("deployment.zip")), artifacts_bucket, key)
    template = translate(json.loads(sam_path.read_text()),
                         {"Bucket": artifacts_bucket, "Key": key})
    tags = {"sluice:provider": p.settings.provider, "sluice:stage": p.stage}
    result = apply_stack(cfn, p.stack_name, template, tags, progress=progress, poll_s=poll_s)
    result["paused"] = pause_first_deploy(p, result["outputs"], session)
    if result["paused"]:
        progress(f"{p.stack_name}: ingestion off (paused) until `sluice migrate cutover "
                 f"{p.settings.provider} --stage {p.stage}`")
    record_deployed(p, result)
    return result


def resolved_settings(p: Plan, outputs: dict[str, str]) -> ProviderSettings:
    return p.settings.model_copy(update={
        "stream_name": outputs.get("StreamName", p.names.stream),
        "table_name": outputs.get("LedgerTable", p.names.table),
        "result_bucket": outputs.get("ResultsBucket", ""),
        "parked_queue_url": outputs.get("ParkedQueueUrl", "")})


def pause_first_deploy(p: Plan, outputs: dict[str, str], session: Any) -> bool:
    """No control item yet (a fresh ledger): write it paused, so nothing (the rearm's
    convergence included) turns ingestion on before `sluice migrate cutover`."""
    from sluice.control import CONTROL_KEY, ControlStore
    from sluice.mapping import MappingClient
    from sluice.operators import pause

    s = resolved_settings(p, outputs)
    dynamodb = session.client("dynamodb")
    if dynamodb.get_item(TableName=s.table_name, Key=CONTROL_KEY,
                         ConsistentRead=True).get("Item"):
        return False
    pause(ControlStore(s.table_name, client=dynamodb),
          MappingClient(p.names.function("ventilator"), client=session.client("lambda")),
          s.stream_name, FIRST_DEPLOY_REASON)
    return True


def untracked_dir(p: Plan) -> Path:
    path = p.provider.project_dir / UNTRACKED_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_deployed(p: Plan, result: dict[str, Any]) -> Path:
    """What was deployed where, for `sluice migrate status` (untracked: a deploy changes no
    tracked file; the reviewed migration history changes only by cutover and rollback)."""
    path = untracked_dir(p) / f"deployed-{p.stage}.json"
    path.write_text(json.dumps({
        "stack": result["stack"], "stage": p.stage, "at": datetime.now(UTC).isoformat(
            timespec="seconds"), "outputs": result.get("outputs", {}),
        "paused_on_first_deploy": bool(result.get("paused"))}, indent=2) + "\n")
    return path


def deploy_resources(p: Plan, *, session: Any, progress: Callable[[str], None] = print,
                     poll_s: float = 3.0) -> dict[str, Any]:
    """Only the data resources (stream, table, bucket, queue), as their own stack: the first
    step of the plain `chalice deploy` path, where Chalice then creates the functions.
    Then the environment and the resolved policy files that path needs, untracked."""
    s = stage_settings(p.settings, p.names)
    template = {"AWSTemplateFormatVersion": "2010-09-09",
                "Resources": provider_resources(s), "Outputs": resource_outputs()}
    tags = {"sluice:provider": p.settings.provider, "sluice:stage": p.stage}
    result = apply_stack(session.client("cloudformation"), p.names.resources_stack, template,
                         tags, progress=progress, poll_s=poll_s)
    result["environment"] = chalice_environment(p, result["outputs"])
    result["files"] = write_plain_path_files(p, result["environment"])
    return result


def chalice_environment(p: Plan, outputs: dict[str, str]) -> dict[str, str]:
    """The stage's `environment_variables` for a plain `chalice deploy`."""
    return {
        "SLUICE_STAGE": p.stage,
        "SLUICE_STREAM_NAME": outputs["StreamName"],
        "SLUICE_TABLE_NAME": outputs["LedgerTable"],
        "SLUICE_RESULT_BUCKET": outputs["ResultsBucket"],
        "SLUICE_PARKED_QUEUE_URL": outputs["ParkedQueueUrl"],
        "SLUICE_WORKER_FUNCTION": p.names.function("worker"),
        "SLUICE_VENTILATOR_FUNCTION": p.names.function("ventilator"),
    }


def write_plain_path_files(p: Plan, environment: dict[str, str]) -> list[Path]:
    """The policy files the config names (exact account and region) and the environment
    fragment, both under the provider's untracked ``.chalice/deploy/``."""
    written = []
    chalice_dir = p.provider.project_dir / ".chalice"
    for handler, document in p.chalice_policies().items():
        relative = Path(p.policy_files()[handler])
        if relative.parts[:1] != ("deploy",):
            raise DeployRefused(f"{p.settings.provider}: iam_policy_file {str(relative)!r} must "
                                "live under .chalice/deploy/ (untracked, written per account)")
        path = chalice_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
        written.append(path)
    fragment = untracked_dir(p) / f"env-{p.stage}.json"
    fragment.write_text(json.dumps({"stages": {p.stage: {
        "environment_variables": environment}}}, indent=2) + "\n")
    written.append(fragment)
    return written


def write_config(p: Plan, environment: dict[str, str]) -> Path:
    """Merge the environment into the stage of ``.chalice/config.json`` (a tracked file: only
    on the operator's explicit request, `--write-config`)."""
    path = p.provider.project_dir / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    config["stages"][p.stage].setdefault("environment_variables", {}).update(environment)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


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


def stack_outputs(cfn: Any, name: str) -> dict[str, str]:
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def _outcome(cfn: Any, name: str) -> dict[str, Any]:
    resources = cfn.describe_stack_resources(StackName=name)["StackResources"]
    return {"stack": name,
            "resources": {r["LogicalResourceId"]: r.get("PhysicalResourceId", "")
                          for r in resources if r.get("LogicalResourceId")},
            "outputs": stack_outputs(cfn, name)}
