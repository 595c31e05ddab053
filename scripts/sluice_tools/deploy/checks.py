"""What a deploy refuses before anything reaches AWS. Pure: values in, problems out.

- The fan-out: shards x parallelization factor x the decorator's batch size <= X.
- Deadlines: the worker's Lambda timeout *is* ``worker_timeout_s`` (the claim's lease and the
  invoke's read timeout are computed from it); the ventilator starts a call only while it has
  more than ``worker_timeout_s + lease_margin_s`` left, so its own timeout must exceed that by
  a margin, or it would start no call at all (or, worse, be killed with calls in flight).
- Reserved concurrency: the platform enforces X too. The worker's reserved concurrency is X,
  so even a misbehaving ventilator cannot have more than X calls in flight (the excess is
  throttled, which the ventilator treats as a definite rejection). Reserving it takes from
  the account's unreserved pool, which every other function shares: the deploy refuses to
  leave less than a floor (AWS itself keeps 100).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sluice.settings import LAMBDA_MAX_TIMEOUT_S, VENTILATOR_DEADLINE_MARGIN_S, ProviderSettings

DEFAULT_CONCURRENCY_FLOOR = 100


class DeployRefused(ValueError):
    """Settings that must not reach AWS; the message says what to change."""


def fan_out_problems(s: ProviderSettings, batch_size: int, where: str) -> list[str]:
    fan_out = s.shards * s.parallelization_factor
    if fan_out * batch_size <= s.max_concurrency:
        return []
    return [f"{where}: shards ({s.shards}) x parallelization_factor "
            f"({s.parallelization_factor}) x batch size ({batch_size}, from "
            f"@app.on_kinesis_record) = {fan_out * batch_size} exceeds max_concurrency "
            f"({s.max_concurrency}): lower batch_size in app.py to {s.max_batch_size} or raise "
            "SLUICE_MAX_CONCURRENCY"]


def timeout_problems(s: ProviderSettings, *, ventilator_timeout_s: int,
                     worker_timeout_s: int, where: str) -> list[str]:
    problems = []
    if worker_timeout_s != s.worker_timeout_s:
        problems.append(
            f"{where}: the worker's Lambda timeout ({worker_timeout_s} s, lambda_functions."
            f"worker.lambda_timeout) differs from SLUICE_WORKER_TIMEOUT_S "
            f"({s.worker_timeout_s} s): the claim lease and the invoke's read timeout are "
            "computed from the setting, so they must agree; set both to the same value")
    for name, value in (("worker", worker_timeout_s), ("ventilator", ventilator_timeout_s)):
        if value > LAMBDA_MAX_TIMEOUT_S:
            problems.append(f"{where}: the {name}'s Lambda timeout ({value} s) exceeds "
                            f"Lambda's maximum ({LAMBDA_MAX_TIMEOUT_S} s)")
    if ventilator_timeout_s < s.min_ventilator_timeout_s:
        problems.append(
            f"{where}: the ventilator's Lambda timeout ({ventilator_timeout_s} s) is too short: "
            f"it starts a worker call only while it has more than worker_timeout_s "
            f"({s.worker_timeout_s}) + lease_margin_s ({s.lease_margin_s}) seconds left, plus "
            f"{VENTILATOR_DEADLINE_MARGIN_S} s for the batch's bookkeeping: set lambda_functions."
            f"ventilator.lambda_timeout to at least {s.min_ventilator_timeout_s}")
    return problems


def reserved_concurrency_problems(s: ProviderSettings, configured: Any, where: str) -> list[str]:
    """The config's ``reserved_concurrency`` for the worker (read by a plain `chalice
    deploy`) must be X; the deploy's template sets X regardless."""
    if configured is None or configured == s.max_concurrency:
        return []
    return [f"{where}: lambda_functions.worker.reserved_concurrency ({configured}) must equal "
            f"SLUICE_MAX_CONCURRENCY ({s.max_concurrency}): the platform's cap is X"]


@dataclass(frozen=True)
class Headroom:
    """The account's concurrency before and after reserving the worker's."""

    account_limit: int
    unreserved_now: int
    reserved_now: int  # this worker's current reservation (0 if none or no function yet)
    wanted: int
    floor: int

    @property
    def unreserved_after(self) -> int:
        return self.unreserved_now + self.reserved_now - self.wanted

    @property
    def ok(self) -> bool:
        return self.unreserved_after >= self.floor

    def describe(self) -> str:
        return (f"account concurrency {self.account_limit}: unreserved {self.unreserved_now} "
                f"now, {self.unreserved_after} after reserving {self.wanted} for the worker "
                f"(floor {self.floor})")


def headroom(account_settings: Mapping[str, Any], reserved_now: int, wanted: int,
             floor: int = DEFAULT_CONCURRENCY_FLOOR) -> Headroom:
    limit = account_settings["AccountLimit"]
    return Headroom(limit["ConcurrentExecutions"], limit["UnreservedConcurrentExecutions"],
                    reserved_now, wanted, floor)


def account_headroom(lambda_client: Any, worker_function: str, wanted: int,
                     floor: int = DEFAULT_CONCURRENCY_FLOOR) -> Headroom:
    """Reads GetAccountSettings and the worker's current reservation; refuses below floor."""
    try:
        current = lambda_client.get_function_concurrency(FunctionName=worker_function)
        reserved_now = int(current.get("ReservedConcurrentExecutions", 0))
    except lambda_client.exceptions.ResourceNotFoundException:
        reserved_now = 0  # first deploy: the function does not exist yet
    room = headroom(lambda_client.get_account_settings(), reserved_now, wanted, floor)
    if not room.ok:
        raise DeployRefused(
            f"{room.describe()}: reserving {wanted} would leave {room.unreserved_after} "
            f"unreserved, below the floor of {floor} that every other function in the account "
            "shares. Ask AWS for a higher concurrency quota, lower X, or pass "
            "--concurrency-floor if you know the account's other functions need less")
    return room
