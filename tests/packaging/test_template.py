"""The provider template, baked with pytest-cookies over its option combinations: nothing left
unrendered, the baked provider's own tests pass, it packages wherever it lands (or the bake is
refused, saying why), and its answers are judged by the runtime's own settings model."""

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sluice.settings import load_settings
from sluice_tools.deploy.package import package, plan
from sluice_tools.provider_config import provider_settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template_provider"
COMBINATIONS = list(itertools.product(["json", "xml"], ["none", "bearer-secret"]))


def bake(cookies, template=TEMPLATE, **context):
    return cookies.bake(template=str(template), extra_context=context)


def run_baked_tests(project: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--import-mode=importlib", str(project / "tests")],
                          cwd=project, capture_output=True, text=True, env=env)


@pytest.mark.parametrize(("api_format", "auth"), COMBINATIONS)
def test_bakes_outside_providers_render_pass_their_tests_and_package(cookies, api_format, auth,
                                                                      tmp_path):
    # pytest-cookies bakes into a temporary folder: nowhere near providers/.
    result = bake(cookies, provider_name="Acme Rates", api_format=api_format, auth=auth,
                  max_concurrency="6", timezone="Asia/Tokyo",
                  maintenance_windows="sun 02:00-04:00, wed 01:00-01:30")
    assert result.exit_code == 0, result.exception
    project = result.project_path
    assert project.name == "acme-rates" and ROOT not in project.parents
    for path in project.rglob("*"):
        if path.is_file() and not path.is_symlink():
            text = path.read_text()
            assert "{{" not in text and "{%" not in text and "cookiecutter" not in text, path
    link = project / "vendor" / "sluice"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert (link / "ventilator.py").exists()
    assert "batch_size=6" in (project / "app.py").read_text()
    settings = provider_settings(project, "prod", account="111122223333", region="eu-west-1")
    assert settings.maintenance_windows == ["sun 02:00-04:00", "wed 01:00-01:30"]
    assert settings.stream_name == "sluice-acme-rates-prod" and settings.stage == "prod"

    tests = run_baked_tests(project)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    the_plan = plan(project, "dev")  # every check a deploy makes, then `chalice package`
    sam = json.loads(package(the_plan, tmp_path / "build").read_text())
    worker = sam["Resources"]["Worker"]["Properties"]
    assert worker["ReservedConcurrentExecutions"] == 6
    assert (tmp_path / "build" / "package" / "deployment.zip").exists()


def test_a_bake_with_no_sluice_runtime_in_reach_is_refused_at_bake_time(cookies, capfd,
                                                                        tmp_path):
    lone = tmp_path / "elsewhere" / "template_provider"
    shutil.copytree(TEMPLATE, lone)  # no common/ beside it, none above the bake
    result = bake(cookies, template=lone, provider_name="Lonely Rates")
    assert result.exit_code != 0
    assert "sluice runtime (common/sluice)" in capfd.readouterr().err
    assert not list(Path(result.project_path or tmp_path).glob("lonely-rates"))


ANSWERS_AND_MESSAGES = [
    ({"provider_name": "An Extremely Long Provider Name For Lambda"}, "64"),
    ({"provider_name": "9lives"}, "starting with a letter"),
    ({"max_concurrency": "3", "shards": "2", "parallelization_factor": "2"},
     "exceeds max_concurrency"),
    ({"timezone": "Mars/Olympus"}, "IANA"),
    ({"maintenance_windows": "02:00-04:00"}, "needs a day"),
    ({"maintenance_windows": "sun 02:00-04:00, 03:00-04:00"}, "needs a day"),
    ({"max_concurrency": "ten"}, "not a whole number"),
    ({"worker_timeout_s": "850"}, "no ventilator could outlive"),
]


@pytest.mark.parametrize(("context", "message"), ANSWERS_AND_MESSAGES)
def test_refuses_bad_answers_with_a_clear_message(cookies, capfd, context, message):
    result = bake(cookies, **context)
    assert result.exit_code != 0
    assert message in capfd.readouterr().err


@pytest.mark.parametrize(("context", "_"), ANSWERS_AND_MESSAGES[2:])
def test_the_template_and_the_runtime_agree(context, _):
    """Whatever the bake refuses, the runtime's settings refuse too (one model judges)."""
    fields = {k: v for k, v in context.items() if k != "provider_name"}
    with pytest.raises(ValueError):
        load_settings(**fields)
