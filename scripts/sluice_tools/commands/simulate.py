"""`sluice simulate`: policies against scenarios in virtual time, in seconds."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

COLUMNS = [
    ("makespan", "makespan_s", lambda v: f"{v / 60:.1f} min"),
    ("goodput", "goodput_ratio", lambda v: f"{v:.2f}"),
    ("over thr.", "calls_over_threshold", str),
    ("failed", "calls_failed", str),
    ("in outage", "calls_during_outage", str),
    ("back off", "time_to_back_off_s", lambda v: "-" if v is None else f"{v:.1f} s"),
    ("to full", "time_to_full_s", lambda v: "-" if v is None else f"{v:.0f} s"),
    ("max in flight", "max_in_flight", str),
    ("dupes", "duplicate_fetches", str),
    ("lost", "lost", str),
]


def register(commands: Any) -> None:
    p = commands.add_parser(
        "simulate", help="compare and tune batch-size policies in virtual time",
        description="Run the runtime's real decision code (ventilator, policy, breaker, "
        "rearm) against a simulated stream, mapping, fan-out and provider in virtual time.")
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO",
                   help="TOML file(s) or shipped names (steady, degrade-and-recover, ...)")
    p.add_argument("--policy", action="append",
                   help="policy name (repeat with --compare; default: default, or "
                   "seed and default with --compare)")
    p.add_argument("--compare", action="store_true",
                   help="every policy on every scenario: one table, one chart")
    p.add_argument("--records", type=int, help="override the scenarios' record counts")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the result(s) as JSON")
    p.add_argument("--chart", type=Path, help="write a chart (PNG)")
    p.add_argument("--update-delay", type=float, default=2.0,
                   help="seconds a mapping update takes to settle (default 2)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sluice.policies import POLICIES
    from sluice_tools.scenario import ScenarioError, load_scenario

    try:
        scenarios = [load_scenario(s).with_records(args.records) for s in args.scenarios]
    except ScenarioError as exc:
        print(f"sluice simulate: {exc}", file=sys.stderr)
        return 2
    policies = args.policy or (["seed", "default"] if args.compare else ["default"])
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        print(f"sluice simulate: unknown policy {unknown[0]!r}; registered: "
              f"{', '.join(sorted(POLICIES))}", file=sys.stderr)
        return 2
    if not args.compare and (len(scenarios) > 1 or len(policies) > 1):
        print("sluice simulate: several scenarios or policies need --compare", file=sys.stderr)
        return 2
    runs = simulate_all(scenarios, policies, args.seed, args.update_delay)
    summaries = [s for _, s in runs]
    if args.json:
        payload: Any = summaries if args.compare else summaries[0]
        args.json.write_text(json.dumps(payload, indent=2, default=_json_safe) + "\n")
    if args.chart:
        from sluice_tools.simulate.chart import write_compare_chart, write_run_chart

        if args.compare:
            write_compare_chart(runs, args.chart)
        else:
            write_run_chart(runs[0][0], summaries[0], args.chart)
    print_table(summaries)
    failed = [s for s in summaries if not all(s["invariants"].values())]
    for s in failed:
        bad = [k for k, ok in s["invariants"].items() if not ok]
        print(f"INVARIANT FAILED: {s['scenario']} / {s['policy']}: {', '.join(bad)}")
    return 1 if failed else 0


def simulate_all(scenarios, policies, seed, update_delay):
    from sluice_tools.simulate.engine import Simulation

    runs = []
    for scenario in scenarios:
        for policy in policies:
            sim = Simulation(scenario, policy=policy, seed=seed, update_delay_s=update_delay)
            runs.append((sim, sim.run()))
    return runs


def print_table(summaries: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sluice simulate (virtual time)")
    table.add_column("scenario")
    table.add_column("policy")
    for title, _, _ in COLUMNS:
        table.add_column(title, justify="right")
    for s in summaries:
        table.add_row(s["scenario"], s["policy"],
                      *[_fmt(fmt, s[key]) for _, key, fmt in COLUMNS])
    Console(width=160).print(table)


def _fmt(fmt, value) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "never"
    return fmt(value)


def _json_safe(value: Any) -> Any:
    return str(value)
