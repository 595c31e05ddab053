"""The big fault campaign: ``python -m sluice_tools.simulate.campaign --seeds 0-50 --kinds all``.

Runs every seed x policy x scenario under ``Chaos.campaign(seed, records, kinds)`` in worker
processes and prints each run that broke an invariant, then a table of runs, faults injected by
kind and invariant results. Exit 1 if any run broke one. (CI runs a small derandomized campaign
in tests/unit/test_campaign.py; this is the documented big one.)
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from sluice_tools.scenario import load_scenario
from sluice_tools.simulate.chaos import ALL_KINDS, HOLDING_KINDS, Chaos
from sluice_tools.simulate.engine import Simulation


def one_run(job: tuple[int, str, str, str, int, frozenset[str]]) -> dict[str, Any]:
    seed, scenario, policy, dispatch, records, kinds = job
    chaos = Chaos.campaign(seed, records, kinds)
    summary = Simulation(load_scenario(scenario).with_records(records), policy=policy,
                         seed=seed, chaos=chaos,
                         settings_overrides={"dispatch": dispatch}).run()
    return {"seed": seed, "scenario": scenario, "policy": policy, "dispatch": dispatch,
            "invariants": summary["invariants"], "faults": summary.get("faults_injected", {}),
            "lost": summary["lost"], "held_waiting": summary["held_waiting"],
            "max_in_flight": summary["max_in_flight"]}


def _seeds(text: str) -> range:
    low, _, high = text.partition("-")
    return range(int(low), int(high or low) + 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sluice_tools.simulate.campaign",
                                description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0-49", help="inclusive range, e.g. 0-199")
    p.add_argument("--kinds", choices=("all", "holding"), default="all")
    p.add_argument("--records", type=int, default=300)
    p.add_argument("--scenario", action="append", help="default: flapping and long-outage")
    p.add_argument("--policy", action="append", help="default: seed and default")
    p.add_argument("--dispatch", action="append", help="default: batch")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    kinds = ALL_KINDS if args.kinds == "all" else HOLDING_KINDS
    jobs = [(seed, scenario, policy, dispatch, args.records, kinds)
            for seed in _seeds(args.seeds)
            for scenario in args.scenario or ["flapping", "long-outage"]
            for policy in args.policy or ["seed", "default"]
            for dispatch in args.dispatch or ["batch"]]
    faults: Counter = Counter()
    broken: Counter = Counter()
    held = failed = 0
    with ProcessPoolExecutor(max(1, args.workers)) as pool:
        for run in pool.map(one_run, jobs):
            faults.update(run["faults"])
            held += run["held_waiting"]
            bad = sorted(name for name, ok in run["invariants"].items() if not ok)
            broken.update(bad)
            if bad:
                failed += 1
                print(f"BROKEN seed {run['seed']} {run['scenario']} {run['policy']} "
                      f"{run['dispatch']}: {', '.join(bad)} (lost {run['lost']}, max in "
                      f"flight {run['max_in_flight']}, faults {run['faults']})", flush=True)
    print(f"{len(jobs)} runs ({args.kinds} kinds, {args.records} records each): "
          f"{len(jobs) - failed} hold every invariant, {failed} do not")
    print("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(faults.items())))
    print("poison records left waiting for a witness at the end: " + str(held))
    print("broken invariants: " + (", ".join(f"{k} {v}" for k, v in sorted(broken.items()))
                                   or "none"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
