"""A provider's settings for a stage, read from its ``.chalice/config.json`` (no app import).

Operator commands (feed, status, pause, migrate, smoke) need the stream, table and function
names of a provider in a stage. For a deployed stage they are the stage-scoped names the
deploy gives every resource (``sluice_tools.deploy.names``); the names at the top of the
config are the local stack's (stage ``local``). The bucket name carries the account and the
region, so it is filled in only when they are given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sluice.settings import ENV_PREFIX, ProviderSettings, load_settings
from sluice_tools.deploy.names import StageNames

REPO_ROOT = Path(__file__).resolve().parents[2]
PROVIDERS_DIR = REPO_ROOT / "providers"
LOCAL_STAGE = "local"


def default_stage() -> str:
    return os.environ.get("SLUICE_STAGE", "dev")


def provider_names() -> list[str]:
    return sorted(p.name for p in PROVIDERS_DIR.iterdir() if (p / "app.py").exists())


def project_dir(name_or_path: str | Path) -> Path:
    """``providers/<name>``, or any folder holding a provider (a bake elsewhere)."""
    path = Path(name_or_path)
    if (path / ".chalice" / "config.json").exists():
        return path.resolve()
    path = PROVIDERS_DIR / str(name_or_path)
    if not (path / ".chalice" / "config.json").exists():
        raise LookupError(f"no provider {name_or_path!r}; known: {', '.join(provider_names())}")
    return path


def load_config(name_or_path: str | Path) -> dict:
    return json.loads((project_dir(name_or_path) / ".chalice" / "config.json").read_text())


def stage_environment(config: dict, stage: str) -> dict[str, str]:
    """The environment Chalice gives the stage's functions: top level, then the stage's."""
    env = dict(config.get("environment_variables", {}))
    env.update(config.get("stages", {}).get(stage, {}).get("environment_variables", {}))
    return {k: str(v) for k, v in env.items()}


def stage_names(name_or_path: str | Path, stage: str) -> StageNames:
    config = load_config(name_or_path)
    provider = stage_environment(config, stage).get(f"{ENV_PREFIX}PROVIDER",
                                                   project_dir(name_or_path).name)
    return StageNames.of(provider, stage, config["app_name"])


def provider_settings(name: str | Path, stage: str | None = None, *, account: str = "",
                      region: str = "") -> ProviderSettings:
    stage = stage or default_stage()
    config = load_config(name)
    env = stage_environment(config, stage)
    fields = {k[len(ENV_PREFIX):].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    app = config["app_name"]
    fields["stage"] = stage
    if stage == LOCAL_STAGE:  # the local stack: the config's own names
        fields["worker_function"] = f"{app}-{stage}-worker"
        fields["ventilator_function"] = f"{app}-{stage}-ventilator"
        return load_settings(**fields)
    names = StageNames.of(fields.get("provider", project_dir(name).name), stage, app)
    fields.update(stream_name=names.stream, table_name=names.table,
                  worker_function=names.function("worker"),
                  ventilator_function=names.function("ventilator"),
                  result_bucket=names.bucket(account, region) if account and region else "")
    return load_settings(**fields)
