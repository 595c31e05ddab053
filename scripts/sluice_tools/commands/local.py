"""`sluice local demo` and `sluice local up`: the local stack from the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sluice_tools.scenario import DEFAULT_SCENARIO, ScenarioError, load_scenario, shipped_scenarios


def register(commands: Any) -> None:
    local = commands.add_parser("local", help="run providers on this machine (no AWS, no Docker)")
    sub = local.add_subparsers(dest="local_command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run a provider end to end against a scenario and write a report",
        description="Start moto, the local Lambda service and a fake provider that follows a "
        "scenario; feed the records; show live progress; write summary.json and chart.png. "
        "Exits non-zero if an invariant failed.",
    )
    demo.add_argument("--scenario", default=DEFAULT_SCENARIO,
                      help=f"a TOML file, or one of: {', '.join(shipped_scenarios())} "
                      f"(default: {DEFAULT_SCENARIO})")
    demo.add_argument("--records", type=int, help="override the scenario's record count")
    demo.add_argument("--time-scale", type=float, default=60.0,
                      help="scenario seconds per wall second for schedules and phases; call "
                      "latencies stay real (default: 60, so 10 minutes pass in 10 s)")
    demo.add_argument("--report", type=Path, default=Path("reports/demo"),
                      help="report folder (default: reports/demo)")
    demo.add_argument("--provider", default="demo", help="provider folder under providers/")
    demo.add_argument("--faults", action="store_true",
                      help="run on two shards and inject workers killed after storing, Invoke "
                      "connections dropped after sending, ventilators killed mid-wave, Lambda "
                      "API throttling (Invoke, mappings, reserved concurrency), mapping updates "
                      "refused or settling late at the worst moments, hostile payloads, worker "
                      "timeouts, DynamoDB throttling and malformed records; the summary counts "
                      "each and the invariants must still hold")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    demo.add_argument("--max-wall", type=float, help="give up after this many seconds")
    demo.add_argument("--plain", action="store_true",
                      help="print progress lines instead of the live view (CI, pipes)")
    demo.set_defaults(run=run_demo)

    up = sub.add_parser("up", help="start the stack with a provider deployed and keep it running",
                        description="Start moto and the local Lambda service, deploy a provider "
                        "with its pollers and schedules, print the environment to export, and "
                        "run until Ctrl-C or SIGTERM (both stop everything it started).")
    up.add_argument("--provider", default="demo")
    up.add_argument("--scenario", default="steady", help="how the fake provider behaves")
    up.add_argument("--time-scale", type=float, default=1.0)
    up.add_argument("--moto-port", type=int, default=5000)
    up.add_argument("--lambda-port", type=int, default=5001)
    up.set_defaults(run=run_up)
    bench = sub.add_parser("bench", help="records/s and AWS calls per record, instant provider",
                           description="Run the pipeline against a 1 ms provider and report "
                           "records per second and AWS calls per fetched record by service and "
                           "operation (what sluice itself costs).")
    bench.add_argument("--records", type=int, default=1000)
    bench.add_argument("--max-concurrency", type=int, default=10)
    bench.add_argument("--provider", default="demo")
    bench.add_argument("--json", type=Path, help="also write the numbers here")
    bench.set_defaults(run=run_bench)
    provider = sub.add_parser(
        "provider", help="run only the fake provider API (slow and failing on purpose)",
        description="A real HTTP server on 127.0.0.1: GET /records/<id> answers one record, "
        "GET /stats the counters (calls, served per day, duplicates, max in flight). Knobs as "
        "in the original demo: SLOW_PERCENTAGE and ERROR_PERCENTAGE (environment or flags).")
    provider.add_argument("--port", type=int, default=8080)
    provider.add_argument("--slow-percentage", type=float,
                          default=float(os.environ.get("SLOW_PERCENTAGE", 0)))
    provider.add_argument("--error-percentage", type=float,
                          default=float(os.environ.get("ERROR_PERCENTAGE", 0)))
    provider.add_argument("--slow-ms", type=float, default=1500.0)
    provider.set_defaults(run=run_provider)
    local.set_defaults(run=lambda args: local.print_help() or 2)


def run_demo(args: argparse.Namespace) -> int:
    from sluice_tools.local.demo import DemoOptions, DemoRun
    from sluice_tools.ui import LiveProgress, print_summary

    try:
        scenario = load_scenario(args.scenario).with_records(args.records)
    except ScenarioError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    if args.time_scale <= 0:
        print("sluice: --time-scale must be > 0", file=sys.stderr)
        return 2
    options = DemoOptions(scenario=scenario, provider=args.provider, time_scale=args.time_scale,
                          report_dir=args.report, faults=args.faults, seed=args.seed,
                          max_wall_s=args.max_wall)
    with sigterm_as_interrupt(), \
            LiveProgress(scenario, plain=args.plain or not sys.stdout.isatty()) as live:
        summary = DemoRun(options, on_progress=live.update).run()
    print_summary(summary, args.report)
    return 0 if all(summary["invariants"].values()) else 1


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI job ending, a supervisor, `kill`) stops the stack as Ctrl-C does: it
    raises KeyboardInterrupt in the main thread, so every ``finally`` that stops what was
    started (the moto server process included) runs. A second SIGTERM during that cleanup is
    ignored rather than cutting it short."""
    def interrupt(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_up(args: argparse.Namespace) -> int:
    from sluice_tools.local.session import StackSession

    session = StackSession(provider=args.provider, scenario=load_scenario(args.scenario),
                           time_scale=args.time_scale, moto_port=args.moto_port,
                           lambda_port=args.lambda_port)
    with sigterm_as_interrupt():
        try:
            session.start()
            print("# the local stack is up; in another shell:")
            for key, value in session.exports().items():
                print(f"export {key}={value}")
            print(json.dumps(session.describe(), indent=2))
            print("# Ctrl-C (or SIGTERM) to stop", flush=True)
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            session.stop()  # also after a start cut short: stops what did start
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from sluice_tools.local.bench import run_bench as bench

    with sigterm_as_interrupt():
        result = bench(records=args.records, provider=args.provider,
                       max_concurrency=args.max_concurrency)
    console = Console()
    console.print(f"{result['fetched']}/{result['records']} records in {result['seconds']} s: "
                  f"[bold]{result['records_per_s']} records/s[/], "
                  f"[bold]{result['aws_calls_per_record']} AWS calls per record[/] "
                  f"({result['batches']} batches, X={result['max_concurrency']})")
    table = Table("service:operation", "calls per record")
    for op, n in result["by_operation_per_record"].items():
        table.add_row(op, f"{n:.3f}")
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["fetched"] == result["records"] else 1


def run_provider(args: argparse.Namespace) -> int:
    from sluice_tools.fake_provider import FakeProvider, PercentBehaviour

    behaviour = PercentBehaviour(args.slow_percentage, args.error_percentage,
                                 slow_ms=args.slow_ms)
    api = FakeProvider(behaviour, port=args.port).start()
    print(f"fake provider on {api.url} (slow {args.slow_percentage}%, errors "
          f"{args.error_percentage}%); Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(5)
    except KeyboardInterrupt:
        pass
    finally:
        print(json.dumps(api.stats()))
        api.stop()
    return 0
