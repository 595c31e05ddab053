"""Link the runtime package into vendor/ (a link in the template would be copied, stale).

The link is relative to wherever the bake landed, so a provider baked outside providers/
packages too; if the runtime cannot be found, the bake is refused here, not at deploy time.
IAM policy files are not written: `sluice deploy` writes them per account and region.
"""

import os
import sys
from pathlib import Path

project = Path.cwd().resolve()


def find_runtime():
    hints = ["{{ cookiecutter.get('_sluice_common', '') }}"]
    candidates = [Path(h) / "sluice" for h in hints if h]
    candidates += [parent / "common" / "sluice" for parent in project.parents]
    candidates.append(Path("{{ cookiecutter._repo_dir }}").resolve().parent / "common" / "sluice")
    return next((c.resolve() for c in candidates if (c / "settings.py").exists()), None)


runtime = find_runtime()
if runtime is None:
    print(f"cannot create this provider: the sluice runtime (common/sluice) is not above "
          f"{project} nor beside the template: its vendor/sluice link would dangle",
          file=sys.stderr)
    sys.exit(1)
vendor = project / "vendor"
vendor.mkdir(exist_ok=True)
link = vendor / "sluice"
if link.is_symlink() or link.exists():
    link.unlink()
link.symlink_to(os.path.relpath(runtime, vendor))
