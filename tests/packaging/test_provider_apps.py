"""Providers cannot drift from the template: each provider's ``app.py`` is exactly what the
template renders for that provider's own settings (its ``.chalice/config.json``, its README's
title and its chalicelib/). No line may differ: what differs between providers (the name, the
decorator's batch size, min(10, X // (shards x parallelization))) is rendered from those
settings. A change to the handlers is made in the template and re-rendered into every provider.
"""

import json
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

from sluice.handlers import HANDLERS, KICKOFF, KICKOFF_EVERY_MINUTES, REARM, REARM_EVERY_MINUTES
from sluice_tools.local.provider_app import load_provider

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template_provider"
PROVIDERS = sorted(p.name for p in (ROOT / "providers").iterdir() if (p / "app.py").exists())
# Template answers read from the provider's SLUICE_* environment; absent ones keep the
# template's defaults (which are the runtime's).
FROM_ENVIRONMENT = ("max_concurrency", "shards", "parallelization_factor",
                    "latency_threshold_ms", "error_rate_threshold", "max_attempts", "timezone",
                    "allowed_hours", "maintenance_windows", "worker_timeout_s")


def provider_answers(project: Path) -> dict[str, str]:
    """The answers that would bake this provider, from its own files."""
    config = json.loads((project / ".chalice" / "config.json").read_text())
    env = config["environment_variables"]
    answers = {key: env[f"SLUICE_{key.upper()}"] for key in FROM_ENVIRONMENT
               if f"SLUICE_{key.upper()}" in env}
    windows = answers.get("maintenance_windows", "")
    if windows.startswith("["):  # the template writes a JSON list; a person may write a string
        answers["maintenance_windows"] = ", ".join(json.loads(windows))
    urls = {stage["environment_variables"]["SLUICE_API_BASE_URL"]
            for stage in config["stages"].values()}
    assert len(urls) == 1, f"{project.name}: one api_base_url for every stage, got {urls}"
    answers["api_base_url"] = urls.pop()

    logic = (project / "chalicelib" / "provider.py").read_text()
    uses_json, uses_xml = "import get_json" in logic, "ElementTree" in logic
    assert uses_json != uses_xml, f"{project.name}: neither clearly JSON nor XML"
    answers["api_format"] = "json" if uses_json else "xml"
    bearer = "SLUICE_SECRET_ID" in env
    assert bearer == ("bearer_headers" in logic), f"{project.name}: secret and fetch disagree"
    answers["auth"] = "bearer-secret" if bearer else "none"

    readme = project / "README.md"
    title = readme.read_text().splitlines()[0] if readme.exists() else ""
    answers["provider_name"] = title.removeprefix("# ").strip() or project.name
    return answers


def bake(answers: dict[str, str], where: Path) -> Path:
    config = where / "cookiecutter.yaml"  # keeps replays and clones out of the home folder
    config.write_text(f"cookiecutters_dir: {where / 'cookiecutters'}\n"
                      f"replay_dir: {where / 'replay'}\n")
    return Path(cookiecutter(str(TEMPLATE), no_input=True, extra_context=answers,
                             output_dir=str(where / "baked"), config_file=str(config)))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_providers_app_is_what_the_template_renders_for_its_settings(provider, tmp_path):
    project = ROOT / "providers" / provider
    baked = bake(provider_answers(project), tmp_path)
    assert baked.name == provider  # the template derives the same slug from the name
    expected = (baked / "app.py").read_text().splitlines()
    actual = (project / "app.py").read_text().splitlines()
    assert actual == expected, (f"providers/{provider}/app.py drifted from the template: "
                                "change template_provider/ and re-render it")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_app_declares_the_runtimes_handlers_and_schedules(provider):
    app = load_provider(provider)
    assert sorted(app.handler_names()) == sorted(HANDLERS)
    assert app.schedules() == [(REARM, REARM_EVERY_MINUTES * 60.0),
                               (KICKOFF, KICKOFF_EVERY_MINUTES * 60.0)]
    for name in HANDLERS:  # the local stack finds a handler by its name on the module
        assert app.handler(name) is app.app.handler_map[name]


def test_every_provider_is_checked():
    assert {"demo", "quotes", "filings"} <= set(PROVIDERS)
