"""Terminal output: the live view of a run, and the closing summary (rich)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from sluice_tools.scenario import Scenario

BREAKER_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red",
                 "paused": "magenta"}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class LiveProgress:
    """A live panel (or, with ``plain``, one line every few seconds for logs and CI)."""

    def __init__(self, scenario: Scenario, *, plain: bool = False,
                 console: Console | None = None) -> None:
        self.scenario = scenario
        self.plain = plain
        self.console = console or Console(soft_wrap=plain)
        self._live: Live | None = None
        self._last_line = 0.0
        self._events_shown = 0

    def __enter__(self) -> LiveProgress:
        self.console.print(f"[bold]sluice local demo[/] - scenario [cyan]{self.scenario.name}"
                           f"[/], {self.scenario.records} records")
        if self.scenario.description:
            self.console.print(Text(" ".join(self.scenario.description.split()), style="dim"))
        if not self.plain:
            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, p: Any) -> None:
        if self._live is not None:
            self._live.update(self._render(p))
            return
        for event in p.events[self._events_shown:] if len(p.events) > self._events_shown else []:
            self.console.print(f"  {event}")
        self._events_shown = len(p.events)
        if time.time() - self._last_line >= 3:
            self._last_line = time.time()
            self.console.print(
                f"t={_duration(p.scenario_s)} size={p.batch_size} {p.mapping_state.lower()} "
                f"breaker={p.breaker} in_flight={p.in_flight} p90={p.p90_ms:.0f}ms "
                f"errors={p.error_rate:.0%} fetched={p.fetched} parked={p.parked} "
                f"remaining={p.remaining} eta={_duration(p.eta_s)}",
                highlight=False,
            )

    def _render(self, p: Any) -> Panel:
        grid = Table.grid(padding=(0, 2))
        for _ in range(4):
            grid.add_column(justify="right", style="dim")
            grid.add_column()
        style = BREAKER_STYLE.get(p.breaker, "white")
        state = self.scenario.state_at(p.scenario_s)
        provider = "OUTAGE" if state.outage else f"capacity {state.capacity}"
        grid.add_row("scenario time", _duration(p.scenario_s), "batch size", str(p.batch_size),
                     "breaker", Text(p.breaker, style=style), "provider", provider)
        grid.add_row("in flight", str(p.in_flight), "p90 latency", f"{p.p90_ms:.0f} ms",
                     "error rate", f"{p.error_rate:.0%}", "mapping", p.mapping_state)
        grid.add_row("fetched", str(p.fetched), "parked", str(p.parked),
                     "remaining", str(p.remaining), "rate / ETA",
                     f"{p.rate_per_s:.1f}/s  {_duration(p.eta_s)}")
        done = p.total - p.remaining
        bar = ProgressBar(total=max(p.total, 1), completed=done, width=60)
        events = Text("\n".join(p.events) or "no breaker events yet", style="dim")
        return Panel(Group(grid, Text(""), bar, Text(f"{done}/{p.total}"), Text(""), events),
                     title="pipeline", border_style=style)


def print_summary(summary: dict[str, Any], report_dir: Path | None,
                  console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"{summary['provider']} / {summary['scenario']}", show_header=False)
    table.add_column(style="dim")
    table.add_column(justify="right")
    for key in ("records", "fetched", "skipped_duplicates", "parked", "lost",
                "duplicate_fetches", "provider_calls", "calls_failed", "calls_over_threshold",
                "max_in_flight", "breaker_opened", "rearm_probes", "makespan_s"):
        table.add_row(key, str(summary[key]))
    for kind, count in (summary.get("faults_injected") or {}).items():
        table.add_row(f"fault: {kind}", str(count))
    console.print(table)
    for name, ok in summary["invariants"].items():
        console.print(f"  {'[green]PASS[/]' if ok else '[bold red]FAIL[/]'}  {name}")
    if report_dir is not None:
        console.print(f"report: {report_dir / 'summary.json'}, {report_dir / 'chart.png'}")
