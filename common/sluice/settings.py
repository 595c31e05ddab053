"""One provider's settings, read from environment variables at cold start.

Every field is user-facing: the same names appear in the docs, in scenario files' ``[settings]``
and, upper-cased with the ``SLUICE_`` prefix, in each provider's ``.chalice/config.json``.
A bad value fails the cold start with a message that names the variable, not a stack trace.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sluice.window import AccessWindow, WindowError, parse_span

ENV_PREFIX = "SLUICE_"
# A ventilator's own Lambda timeout must outlive a worker call it starts (worker timeout +
# lease margin) by this much: the batch's claims, ledger writes and metrics come after it.
VENTILATOR_DEADLINE_MARGIN_S = 60
LAMBDA_MAX_TIMEOUT_S = 900


class SettingsError(ValueError):
    """Invalid provider settings; the message names each offending environment variable."""


class ProviderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    provider: str = Field("demo", pattern=r"^[a-z][a-z0-9-]{0,39}$")
    # The deployment stage (dev, prod, local...): part of every resource name and the second
    # dimension of every metric, so two stages in one account never mix.
    stage: str = Field("dev", pattern=r"^[a-z][a-z0-9]{0,11}$")

    # The concurrency ceiling X agreed with the provider. The batch size never exceeds
    # X // (shards * parallelization_factor), so in-flight calls never exceed X.
    max_concurrency: int = Field(10, ge=1, le=10_000)
    shards: int = Field(1, ge=1, le=500)
    parallelization_factor: int = Field(1, ge=1, le=10)

    # Health: p90 latency above this is "slow"; an error rate above that is "failing".
    latency_threshold_ms: float = Field(1000.0, gt=0)
    error_rate_threshold: float = Field(0.2, ge=0, le=1)
    policy: str = "default"
    # How a delivery's calls are dispatched. "window": up to the policy's concurrency limit in
    # flight across a large delivery, the next call starting as soon as one ends; the mapping's
    # BatchSize is the delivery size (what fits the ventilator's time budget). "batch": the
    # seed's mechanism, BatchSize = concurrency, each delivery waiting for its slowest call.
    # The default stays "batch" until the functional suite and the local demo are proven on
    # window dispatch too (see README, "Dispatch"); the simulator runs both.
    dispatch: Literal["window", "batch"] = "batch"

    max_attempts: int = Field(3, ge=1, le=20)
    # The provider's timezone defines the ledger's "day" (once a day means its local day)
    # and the wall clock of its access window.
    timezone: str = "UTC"
    # When the provider may be called: "22:00-06:00" or "mon-fri 22:00-06:00, sat 00:00-24:00";
    # empty = always. Maintenance windows are never called, even inside allowed hours.
    allowed_hours: str = ""
    maintenance_windows: Annotated[list[str], NoDecode] = Field(default_factory=list)

    stream_name: str = ""
    ventilator_function: str = ""
    worker_function: str = ""
    table_name: str = ""
    result_bucket: str = ""
    result_prefix: str = "results"
    api_base_url: str = ""
    # Secrets Manager id of the provider's credentials (never in config files or logs).
    secret_id: str = ""
    # The queue parked records are also sent to (the mapping's on-failure destination too).
    parked_queue_url: str = ""
    # Seconds. The worker's own Lambda timeout; the provider call's HTTP timeout stays below it
    # and the ventilator's claim lease and invoke read timeout stay above it.
    worker_timeout_s: int = Field(90, ge=1, le=900)
    # How far a claim's lease outlives the worker's timeout (time for the invoke to start).
    lease_margin_s: int = Field(30, ge=1, le=600)
    ledger_ttl_days: int = Field(7, ge=1, le=365)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA timezone {value!r} (e.g. 'Europe/Paris')") from exc
        return value

    @field_validator("maintenance_windows", mode="before")
    @classmethod
    def _window_list(cls, value: object) -> object:
        """A JSON list in the environment, or a comma-separated string."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError('not a JSON list like ["sun 02:00-04:00"]') from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("allowed_hours")
    @classmethod
    def _allowed_hours_parse(cls, value: str) -> str:
        try:
            for part in value.split(","):
                if part.strip():
                    parse_span(part, "allowed_hours")
        except WindowError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("maintenance_windows")
    @classmethod
    def _maintenance_parse(cls, value: list[str]) -> list[str]:
        try:
            for part in value:
                parse_span(part, "maintenance_windows", need_day=True)
        except WindowError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        from sluice.policies import POLICIES  # late: registered policies, including new ones

        if value not in POLICIES:
            raise ValueError(f"unknown policy {value!r}; choose one of {sorted(POLICIES)}")
        return value

    @model_validator(mode="after")
    def _fan_out_fits(self) -> ProviderSettings:
        if self.shards * self.parallelization_factor > self.max_concurrency:
            raise ValueError(
                f"shards ({self.shards}) x parallelization_factor "
                f"({self.parallelization_factor}) exceeds max_concurrency "
                f"({self.max_concurrency}): even batch size 1 would break the cap"
            )
        return self

    @model_validator(mode="after")
    def _ventilator_can_outlive_a_call(self) -> ProviderSettings:
        if self.min_ventilator_timeout_s > LAMBDA_MAX_TIMEOUT_S:
            raise ValueError(
                f"worker_timeout_s ({self.worker_timeout_s}) + lease_margin_s "
                f"({self.lease_margin_s}) + {VENTILATOR_DEADLINE_MARGIN_S} s exceeds Lambda's "
                f"{LAMBDA_MAX_TIMEOUT_S} s: no ventilator could outlive a worker call it starts"
            )
        return self

    @property
    def min_ventilator_timeout_s(self) -> int:
        """The shortest ventilator Lambda timeout that outlives any worker call it starts
        (it starts one only while its remaining time exceeds the claim's lease)."""
        return self.lease_s + VENTILATOR_DEADLINE_MARGIN_S

    @property
    def max_batch_size(self) -> int:
        """The largest batch size that keeps shards x factor x batch size <= X."""
        return max(1, self.max_concurrency // (self.shards * self.parallelization_factor))

    @property
    def window(self) -> AccessWindow:
        return AccessWindow.parse(self.timezone, self.allowed_hours, self.maintenance_windows)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def lease_s(self) -> int:
        """How long a claim holds a record: past the worker's timeout, so a live call keeps it."""
        return self.worker_timeout_s + self.lease_margin_s

    def require(self, *names: str) -> None:
        """Fail clearly when a handler needs a setting its stage config left empty."""
        missing = [f"{ENV_PREFIX}{n.upper()}" for n in names if not getattr(self, n)]
        if missing:
            raise SettingsError(
                f"missing setting(s) {', '.join(missing)}: set them in the provider's "
                ".chalice/config.json environment_variables"
            )


def load_settings(**overrides: object) -> ProviderSettings:
    """Read settings from the environment (overrides win), naming bad variables on failure."""
    try:
        return ProviderSettings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            name = f"{ENV_PREFIX}{field.upper()}" if field != "settings" else "settings"
            problems.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
        raise SettingsError("invalid sluice settings: " + "; ".join(problems)) from None
