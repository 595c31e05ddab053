"""Charts of simulated runs: the concurrency limit, the calls actually in flight and the
delivery size against the provider's true capacity, p90 latency and errors over (virtual)
time, open-circuit periods shaded."""

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


def in_flight_steps(intervals: list[tuple[float, float]],
                    start_epoch: float) -> tuple[list[float], list[int]]:
    """Calls in flight over time, as steps: (seconds since the start, count from then on).
    Ends sort before starts at the same instant (a slot handed straight to the next call)."""
    edges = sorted([(a - start_epoch, 1) for a, _ in intervals]
                   + [(b - start_epoch, -1) for _, b in intervals])
    times, counts, current = [0.0], [0], 0
    for t, delta in edges:
        current += delta
        if times[-1] == t:
            counts[-1] = current
        else:
            times.append(t)
            counts.append(current)
    return times, counts


def mean_per_bin(times: list[float], counts: list[int], end_s: float,
                 bins: int = 400) -> tuple[list[float], list[float]]:
    """The time-weighted mean of a step function over ``bins`` equal bins of [0, end_s]:
    (bin starts, means). Readable where a long run's steps blur into a band."""
    width = max(end_s, 1e-9) / bins
    sums = [0.0] * bins
    for i, (t, count) in enumerate(zip(times, counts, strict=True)):
        until = min(times[i + 1] if i + 1 < len(times) else end_s, end_s)
        while t < until and count:
            b = min(int(t / width), bins - 1)
            step = min(until, (b + 1) * width) - t
            if step <= 0:
                break
            sums[b] += count * step
            t += step
    return [b * width for b in range(bins)], [total / width for total in sums]


def _label(summary: dict[str, Any]) -> str:
    return f"{summary['policy']}, {summary.get('dispatch', 'batch')}"


def _goodput(summary: dict[str, Any]) -> Any:
    return summary.get("goodput", summary.get("goodput_ratio"))


def _limit_s(summary: dict[str, Any]) -> float:
    """The makespan goodput is measured against: the physical limit where reported."""
    return summary.get("physical_makespan_s", summary["oracle_makespan_s"])


def write_run_chart(sim: Any, summary: dict[str, Any], path: Path) -> None:
    plt = _plt()
    batches = list(sim.trace.batches)
    called = [b for b in batches if b["Calls"]]
    end = max([b["t"] for b in batches] + [b - sim.start_epoch for _, b in sim.intervals]
              + [1.0])
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(13, 9), sharex=True,
                                        gridspec_kw={"height_ratios": [2, 1, 1]})
    times, counts = in_flight_steps(sim.intervals, sim.start_epoch)
    ax1.step([t / 60 for t in times], counts, where="post", color="tab:green", linewidth=0.4,
             alpha=0.35, label="calls in flight")
    starts, means = mean_per_bin(times, counts, end)
    ax1.step([t / 60 for t in starts], means, where="post", color="darkgreen", linewidth=1,
             label="calls in flight (mean per 1/400 of the run)")
    ax1.step([b["t"] / 60 for b in batches], [b["BatchSize"] for b in batches], where="post",
             color="tab:blue", label=f"concurrency limit ({_label(summary)})")
    _capacity(ax1, sim.scenario, end)
    ax1.axhline(summary["max_concurrency"], color="red", linewidth=0.8, label="X")
    ax1.set_ylabel("calls")
    deliveries = [b for b in batches if b.get("Delivery") is not None]
    if deliveries:
        ax1b = ax1.twinx()
        ax1b.step([b["t"] / 60 for b in deliveries], [b["Delivery"] for b in deliveries],
                  where="post", color="tab:purple", linewidth=0.8, alpha=0.6,
                  label="delivery size (right)")
        ax1b.set_ylabel("records per delivery")
        ax1b.set_ylim(bottom=0)
        ax1b.legend(loc="upper left", bbox_to_anchor=(1.06, 0.3), fontsize=8)
    ax2.plot([b["t"] / 60 for b in called], [b["LatencyP90"] for b in called], ".",
             markersize=2, label="p90 latency per judgement")
    ax2.axhline(sim.settings.latency_threshold_ms, color="red", linewidth=0.8,
                label="threshold")
    ax2.set_ylabel("ms")
    ax2.set_yscale("log")
    ax3.plot([b["t"] / 60 for b in called], [b["ErrorRate"] for b in called], ".",
             color="darkorange", markersize=2, label="error rate per judgement")
    ax3.set_ylabel("error rate")
    ax3.set_xlabel("virtual time (minutes)")
    for a, b in sim.open_periods():
        for ax in (ax1, ax2, ax3):
            ax.axvspan(a / 60, b / 60, color="red", alpha=0.12, linewidth=0)
    for ax in (ax1, ax2, ax3):
        ax.legend(loc="upper left", bbox_to_anchor=(1.06, 1.0), fontsize=8)
    fig.suptitle(f"{summary['scenario']} / {_label(summary)}: makespan "
                 f"{summary['makespan_s'] / 60:.1f} min (limit "
                 f"{_limit_s(summary) / 60:.1f}), goodput {_goodput(summary)}; "
                 "shaded = circuit open")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_compare_chart(runs: list[tuple[Any, dict[str, Any]]], path: Path) -> None:
    """One panel per scenario: each (policy, dispatch)'s concurrency limit over the true
    capacity."""
    plt = _plt()
    scenarios = list(dict.fromkeys(s["scenario"] for _, s in runs))
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(13, 2.8 * len(scenarios)),
                             squeeze=False)
    for ax, name in zip(axes[:, 0], scenarios, strict=True):
        mine = [(sim, s) for sim, s in runs if s["scenario"] == name]
        end = max(max((b["t"] for b in sim.trace.batches), default=1.0) for sim, _ in mine)
        _capacity(ax, mine[0][0].scenario, end)
        for sim, summary in mine:
            ax.step([b["t"] / 60 for b in sim.trace.batches],
                    [b["BatchSize"] for b in sim.trace.batches], where="post", linewidth=1,
                    label=f"{_label(summary)} (makespan {summary['makespan_s'] / 60:.0f} "
                    f"min, goodput {_goodput(summary):.2f})")
        ax.set_title(f"{name} (limit {_limit_s(mine[0][1]) / 60:.0f} min)", fontsize=10)
        ax.set_ylabel("concurrency limit")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    axes[-1, 0].set_xlabel("virtual time (minutes)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
