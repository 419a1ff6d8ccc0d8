#!/usr/bin/env python3
"""Benchmark the backend cluster through nginx on the lab (issue 8).

Prints, for each mode (production 3 x 1, validation 2 x 2 + standby):
- p50 / p99 latency and throughput of GETs through nginx (N requests from C clients, unpaced);
- which backends served them;
and the time each mode switch takes (start + ready, drained rolling restarts, nginx reloads,
drain + stop), with its steps; then, with --double-failure, the seed's risk: primary and secondary
stopped in validation mode while paced load runs: failed requests and the time until the standby
(started by the watchdog) serves.

The cluster must be deployed (deploys/phase4.py, see tests/integration/test_backends_cluster.py for
the lab's --data); the lab must be up. Leaves the cluster in production mode.

Run: BRAINALL_LAB_DIR=/var/lib/brainall-ops/lab python bench/backends_bench.py [--requests 3000]
     [--concurrency 4] [--double-failure]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from brainall_ops.backends.cluster import Cluster, open_cluster  # noqa: E402
from brainall_ops.backends.remote import load_inventory  # noqa: E402
from brainall_ops.backends.spec import Mode, cluster_spec  # noqa: E402
from brainall_ops.lab.load import BackgroundLoad, LoadResult, run_load  # noqa: E402
from brainall_ops.rolemap import load_rolemap  # noqa: E402


def switch(cluster: Cluster, mode: Mode) -> float:
    lines: list[str] = []
    cluster.log = lines.append
    result = cluster.switch(mode)
    if result.plan.empty:
        print(f"  already in {mode} mode")
        return 0.0
    print(f"  switch to {mode}: {result.seconds:.2f}s in {len(result.plan.steps)} steps")
    for line in lines:
        print(f"    {line.strip()}")
    return result.seconds


def show(label: str, result: LoadResult) -> None:
    served = ", ".join(f":{p} {n}" for p, n in sorted(result.ports().items()))
    print(
        f"  {label}: p50 {result.latency_ms(0.5):.2f} ms, p99 {result.latency_ms(0.99):.2f} ms, "
        f"{result.throughput:.0f} req/s ({result.count} requests, {len(result.failed)} failed; served by {served})"
    )


def switches_under_load(cluster: Cluster, nginx: str, rate: float) -> None:
    """production -> validation -> production while three paced loops run: GETs on kept-alive
    connections, GETs on a new connection each, POSTs on kept-alive connections."""
    loads = {
        "GET, keep-alive": BackgroundLoad(nginx, 80, requests=50_000, concurrency=4, rate=rate, max_seconds=120),
        "GET, a connection per request": BackgroundLoad(
            nginx, 80, requests=50_000, concurrency=2, rate=rate / 2, max_seconds=120, keepalive=False
        ),
        "POST /echo, keep-alive": BackgroundLoad(
            nginx, 80, path="/echo", method="POST", body=b"x" * 512, requests=50_000, concurrency=2,
            rate=rate / 2, max_seconds=120,
        ),
    }  # fmt: skip
    for load in loads.values():
        load.start()
    time.sleep(2)
    for mode in ("validation", "production"):
        switch(cluster, mode)  # type: ignore[arg-type]
        time.sleep(2)
    for label, load in loads.items():
        print(f"  {label}: {load.finish(tail_s=0).summary()}")


def double_failure(cluster: Cluster, nginx: str, rate: float) -> None:
    switch(cluster, "validation")
    load = BackgroundLoad(nginx, 80, requests=50_000, concurrency=4, rate=rate, max_seconds=120).start()
    time.sleep(2)
    t_down = load.now()
    cluster.api.run("systemctl stop brainall-backend@8000.service brainall-backend@8080.service")
    deadline = time.monotonic() + 90
    while cluster.api.run("systemctl is-active brainall-backend@3001.service || true").strip() != "active":
        if time.monotonic() > deadline:
            raise SystemExit("the watchdog did not start the standby within 90s")
        time.sleep(0.2)
    time.sleep(3)
    result = load.finish(tail_s=1)
    failed = [s for s in result.samples if not s.ok and s.start >= t_down]
    standby = [s for s in result.samples if s.ok and s.port == 3001]
    recovered = max([standby[0].end if standby else float("nan"), *(s.end for s in failed)])
    print(
        f"  primary+secondary stopped under {rate:.0f} req/s: {len(failed)} failed requests, "
        f"recovered {recovered - t_down:.2f}s after the stop (first answer from the standby "
        f"+{(standby[0].end - t_down) if standby else float('nan'):.2f}s)"
    )
    print(f"    {result.summary()}")
    switch(cluster, "validation")  # back: 8000 and 8080 started, 3001 drained and stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", default="inventories/lab.py")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--double-failure", action="store_true")
    parser.add_argument("--rate", type=float, default=250.0, help="paced load during switches and the double failure")
    args = parser.parse_args()
    os.chdir(REPO)

    hosts = load_inventory(args.inventory)
    rm = load_rolemap(REPO / str(next(iter(hosts.values())).get("brainall_rolemap", "inventories/brainall-v2.yaml")))
    assert rm.backends is not None
    spec = cluster_spec(rm.backends, os.environ)
    nginx = str(hosts[spec.proxy_host].get("brainall_address") or hosts[spec.proxy_host]["ssh_hostname"])
    print(f"backend cluster bench through nginx at {nginx}:80 ({args.requests} GETs, {args.concurrency} clients)")
    switch_times: list[tuple[str, float]] = []
    with open_cluster(spec, hosts) as cluster:
        for mode in ("production", "validation", "production"):
            print(f"{mode}:")
            seconds = switch(cluster, mode)  # type: ignore[arg-type]
            if seconds:
                switch_times.append((f"-> {mode}", seconds))
            time.sleep(1)
            run_load(nginx, 80, requests=200, concurrency=args.concurrency, max_seconds=30)  # warm-up
            result = run_load(nginx, 80, requests=args.requests, concurrency=args.concurrency, max_seconds=120)
            show(f"{mode} ({spec.shape(mode).backends} x {spec.shape(mode).workers})", result)  # type: ignore[arg-type]
        print(f"switches under load ({args.rate:.0f} + {args.rate / 2:.0f} + {args.rate / 2:.0f} req/s):")
        switches_under_load(cluster, nginx, args.rate)
        if args.double_failure:
            print("double failure (validation):")
            double_failure(cluster, nginx, args.rate)
            switch(cluster, "production")
    print("mode switch times (under no load): " + ", ".join(f"{k} {v:.2f}s" for k, v in switch_times))


if __name__ == "__main__":
    main()
