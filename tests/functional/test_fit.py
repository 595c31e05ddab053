"""Tune from real behaviour: the deployed worker's provider_call lines, and `sluice simulate
--fit` recovering a known provider's capacity from a local run's own log, as the local stack
prints it and as CloudWatch Logs would hand it back (``filter-log-events``)."""

from __future__ import annotations

import contextlib
import json
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from sluice.enqueue import entries_for, put_entries
from sluice.results import ResultStore
from sluice_tools.cli import main
from sluice_tools.scenario import load_scenario, parse_scenario
from sluice_tools.simulate.fit import calls_of, fit_phases, read_log


def provider_calls(logs: list[dict]) -> list[dict]:
    return [doc for doc in logs if doc.get("event") == "provider_call"]


# -- the deployed worker's line --------------------------------------------------------------


def test_the_deployed_worker_logs_one_line_per_provider_call_and_none_without_one(demo):
    demo.ventilate(demo.event(["acct-1", "acct-2", "acct-3"]))
    lines = provider_calls(demo.logs)
    assert len(lines) == 3
    assert all(line["provider"] == "demo" and line["ok"] and line["latency_ms"] > 0
               and line["started_at"] == demo.clock() for line in lines)
    # acct-4's result is already stored (a worker died before marking it): no call, no line;
    # acct-1 is fetched today: the ventilator skips it.
    settings = demo.settings
    ResultStore(settings.result_bucket, provider=settings.provider,
                prefix=settings.result_prefix).put("acct-4", demo.day, {"record_id": "acct-4"})
    demo.ventilate(demo.event(["acct-4", "acct-1"]))
    assert demo.provider.stats()["calls"] == 3
    assert len(provider_calls(demo.logs)) == 3
    text = json.dumps(provider_calls(demo.logs))
    assert "acct-" not in text and demo.provider.url not in text


def test_a_failing_call_logs_its_kind_and_status(demo, behaviour):
    behaviour.error_percentage = 100
    demo.ventilate(demo.event(["acct-9"]))
    [line] = provider_calls(demo.logs)
    assert (line["ok"], line["error_kind"], line["status"], line["permanent"]) == \
        (False, "http_503", 503, False)


# -- a local run of a provider of known capacity, fitted back ---------------------------------

CAPACITY = 4
KNOWN = {
    "name": "known-capacity",
    "records": 200,
    "provider": {"capacity": CAPACITY, "latency_ms": {"p50": 150, "p90": 300},
                 "error_rate": 0.01, "overload_error_rate": 0.3},
    # X above capacity: the policy keeps probing past it, so the log shows the knee.
    "settings": {"max_concurrency": 8},
}
TIME_SCALE = 60  # the rearm fires every 10 s, should the circuit open


@dataclass
class LocalRun:
    log: Path  # the local stack's stdout: every runtime line, provider_call ones included
    export: Path  # the worker's log group, as `aws logs filter-log-events` prints it
    calls: int  # what the fake provider counted


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> LocalRun:
    from sluice_tools.local.session import StackSession

    out = tmp_path_factory.mktemp("fit")
    scenario = parse_scenario(KNOWN)
    session = StackSession(provider="demo", scenario=scenario, time_scale=TIME_SCALE,
                           update_delay_s=0.05, seed=5)
    log = out / "stack.log"
    try:
        # The runtime's default sink is stdout, as `sluice local up > stack.log` would keep it.
        with log.open("w") as stdout, contextlib.redirect_stdout(stdout):
            session.start(deliver=False)
            settings = session.deployed.settings
            put_entries(boto3.client("kinesis"), settings.stream_name,
                        entries_for(f"demo-{i:06d}" for i in range(scenario.records)),
                        lock=session.stream_lock)
            session.start_delivery()
            # A loaded machine may not serve them all in time: the calls made are enough.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                    session.api.stats()["distinct_served"] >= scenario.records
                    and session.idle_for(0.5)):
                time.sleep(0.2)
            for poller in session.pollers:
                poller.stop()
        calls = session.api.stats()["calls"]
        export = out / "worker-events.json"
        export.write_text(json.dumps(_through_cloudwatch(
            log, session.deployed.functions["worker"]), indent=2))
    finally:
        session.stop()
    return LocalRun(log, export, calls)


def _through_cloudwatch(log: Path, worker: str) -> dict:
    """In AWS the worker's stdout lands in its log group: put the lines there (moto's
    CloudWatch Logs) and read them back as `aws logs filter-log-events` does."""
    logs = boto3.client("logs")
    group, stream = f"/aws/lambda/{worker}", "2026/11/28/[$LATEST]3893abcd"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    lines = [line for line in log.read_text().splitlines() if '"provider_call"' in line]
    events = sorted(({"timestamp": int(json.loads(line)["started_at"] * 1000),
                      "message": line + "\n"} for line in lines), key=lambda e: e["timestamp"])
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
    found = [e for page in logs.get_paginator("filter_log_events").paginate(logGroupName=group)
             for e in page["events"]]
    return {"events": found, "searchedLogStreams": []}


def test_a_local_run_s_log_gives_back_the_provider_s_capacity(local_run):
    read = read_log(local_run.log)
    assert len(read.calls) == local_run.calls  # one line per call the provider saw
    assert len(read.calls) >= 150
    assert read.skipped > 0  # the batch and rearm lines around them
    fit = fit_phases(calls_of(read), time_scale=TIME_SCALE)
    [phase] = fit.phases
    print(f"fitted capacity {phase.knee.capacity} (plausible {phase.knee.plausible}) for "
          f"{CAPACITY}, from {len(read.calls)} calls")
    assert abs(phase.knee.capacity - CAPACITY) <= 1
    assert phase.knee.reached and fit.max_in_flight > CAPACITY
    assert phase.knee.error_rate < phase.knee.overload_error_rate
    # Through CloudWatch Logs and back: the same calls, the same fit.
    exported = read_log(local_run.export)
    assert exported.shape == "CloudWatch Logs events"
    assert sorted(c.started_at for c in exported.calls) == \
        sorted(c.started_at for c in read.calls)
    again = fit_phases(calls_of(exported), time_scale=TIME_SCALE)
    assert again.phases[0].knee == phase.knee


def test_the_cli_prints_the_fitted_scenario(local_run, capsys):
    assert main(["simulate", "--fit", str(local_run.log), "--fit-time-scale",
                 str(TIME_SCALE)]) == 0
    out, err = capsys.readouterr()
    scenario = parse_scenario(tomllib.loads(out), "stdout")  # the scenario alone on stdout
    assert abs(scenario.provider.capacity - CAPACITY) <= 1
    assert scenario.settings["max_concurrency"] >= CAPACITY + 1
    assert "provider_call lines of demo" in err and "<- capacity" in err


def test_the_cli_writes_the_scenario_and_compares_policies_on_it(local_run, tmp_path, capsys):
    fitted = tmp_path / "fitted.toml"
    assert main(["simulate", "--fit", str(local_run.export), "--fit-time-scale",
                 str(TIME_SCALE), "--fit-out", str(fitted), "--compare",
                 "--records", "150"]) == 0
    out = capsys.readouterr().out
    scenario = load_scenario(fitted)
    assert scenario.name == "fitted-worker-events"
    assert abs(scenario.provider.capacity - CAPACITY) <= 1
    assert "CloudWatch Logs events" in out and f"wrote {fitted}" in out
    assert out.count("fitted-worker-events") >= 2  # a row per policy: seed and default


# -- what the command refuses ------------------------------------------------------------------


def test_clear_errors_for_a_missing_or_empty_log_and_several_providers(tmp_path, capsys):
    assert main(["simulate", "--fit", str(tmp_path / "nope.log")]) == 2
    assert "no such log file" in capsys.readouterr().err
    other = tmp_path / "other.log"
    other.write_text('{"_aws": {}, "event": "batch"}\nSTART RequestId: x\n')
    assert main(["simulate", "--fit", str(other)]) == 2
    err = capsys.readouterr().err
    assert "no provider_call lines" in err and "2 lines or events read" in err
    two = tmp_path / "two.log"
    two.write_text("\n".join(json.dumps({
        "event": "provider_call", "provider": name, "started_at": 1.8e9 + i,
        "latency_ms": 100.0, "ok": True}) for i, name in enumerate(["a", "b", "b"])))
    assert main(["simulate", "--fit", str(two)]) == 2
    assert "--fit-provider" in capsys.readouterr().err
    assert main(["simulate", "--fit", str(two), "--fit-provider", "b"]) == 0
    assert main(["simulate", "--fit", str(two), "steady"]) == 2
    assert "add --compare" in capsys.readouterr().err
    assert main(["simulate"]) == 2
    assert "or --fit LOGS" in capsys.readouterr().err
