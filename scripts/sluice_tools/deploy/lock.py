"""The Lambda bundle's dependencies, pinned to the exact versions the tests ran with.

Source: ``pyproject.toml``'s ``[project] dependencies`` (the runtime's, and nothing else: the
tooling lives in the ``tools`` extra) and their transitive dependencies, at the versions
installed in this environment, for the Lambda target (this interpreter's Python, Linux).
Written as ``requirements.txt`` of every provider and of the template (the file `chalice
package` reads; it hashes that file, so a changed pin always rebuilds the bundle).

boto3 and botocore are pinned too, although the Lambda runtime ships its own: the runtime's
copy is whatever AWS last patched in, not the version the tests ran with, and AWS recommends
bundling the SDK a function depends on. It costs ~35 MB unzipped (the limit is 250 MB).

    python -m sluice_tools.deploy.lock           # write (also: make lock)
    python -m sluice_tools.deploy.lock --check   # exit 1 and show the drift
"""

from __future__ import annotations

import argparse
import platform
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[3]
HEADER = """\
# The Lambda bundle's dependencies, pinned (generated: `make lock`; do not edit by hand).
# From pyproject.toml's [project] dependencies (the runtime's) and everything they need, at
# the versions the tests ran with; tests/packaging/test_lock.py fails when they drift.
# The sluice runtime itself arrives through vendor/sluice, a link to common/sluice.
"""


def lambda_environment() -> dict[str, str]:
    env = dict(default_environment())
    env.update(sys_platform="linux", platform_system="Linux", os_name="posix",
               platform_machine="x86_64", implementation_name="cpython",
               platform_python_implementation="CPython",
               python_version=".".join(platform.python_version_tuple()[:2]))
    return env


def runtime_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def resolve(roots: list[Requirement]) -> dict[str, str]:
    """Canonical name -> installed version, for the roots and everything they require."""
    env = lambda_environment()
    pinned: dict[str, str] = {}
    pending = [r for r in roots if r.marker is None or r.marker.evaluate({**env, "extra": ""})]
    while pending:
        req = pending.pop()
        name = canonicalize_name(req.name)
        if name in pinned:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{req.name} is required by the runtime but not installed here: "
                             "install the project first (make install)") from None
        if not req.specifier.contains(dist.version, prereleases=True):
            raise SystemExit(f"installed {req.name} {dist.version} does not satisfy {req}")
        pinned[name] = dist.version
        for text in dist.requires or []:
            dep = Requirement(text)
            if dep.marker is None or dep.marker.evaluate({**env, "extra": ""}):
                pending.append(dep)
    return dict(sorted(pinned.items()))


def render(pins: dict[str, str]) -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in pins.items())


def lock_files(root: Path = REPO_ROOT) -> list[Path]:
    providers = sorted(p / "requirements.txt" for p in (root / "providers").iterdir()
                       if (p / "app.py").exists())
    return [*providers, root / "template_provider" / "{{cookiecutter.provider_slug}}"
            / "requirements.txt"]


def parse(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            specs = list(req.specifier)
            exact = len(specs) == 1 and specs[0].operator == "=="
            pins[canonicalize_name(req.name)] = specs[0].version if exact else str(
                req.specifier)
    return pins


def drift(expected: dict[str, str], path: Path) -> list[str]:
    found = parse(path.read_text()) if path.exists() else {}
    lines = []
    for name in sorted(set(expected) | set(found)):
        if expected.get(name) != found.get(name):
            lines.append(f"{path}: {name} locked {found.get(name, '-')}, installed "
                         f"{expected.get(name, '-')}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sluice_tools.deploy.lock",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report drift, write nothing")
    args = parser.parse_args(argv)
    pins = resolve(runtime_requirements())
    if args.check:
        problems = [line for path in lock_files() for line in drift(pins, path)]
        print("\n".join(problems) or f"lock ok: {len(pins)} pins")
        return 1 if problems else 0
    for path in lock_files():
        path.write_text(render(pins))
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
