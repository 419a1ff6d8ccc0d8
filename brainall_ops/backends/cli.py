"""`brainall-ops backends`: switch the running backend cluster between production and validation
mode without dropping a request, and show what runs.

    brainall-ops backends status [--inventory inventories/lab.py] [--json]
    brainall-ops backends mode production|validation [--dry] [--force] [--inventory ...]
    OMNIMIND_VALIDATION_MODE=true brainall-ops backends mode      (the seed's variable picks the mode)

The hosts are reached over SSH with the inventory's data (production: inventories/hel1.py).
The seed's OMNIMIND_BACKENDS / OMNIMIND_WORKERS / OMNIMIND_WORKERS_VALIDATION, when set, override
the role map here as they did at deploy time; a cluster deployed with another shape is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from brainall_ops.errors import BrainallError

DEFAULT_INVENTORY = "inventories/hel1.py"


def _context(inventory: str, rolemap: str | None) -> tuple[Any, dict[str, dict[str, Any]]]:
    from brainall_ops.backends.remote import load_inventory
    from brainall_ops.backends.spec import cluster_spec
    from brainall_ops.rolemap.loader import REPO_ROOT, load_rolemap

    hosts = load_inventory(inventory)
    if rolemap is None:
        named = sorted({str(data["brainall_rolemap"]) for data in hosts.values() if data.get("brainall_rolemap")})
        if len(named) > 1:
            raise BrainallError(f"inventory {inventory} names several role maps ({', '.join(named)}): use --rolemap")
        if named:
            rolemap = named[0] if Path(named[0]).is_absolute() else str(REPO_ROOT / named[0])
    rm = load_rolemap(rolemap)
    if rm.backends is None:
        raise BrainallError("the role map has no backends section")
    return cluster_spec(rm.backends, os.environ), hosts


def _options(func: Any) -> Any:
    func = click.option(
        "--rolemap", type=click.Path(dir_okay=False), help="Role map (default: the one the inventory names)."
    )(func)
    return click.option(
        "--inventory",
        "-i",
        default=DEFAULT_INVENTORY,
        show_default=True,
        help="pyinfra inventory with the hosts' SSH data (inventories/lab.py for the lab).",
    )(func)


@click.group()
def backends() -> None:
    """Switch and inspect the backend cluster (dynamic mode: production 3 x 1, validation 2 x 2 + standby)."""


@backends.command()
@click.argument("mode", required=False, type=click.Choice(["production", "validation"]))
@click.option("--dry", is_flag=True, help="Show the steps; change nothing.")
@click.option("--force", is_flag=True, help="Go on even where a step leaves no healthy backend (requests fail).")
@_options
def mode(mode: str | None, dry: bool, force: bool, inventory: str, rolemap: str | None) -> None:
    """Switch the running cluster to MODE: start what it needs and wait until ready, reload nginx,
    then drain and stop what it no longer needs. Instances whose workers change restart one at a
    time, drained first. Without MODE, OMNIMIND_VALIDATION_MODE (true|false) decides."""
    from brainall_ops.backends.cluster import open_cluster
    from brainall_ops.backends.spec import parse_mode_flag

    if mode is None:
        if "OMNIMIND_VALIDATION_MODE" not in os.environ:
            raise BrainallError("give a mode (production or validation) or set OMNIMIND_VALIDATION_MODE=true|false")
        mode = parse_mode_flag(os.environ["OMNIMIND_VALIDATION_MODE"])
    spec, hosts = _context(inventory, rolemap)
    with open_cluster(spec, hosts, log=click.echo) as cluster:
        live = cluster.inspect()
        if live.switching_until is not None and not dry:
            raise BrainallError(
                f"a switch is already in progress on {spec.host} (if none runs, clear its marker: "
                f"python3 /usr/local/lib/brainall-backends/backendctl unlock there)"
            )
        plan = cluster.plan(mode, force=force, live=live)  # type: ignore[arg-type]
        was = live.mode or "(none yet)"
        if plan.empty:
            click.echo(f"backend cluster already in {mode} mode: nothing to do")
            return
        change = f"{was} -> {mode}" if live.mode != mode else f"{mode} (converging: {len(plan.steps)} steps)"
        click.echo(f"backend cluster on {spec.host} (nginx on {spec.proxy_host}): {change}")
        if dry:
            for index, step in enumerate(plan.steps, 1):
                click.echo(f"  [{index}/{len(plan.steps)}] {step.describe(spec)}")
            for warning in plan.warnings:
                click.echo(f"warning: {warning}")
            click.echo("dry run: nothing changed")
            return
        result = cluster.execute(plan, previous_mode=live.mode)
        click.echo(f"switched to {mode} mode in {result.seconds:.2f}s ({len(plan.steps)} steps)")
    if live.watchdog != "active":
        click.echo(f"warning: the watchdog is {live.watchdog} on {spec.host}: run deploys/phase4.py", err=True)


@backends.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_options
def status(as_json: bool, inventory: str, rolemap: str | None) -> None:
    """Each instance (role, whether the mode runs it, unit state, workers, health, nginx route) and the mode."""
    from brainall_ops.backends.cluster import open_cluster, shape_problems

    spec, hosts = _context(inventory, rolemap)
    with open_cluster(spec, hosts, log=click.echo) as cluster:
        live = cluster.inspect()
    mode = live.mode
    running = {i.port for i in spec.running(mode)} if mode else set()
    rows = []
    for instance in spec.instances:
        inst = live.instances.get(instance.port)
        digest_now = live.digests.get(mode) if mode else None
        rows.append(
            {
                "port": instance.port,
                "role": instance.role,
                "in_mode": "runs" if instance.port in running else "standby",
                "state": f"{inst.active_state}/{inst.sub_state}" if inst else "unknown",
                "pid": inst.pid if inst else None,
                "workers": inst.workers if inst and inst.running else None,
                "processes": inst.processes if inst else 0,
                "health": ("ok" if inst.healthy else (inst.health_error or "down")) if inst else "unknown",
                "nginx": (live.routes or {}).get(instance.port, "absent"),
                "config": (("current" if inst.digest == digest_now else "stale") if inst and inst.running else "-"),
                "connections": inst.connections if inst else 0,
                "restarts": inst.restarts if inst else 0,
                "enabled": bool(inst and inst.enabled),
            }
        )
    problems = shape_problems(spec, live)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "mode": mode,
                    "host": spec.host,
                    "proxy_host": spec.proxy_host,
                    "watchdog": live.watchdog,
                    "switching": live.switching_until is not None,
                    "shape_problems": problems,
                    "instances": rows,
                    "shape": asdict(spec.shape(mode)) if mode else None,
                },
                indent=2,
            )
        )
        return
    shape = spec.shape(mode) if mode else None
    summary = f"{shape.backends} x {shape.workers} worker(s)" if shape else "no mode yet (never deployed?)"
    click.echo(
        f"backend cluster on {spec.host}, nginx on {spec.proxy_host}: mode {mode or '-'} ({summary}); "
        f"watchdog {live.watchdog}{'; a switch is in progress' if live.switching_until else ''}"
    )
    header = ("PORT", "ROLE", "MODE", "STATE", "PID", "WORKERS", "HEALTH", "NGINX", "CONFIG", "CONNS", "RESTARTS")
    table = [header] + [
        (
            str(r["port"]),
            r["role"],
            r["in_mode"],
            r["state"],
            str(r["pid"] or "-"),
            f"{r['workers']} ({r['processes']} up)" if r["workers"] else "-",
            r["health"],
            r["nginx"],
            r["config"],
            str(r["connections"]),
            str(r["restarts"]),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for problem in problems:
        click.echo(f"warning: deployed shape differs: {problem}")
