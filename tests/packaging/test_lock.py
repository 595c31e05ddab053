"""Reproducible bundles: every provider's requirements.txt (what `chalice package` bundles)
pins exactly the versions installed where the tests run; `make lock` rewrites them."""

from pathlib import Path

from sluice_tools.deploy.lock import (
    drift,
    lock_files,
    parse,
    render,
    resolve,
    runtime_requirements,
)


def test_the_lock_matches_the_installed_versions():
    pins = resolve(runtime_requirements())
    problems = [line for path in lock_files() for line in drift(pins, path)]
    assert problems == [], "run `make lock`:\n" + "\n".join(problems)


def test_the_lock_covers_the_runtime_and_everything_it_needs_and_no_tooling():
    pins = resolve(runtime_requirements())
    assert {"boto3", "botocore", "pydantic", "pydantic-core", "pydantic-settings",
            "annotated-types", "typing-extensions", "typing-inspection",
            "python-dotenv"} <= set(pins)
    assert not {"chalice", "moto", "rich", "matplotlib", "cookiecutter", "pytest"} & set(pins)


def test_drift_is_reported_by_name(tmp_path: Path):
    pins = {"pydantic": "2.13.5", "pydantic-core": "2.46.5"}
    lock = tmp_path / "requirements.txt"
    lock.write_text(render({"pydantic": "2.12.0", "pydantic-core": "2.46.5"}))
    assert parse(lock.read_text())["pydantic"] == "2.12.0"
    assert drift(pins, lock) == [f"{lock}: pydantic locked 2.12.0, installed 2.13.5"]
