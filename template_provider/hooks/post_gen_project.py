"""Link the runtime package into vendor/ (a link in the template would be copied, stale), and
write the provider's IAM policy files when the sluice workspace is importable."""

import json
import os
from pathlib import Path

project = Path.cwd()
vendor = project / "vendor"
vendor.mkdir(exist_ok=True)
link = vendor / "sluice"
if not link.exists() and not link.is_symlink():
    # providers/<name>/vendor/sluice -> ../../../common/sluice (the monorepo layout)
    os.symlink(os.path.join("..", "..", "..", "common", "sluice"), link)

try:
    from sluice.settings import load_settings
    from sluice_tools.deploy.iam import function_policies, literal_arn
except ImportError:
    print("note: run `sluice deploy <name> --stage dev --dry-run` in the workspace to write "
          "the IAM policy files")
else:
    config = json.loads((project / ".chalice" / "config.json").read_text())
    for stage, stage_config in config["stages"].items():
        env = {**config["environment_variables"], **stage_config["environment_variables"]}
        fields = {k[len("SLUICE_"):].lower(): v for k, v in env.items()
                  if k.startswith("SLUICE_")}
        settings = load_settings(**fields)
        for handler, document in function_policies(settings, literal_arn()).items():
            path = project / ".chalice" / f"policy-{stage}-{handler}.json"
            path.write_text(json.dumps(document, indent=2) + "\n")
