"""`sluice deploy`'s packaging builds a Lambda bundle that carries the runtime package and the
exact dependency versions the tests ran with, and imports cleanly on its own, without any of
the laptop tooling."""

import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata

import pytest

from sluice_tools.deploy.lock import parse
from sluice_tools.deploy.package import package, plan
from sluice_tools.provider_config import PROVIDERS_DIR

IMPORT_CHECK = """
import json, sys
sys.path.insert(0, sys.argv[1])
import app, sluice, pydantic
print(json.dumps({
    "sluice": sluice.__file__,
    "pydantic": pydantic.__file__,
    "tooling": sorted(m for m in sys.modules
                      if m.split('.')[0] in ('sluice_tools', 'moto', 'rich', 'matplotlib')),
    "handlers": sorted(app.app.handler_map),
}))
"""


@pytest.fixture(scope="module")
def demo_package(tmp_path_factory):
    out = tmp_path_factory.mktemp("pkg")
    return package(plan("demo", "dev"), out).parent


def test_bundle_contains_the_runtime_package(demo_package):
    names = zipfile.ZipFile(demo_package / "deployment.zip").namelist()
    for expected in ("app.py", "chalicelib/provider.py", "sluice/ventilator.py",
                     "sluice/ledger.py", "chalice/app.py"):
        assert expected in names
    assert not any(n.startswith("sluice_tools/") for n in names)


def test_bundle_ships_the_locked_versions_the_tests_ran_with(demo_package):
    names = zipfile.ZipFile(demo_package / "deployment.zip").namelist()
    shipped = {n.split("/")[0].removesuffix(".dist-info") for n in names
               if n.split("/")[0].endswith(".dist-info")}
    shipped = {d.rsplit("-", 1)[0].lower().replace("_", "-"): d.rsplit("-", 1)[1]
               for d in shipped}
    locked = parse((PROVIDERS_DIR / "demo" / "requirements.txt").read_text())
    assert shipped == locked
    for name in ("pydantic", "pydantic-core", "boto3"):
        assert shipped[name] == metadata.version(name)


def test_bundle_imports_cleanly_without_the_tooling(demo_package, tmp_path):
    zipfile.ZipFile(demo_package / "deployment.zip").extractall(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK, str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["sluice"].startswith(str(tmp_path))
    assert report["pydantic"].startswith(str(tmp_path))
    assert report["tooling"] == []
    assert report["handlers"] == ["kickoff", "rearm", "ventilator", "worker"]


def test_package_declares_the_functions_and_the_mapping(demo_package):
    sam = json.loads((demo_package / "sam.json").read_text())
    resources = sam["Resources"]
    assert {"Ventilator", "Worker", "Rearm", "Kickoff"} <= set(resources)
    events = resources["Ventilator"]["Properties"]["Events"]
    (kinesis,) = [e for e in events.values() if e["Type"] == "Kinesis"]
    assert kinesis["Properties"]["BatchSize"] == 10
    assert resources["Worker"]["Properties"]["Timeout"] > 70  # a 70 s provider call fits
    assert (resources["Ventilator"]["Properties"]["Timeout"]
            > resources["Worker"]["Properties"]["Timeout"])
