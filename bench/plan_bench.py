#!/usr/bin/env python3
"""Benchmark `brainall-ops plan`.

Prints:
- the wall time of `brainall-ops plan --json` and `brainall-ops plan` (tables) on the built-in map,
  as whole processes (median and best of N runs), and the heavy modules such a run imports;
- the planner's time (placement + budgets + plan building) on a generated fleet of 1,000 Proxmox
  hosts and 10,000 VMs.

Targets (issue 2): built-in plan under 0.3 s as a whole process; the 10,000-VM plan under 2 s.
Run: python bench/plan_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("brainall-ops")


def time_process(args: list[str], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(args, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - start)
        if result.returncode not in (0, 2):
            sys.exit(f"{' '.join(args)} failed: {result.stderr.decode()[-500:]}")
    return statistics.median(times), min(times)


def generated_fleet_yaml(hosts: int, vms: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    lines = [
        "version: 1",
        "name: generated",
        'measured_at: "2026-01-01"',
        "sites:",
        "  - {name: near, location: A, datacenter: A1}",
        "  - {name: far, location: B, datacenter: B1}",
        "hosts:",
        "  - {name: ref, site: near, kind: bare_metal, role: ref, address: 10.0.0.1,",
        "     hardware: {cpu_model: x, cores: 8, threads: 16, ram_gb: 64, disk_gb: 1000},",
        "     measured: {latency_from_gpu_ms: 0, ram_free_gb: 32, disk_free_gb: 500}}",
    ]
    for i in range(hosts):
        far = i % 10 == 0
        serves = rng.choice(["[app]", "[data]", "[app, data]", "[batch]"])
        ram = rng.choice([64, 128, 256, 512])
        lines.append(
            f"  - {{name: pve-{i:04d}, site: {'far' if far else 'near'}, kind: bare_metal, role: pve, serves: {serves},"
            f" address: 10.{1 + i // 250}.{i % 250}.{1 + i % 200},"
            f" hardware: {{cpu_model: x, cores: 64, threads: 128, ram_gb: {ram}, disk_gb: 8000}},"
            f" measured: {{latency_from_gpu_ms: {25.0 if far else round(rng.uniform(0.3, 1.5), 3)},"
            f" ram_free_gb: {ram * 0.9:.0f}, disk_free_gb: 7000}}, proxmox: {{node: pve-{i:04d}}}}}"
        )
    lines += [
        "base: {admins: [{name: ops, ssh_key_files: ['~/.ssh/id_ed25519.pub']}]}",
        "placement: {reference_host: ref, latency_budget_ms: 2.0}",
        "proxmox: {api_host: pve-0001, token_id: 'a@pve!b', template: tpl}",
        "vms:",
    ]
    for j in range(vms):
        lines.append(
            f"  - {{name: vm-{j:05d}, tier: {rng.choice(['app', 'data', 'batch'])},"
            f" latency_sensitive: {str(rng.random() < 0.7).lower()}, vcpu: {rng.choice([1, 2, 4, 8])},"
            f" memory_gb: {rng.choice([1, 2, 4, 8, 16])}, disk_gb: {rng.choice([10, 20, 50])},"
            f" address: 172.{16 + j // 65000}.{(j // 250) % 256}.{1 + j % 250}}}"
        )
    return "\n".join(lines) + "\n"


def bench_planner(hosts: int, vms: int) -> None:
    from brainall_ops.planning.fleet import place_rolemap
    from brainall_ops.planning.plan import build_plan
    from brainall_ops.rolemap import parse_rolemap

    text = generated_fleet_yaml(hosts, vms)
    start = time.perf_counter()
    rm = parse_rolemap(text, "generated.yaml")
    loaded = time.perf_counter()
    placement = place_rolemap(rm)
    placed = time.perf_counter()
    plan = build_plan(rm, "generated.yaml")
    planned = time.perf_counter()
    per_host: dict[str, int] = {}
    for p in placement.placements:
        per_host[p.host] = per_host.get(p.host, 0) + 1
    print(f"generated fleet: {hosts} Proxmox hosts, {vms} VMs ({len(text) / 1e6:.1f} MB of YAML)")
    print(f"  load + validate role map : {loaded - start:7.3f} s")
    print(f"  placement                : {placed - loaded:7.3f} s   (target < 2 s for the plan)")
    print(f"  whole plan (placement, budgets, every concern's changes): {planned - placed:7.3f} s")
    print(f"  {len(placement.placements)} VMs on {len(per_host)} hosts; {len(plan.changes)} changes")


# What any process that validates the role map with pydantic pays before reading a byte of it:
# the interpreter, pydantic itself, and the role map's model classes (pydantic builds each
# class's validator when the class is defined).
FLOOR_STEPS = (
    ("python startup", "pass"),
    ("+ import pydantic (BaseModel)", "from pydantic import BaseModel"),
    ("+ the role map package (models, loader)", "import brainall_ops.rolemap.models"),
)


def floor(runs: int) -> None:
    env = {**os.environ, "PYDANTIC_DISABLE_PLUGINS": "__all__"}
    print("the floor under any pydantic-validated plan (each step includes the ones above):")
    for label, code in FLOOR_STEPS:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env)
            times.append(time.perf_counter() - start)
        print(f"  {label:32}: median {statistics.median(times):.3f} s, best {min(times):.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    print(f"brainall-ops plan on the built-in map, {args.runs} runs each (whole process):")
    for label, argv in (("plan --json", ["plan", "--json"]), ("plan (tables)", ["plan"])):
        median, best = time_process([str(CLI), *argv], args.runs)
        print(f"  {label:14}: median {median:.3f} s, best {best:.3f} s   (target < 0.3 s)")
    probe = (
        "import sys\nfrom brainall_ops.cli import main\ntry:\n    main(['plan', '--json'])\nexcept SystemExit:\n"
        "    pass\nprint(sorted({m.split('.')[0] for m in sys.modules} & {'pyinfra', 'gevent', 'proxmoxer', "
        "'paramiko', 'rich'}), file=sys.stderr)\n"
    )
    heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO).stderr.strip()
    print(f"  heavy modules imported by an offline `plan --json`: {heavy.splitlines()[-1]}")
    floor(args.runs)
    bench_planner(1000, 10_000)


if __name__ == "__main__":
    main()
