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
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO",
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
    fit = p.add_argument_group(
        "fitting a scenario from real behaviour",
        "--fit LOGS reads the worker's provider_call lines (JSON lines, the local stack's "
        "log, or a CloudWatch Logs export: filter-log-events / get-log-events JSON, Lambda's "
        "tab-separated lines, Logs Insights results) and fits a scenario: capacity (the "
        "in-flight level past which failures and latency rise), latency p50/p90, error rates "
        "and phases. It prints the scenario (or writes it with --fit-out); with --compare, "
        "policies run on it (and on any SCENARIO given).")
    fit.add_argument("--fit", type=Path, metavar="LOGS", help="a file of provider_call lines")
    fit.add_argument("--fit-out", type=Path, metavar="TOML",
                     help="write the fitted scenario here (default: print it)")
    fit.add_argument("--fit-provider", metavar="NAME",
                     help="the provider to fit when the log has several")
    fit.add_argument("--fit-window", type=float, metavar="SECONDS",
                     help="the time resolution of phases, in scenario seconds (default: "
                     "about a hundredth of the log, at least 60)")
    fit.add_argument("--fit-time-scale", type=float, default=1.0, metavar="S",
                     help="scenario seconds per second of the log: a local run at "
                     "--time-scale 60 needs 60 here for its phase times (default 1)")
    p.set_defaults(run=run)


def _dispatch_modes() -> tuple[str, ...]:
    from sluice.settings import ProviderSettings

    return typing.get_args(ProviderSettings.model_fields["dispatch"].annotation)


def run(args: argparse.Namespace) -> int:
    from sluice.policies import POLICIES
    from sluice_tools.scenario import ScenarioError, load_scenario

    fitted = []
    if args.fit is not None:
        if not args.compare and (args.scenarios or args.policy or args.dispatch):
            print("sluice simulate: --fit writes a scenario; add --compare to run policies on "
                  "it (and on the scenarios given)", file=sys.stderr)
            return 2
        result = run_fit(args)
        if isinstance(result, int):
            return result
        if not args.compare:
            return 0
        fitted = [result.with_records(args.records)]
    elif not args.scenarios:
        print("sluice simulate: give a scenario (a TOML file or a shipped name), or --fit LOGS",
              file=sys.stderr)
        return 2
    try:
        scenarios = fitted + [load_scenario(s).with_records(args.records)
                              for s in args.scenarios]
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


def run_fit(args: argparse.Namespace) -> Any:
    """Fit a scenario from ``args.fit``: the Scenario, or an exit code."""
    import tomllib

    from rich.console import Console

    from sluice_tools.scenario import parse_scenario
    from sluice_tools.simulate.fit import (
        FitError,
        calls_of,
        fit_phases,
        read_log,
        scenario_name,
        scenario_toml,
    )

    try:
        read = read_log(args.fit)
        if not read.calls:
            raise FitError(
                f"no provider_call lines in {args.fit} ({read.entries} lines or events read"
                f"{f', {read.invalid} provider_call lines malformed' if read.invalid else ''})"
                ": the worker logs one per provider call, in its log group "
                "(/aws/lambda/<app>-<stage>-worker)")
        calls = calls_of(read, args.fit_provider)
        fit = fit_phases(calls, window_s=args.fit_window, time_scale=args.fit_time_scale)
        text = scenario_toml(fit, name=scenario_name(str(args.fit)), source=str(args.fit))
    except FitError as exc:
        print(f"sluice simulate: {exc}", file=sys.stderr)
        return 2
    scenario = parse_scenario(tomllib.loads(text), str(args.fit_out or args.fit))
    # The scenario alone on stdout when it is printed (so it can be redirected to a file).
    console = Console(stderr=args.fit_out is None, width=120)
    print_fit(read, fit, console)
    if args.fit_out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return scenario
    try:
        args.fit_out.write_text(text)
    except OSError as exc:
        print(f"sluice simulate: cannot write {args.fit_out}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    console.print(f"wrote [bold]{args.fit_out}[/]: sluice simulate {args.fit_out} --compare")
    return scenario


def print_fit(read: Any, fit: Any, console: Any) -> None:
    """What was read and what was fitted: the phases, then the in-flight levels of the
    longest phase with its knee."""
    from rich.table import Table

    from sluice_tools.simulate.fit import duration_text

    provider = f" of [cyan]{fit.provider}[/]" if fit.provider else ""
    console.print(f"[bold]sluice simulate --fit[/]: {len(fit.calls)} provider_call lines"
                  f"{provider} ({read.shape}: {read.entries} read, {read.skipped} other lines "
                  f"skipped, {read.invalid} malformed, {read.duplicates} duplicates)")
    phases = Table(title=f"phases (windows of {duration_text(fit.window_s)})")
    for title in ("from", "to", "calls", "failed", "capacity", "p50 ms", "p90 ms",
                  "error rate", "overload errors"):
        phases.add_column(title, justify="left" if title in ("from", "to") else "right")
    for p in fit.phases:
        cells = [duration_text(p.at_s), duration_text(p.end_s), str(p.calls),
                 f"{p.failure_share:.0%}"]
        if p.outage:
            phases.add_row(*cells, "[bold red]outage[/]", "", "", "", "")
            continue
        k = p.knee
        low, high = k.plausible
        capacity = f"{k.capacity}" + ("" if k.reached else "+ (not reached)")
        if (low, high) != (k.capacity, k.capacity):
            capacity += f" ({low}-{high})"
        phases.add_row(*cells, capacity, _ms(k.p50_ms), _ms(k.p90_ms), f"{k.error_rate:.3f}",
                       "-" if k.overload_error_rate is None else f"{k.overload_error_rate:.3f}")
    console.print(phases)
    main = max((p for p in fit.phases if not p.outage), key=lambda p: p.calls, default=None)
    if main is not None:
        k = main.knee
        levels = Table(title=f"in flight at each call's start, from {duration_text(main.at_s)}: "
                       f"capacity {k.capacity}")
        for title in ("in flight", "calls", "error rate", "p50 ms", "p90 ms", ""):
            levels.add_column(title, justify="right")
        for row in k.levels:
            if abs(row.in_flight - k.capacity) > 15:
                continue
            levels.add_row(str(row.in_flight), str(row.calls), f"{row.error_rate:.3f}",
                           _ms(row.p50_ms), _ms(row.p90_ms),
                           "<- capacity" if row.in_flight == k.capacity else "")
        console.print(levels)
    if fit.error_kinds:
        console.print("failed calls by kind: " + ", ".join(
            f"{kind} {n}" for kind, n in fit.error_kinds.most_common(8)))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


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
