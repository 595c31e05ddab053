"""The provider template, baked with pytest-cookies over its option combinations: nothing left
unrendered, the baked provider's own tests pass, and `chalice package` builds it."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template_provider"
COMBINATIONS = list(itertools.product(["json", "xml"], ["none", "bearer-secret"]))


def bake(cookies, **context):
    result = cookies.bake(template=str(TEMPLATE), extra_context=context)
    if result.exit_code == 0:
        # The baked folder sits where providers/<name> would: give it the monorepo's common/.
        common = result.project_path.parent.parent / "common"
        if not common.exists():
            common.symlink_to(ROOT / "common")
    return result


@pytest.mark.parametrize(("api_format", "auth"), COMBINATIONS)
def test_bakes_renders_tests_and_packages(cookies, api_format, auth, tmp_path):
    result = bake(cookies, provider_name="Acme Rates", api_format=api_format, auth=auth,
                  max_concurrency="6", timezone="Asia/Tokyo")
    assert result.exit_code == 0, result.exception
    project = result.project_path
    assert project.name == "acme-rates"
    for path in project.rglob("*"):
        if path.is_file() and not path.is_symlink():
            text = path.read_text()
            assert "{{" not in text and "{%" not in text and "cookiecutter" not in text, path
    assert (project / "vendor" / "sluice").is_symlink()
    assert (project / "vendor" / "sluice" / "ventilator.py").exists()
    assert (project / ".chalice" / "policy-prod-ventilator.json").exists()
    assert "batch_size=6" in (project / "app.py").read_text()

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "--import-mode=importlib", str(project / "tests")],
                           cwd=project, capture_output=True, text=True, env=env)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    chalice = Path(sys.executable).with_name("chalice")
    packaged = subprocess.run([str(chalice), "package", "--stage", "dev", str(tmp_path / "out")],
                              cwd=project, capture_output=True, text=True,
                              env={**env, "AWS_DEFAULT_REGION": "us-east-1"})
    assert packaged.returncode == 0, packaged.stderr
    assert (tmp_path / "out" / "deployment.zip").exists()


@pytest.mark.parametrize(("context", "message"), [
    ({"provider_name": "An Extremely Long Provider Name For Lambda"}, "64"),
    ({"provider_name": "9lives"}, "starting with a letter"),
    ({"max_concurrency": "3", "shards": "2", "parallelization_factor": "2"},
     "smaller than shards x parallelization_factor"),
    ({"timezone": "Mars/Olympus"}, "IANA"),
    ({"maintenance_windows": "02:00-04:00"}, "needs a day"),
    ({"max_concurrency": "ten"}, "not a whole number"),
])
def test_refuses_bad_answers_with_a_clear_message(cookies, capfd, context, message):
    result = bake(cookies, **context)
    assert result.exit_code != 0
    assert message in capfd.readouterr().err
