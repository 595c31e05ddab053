"""`sluice simulate`: policies and dispatch modes against scenarios in virtual time, in seconds."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _goodput(summary: dict[str, Any]) -> Any:
    """Against the physical limit where the engine reports it, else the older oracle."""
    return summary.get("goodput", summary.get("goodput_ratio"))


def _dispatch(summary: dict[str, Any]) -> str:
    return summary.get("dispatch", "batch")


def _mean(values: list[Any]) -> Any:
    known = [v for v in values if v is not None]
    if not known:
        return None
    if any(isinstance(v, float) and math.isinf(v) for v in known):
        return math.inf
    return statistics.fmean(known)


def _worst(values: list[Any]) -> Any:
    return max(values)


# (title, value of a summary, format, how several seeds combine)
COLUMNS: list[tuple[str, Callable[[dict[str, Any]], Any], Callable[[Any], str],
                    Callable[[list[Any]], Any]]] = [
    ("makespan", lambda s: s["makespan_s"], lambda v: f"{v / 60:.1f} min", _mean),
    ("goodput", _goodput, lambda v: f"{v:.2f}", _mean),
    ("over thr.", lambda s: s["calls_over_threshold"], lambda v: f"{v:.0f}", _mean),
    ("failed", lambda s: s["calls_failed"], lambda v: f"{v:.0f}", _mean),
    ("in outage", lambda s: s["calls_during_outage"], lambda v: f"{v:.0f}", _mean),
    ("back off", lambda s: s["time_to_back_off_s"],
     lambda v: "-" if v is None else f"{v:.1f} s", _mean),
    ("to full", lambda s: s["time_to_full_s"],
     lambda v: "-" if v is None else f"{v:.0f} s", _mean),
    ("max in flight", lambda s: s["max_in_flight"], str, _worst),
    ("dupes", lambda s: s["duplicate_fetches"], str, _worst),
    ("lost", lambda s: s["lost"], str, _worst),
]


def register(commands: Any) -> None:
    p = commands.add_parser(
        "simulate", help="compare and tune policies and dispatch modes in virtual time",
        description="Run the runtime's real decision code (ventilator, policy, breaker, "
        "rearm) against a simulated stream, mapping, fan-out and provider in virtual time. "
        "Goodput is the physical limit (min(X, capacity) calls always in flight, mean "
        "latencies, outages and closed windows waited out) over the run's makespan: at "
        "most 1.")
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO",
                   help="TOML file(s) or shipped names (steady, degrade-and-recover, ...)")
    p.add_argument("--policy", action="append",
                   help="policy name (repeat with --compare; default: default, or "
                   "seed and default with --compare)")
    p.add_argument("--dispatch", action="append", metavar="MODE",
                   help="how a delivery's calls go out: window (up to the concurrency limit "
                   "in flight, the next call as soon as one ends) or batch (the delivery is "
                   "the batch and waits for its slowest call); repeat with --compare; "
                   "default: the scenario's settings, else the settings' default")
    p.add_argument("--compare", action="store_true",
                   help="every scenario x policy x dispatch: one table, one chart")
    p.add_argument("--records", type=int, help="override the scenarios' record counts")
    p.add_argument("--seed", type=int, default=1, help="the first seed (default 1)")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="run seeds SEED..SEED+N-1; the table shows their mean (max in "
                   "flight, dupes and lost: the worst), the chart the first (default 1)")
    p.add_argument("--json", type=Path, help="write the result(s) as JSON (a list with "
                   "--compare or --seeds > 1)")
    p.add_argument("--chart", type=Path, help="write a chart (PNG)")
    p.add_argument("--update-delay", type=float, default=2.0,
                   help="seconds a mapping update takes to settle (default 2)")
    p.set_defaults(run=run)


def _dispatch_modes() -> tuple[str, ...]:
    from sluice.settings import ProviderSettings

    return typing.get_args(ProviderSettings.model_fields["dispatch"].annotation)


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
    modes = _dispatch_modes()
    dispatches: list[str | None] = list(dict.fromkeys(args.dispatch or [None]))
    wrong = [d for d in dispatches if d is not None and d not in modes]
    if wrong:
        print(f"sluice simulate: unknown dispatch {wrong[0]!r}; known: {', '.join(modes)}",
              file=sys.stderr)
        return 2
    if args.seeds < 1:
        print("sluice simulate: --seeds must be at least 1", file=sys.stderr)
        return 2
    if not args.compare and (len(scenarios) > 1 or len(policies) > 1 or len(dispatches) > 1):
        print("sluice simulate: several scenarios, policies or dispatch modes need --compare",
              file=sys.stderr)
        return 2
    seeds = list(range(args.seed, args.seed + args.seeds))
    runs = simulate_all(scenarios, policies, seeds, args.update_delay, dispatches)
    summaries = [s for _, s in runs]
    if args.json:
        payload: Any = summaries if args.compare or len(seeds) > 1 else summaries[0]
        args.json.write_text(json.dumps(payload, indent=2, default=_json_safe) + "\n")
    if args.chart:
        from sluice_tools.simulate.chart import write_compare_chart, write_run_chart

        first = [(sim, s) for sim, s in runs if s["seed"] == seeds[0]]
        if args.compare:
            write_compare_chart(first, args.chart)
        else:
            write_run_chart(first[0][0], first[0][1], args.chart)
    print_table(summaries)
    failed = [s for s in summaries if not all(s["invariants"].values())]
    for s in failed:
        bad = [k for k, ok in s["invariants"].items() if not ok]
        print(f"INVARIANT FAILED: {s['scenario']} / {s['policy']} / {_dispatch(s)} / seed "
              f"{s['seed']}: {', '.join(bad)}")
    return 1 if failed else 0


def simulate_all(scenarios, policies, seeds, update_delay, dispatches=(None,)):
    """Every scenario x policy x dispatch x seed, in that order. A dispatch of None keeps
    the scenario's (or the settings' default) mode."""
    from sluice_tools.simulate.engine import Simulation

    if isinstance(seeds, int):
        seeds = [seeds]
    runs = []
    for scenario in scenarios:
        for policy in policies:
            for dispatch in dispatches:
                overrides = {"dispatch": dispatch} if dispatch is not None else None
                for seed in seeds:
                    sim = Simulation(scenario, policy=policy, seed=seed,
                                     update_delay_s=update_delay,
                                     settings_overrides=overrides)
                    summary = sim.run()
                    summary.setdefault("dispatch", sim.settings.dispatch)
                    runs.append((sim, summary))
    return runs


def aggregate(summaries: list[dict[str, Any]]) -> list[tuple[str, str, str, int, list[Any]]]:
    """One row per scenario x policy x dispatch: (scenario, policy, dispatch, seeds, values),
    the values combined over seeds per column."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for s in summaries:
        groups.setdefault((s["scenario"], s["policy"], _dispatch(s)), []).append(s)
    return [(*key, len(group), [combine([get(s) for s in group])
                                for _, get, _, combine in COLUMNS])
            for key, group in groups.items()]


def print_table(summaries: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = aggregate(summaries)
    seeds = max((n for *_, n, _ in rows), default=1)
    title = "sluice simulate (virtual time" + (f", mean of {seeds} seeds)" if seeds > 1
                                               else ")")
    table = Table(title=title)
    table.add_column("scenario")
    table.add_column("policy")
    table.add_column("dispatch")
    for title, *_ in COLUMNS:
        table.add_column(title, justify="right")
    for scenario, policy, dispatch, _, values in rows:
        table.add_row(scenario, policy, dispatch,
                      *[_fmt(fmt, v) for (_, _, fmt, _), v in zip(COLUMNS, values,
                                                                  strict=True)])
    Console(width=170).print(table)


def _fmt(fmt, value) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "never"
    return fmt(value)


def _json_safe(value: Any) -> Any:
    return str(value)
