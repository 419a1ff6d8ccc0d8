#!/usr/bin/env python3
"""Benchmark phase 2 against the Proxmox VE API simulator: API calls and wall time.

For each network profile (the simulator adds the latency to every API call: 25 ms is Frankfurt
from Helsinki, 0.5 ms Helsinki to Helsinki), on a fresh simulated fleet:

- create: `pyinfra -y INVENTORY deploys/phase2.py` makes the four VMs (clone, configure,
  grow the disk, start, verify; the two nodes in parallel, one VM at a time on a node);
- no-op: the same command again, nothing to change (target: at most 3 API calls for 4 VMs).

Wall times include pyinfra's own start (measured alone and printed, to subtract). Simulated
tasks take --task-seconds each (real clones take longer: that time is the cluster's, not ours).

    python bench/proxmox_bench.py [--runs N] [--task-seconds S]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from brainall_ops.lab.pve_simulator import Settings  # noqa: E402 - the repo is on sys.path now
from brainall_ops.lab.pve_simulator.harness import PYINFRA, Fleet  # noqa: E402

PROFILES = {"Frankfurt-like (25 ms/call)": 0.025, "Helsinki-like (0.5 ms/call)": 0.0005}
NOOP_TARGET_CALLS = 3


def kind(call: dict) -> str:
    path = call["path"]
    if "/tasks/" in path:
        return "task " + path.rsplit("/", 1)[-1]
    parts = path.strip("/").split("/")
    if parts[0] == "cluster":
        return "/".join(parts)
    return f"{call['method']} {'/'.join(parts[4:]) or 'qemu'}"


def one_profile(latency: float, task_seconds: float) -> dict[str, tuple[float, list[dict]]]:
    results = {}
    with Fleet(settings=Settings(latency_s=latency, task_seconds=task_seconds, lock_wait_s=10)) as fleet:
        for phase in ("create", "no-op"):
            mark = fleet.simulator.mark()
            started = time.monotonic()
            run = fleet.pyinfra()
            wall = time.monotonic() - started
            if run.returncode != 0:
                sys.exit(f"{phase} failed:\n{run.output}")
            results[phase] = (wall, fleet.requests_since(mark))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="repeat each profile, report the median wall time")
    parser.add_argument("--task-seconds", type=float, default=0.05, help="duration of each simulated task")
    args = parser.parse_args()

    started = time.monotonic()
    subprocess.run([str(PYINFRA), "--version"], capture_output=True, check=True)
    baseline = time.monotonic() - started
    print(
        f"pyinfra start alone (`pyinfra --version`): {baseline:.2f} s; simulated tasks: {args.task_seconds:g} s each\n"
    )
    print(f"{'profile':<30} {'phase':<7} {'wall s':>7} {'API calls':>9} {'mutating':>8}")
    verdict = []
    for name, latency in PROFILES.items():
        runs = [one_profile(latency, args.task_seconds) for _ in range(args.runs)]
        for phase in ("create", "no-op"):
            wall = statistics.median(r[phase][0] for r in runs)
            calls = runs[-1][phase][1]
            mutating = sum(c["method"] != "GET" for c in calls)
            print(f"{name:<30} {phase:<7} {wall:>7.2f} {len(calls):>9} {mutating:>8}")
            if phase == "create":
                counts = Counter(kind(c) for c in calls)
                print(f"{'':<30} {'':<7} " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
            else:
                verdict.append(len(calls) <= NOOP_TARGET_CALLS)
    met = all(verdict)
    print(f"\nno-op re-run of 4 VMs: {'within' if met else 'OVER'} the target of {NOOP_TARGET_CALLS} API calls")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
