#!/usr/bin/env python3
"""Benchmark the lab: how long the fleet takes to come up as nspawn hosts, and to go away.

Prints:
- cold up: the extracted rootfs deleted first, so `up` restores it from the tar.zst cache
  (or debootstraps it when this machine has no cache yet: said so in the output);
- warm up: `up` again after `down`, the rootfs already extracted;
- down: the time to stop every host and remove what `up` made;
each with every host's own time from its nspawn start to SSH and systemd answering.

Run as root: python bench/lab_bench.py [--runs N] [--state-dir DIR]
- phase 1 (deploys/phase1.py) on every host of a fresh lab: first run and the no-op re-run.
The lab is left down. It replaces any lab running on this machine (one lab per machine).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from brainall_ops.lab import LabUp, down, lab_hosts, rootfs, up  # noqa: E402 - the repo is on sys.path now

DEFAULT_STATE_DIR = Path("/var/lib/brainall-ops/lab-bench")


def host_times(result: LabUp) -> str:
    return ", ".join(f"{boot.name} {boot.seconds:.1f}s" for boot in result.hosts)


def cold_up(state_dir: Path) -> float:
    down(state_dir)
    cached = rootfs.rootfs_tarball().is_file()
    rootfs.drop_extracted_rootfs()
    start = time.perf_counter()
    result = up(lab_hosts(None), state_dir)
    seconds = time.perf_counter() - start
    source = "restored from the tar.zst cache" if cached else "built with debootstrap (no cache yet)"
    print(f"cold up   {seconds:6.1f}s  rootfs {source}; hosts: {host_times(result)}")
    return seconds


def warm_up(state_dir: Path) -> float:
    down(state_dir)
    start = time.perf_counter()
    result = up(lab_hosts(None), state_dir)
    seconds = time.perf_counter() - start
    print(f"warm up   {seconds:6.1f}s  rootfs already extracted; hosts: {host_times(result)}")
    return seconds


def timed_down(state_dir: Path) -> float:
    start = time.perf_counter()
    down(state_dir)
    seconds = time.perf_counter() - start
    print(f"down      {seconds:6.1f}s")
    return seconds


def timed_pyinfra(state_dir: Path, *args: str) -> tuple[float, str]:
    env = {
        **os.environ,
        "BRAINALL_LAB_DIR": str(state_dir),
        "BRAINALL_STORAGEBOX_PASSWORD": os.environ.get("BRAINALL_STORAGEBOX_PASSWORD", "lab-bench-password"),
    }
    start = time.perf_counter()
    result = subprocess.run(
        [str(Path(sys.executable).with_name("pyinfra")), "-y", "inventories/lab.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    seconds = time.perf_counter() - start
    # pyinfra logs its results table on stderr
    output = result.stdout + result.stderr
    total = next((line.split() for line in output.splitlines() if "Grand total" in line), [])
    summary = " ".join(total[2:]) if total else f"exit {result.returncode}"
    if result.returncode != 0:
        print(result.stdout[-3000:] + result.stderr[-2000:])
    return seconds, summary


def phase1(state_dir: Path, reruns: int = 3) -> None:
    """Phase 1 on every host of a fresh lab: first run, then the no-op re-run (target < 3 s).

    `--limit` names the booted hosts: the inventory also lists the VMs, which only exist after
    phase 2, and an address nobody answers costs ARP's 3 s before "Could not connect".
    """
    hosts = lab_hosts(None)
    up(hosts, state_dir)
    limit = [arg for h in hosts for arg in ("--limit", h.name)]
    if (REPO / "deploys" / "lab_storagebox.py").exists():
        seconds, summary = timed_pyinfra(state_dir, "deploys/lab_storagebox.py", "--limit", "storagebox")
        print(
            f"lab box   {seconds:6.1f}s  (the Storage Box stand-in; ops: operations success error no-change {summary})"
        )
    seconds, summary = timed_pyinfra(state_dir, "deploys/phase1.py", *limit)
    print(f"phase 1 first run     {seconds:6.1f}s  (grand total: operations success error no-change = {summary})")
    times = []
    for _ in range(reruns):
        seconds, summary = timed_pyinfra(state_dir, "deploys/phase1.py", *limit)
        times.append(seconds)
        print(f"phase 1 no-op re-run  {seconds:6.1f}s  (grand total: operations success error no-change = {summary})")
    print(f"phase 1 no-op re-run on {len(hosts)} hosts: median {statistics.median(times):.2f}s, best {min(times):.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds of cold up, warm up, down")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--verbose", action="store_true", help="show the lab's progress log")
    parser.add_argument("--no-phase1", action="store_true", help="skip the phase-1 deploy timings")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the lab needs root")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")

    hosts = lab_hosts(None)
    print(f"lab of {len(hosts)} hosts ({', '.join(h.name for h in hosts)}); {os.cpu_count()} CPUs")
    phases: dict[str, Callable[[Path], float]] = {"cold up": cold_up, "warm up": warm_up, "down": timed_down}
    results: dict[str, list[float]] = {name: [] for name in phases}
    try:
        for _ in range(args.runs):
            for name, phase in phases.items():
                results[name].append(phase(args.state_dir))
        if not args.no_phase1:
            phase1(args.state_dir)
    finally:
        down(args.state_dir)
    print(f"summary (median / best of {args.runs}):")
    for name, times in results.items():
        print(f"  {name:8s} {statistics.median(times):6.1f}s / {min(times):6.1f}s")


if __name__ == "__main__":
    main()
