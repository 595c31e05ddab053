"""`sluice simulate --fit`: the worker's provider_call line, reading it back from the shapes a
log comes in, in-flight reconstruction, the knee and the phases, on calls made up here."""

from __future__ import annotations

import json
import math
import random
import tomllib
from dataclasses import dataclass
from typing import Any

import pytest

from sluice.errors import ProviderError
from sluice.worker import run_worker
from sluice_tools.scenario import parse_scenario
from sluice_tools.simulate.fit import (
    Call,
    FitError,
    calls_of,
    fit_knee,
    fit_phases,
    parse_log,
    scenario_toml,
    with_in_flight,
)

T0 = 1_800_000_000.0
Z90 = 1.2815515655446004

# -- the worker's line -------------------------------------------------------------------------


class Store:
    def __init__(self, found: bool = False, fail: str = "") -> None:
        self.found, self.fail, self.puts = found, fail, []

    def exists(self, record_id: str, day: str) -> bool:
        if self.fail == "exists":
            raise ConnectionError("s3 down")
        return self.found

    def put(self, record_id: str, day: str, result: Any) -> str:
        if self.fail == "put":
            raise ConnectionError("s3 down")
        self.puts.append(record_id)
        return f"key/{record_id}"


class Ledger:
    def complete(self, record_id: str, day: str, token: str, now: float) -> bool:
        return True


RECORD = "acct-US0378331005-7731"
EVENT = {"record_id": RECORD, "day": "2026-11-27", "claim_token": "tok-SECRET-claim"}


def work(fetch, store: Store | None = None, emit=None) -> tuple[dict[str, Any], list[dict]]:
    lines: list[dict] = []
    ticks = iter(range(100))
    outcome = run_worker(EVENT, fetch=fetch, store=store or Store(), ledger=Ledger(),
                         clock=lambda: T0, perf=lambda: next(ticks) * 0.25,
                         emit=emit or lines.append, provider="quotes")
    return outcome, lines


def served(record_id: str) -> dict[str, Any]:
    return {"record_id": record_id, "data": {"iban": "GB33BUKB20201555555555", "value": 42}}


def test_a_served_call_logs_one_line_with_its_timing_and_nothing_else():
    outcome, lines = work(served)
    assert outcome["ok"] is True
    assert lines == [{"event": "provider_call", "provider": "quotes", "started_at": T0,
                      "latency_ms": 250.0, "ok": True, "error_kind": None, "status": None,
                      "permanent": False, "retry_after_s": 0.0}]


@pytest.mark.parametrize(("error", "kind", "status", "permanent"), [
    (ProviderError("http_503"), "http_503", 503, False),
    (ProviderError("http_429"), "http_429", 429, False),
    (ProviderError("http_404", permanent=True), "http_404", 404, True),
    (ProviderError("timeout"), "timeout", None, False),
    (KeyError("data"), "worker_KeyError", None, False),
])
def test_a_failed_call_logs_its_kind_and_status(error, kind, status, permanent):
    def fetch(record_id):
        raise error

    outcome, lines = work(fetch)
    assert outcome["ok"] is False
    assert len(lines) == 1
    line = lines[0]
    assert (line["ok"], line["error_kind"], line["status"], line["permanent"]) == \
        (False, kind, status, permanent)


def test_the_line_never_carries_ids_payloads_urls_messages_or_credentials():
    url = f"https://api.example.com/v1/records/{RECORD}?apikey=SECRET-KEY"

    def leaky_kind(record_id):
        raise ProviderError(f"not found: {record_id}")

    def leaky_kind_id_only(record_id):
        raise ProviderError(record_id)

    def leaky_message(record_id):
        raise ValueError(f"GET {url} failed with body {served(record_id)}")

    lines = []
    for fetch in (served, leaky_kind, leaky_kind_id_only, leaky_message):
        lines += work(fetch)[1]
    assert [line["error_kind"] for line in lines] == \
        [None, "unclassified", "unclassified", "worker_ValueError"]
    text = json.dumps(lines)
    for secret in (RECORD, "US0378331005", "SECRET", "api.example.com", "GB33BUKB", "iban",
                   "tok-", EVENT["day"]):
        assert secret not in text
    assert {key for line in lines for key in line} == {
        "event", "provider", "started_at", "latency_ms", "ok", "error_kind", "status",
        "permanent", "retry_after_s"}


def test_no_line_when_no_call_is_made():
    """A result already stored is not a call (no line: it would read as a 0 ms call), and a
    worker that cannot tell whether it is stored does not call."""
    assert work(served, Store(found=True))[1] == []
    outcome, lines = work(served, Store(fail="exists"))
    assert outcome["ok"] is False and lines == []


def test_a_served_call_is_logged_served_even_if_storing_it_fails():
    outcome, lines = work(served, Store(fail="put"))
    assert outcome["error"] == "store_ConnectionError"
    assert [line["ok"] for line in lines] == [True]


def test_a_log_sink_that_fails_never_fails_the_call():
    def broken(doc):
        raise OSError("stdout closed")

    outcome, _ = work(served, emit=broken)
    assert outcome["ok"] is True


# -- reading -----------------------------------------------------------------------------------


def line(started: float, latency_ms: float = 100.0, ok: bool = True, **extra: Any) -> dict:
    doc = {"event": "provider_call", "provider": "demo", "started_at": started,
           "latency_ms": latency_ms, "ok": ok, "error_kind": None if ok else "http_503",
           "status": None if ok else 503, "permanent": False}
    return {**doc, **extra}


LINES = [line(T0), line(T0 + 0.5, ok=False), line(T0 + 1.0, 250.0)]
BATCH = {"_aws": {"Timestamp": 1}, "event": "batch", "Provider": "demo", "BatchSize": 4}


def test_json_lines_among_other_output():
    text = "\n".join([
        "# the local stack is up; in another shell:",
        "export AWS_ENDPOINT_URL=http://127.0.0.1:5000",
        json.dumps(BATCH),
        *[json.dumps(doc) for doc in LINES],
        "{not json at all",
        '{"event": "provider_call", "x": ' + "[" * 50_000,  # a nesting bomb: skipped
        "",
    ])
    read = parse_log(text)
    assert [(c.started_at, c.ok, c.latency_ms) for c in read.calls] == \
        [(T0, True, 100.0), (T0 + 0.5, False, 100.0), (T0 + 1.0, True, 250.0)]
    assert read.calls[1].status == 503 and read.calls[1].error_kind == "http_503"
    assert (read.entries, read.skipped, read.invalid) == (8, 5, 0)


def test_lambda_and_aws_logs_tail_lines():
    request = "8f507cfc-4697-b07a-ac58fc914c95"
    text = "\n".join([
        f"START RequestId: {request} Version: $LATEST",
        f"2026-11-27T09:00:00.000Z\t{request}\t{json.dumps(LINES[0])}",
        f"[INFO]\t2026-11-27T09:00:00.500Z\t{request}\t{json.dumps(LINES[1])}",
        f"2026-11-27T09:00:01.000000+00:00 2026/11/27/[$LATEST]3893abc {json.dumps(LINES[2])}",
        f"END RequestId: {request}",
        f"REPORT RequestId: {request}\tDuration: 15.74 ms\tBilled Duration: 16 ms",
    ])
    read = parse_log(text)
    assert [c.started_at for c in read.calls] == [T0, T0 + 0.5, T0 + 1.0]
    assert read.skipped == 3


def cloudwatch_events(docs: list[dict]) -> list[dict]:
    return [{"logStreamName": "2026/11/27/[$LATEST]3893abc", "timestamp": int(d["started_at"])
             * 1000, "message": json.dumps(d) + "\n", "ingestionTime": 1, "eventId": str(i)}
            for i, d in enumerate(docs)]


def test_filter_log_events_output_and_a_bare_array_of_events():
    events = cloudwatch_events(LINES)
    events.insert(1, {"timestamp": 1, "message": "START RequestId: x Version: $LATEST\n"})
    for doc in ({"events": events, "searchedLogStreams": []}, events):
        read = parse_log(json.dumps(doc, indent=2))
        assert read.shape == "CloudWatch Logs events"
        assert [c.started_at for c in read.calls] == [T0, T0 + 0.5, T0 + 1.0]
        assert (read.entries, read.skipped) == (4, 1)


def test_logs_insights_results_json_and_csv():
    rows = [[{"field": "@timestamp", "value": "2026-11-27 09:00:00.000"},
             {"field": "@message", "value": json.dumps(d)}] for d in LINES]
    read = parse_log(json.dumps({"results": rows, "status": "Complete"}))
    assert len(read.calls) == 3
    table = [{"@timestamp": "2026-11-27 09:00:00.000", "@message": json.dumps(d)}
             for d in LINES]
    assert len(parse_log(json.dumps(table)).calls) == 3
    csv_text = "@timestamp,@message\n" + "\n".join(
        '2026-11-27 09:00:00.000,"' + json.dumps(d).replace('"', '""') + '"' for d in LINES)
    read = parse_log(csv_text)
    assert len(read.calls) == 3 and read.skipped == 1


def test_malformed_lines_are_counted_and_duplicates_dropped():
    bad = [line(T0, latency_ms=-1), line(T0, ok="yes"), {"event": "provider_call"},
           line(True), line(float("nan")) | {"started_at": "soon"}]
    text = "\n".join(json.dumps(d) for d in [*LINES, LINES[0], *bad])
    read = parse_log(text)
    assert (len(read.calls), read.duplicates, read.invalid) == (3, 1, 5)


def test_one_provider_at_a_time():
    read = parse_log("\n".join(json.dumps(d) for d in
                               [*LINES, line(T0, provider="quotes"), line(T0 + 1, provider="x")]))
    with pytest.raises(FitError, match=r"several providers.*demo \(3 calls\)"):
        calls_of(read)
    assert len(calls_of(read, "quotes")) == 1
    with pytest.raises(FitError, match="no provider_call lines for provider 'nope'"):
        calls_of(read, "nope")


# -- in flight ---------------------------------------------------------------------------------


def call(start: float, latency_s: float, ok: bool = True) -> Call:
    return Call(T0 + start, latency_s * 1000, ok)


def test_in_flight_counts_calls_started_and_not_yet_ended_itself_included():
    calls = [call(0, 1.0), call(0.5, 1.0), call(1.0, 1.0), call(1.2, 0.1), call(3, 1)]
    assert [c.in_flight for c in with_in_flight(reversed(calls))] == [1, 2, 2, 3, 1]


def test_calls_starting_together_arrive_one_after_the_other():
    assert [c.in_flight for c in with_in_flight([call(0, 1)] * 4)] == [1, 2, 3, 4]


# -- the knee ----------------------------------------------------------------------------------


@dataclass
class State:
    capacity: int = 4
    p50_ms: float = 150.0
    p90_ms: float = 400.0
    error_rate: float = 0.01
    overload_error_rate: float = 0.3
    outage: bool = False


def stretched(state: State, rank: int, rng: random.Random) -> tuple[float, bool]:
    """The current fake provider: latency x rank / capacity above capacity, a fixed
    overload error rate."""
    sigma = math.log(state.p90_ms / state.p50_ms) / Z90
    latency = math.exp(rng.gauss(math.log(state.p50_ms), sigma))
    if state.outage:
        return 20.0, False
    over = rank > state.capacity
    ok = rng.random() >= (state.overload_error_rate if over else state.error_rate)
    return latency * max(1.0, rank / state.capacity), ok


def queueing(state: State, rank: int, rng: random.Random) -> tuple[float, bool]:
    """A queueing provider: latency creeps up near capacity, calls beyond it wait for a slot,
    errors grow with the overload ratio (no fixed overload rate)."""
    sigma = math.log(state.p90_ms / state.p50_ms) / Z90
    base = math.exp(rng.gauss(math.log(state.p50_ms), sigma))
    load = rank / state.capacity
    latency = base * (1 + 0.3 * min(load, 1.0) ** 4)
    if rank > state.capacity:
        latency += state.p50_ms * (rank - state.capacity) / state.capacity * 2
    error = state.error_rate + (min(0.9, 0.35 * (load - 1)) if load > 1 else 0.0)
    return latency, rng.random() >= error


def batch_run(phases: list[tuple[float, State]], *, x: int, until_s: float, seed: int = 1,
              model=stretched) -> list[Call]:
    """Calls as the batch dispatch makes them: B calls arriving together, the next batch after
    the slowest; B climbs by one after a clean batch and halves after one with errors; at 1
    and failing, the circuit opens for 10 minutes."""
    rng, t, size, calls = random.Random(seed), 0.0, 1, []
    while t < until_s:
        state = next(s for at, s in reversed(phases) if at <= t)
        ends, failed = [], False
        for rank in range(1, size + 1):
            latency_ms, ok = model(state, rank, rng)
            start = t + rank * 0.002
            calls.append(Call(T0 + start, round(latency_ms, 2), ok,
                              None if ok else "http_503", None if ok else 503))
            ends.append(start + latency_ms / 1000)
            failed = failed or not ok
        t = max(ends) + 0.05
        if failed and size == 1:
            t += 600
        size = max(1, size // 2) if failed else min(x, size + 1)
    return calls


def test_the_knee_of_a_stretching_provider_is_its_capacity():
    calls = with_in_flight(batch_run([(0, State(capacity=4))], x=8, until_s=600))
    knee = fit_knee(calls)
    assert knee.capacity == 4 and knee.reached
    assert knee.error_rate == pytest.approx(0.01, abs=0.01)
    assert knee.overload_error_rate == pytest.approx(0.3, abs=0.06)
    assert knee.p50_ms == pytest.approx(150, rel=0.15)
    assert knee.p90_ms == pytest.approx(400, rel=0.2)
    assert [row.in_flight for row in knee.levels] == list(range(1, 9))


@pytest.mark.parametrize("capacity", [1, 3, 6, 10])
@pytest.mark.parametrize("seed", [1, 2])
def test_the_knee_of_a_queueing_provider_is_within_one_of_its_capacity(capacity, seed):
    calls = batch_run([(0, State(capacity=capacity))], x=capacity * 2, until_s=600,
                      seed=seed, model=queueing)
    assert abs(fit_knee(with_in_flight(calls)).capacity - capacity) <= 1


def test_either_signal_alone_finds_the_knee():
    errors_only = State(capacity=5, p50_ms=100, p90_ms=300)
    calls = with_in_flight(batch_run([(0, errors_only)], x=10, until_s=600,
                                     model=lambda s, r, g: (stretched(s, 1, g)[0],
                                                            stretched(s, r, g)[1])))
    assert fit_knee(calls).capacity == 5
    latency_only = State(capacity=5, p50_ms=100, p90_ms=200, overload_error_rate=0.01)
    calls = with_in_flight(batch_run([(0, latency_only)], x=10, until_s=300))
    assert fit_knee(calls).capacity == 5


def test_a_provider_never_pushed_past_its_capacity_gives_a_lower_bound():
    calls = with_in_flight(batch_run([(0, State(capacity=20))], x=6, until_s=600))
    knee = fit_knee(calls)
    assert (knee.capacity, knee.reached, knee.overload_error_rate) == (6, False, None)


# -- phases and the scenario -------------------------------------------------------------------


@pytest.fixture(scope="module")
def story():
    """degrade-and-recover, roughly: capacity 10, 3 from 20m, an outage from 40m to 65m, 10
    again after."""
    slow = {"p50_ms": 400.0, "p90_ms": 900.0}
    return fit_phases(batch_run([(0, State(capacity=10, **slow)),
                                 (1200, State(capacity=3, **slow)),
                                 (2400, State(capacity=3, outage=True, **slow)),
                                 (3900, State(capacity=10, **slow))], x=12, until_s=5400))


def test_phases_follow_capacity_changes_and_outages(story):
    fit = story
    phases = [(p.at_s, p.outage, p.knee.capacity if p.knee else None) for p in fit.phases]
    assert [outage for _, outage, _ in phases] == [False, False, True, False]
    capacities = [cap for _, _, cap in phases]
    assert abs(capacities[0] - 10) <= 1
    assert abs(capacities[1] - 3) <= 1
    assert abs(capacities[3] - 10) <= 1
    starts = [at for at, _, _ in phases]
    assert starts[0] == 0
    assert 1200 - 120 <= starts[1] <= 1200 + 120
    assert 2400 - 120 <= starts[2] <= 2400 + 120
    # The outage is seen to end at the first probe that is served (probes are 10 min apart).
    assert 3900 <= starts[3] <= 3900 + 660


def test_the_fitted_scenario_is_one_the_simulator_loads(story):
    fit = story
    text = scenario_toml(fit, name="fitted-story", source="/var/log/worker.log")
    scenario = parse_scenario(tomllib.loads(text), "fitted")
    assert scenario.name == "fitted-story"
    assert abs(scenario.provider.capacity - 10) <= 1 and not scenario.provider.outage
    assert scenario.settings == {"max_concurrency": fit.max_in_flight}
    assert scenario.records == fit.served
    assert [bool(p.changes.get("outage")) for p in scenario.phases] == [False, True, False]
    assert abs(scenario.state_at(1800).capacity - 3) <= 1
    assert scenario.state_at(3000).outage
    assert not scenario.state_at(5000).outage
    assert abs(scenario.state_at(5000).capacity - 10) <= 1
    assert "worker.log" in scenario.description


def test_a_log_that_starts_in_an_outage():
    fit = fit_phases(batch_run([(0, State(outage=True)), (1500, State(capacity=5))], x=8,
                               until_s=2400))
    assert [p.outage for p in fit.phases] == [True, False]
    scenario = parse_scenario(tomllib.loads(scenario_toml(fit, name="x")), "fitted")
    assert scenario.provider.outage and abs(scenario.provider.capacity - 5) <= 1
    assert scenario.phases[0].changes["outage"] is False
    assert not scenario.state_at(2000).outage


def test_a_steady_provider_is_one_phase_and_a_local_run_scales_its_times():
    calls = batch_run([(0, State(capacity=6))], x=8, until_s=120)
    fit = fit_phases(calls, time_scale=60)
    assert len(fit.phases) == 1 and fit.phases[0].knee.capacity == 6
    assert fit.phases[0].end_s >= 100 * 60


def test_nothing_to_fit():
    with pytest.raises(FitError):
        fit_phases([])
    all_failed = [Call(T0 + i, 20.0, False, "http_503") for i in range(50)]
    with pytest.raises(FitError, match="every call failed"):
        scenario_toml(fit_phases(all_failed), name="x")
