"""Refuse answers that would fail later, with a message that says what to change.

Settings are judged by the runtime's own model (``sluice.settings.ProviderSettings``, imported
from the sluice workspace this template belongs to), so the template and the runtime can
never disagree about what is valid. Only what the model cannot know is checked here: the
Lambda function names the slug makes (64 characters at most), for the handlers the runtime
names (``sluice.handlers.HANDLERS``, the names the baked app.py declares).
"""

import sys
from pathlib import Path

SLUG = "{{ cookiecutter.provider_slug }}"
STAGES = ["dev", "prod"]
ANSWERS = {
    "provider": SLUG,
    "max_concurrency": "{{ cookiecutter.max_concurrency }}",
    "shards": "{{ cookiecutter.shards }}",
    "parallelization_factor": "{{ cookiecutter.parallelization_factor }}",
    "latency_threshold_ms": "{{ cookiecutter.latency_threshold_ms }}",
    "error_rate_threshold": "{{ cookiecutter.error_rate_threshold }}",
    "max_attempts": "{{ cookiecutter.max_attempts }}",
    "timezone": "{{ cookiecutter.timezone }}",
    "allowed_hours": "{{ cookiecutter.allowed_hours }}",
    "maintenance_windows": "{{ cookiecutter.maintenance_windows }}",
    "worker_timeout_s": "{{ cookiecutter.worker_timeout_s }}",
    "api_base_url": "{{ cookiecutter.api_base_url }}",
}
FRIENDLY = {"int_parsing": "is not a whole number", "float_parsing": "is not a number",
            "string_pattern_mismatch": "must be lower-case letters, digits and '-', starting "
            "with a letter, at most 40 characters"}


def find_common():
    """common/ of the sluice workspace: above where the bake lands, else beside the template."""
    hints = ["{{ cookiecutter.get('_sluice_common', '') }}"]
    candidates = [Path(h) for h in hints if h]
    output = Path("{{ cookiecutter._output_dir }}").resolve()
    candidates += [parent / "common" for parent in (output, *output.parents)]
    candidates.append(Path("{{ cookiecutter._repo_dir }}").resolve().parent / "common")
    return next((c for c in candidates if (c / "sluice" / "settings.py").exists()), None)


def main():
    common = find_common()
    if common is None:
        print("cannot create this provider:\n  - the sluice runtime (common/sluice) is neither "
              "above {{ cookiecutter._output_dir }} nor beside the template: bake from a sluice "
              "workspace (`sluice new-provider`)", file=sys.stderr)
        return 1
    sys.path.insert(0, str(common))
    from pydantic import ValidationError

    from sluice.handlers import HANDLERS
    from sluice.settings import ProviderSettings

    problems = []
    if not ANSWERS["api_base_url"].startswith(("https://", "http://")):
        problems.append("api_base_url must start with https:// (or http:// for a local fake)")
    for stage in STAGES:
        longest = max((f"sluice-{SLUG}-{stage}-{h}" for h in HANDLERS), key=len)
        if len(longest) > 64:
            problems.append(f"provider_slug {SLUG!r} makes the Lambda function name "
                            f"{longest!r} {len(longest)} characters long (AWS allows 64): "
                            "choose a shorter slug")
            break
    for stage in STAGES:
        try:
            ProviderSettings(**{k: v for k, v in ANSWERS.items() if k != "api_base_url"},
                             stage=stage)
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or "settings"
                answer = ANSWERS.get(field, "")
                why = FRIENDLY.get(err["type"], err["msg"].removeprefix("Value error, "))
                problems.append(f"{field} {answer!r}: {why}" if answer else why)
            break
    if problems:
        print("cannot create this provider:\n  - " + "\n  - ".join(problems), file=sys.stderr)
        return 1
    return 0


sys.exit(main())
