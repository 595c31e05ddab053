"""A provider's settings for a stage, read from its ``.chalice/config.json`` (no app import).

Operator commands (feed, status, pause) need the stream, table and function names of a
provider in a stage; they come from the same config a deploy uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sluice.settings import ENV_PREFIX, ProviderSettings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
PROVIDERS_DIR = REPO_ROOT / "providers"


def default_stage() -> str:
    return os.environ.get("SLUICE_STAGE", "dev")


def provider_names() -> list[str]:
    return sorted(p.name for p in PROVIDERS_DIR.iterdir() if (p / "app.py").exists())


def provider_settings(name: str, stage: str | None = None) -> ProviderSettings:
    stage = stage or default_stage()
    path = PROVIDERS_DIR / name / ".chalice" / "config.json"
    if not path.exists():
        raise LookupError(f"no provider {name!r}; known: {', '.join(provider_names())}")
    config = json.loads(path.read_text())
    env = dict(config.get("environment_variables", {}))
    env.update(config.get("stages", {}).get(stage, {}).get("environment_variables", {}))
    app = config["app_name"]
    # Function names as `chalice deploy` makes them, unless the config names them.
    env.setdefault(f"{ENV_PREFIX}WORKER_FUNCTION", f"{app}-{stage}-worker")
    env.setdefault(f"{ENV_PREFIX}VENTILATOR_FUNCTION", f"{app}-{stage}-ventilator")
    if stage == "local":  # the local stack deploys under this stage name
        env[f"{ENV_PREFIX}WORKER_FUNCTION"] = f"{app}-{stage}-worker"
        env[f"{ENV_PREFIX}VENTILATOR_FUNCTION"] = f"{app}-{stage}-ventilator"
    fields = {k[len(ENV_PREFIX):].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    return load_settings(**fields)
