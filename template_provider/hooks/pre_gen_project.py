"""Refuse settings that would fail later, with a message that says what to change."""

import re
import sys
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SLUG = "{{ cookiecutter.provider_slug }}"
STAGES = ["dev", "prod"]
HANDLERS = ["ventilator", "worker", "rearm", "kickoff"]
problems = []

if not re.fullmatch(r"[a-z][a-z0-9-]{0,39}", SLUG):
    problems.append(f"provider_slug {SLUG!r}: lower-case letters, digits and '-', starting with "
                    "a letter, at most 40 characters")
longest = max((f"sluice-{SLUG}-{stage}-{handler}" for stage in STAGES for handler in HANDLERS),
              key=len)
if len(longest) > 64:
    problems.append(f"provider_slug {SLUG!r} makes the Lambda function name {longest!r} "
                    f"{len(longest)} characters long (AWS allows 64): choose a shorter slug")


def number(name, text, kind=int, low=None, high=None):
    try:
        value = kind(text)
    except ValueError:
        problems.append(f"{name} {text!r} is not a {'whole ' if kind is int else ''}number")
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        problems.append(f"{name} {text!r} must be between {low} and {high}")
    return value


x = number("max_concurrency", "{{ cookiecutter.max_concurrency }}", int, 1, 10000)
shards = number("shards", "{{ cookiecutter.shards }}", int, 1, 500)
factor = number("parallelization_factor", "{{ cookiecutter.parallelization_factor }}", int, 1, 10)
number("latency_threshold_ms", "{{ cookiecutter.latency_threshold_ms }}", float, 1, 900000)
number("error_rate_threshold", "{{ cookiecutter.error_rate_threshold }}", float, 0, 1)
number("max_attempts", "{{ cookiecutter.max_attempts }}", int, 1, 20)
timeout = number("worker_timeout_s", "{{ cookiecutter.worker_timeout_s }}", int, 1, 600)
if None not in (x, shards, factor) and shards * factor > x:
    problems.append(f"max_concurrency X = {x} is smaller than shards x parallelization_factor = "
                    f"{shards * factor}: even batch size 1 would exceed X")
try:
    ZoneInfo("{{ cookiecutter.timezone }}")
except (ZoneInfoNotFoundError, ValueError):
    problems.append("timezone '{{ cookiecutter.timezone }}' is not an IANA name like "
                    "'Europe/London'")
if not "{{ cookiecutter.api_base_url }}".startswith(("https://", "http://")):
    problems.append("api_base_url must start with https:// (or http:// for a local fake)")
try:  # the same parser the runtime uses, when the workspace is installed
    from sluice.window import AccessWindow, WindowError

    windows = [w for w in ["{{ cookiecutter.maintenance_windows }}"] if w.strip()]
    AccessWindow.parse("UTC", "{{ cookiecutter.allowed_hours }}", windows)
except ImportError:
    pass
except WindowError as exc:
    problems.append(str(exc))

if problems:
    print("cannot create this provider:\n  - " + "\n  - ".join(problems), file=sys.stderr)
    sys.exit(1)
