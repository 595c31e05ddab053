"""Load a provider's Chalice app and read its functions from the app's own decorators.

The local stack and the tests run the real ``providers/<name>/app.py``: handlers, stream name,
batch size, starting position and schedule rate all come from the decorators, and timeouts and
environment from ``.chalice/config.json``, so nothing is declared twice.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from chalice.app import Chalice, KinesisEventConfig, Rate, ScheduledEventConfig

REPO_ROOT = Path(__file__).resolve().parents[3]
PROVIDERS_DIR = REPO_ROOT / "providers"


class ProviderNotFound(LookupError):
    pass


@dataclass
class ProviderApp:
    name: str
    project_dir: Path
    module: ModuleType
    config: dict[str, Any]

    @property
    def app(self) -> Chalice:
        return self.module.app

    @property
    def app_name(self) -> str:
        return self.app.app_name

    def function_name(self, handler: str, stage: str) -> str:
        return f"{self.app_name}-{stage}-{handler}"  # what `chalice deploy` names it

    def handler(self, name: str) -> Any:
        return getattr(self.module, name)

    def _function_config(self, handler: str, stage: str) -> dict[str, Any]:
        merged = dict(self.config.get("lambda_functions", {}).get(handler, {}))
        stage_cfg = self.config.get("stages", {}).get(stage, {})
        merged.update(stage_cfg.get("lambda_functions", {}).get(handler, {}))
        return merged

    def timeout_s(self, handler: str, stage: str) -> int:
        cfg = self._function_config(handler, stage)
        return int(cfg.get("lambda_timeout", self.config.get("lambda_timeout", 60)))

    def environment(self, stage: str) -> dict[str, str]:
        env = dict(self.config.get("environment_variables", {}))
        env.update(self.config.get("stages", {}).get(stage, {}).get("environment_variables", {}))
        return {k: str(v) for k, v in env.items()}

    def kinesis_sources(self) -> list[KinesisEventConfig]:
        return [s for s in self.app.event_sources if isinstance(s, KinesisEventConfig)]

    def schedules(self) -> list[tuple[str, float]]:
        """(handler name, period in seconds) for every ``@app.schedule(Rate(...))``."""
        out = []
        for source in self.app.event_sources:
            if isinstance(source, ScheduledEventConfig):
                expr = source.schedule_expression
                if not isinstance(expr, Rate):
                    raise ValueError(f"{self.name}.{source.name}: only Rate schedules run locally")
                unit = {Rate.MINUTES: 60, Rate.HOURS: 3600, Rate.DAYS: 86400}[expr.unit]
                out.append((source.name, float(expr.value * unit)))
        return out

    def handler_names(self) -> list[str]:
        """Every function the app declares: event handlers, schedules, pure functions."""
        names = [s.name for s in self.app.event_sources]
        names += [f.name for f in self.app.pure_lambda_functions]
        return list(dict.fromkeys(names))


def provider_dir(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if not (path / "app.py").exists():
        path = PROVIDERS_DIR / str(name_or_path)
    if not (path / "app.py").exists():
        known = sorted(p.name for p in PROVIDERS_DIR.iterdir() if (p / "app.py").exists())
        raise ProviderNotFound(f"no provider {name_or_path!r}; known: {', '.join(known)}")
    return path


def load_provider(name_or_path: str | Path) -> ProviderApp:
    """Import ``app.py`` under a unique module name.

    Every provider has its own top-level ``chalicelib`` package, so the previous one is dropped
    from ``sys.modules`` first: several providers can be loaded in one process as long as their
    code imports from chalicelib at module level (as app.py does).
    """
    project_dir = provider_dir(name_or_path).resolve()
    name = project_dir.name
    for mod in [m for m in sys.modules if m == "chalicelib" or m.startswith("chalicelib.")]:
        del sys.modules[mod]
    sys.path.insert(0, str(project_dir))
    try:
        spec = importlib.util.spec_from_file_location(f"sluice_provider_{name}",
                                                      project_dir / "app.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(project_dir))
    config = json.loads((project_dir / ".chalice" / "config.json").read_text())
    return ProviderApp(name=name, project_dir=project_dir, module=module, config=config)
