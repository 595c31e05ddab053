"""`chalice package` builds a Lambda bundle that carries the runtime package and imports
cleanly on its own, without any of the laptop tooling."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHALICE = Path(sys.executable).with_name("chalice")

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
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    subprocess.run([str(CHALICE), "package", "--stage", "dev", str(out)],
                   cwd=ROOT / "providers" / "demo", check=True, env=env, capture_output=True)
    return out


def test_bundle_contains_the_runtime_package(demo_package):
    names = zipfile.ZipFile(demo_package / "deployment.zip").namelist()
    for expected in ("app.py", "chalicelib/provider.py", "sluice/ventilator.py",
                     "sluice/ledger.py", "chalice/app.py"):
        assert expected in names
    assert not any(n.startswith("sluice_tools/") for n in names)


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


def test_package_declares_the_three_functions_and_the_mapping(demo_package):
    sam = json.loads((demo_package / "sam.json").read_text())
    resources = sam["Resources"]
    assert {"Ventilator", "Worker", "Rearm", "Kickoff"} <= set(resources)
    events = resources["Ventilator"]["Properties"]["Events"]
    (kinesis,) = [e for e in events.values() if e["Type"] == "Kinesis"]
    assert kinesis["Properties"]["BatchSize"] == 10
    assert resources["Worker"]["Properties"]["Timeout"] > 70  # a 70 s provider call fits
    assert (resources["Ventilator"]["Properties"]["Timeout"]
            > resources["Worker"]["Properties"]["Timeout"])
