"""Moving providers off the old ingestion system, one at a time.

Each provider's state lives next to it, in ``providers/<name>/migration.json`` (kept in the
repo, reviewed like code): ``not_migrated`` -> ``deployed`` (its stack exists, ingestion off)
-> ``live`` (sluice fetches for it). Only cutover and rollback, deliberate operator steps,
change that file. A deploy changes no tracked file: it notes what it deployed in the
provider's untracked ``.chalice/deploy/deployed-<stage>.json``, and a first deploy leaves
ingestion off (mapping created disabled, provider paused) until the cutover.

Cutover and rollback act through the same operator pause as `sluice pause`: rolling back
stops calls without touching the stream (queued records wait) or the ledger (today's fetched
records stay fetched), so switching back and forth in one day never fetches a record twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sluice.control import ControlStore
from sluice.mapping import MappingClient
from sluice.operators import pause, resume
from sluice.settings import ProviderSettings
from sluice_tools.provider_config import PROVIDERS_DIR, provider_names

STATES = ("not_migrated", "deployed", "live")
ROLLBACK_REASON = "rollback: ingestion is back on the old system"


class MigrationRefused(RuntimeError):
    pass


@dataclass
class Entry:
    provider: str
    state: str = "not_migrated"
    stage: str = ""
    changed_at: str = ""
    history: list[dict[str, str]] = field(default_factory=list)

    def moved(self, state: str, stage: str, note: str) -> Entry:
        if state not in STATES:
            raise ValueError(f"unknown migration state {state!r}")
        now = datetime.now(UTC).isoformat(timespec="seconds")
        history = [*self.history, {"at": now, "from": self.state, "to": state, "stage": stage,
                                   "note": note}]
        return Entry(self.provider, state, stage, now, history)


class Registry:
    def __init__(self, root: Path = PROVIDERS_DIR) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / name / "migration.json"

    def get(self, name: str) -> Entry:
        path = self.path(name)
        if not path.exists():
            return Entry(name)
        return Entry(**json.loads(path.read_text()))

    def put(self, entry: Entry) -> None:
        self.path(entry.provider).write_text(json.dumps(asdict(entry), indent=2) + "\n")

    def all(self) -> list[Entry]:
        return [self.get(name) for name in provider_names()]

    def deployed_stages(self, name: str) -> list[str]:
        """Stages a `sluice deploy` from this checkout deployed (untracked notes)."""
        folder = self.root / name / ".chalice" / "deploy"
        return sorted(p.stem.removeprefix("deployed-") for p in folder.glob("deployed-*.json"))

    def shown_state(self, entry: Entry) -> str:
        """The reviewed state, or "deployed" when only an untracked deploy note says so."""
        if entry.state == "not_migrated" and self.deployed_stages(entry.provider):
            return "deployed"
        return entry.state


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


def preflight(settings: ProviderSettings, session: Any) -> list[Check]:
    """What must be true before sluice may take over (or hand back) a provider."""
    checks = [Check("settings valid", True, f"X={settings.max_concurrency}, "
                    f"window={settings.allowed_hours or 'always'}")]

    def probe(name: str, call: Callable[[], str]) -> None:
        try:
            checks.append(Check(name, True, call()))
        except Exception as exc:  # each check reports its own failure, none stops the others
            checks.append(Check(name, False, f"{type(exc).__name__}: {exc}"[:160]))

    probe("stream exists", lambda: session.client("kinesis").describe_stream_summary(
        StreamName=settings.stream_name)["StreamDescriptionSummary"]["StreamStatus"])
    probe("table reachable", lambda: session.client("dynamodb").describe_table(
        TableName=settings.table_name)["Table"]["TableStatus"])
    probe("mapping present", lambda: MappingClient(
        settings.ventilator_function, client=session.client("lambda")).find(
        stream_name=settings.stream_name).state)
    return checks


def _gate(settings: ProviderSettings, session: Any) -> tuple[ControlStore, MappingClient]:
    return (ControlStore(settings.table_name, client=session.client("dynamodb")),
            MappingClient(settings.ventilator_function, client=session.client("lambda")))


def cutover(name: str, stage: str, settings: ProviderSettings, session: Any, *,
            dry_run: bool = False, registry: Registry | None = None) -> dict[str, Any]:
    registry = registry or Registry()
    checks = preflight(settings, session)
    failed = [c for c in checks if not c.ok]
    result: dict[str, Any] = {"provider": name, "stage": stage, "checks": checks}
    if failed:
        raise MigrationRefused(f"{name}/{stage}: preflight failed: "
                               + "; ".join(f"{c.name} ({c.detail})" for c in failed))
    if dry_run:
        result["would"] = "lift any pause and enable the mapping; registry -> live"
        return result
    control, mapping = _gate(settings, session)
    state, update = resume(control, mapping, settings.stream_name)
    registry.put(registry.get(name).moved("live", stage, "cutover"))
    result.update(breaker=state.label, mapping_update=update, state="live")
    return result


def rollback(name: str, stage: str, settings: ProviderSettings, session: Any, *,
             dry_run: bool = False, registry: Registry | None = None) -> dict[str, Any]:
    registry = registry or Registry()
    checks = preflight(settings, session)
    result: dict[str, Any] = {"provider": name, "stage": stage, "checks": checks}
    if not all(c.ok for c in checks if c.name in ("table reachable", "mapping present")):
        raise MigrationRefused(f"{name}/{stage}: cannot reach the table or the mapping to pause")
    if dry_run:
        result["would"] = ("pause ingestion (queued records stay on the stream, the ledger "
                           "stays); registry -> deployed")
        return result
    control, mapping = _gate(settings, session)
    state, update = pause(control, mapping, settings.stream_name, ROLLBACK_REASON)
    registry.put(registry.get(name).moved("deployed", stage, "rollback"))
    result.update(breaker=state.label, mapping_update=update, state="deployed")
    return result
