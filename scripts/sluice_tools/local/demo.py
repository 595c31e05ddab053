"""`sluice local demo`: one provider end to end on this machine, then a report that proves it.

moto (server mode) + the local Lambda service + the fake provider driven by a scenario; the
provider's real Chalice app and the runtime package run unchanged. The run ends when every
record is in a final state (or the time budget runs out), then reconciles the stream, the
ledger and the provider's own meter into ``summary.json`` and ``chart.png``.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer

from sluice import breaker
from sluice.enqueue import entries_for, put_entries
from sluice.mapping import ENABLED_STATES, SETTLING
from sluice_tools.local.faults import Faults
from sluice_tools.local.session import StackSession
from sluice_tools.report import Trace, build_summary, write_report
from sluice_tools.scenario import Scenario


@dataclass
class DemoOptions:
    scenario: Scenario
    provider: str = "demo"
    time_scale: float = 60.0
    report_dir: Path | None = None
    faults: bool | Faults = False
    seed: int = 1
    max_wall_s: float | None = None
    update_delay_s: float = 0.5
    report_batch_item_failures: bool = True


@dataclass
class Progress:
    """What the live view shows, refreshed by the run loop."""

    scenario_s: float = 0.0
    batch_size: int = 0
    mapping_state: str = ""
    breaker: str = "closed"
    in_flight: int = 0
    p90_ms: float = 0.0
    error_rate: float = 0.0
    fetched: int = 0
    parked: int = 0
    remaining: int = 0
    total: int = 0
    rate_per_s: float = 0.0
    eta_s: float | None = None
    opens: int = 0
    events: list[str] = field(default_factory=list)


class DemoRun:
    def __init__(self, options: DemoOptions,
                 on_progress: Callable[[Progress], None] | None = None) -> None:
        self.options = options
        self.on_progress = on_progress
        self.trace = Trace(time_scale=options.time_scale)
        self.progress = Progress()
        if isinstance(options.faults, Faults):
            self.faults: Faults | None = options.faults  # rates chosen by the caller
        else:
            self.faults = Faults(options.seed) if options.faults else None
        self._rates: list[tuple[float, int]] = []

    def run(self) -> dict[str, Any]:
        opts = self.options
        # Access windows follow scenario time (its start, sped up by the time scale) when the
        # scenario has a start, or when the provider's window is closed right now: the demo
        # then begins at the window's next opening instead of waiting for it.
        start_box: list[float] = []

        def window_clock() -> float:
            if not start_box:
                return time.time()
            return start_box[0] + self.trace.scenario_s(time.time())

        session = StackSession(
            provider=opts.provider, scenario=opts.scenario, time_scale=opts.time_scale,
            update_delay_s=opts.update_delay_s, faults=self.faults, emit=self.trace.emit,
            seed=opts.seed, report_batch_item_failures=opts.report_batch_item_failures,
            scenario_time=lambda: self.trace.scenario_s(time.time()),
            window_clock=window_clock, observer=self.trace,
        )
        try:
            session.start(deliver=False)
            assert session.api is not None and session.deployed is not None
            settings = session.deployed.settings
            if opts.scenario.start:
                start_box.append(opts.scenario.start_epoch(settings.timezone, time.time()))
            elif not settings.window.is_open(time.time()):
                start_box.append(settings.window.next_change(time.time()) or time.time())
                self.trace.events.append(
                    f"0:00:00 the window is closed now: starting at its next opening, "
                    f"{datetime.fromtimestamp(start_box[0], settings.zone):%a %H:%M %Z}")
            if start_box:
                self.trace.start_epoch = start_box[0]
            session.api.on_call = self.trace.call
            entries, unique_ids, malformed = self._payloads(session.deployed.settings.provider)
            kinesis = boto3.client("kinesis")
            if self.faults is not None:
                self.faults.count("two_shards", _on_later_shards(
                    kinesis, session.deployed.settings.stream_name, entries))
            self.trace.started = time.time()
            put_entries(kinesis, session.deployed.settings.stream_name, entries,
                        lock=session.stream_lock)
            session.start_delivery()
            drained = self._wait(session, len(unique_ids) + malformed)
            session.scheduler.stop()
            for poller in session.pollers:
                poller.stop()
            self.trace.finished = time.time()
            if self.faults is not None:
                self.faults.stop()  # the world settles: convergence is judged without faults
            mapping_end = self._converge(session)
            deployed = session.deployed
            window = deployed.settings.window
            summary = build_summary(
                scenario=opts.scenario,
                settings=deployed.settings,
                ledger_items=_scan(deployed.settings.table_name),
                records=len(entries),
                unique_ids=unique_ids,
                malformed_put=malformed,
                provider=session.api,
                trace=self.trace,
                drained=drained,
                control=deployed.runtime.control().load(),
                shards=deployed.settings.shards,
                time_scale=opts.time_scale,
                faults=self.faults.summary() if self.faults else None,
                poison_ids=self.faults.poison_ids if self.faults else (),
                converged=mapping_end["converged"],
            )
            summary["mapping_at_end"] = mapping_end
            summary["ventilator_errors"] = sum(p.stats.function_errors for p in session.pollers)
            if self.faults is not None:
                summary["fault_observations"] = dict(sorted(self.faults.observed.items()))
                summary["fault_thread_errors"] = [repr(e) for e in self.faults.errors]
        finally:
            session.stop()
        if opts.report_dir is not None:
            write_report(summary, self.trace, opts.scenario, opts.report_dir, window)
        return summary

    def _payloads(self, provider: str) -> tuple[list[tuple[str, bytes]], set[str], int]:
        scenario, rng = self.options.scenario, random.Random(self.options.seed)
        ids = [f"{provider}-{i:06d}" for i in range(scenario.records)]
        entries = entries_for(ids)
        # Ad-hoc duplicates: an adviser asks again for ids the schedule already enqueued.
        dupes = rng.sample(ids, k=min(len(ids), math.ceil(scenario.duplicates * len(ids))))
        entries += entries_for(dupes, source="adhoc")
        malformed = 0
        for i in range(math.ceil(scenario.malformed * len(ids))):
            entries.insert(rng.randrange(len(entries)), (f"bad-{i}", b"\x00not a request"))
            malformed += 1
        if self.faults is not None:
            entries, bad = self.faults.stream_entries(entries)
            malformed += bad
            self.faults.pick_poison(ids)
        return entries, set(ids), malformed

    def _converge(self, session: StackSession) -> dict[str, Any]:
        """After the run, as the schedule would go on: let pending mapping updates settle, run
        the rearm once, let its update settle; the run converged if the mapping then is what
        the control item says it should be (``breaker.desired_mapping``)."""
        deployed, scheduler = session.deployed, session.scheduler
        assert deployed is not None and scheduler is not None
        lam, uuid = boto3.client("lambda"), deployed.mapping_uuids[0]
        settle_s = 30.0 + 2 * session.stack.lambdas.update_delay_s
        before = _settled(lam, uuid, settle_s)
        ventilator = deployed.runtime.ventilator(deployed.settings.ventilator_function)

        def matches(mapping: dict[str, Any]) -> tuple[bool, breaker.MappingSpec]:
            state = deployed.runtime.control().load()
            spec = breaker.desired_mapping(state, max_size=ventilator.cap(state),
                                           fallback_size=mapping["BatchSize"], now=time.time())
            actual = (mapping["State"] in ENABLED_STATES, mapping["BatchSize"])
            return actual == (spec.enabled, spec.batch_size), spec

        converged_before, _ = matches(before)
        rearm = "no rearm"
        if "rearm" in deployed.functions:
            rearm = scheduler.fire(deployed.functions["rearm"])
        after = _settled(lam, uuid, settle_s)
        converged, spec = matches(after)
        return {"state": after["State"], "batch_size": after["BatchSize"],
                "wanted": {"enabled": spec.enabled, "batch_size": spec.batch_size},
                "converged": converged, "converged_before_last_rearm": converged_before,
                "last_rearm": rearm}

    def _wait(self, session: StackSession, expected_final: int) -> bool:
        opts, scenario = self.options, self.options.scenario
        budget = opts.max_wall_s
        if budget is None:
            # The scenario's phases, then the backlog at a fraction of a healthy pace.
            budget = scenario.last_phase_s / opts.time_scale + 120 + scenario.records * 0.25
        deadline = time.time() + budget
        deployed = session.deployed
        assert deployed is not None
        control = deployed.runtime.control()
        lam = boto3.client("lambda")
        done, last_scan = (0, 0), 0.0
        while time.time() < deadline:
            # The ledger, not the day's counters: those are approximate (a ventilator killed
            # mid-batch never counts its batch, a redelivered malformed record counts again).
            if time.time() - last_scan > 2:
                last_scan = time.time()
                done = _progress(_scan(deployed.settings.table_name))
                if sum(done) >= expected_final and session.idle_for(1.0):
                    return True
            mapping = lam.get_event_source_mapping(UUID=deployed.mapping_uuids[0])
            self._refresh(session, done, expected_final, control.load(), mapping)
            time.sleep(0.25)
        return False

    def _refresh(self, session: StackSession, done: tuple[int, int], total: int, state: Any,
                 mapping: dict[str, Any]) -> None:
        p, now = self.progress, time.time()
        assert session.api is not None
        p.scenario_s = self.trace.scenario_s(now)
        p.batch_size, p.mapping_state = mapping["BatchSize"], mapping["State"]
        p.breaker, p.opens = state.label, state.opens
        p.in_flight = session.api.in_flight
        last = self.trace.last_batch()
        if last:
            p.p90_ms, p.error_rate = last["LatencyP90"], last["ErrorRate"]
        p.fetched, p.parked = done
        p.total = total
        p.remaining = max(0, total - p.fetched - p.parked)
        self._rates.append((now, p.fetched + p.parked))
        while now - self._rates[0][0] > 10:
            self._rates.pop(0)
        span = self._rates[-1][0] - self._rates[0][0]
        p.rate_per_s = (self._rates[-1][1] - self._rates[0][1]) / span if span > 1 else 0.0
        p.eta_s = p.remaining / p.rate_per_s if p.rate_per_s > 0 else None
        p.events = self.trace.events[-6:]
        if self.on_progress:
            self.on_progress(p)


def _settled(lam: Any, uuid: str, timeout_s: float) -> dict[str, Any]:
    """The mapping once no update is settling (or as it is when ``timeout_s`` ran out)."""
    deadline = time.monotonic() + timeout_s
    mapping = lam.get_event_source_mapping(UUID=uuid)
    while mapping["State"] in SETTLING and time.monotonic() < deadline:
        time.sleep(0.05)
        mapping = lam.get_event_source_mapping(UUID=uuid)
    return mapping


def _on_later_shards(kinesis: Any, stream: str, entries: list[tuple[str, bytes]]) -> int:
    """How many entries Kinesis routes past the first shard (MD5 of the partition key)."""
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    first_end = int(shards[0]["HashKeyRange"]["EndingHashKey"]) if shards else 0
    return sum(1 for key, _ in entries
               if len(shards) > 1 and int(hashlib.md5(key.encode()).hexdigest(), 16) > first_end)


def _progress(items: list[dict[str, Any]]) -> tuple[int, int]:
    """(fetched, parked) records in the ledger, malformed ones included in parked."""
    final = [i.get("status") for i in items if i.get("status") in ("fetched", "parked")
             and (i["pk"] == "#malformed" or not str(i["pk"]).startswith("#"))]
    return final.count("fetched"), final.count("parked")


def _scan(table_name: str) -> list[dict[str, Any]]:
    de = TypeDeserializer()
    items: list[dict[str, Any]] = []
    for page in boto3.client("dynamodb").get_paginator("scan").paginate(TableName=table_name):
        items += [{k: de.deserialize(v) for k, v in item.items()} for item in page["Items"]]
    return items
