"""Scenarios: how a provider behaves over time (TOML), shared by the local demo and simulator.

    name = "degrade-and-recover"
    records = 2000                          # ids enqueued at start
    [provider]
    capacity = 10                           # slots: calls served at once; more wait for one
    latency_ms = { p50 = 150, p90 = 600 }   # log-normal through these two points, at capacity
    error_rate = 0.01                       # failure probability at or under capacity
    overload_error_rate = 0.3               # failure probability once overloaded
    [settings]                              # provider settings under test (runtime names)
    max_concurrency = 10
    [[phases]]                              # from `at` (scenario time) on; the rest carries over
    at = "5m"
    capacity = 2

The provider model (``provider_model``, where every formula is written out) has optional
fields too, in ``[provider]`` and in any phase, with their defaults:

    congestion = 0.5             # K: a call alone takes 1 / (1 + K) of its time at capacity
    congestion_exponent = 2      # M: service x (1 + K (busy / capacity)^M) / (1 + K)
    overload_ramp = 0.25         # R: overload_error_rate is reached with a queue R x capacity
    queue_timeout = "60s"        # a call queued this long gets 504 (0: it waits for ever)
    retry_after = "0s"           # > 0: above capacity, 429 with this Retry-After, no queue
    bursts = { every = "0s", length = "1m", error_rate = 0.9 }   # error bursts (every 0: none)

Above capacity a call waits for a slot: the simulator's stateless form (``latency_s``,
``fails``) multiplies latency by in_flight / capacity instead. Extra fields: ``duplicates``
(share of ids enqueued a second time, as ad-hoc requests), ``malformed`` (payloads that are
not valid requests), ``description``, and ``start`` (a local date-time in the provider's
timezone, e.g. "2026-03-29T21:00": where scenario time 0 falls, so access windows in
``[settings]`` apply).
"""

from __future__ import annotations

import random
import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sluice.settings import ProviderSettings
from sluice_tools import provider_model

SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"
DEFAULT_SCENARIO = "degrade-and-recover"
Z90 = provider_model.Z90  # standard normal quantile at 0.9

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
    p50_ms: float = 150.0  # latency at capacity (``provider_model``: g(capacity) = 1)
    p90_ms: float = 600.0
    error_rate: float = 0.01
    overload_error_rate: float = 0.3
    outage: bool = False
    congestion: float = 0.5
    congestion_exponent: float = 2.0
    overload_ramp: float = 0.25
    queue_timeout_s: float = 60.0  # 0: no provider-side queue timeout
    retry_after_s: float = 0.0  # > 0: 429 with Retry-After above capacity instead of a queue
    burst_every_s: float = 0.0  # mean time from one error burst's start to the next; 0: none
    burst_length_s: float = 60.0
    burst_error_rate: float = 0.9

    def latency_s(self, rng: random.Random, in_flight: int) -> float:
        """The model without state: the log-normal draw x g(min(in_flight, capacity)),
        stretched by in_flight / capacity above capacity (the queue, by Little's law); a 429
        (``retry_after``) above capacity comes back at once."""
        base_s = provider_model.draw_ms(rng, self.p50_ms, self.p90_ms) / 1000
        if self.retry_after_s > 0 and in_flight > self.capacity:
            return min(base_s, provider_model.FAST_ANSWER_S)
        factor = provider_model.congestion_factor(self, in_flight)
        return base_s * factor * max(1.0, in_flight / self.capacity)

    def fails(self, rng: random.Random, in_flight: int) -> bool:
        """Outage: always; above capacity in ``retry_after`` mode: always (429); else with
        p(o), o = (in_flight - capacity) / capacity (no queue timeout, no bursts here)."""
        if self.outage:
            return True
        if self.retry_after_s > 0 and in_flight > self.capacity:
            return True
        overload = provider_model.overload_ratio(self, in_flight)
        return rng.random() < provider_model.error_probability(self, overload)


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


_PROBABILITIES = {"error_rate", "overload_error_rate"}
_DURATIONS = {"queue_timeout": "queue_timeout_s", "retry_after": "retry_after_s"}
_BURST_KEYS = {"every": "burst_every_s", "length": "burst_length_s",
               "error_rate": "burst_error_rate"}
_PROVIDER_KEYS = (_PROBABILITIES | set(_DURATIONS) | {
    "capacity", "latency_ms", "outage", "congestion", "congestion_exponent", "overload_ramp",
    "bursts"})


def _number(value: Any, where: str, *, low: float, strict: bool = False) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not (
            value > low if strict else value >= low):
        raise ScenarioError(f"{where}: must be a number {'>' if strict else '>='} {low:g}")
    return float(value)


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
                out["p50_ms"] = _number(value["p50"], f"{where}.latency_ms.p50", low=0,
                                        strict=True)
            if "p90" in value:
                out["p90_ms"] = _number(value["p90"], f"{where}.latency_ms.p90", low=0,
                                        strict=True)
        elif key == "bursts":
            if not isinstance(value, dict) or not value or set(value) - set(_BURST_KEYS):
                raise ScenarioError(f"{where}.bursts: expected {{ every = \"20m\", length = "
                                    "\"1m\", error_rate = 0.9 }} (any of them)")
            for name, field_name in _BURST_KEYS.items():
                if name not in value:
                    continue
                if name == "error_rate":
                    out[field_name] = _probability(value[name], f"{where}.bursts.error_rate")
                else:
                    out[field_name] = parse_duration(value[name], f"{where}.bursts.{name}")
        elif key == "capacity":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ScenarioError(f"{where}.capacity: must be an integer >= 1")
            out[key] = value
        elif key == "outage":
            if not isinstance(value, bool):
                raise ScenarioError(f"{where}.outage: must be true or false")
            out[key] = value
        elif key == "congestion":
            out[key] = _number(value, f"{where}.congestion", low=0)
        elif key in ("congestion_exponent", "overload_ramp"):
            out[key] = _number(value, f"{where}.{key}", low=0, strict=True)
        elif key in _DURATIONS:
            out[_DURATIONS[key]] = parse_duration(value, f"{where}.{key}")
        else:
            out[key] = _probability(value, f"{where}.{key}")
    return out


def _probability(value: Any, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ScenarioError(f"{where}: must be a probability between 0 and 1")
    return float(value)


def _check_state(state: ProviderState, where: str) -> None:
    """What only the whole state can tell (a phase may change one field of a pair)."""
    if state.p90_ms < state.p50_ms:
        raise ScenarioError(f"{where}.latency_ms: p90 must be >= p50")
    if 0 < state.burst_every_s <= state.burst_length_s:
        raise ScenarioError(f"{where}.bursts: every (mean time from one burst's start to the "
                            "next) must be longer than length, or 0 (no bursts)")
    if state.burst_length_s <= 0:
        raise ScenarioError(f"{where}.bursts.length: must be longer than 0s")


def parse_scenario(doc: dict[str, Any], source: str = "scenario") -> Scenario:
    try:
        records = int(doc.get("records", 1000))
    except (TypeError, ValueError):
        raise ScenarioError(f"{source}: records must be an integer") from None
    if records < 1:
        raise ScenarioError(f"{source}: records must be >= 1")
    provider = replace(ProviderState(), **_provider_changes(doc.get("provider", {}),
                                                             f"{source} [provider]"))
    _check_state(provider, f"{source} [provider]")
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
    state = provider
    for phase in phases:
        state = replace(state, **phase.changes)
        _check_state(state, f"{source} [[phases]] at {phase.at_s:g}s")
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
