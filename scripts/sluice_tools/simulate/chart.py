"""Charts of simulated runs: batch size against the provider's true capacity, p90 latency and
errors over (virtual) time, open-circuit periods shaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sluice_tools.scenario import Scenario


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _capacity(ax: Any, scenario: Scenario, end_s: float) -> None:
    grid = [i * end_s / 500 for i in range(501)]
    ax.plot([t / 60 for t in grid],
            [0 if scenario.state_at(t).outage else scenario.state_at(t).capacity for t in grid],
            "--", color="grey", linewidth=1, label="true capacity (0 = outage)")


def write_run_chart(sim: Any, summary: dict[str, Any], path: Path) -> None:
    plt = _plt()
    batches = [b for b in sim.trace.batches]
    called = [b for b in batches if b["Calls"]]
    end = max((b["t"] for b in batches), default=1.0)
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    ax1.step([b["t"] / 60 for b in batches], [b["BatchSize"] for b in batches], where="post",
             label=f"batch size ({summary['policy']})")
    _capacity(ax1, sim.scenario, end)
    ax1.axhline(summary["max_concurrency"], color="red", linewidth=0.8, label="X")
    ax1.set_ylabel("batch size")
    ax2.plot([b["t"] / 60 for b in called], [b["LatencyP90"] for b in called], ".",
             markersize=2, label="p90 latency per batch")
    ax2.axhline(sim.settings.latency_threshold_ms, color="red", linewidth=0.8,
                label="threshold")
    ax2.set_ylabel("ms")
    ax2.set_yscale("log")
    ax3.plot([b["t"] / 60 for b in called], [b["ErrorRate"] for b in called], ".",
             color="darkorange", markersize=2, label="error rate per batch")
    ax3.set_ylabel("error rate")
    ax3.set_xlabel("virtual time (minutes)")
    for a, b in sim.open_periods():
        for ax in (ax1, ax2, ax3):
            ax.axvspan(a / 60, b / 60, color="red", alpha=0.12, linewidth=0)
    for ax in (ax1, ax2, ax3):
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{summary['scenario']} / {summary['policy']}: makespan "
                 f"{summary['makespan_s'] / 60:.1f} min (oracle "
                 f"{summary['oracle_makespan_s'] / 60:.1f}), goodput "
                 f"{summary['goodput_ratio']}; shaded = circuit open")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_compare_chart(runs: list[tuple[Any, dict[str, Any]]], path: Path) -> None:
    """One panel per scenario: each policy's batch size over the true capacity."""
    plt = _plt()
    scenarios = list(dict.fromkeys(s["scenario"] for _, s in runs))
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(11, 2.8 * len(scenarios)),
                             squeeze=False)
    for ax, name in zip(axes[:, 0], scenarios, strict=True):
        mine = [(sim, s) for sim, s in runs if s["scenario"] == name]
        end = max(max((b["t"] for b in sim.trace.batches), default=1.0) for sim, _ in mine)
        _capacity(ax, mine[0][0].scenario, end)
        for sim, summary in mine:
            ax.step([b["t"] / 60 for b in sim.trace.batches],
                    [b["BatchSize"] for b in sim.trace.batches], where="post", linewidth=1,
                    label=f"{summary['policy']} (makespan {summary['makespan_s'] / 60:.0f} min)")
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("batch size")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("virtual time (minutes)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
