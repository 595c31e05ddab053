"""Scenarios: how a provider behaves over time (TOML), shared by the local demo and simulator.

    name = "degrade-and-recover"
    records = 2000                          # ids enqueued at start
    [provider]
    capacity = 10                           # concurrent calls served at base latency
    latency_ms = { p50 = 150, p90 = 600 }   # log-normal through these two points
    error_rate = 0.01                       # failure probability at or under capacity
    overload_error_rate = 0.3               # failure probability above capacity
    [settings]                              # provider settings under test (runtime names)
    max_concurrency = 10
    [[phases]]                              # from `at` (scenario time) on; the rest carries over
    at = "5m"
    capacity = 2

Above capacity a call's latency is multiplied by in_flight / capacity. Extra fields:
``duplicates`` (share of ids enqueued a second time, as ad-hoc requests), ``malformed``
(payloads that are not valid requests), ``description``, and ``start`` (a local date-time in
the provider's timezone, e.g. "2026-03-29T21:00": where scenario time 0 falls, so access
windows in ``[settings]`` apply).
"""

from __future__ import annotations

import math
import random
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sluice.settings import ProviderSettings

SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"
DEFAULT_SCENARIO = "degrade-and-recover"
Z90 = 1.2815515655446004  # standard normal quantile at 0.9

_NUM = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile(rf"^\s*(?:{_NUM}h)?\s*(?:{_NUM}m)?\s*(?:{_NUM}s)?\s*$")


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the file and the field."""


def parse_duration(value: Any, where: str = "duration") -> float:
    """Seconds from 90, "90s", "5m", "1h30m"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value)) if isinstance(value, str) and value.strip() else None
    if not match or not any(match.groups()):
        raise ScenarioError(f"{where}: {value!r} is not a duration like '90s', '5m' or '1h30m'")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True)
class ProviderState:
    capacity: int = 10
    p50_ms: float = 150.0
    p90_ms: float = 600.0
    error_rate: float = 0.01
    overload_error_rate: float = 0.3
    outage: bool = False

    def latency_s(self, rng: random.Random, in_flight: int) -> float:
        """Log-normal through (p50, p90), stretched by in_flight / capacity above capacity."""
        sigma = max(0.0, math.log(self.p90_ms / self.p50_ms) / Z90)
        base_ms = math.exp(rng.gauss(math.log(self.p50_ms), sigma))
        return base_ms * max(1.0, in_flight / self.capacity) / 1000

    def fails(self, rng: random.Random, in_flight: int) -> bool:
        if self.outage:
            return True
        rate = self.overload_error_rate if in_flight > self.capacity else self.error_rate
        return rng.random() < rate


@dataclass(frozen=True)
class Phase:
    at_s: float
    changes: dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    records: int
    provider: ProviderState
    settings: dict[str, Any] = field(default_factory=dict)
    phases: tuple[Phase, ...] = ()
    duplicates: float = 0.0
    malformed: float = 0.0
    description: str = ""
    start: str = ""  # local date-time in settings.timezone where scenario time 0 falls

    def start_epoch(self, timezone: str, default: float) -> float:
        """Scenario time 0 as an instant: ``start`` read in the provider's timezone."""
        if not self.start:
            return default
        from zoneinfo import ZoneInfo

        return datetime.fromisoformat(self.start).replace(tzinfo=ZoneInfo(timezone)).timestamp()

    def state_at(self, t_s: float) -> ProviderState:
        state = self.provider
        for phase in self.phases:
            if phase.at_s <= t_s:
                state = replace(state, **phase.changes)
        return state

    def with_records(self, records: int | None) -> Scenario:
        return self if records is None else replace(self, records=records)

    @property
    def last_phase_s(self) -> float:
        return max((p.at_s for p in self.phases), default=0.0)


_PROVIDER_KEYS = {f.name for f in fields(ProviderState)} - {"p50_ms", "p90_ms"} | {"latency_ms"}


def _provider_changes(raw: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "at":
            continue
        if key not in _PROVIDER_KEYS:
            raise ScenarioError(f"{where}: unknown key {key!r}; known: {sorted(_PROVIDER_KEYS)}")
        if key == "latency_ms":
            if not isinstance(value, dict) or not {"p50", "p90"} >= set(value) or not value:
                raise ScenarioError(f"{where}.latency_ms: expected {{ p50 = .., p90 = .. }}")
            if "p50" in value:
                out["p50_ms"] = float(value["p50"])
            if "p90" in value:
                out["p90_ms"] = float(value["p90"])
        elif key == "capacity":
            if not isinstance(value, int) or value < 1:
                raise ScenarioError(f"{where}.capacity: must be an integer >= 1")
            out[key] = value
        elif key == "outage":
            if not isinstance(value, bool):
                raise ScenarioError(f"{where}.outage: must be true or false")
            out[key] = value
        else:
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ScenarioError(f"{where}.{key}: must be a probability between 0 and 1")
            out[key] = float(value)
    return out


def parse_scenario(doc: dict[str, Any], source: str = "scenario") -> Scenario:
    try:
        records = int(doc.get("records", 1000))
    except (TypeError, ValueError):
        raise ScenarioError(f"{source}: records must be an integer") from None
    if records < 1:
        raise ScenarioError(f"{source}: records must be >= 1")
    provider = replace(ProviderState(), **_provider_changes(doc.get("provider", {}),
                                                             f"{source} [provider]"))
    if provider.p90_ms < provider.p50_ms:
        raise ScenarioError(f"{source} [provider].latency_ms: p90 must be >= p50")
    settings = dict(doc.get("settings", {}))
    unknown = set(settings) - set(ProviderSettings.model_fields)
    if unknown:
        raise ScenarioError(f"{source} [settings]: unknown setting(s) {sorted(unknown)}")
    phases = []
    for i, raw in enumerate(doc.get("phases", [])):
        where = f"{source} [[phases]] #{i + 1}"
        if "at" not in raw:
            raise ScenarioError(f"{where}: needs `at`, e.g. at = \"5m\"")
        phases.append(Phase(parse_duration(raw["at"], f"{where}.at"),
                            _provider_changes(raw, where)))
    phases.sort(key=lambda p: p.at_s)
    known = {"name", "records", "provider", "settings", "phases", "duplicates", "malformed",
             "description", "start"}
    if set(doc) - known:
        raise ScenarioError(f"{source}: unknown key(s) {sorted(set(doc) - known)}")
    start = str(doc.get("start", ""))
    if start:
        try:
            parsed = datetime.fromisoformat(start)
        except ValueError:
            raise ScenarioError(f"{source}: start {start!r} is not a local date-time like "
                                "'2026-03-29T21:00'") from None
        if parsed.tzinfo is not None:
            raise ScenarioError(f"{source}: start is local to settings.timezone; drop the offset")
    return Scenario(
        start=start,
        name=str(doc.get("name", Path(source).stem)),
        records=records,
        provider=provider,
        settings=settings,
        phases=tuple(phases),
        duplicates=float(doc.get("duplicates", 0.0)),
        malformed=float(doc.get("malformed", 0.0)),
        description=str(doc.get("description", "")),
    )


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name (``steady``) or a TOML file by path."""
    path = Path(name_or_path)
    if not path.exists():
        path = SCENARIOS_DIR / f"{name_or_path}.toml"
    if not path.exists():
        shipped = sorted(p.stem for p in SCENARIOS_DIR.glob("*.toml"))
        raise ScenarioError(f"no scenario {str(name_or_path)!r}; shipped: {', '.join(shipped)}")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    return parse_scenario(doc, str(path))


def shipped_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.toml"))
