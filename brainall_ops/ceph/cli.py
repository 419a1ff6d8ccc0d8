"""`brainall-ops ceph status | fix [--dry]`: read and fix Ceph placement-group health.

    brainall-ops ceph status                 # the role map's monitor host (inventories/<site>.py), over SSH
    brainall-ops ceph fix --dry              # what the fix would change; changes nothing
    brainall-ops ceph fix                    # gate; decreases, merges, increases; until no PG-count warning
    brainall-ops ceph fix --local --ceph-conf /var/tmp/brainall-ops-ceph-test/ceph.conf

Exit status: 0 done (no PG-count warning left, or nothing to change), 2 `--dry` found changes to
make, 1 error, refusal, or a warning still left (one line on stderr saying what remains and why;
run `fix` again to continue from the cluster's state).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from brainall_ops.rolemap.cli import rolemap_option

target_options = [
    rolemap_option,
    click.option(
        "--inventory",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="pyinfra inventory with the monitor host (default: inventories/<its site>.py).",
    ),
    click.option("--host", "host_name", default=None, help="Monitor host to run ceph on (default: ceph.monitor_host)."),
    click.option("--local", is_flag=True, help="Run ceph on this machine (pyinfra @local) instead of over SSH."),
    click.option("--ceph-conf", default=None, help="ceph.conf to use (ceph -c PATH), e.g. a test cluster's."),
    click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
]


def with_target_options(func: Any) -> Any:
    for option in reversed(target_options):
        func = option(func)
    return func


@click.group()
def ceph() -> None:
    """Read and fix Ceph placement-group health (POOL_TOO_MANY_PGS, POOL_TOO_FEW_PGS, TOO_MANY_PGS)."""


@ceph.command()
@with_target_options
def status(
    rolemap_path: Path | None,
    inventory: Path | None,
    host_name: str | None,
    local: bool,
    ceph_conf: str | None,
    as_json: bool,
) -> None:
    """Show health, OSDs, PGs and pools, and what `fix` would do. Changes nothing."""
    from brainall_ops.ceph.run import resolve_target, session
    from brainall_ops.ceph.targets import Policy, decide
    from brainall_ops.rolemap.loader import load_rolemap

    rm = load_rolemap(rolemap_path)
    policy = Policy.from_rolemap(rm.ceph)
    target = resolve_target(rm, inventory=inventory, host_name=host_name, local=local, ceph_conf=ceph_conf)
    with session(target) as s:
        snapshot = s.read()
    decision = decide(snapshot, policy)
    if as_json:
        click.echo(
            json.dumps(
                {"target": target.where, **snapshot_json(snapshot), "fix": decision_json(decision, policy)}, indent=2
            )
        )
        return
    render_snapshot(target.where, snapshot)
    click.echo("")
    render_decision(decision, policy, dry=True)


@ceph.command()
@with_target_options
@click.option("--dry", is_flag=True, help="Show what would change; change nothing.")
@click.option(
    "--timeout",
    "wait_timeout_s",
    type=click.IntRange(min=1),
    default=None,
    help="Seconds the fix may wait for Ceph, merges included (default: ceph.wait_timeout_s).",
)
def fix(
    rolemap_path: Path | None,
    inventory: Path | None,
    host_name: str | None,
    local: bool,
    ceph_conf: str | None,
    as_json: bool,
    dry: bool,
    wait_timeout_s: int | None,
) -> None:
    """Clear every PG-count warning, pool by pool as the role map's ceph section says, in an order
    the monitor accepts: decreases, their merges, then increases."""
    from brainall_ops.ceph.run import resolve_target, session
    from brainall_ops.ceph.targets import Policy
    from brainall_ops.rolemap.loader import load_rolemap

    rm = load_rolemap(rolemap_path)
    policy = Policy.from_rolemap(rm.ceph)
    timeout = wait_timeout_s or (rm.ceph.wait_timeout_s if rm.ceph else 900)
    target = resolve_target(rm, inventory=inventory, host_name=host_name, local=local, ceph_conf=ceph_conf)

    def progress(line: str) -> None:
        click.echo(line, err=True)

    with session(target, progress=progress) as s:
        outcome = s.prepare_fix(policy, dry=dry, wait_timeout_s=timeout)
        if not as_json:
            click.echo(f"Ceph on {target.where}: {outcome.before.health.summary_line()}")
            render_decision(outcome.decision, policy, dry=dry)
        outcome = s.run_fix(outcome)
    if as_json:
        data = {
            "target": target.where,
            "dry": dry,
            "changed": outcome.changed,
            "elapsed_s": round(outcome.elapsed_s, 1),
            "fix": decision_json(outcome.decision, policy),
            "health_after": outcome.health_after.status if outcome.health_after else None,
        }
        click.echo(json.dumps(data, indent=2))
    elif outcome.changed and outcome.health_after is not None:
        click.echo(f"done in {outcome.elapsed_s:.0f} s; health now {outcome.health_after.summary_line()}")
    if dry and outcome.decision.has_changes:
        sys.exit(2)


# --------------------------------------------------------------------------- output
def pool_json(p: Any) -> dict[str, Any]:
    return {
        "name": p.name,
        "size": p.size,
        "pg_num": p.pg_num,
        "pgp_num": p.pgp_num,
        "pg_num_target": p.pg_num_target,
        "pgp_num_target": p.pgp_num_target,
        "pg_autoscale_mode": p.autoscale_mode,
    }


def snapshot_json(snapshot: Any) -> dict[str, Any]:
    return {
        "health": {
            "status": snapshot.health.status,
            "checks": {
                c.code: {"severity": c.severity, "summary": c.summary, "detail": list(c.details)}
                for c in snapshot.health.checks
            },
        },
        "osds": {
            "total": snapshot.status.num_osds,
            "up": snapshot.status.num_up_osds,
            "in": snapshot.status.num_in_osds,
            "down": [o.name for o in snapshot.osds if not o.up],
        },
        "pgs": {"total": snapshot.status.num_pgs, "by_state": dict(snapshot.status.pgs_by_state)},
        "mgr_available": snapshot.status.mgr_available,
        "mon_max_pg_per_osd": snapshot.mon_max_pg_per_osd,
        "pools": [
            {
                **pool_json(p),
                "autoscaler_pg_num_final": (row.pg_num_final if (row := snapshot.autoscale_row(p.name)) else None),
            }
            for p in snapshot.pools
        ],
    }


def decision_json(decision: Any, policy: Any) -> dict[str, Any]:
    return {
        "strategy": policy.strategy,
        "pin_mode_after": policy.pin_mode_after,
        "flagged": {name: {"has": has, "should": should} for name, (has, should) in decision.flagged.items()},
        "changes": [
            {
                "pool": c.pool,
                "strategy": c.strategy,
                "target": c.target,
                "target_source": c.target_source,
                "reason": c.reason,
                "settings": [{"key": s.key, "old": s.old, "new": s.new} for s in c.settings],
            }
            for c in decision.changes
        ],
        "steps": [
            {
                "order": c.order,
                "pool": c.pool,
                "phase": c.phase,
                "pg_num": [c.pg_num_before, c.pg_num_after],
                "size": c.size,
                "why": c.why,
                "autoscaler_sets_pg_num": c.autoscaler_sets_pg_num,
                "monitor_sum": c.projected or None,
                "monitor_max": c.limit,
            }
            for c in decision.changes
        ],
        "pools": list(decision.pool_lines),
        "merges": list(decision.merges),
        "waits": list(decision.waits),
        "remaining": list(decision.remaining),
        "done": decision.done,
        "refusals": list(decision.refusals),
        "notes": list(decision.notes),
        "pgs_per_osd_now": round(decision.pgs_per_osd_now, 1),
        "pgs_per_osd_after": round(decision.pgs_per_osd_after, 1),
    }


def render_snapshot(where: str, snapshot: Any) -> None:
    click.echo(f"Ceph on {where}: {snapshot.health.status}")
    for check in snapshot.health.checks:
        click.echo(f"  {check.code} ({check.severity}): {check.summary}")
        for line in check.details:
            click.echo(f"    {line}")
    st = snapshot.status
    unclean = st.unclean_pgs()
    pgs = "all active+clean" if not unclean else ", ".join(f"{n} {s}" for s, n in sorted(unclean.items()))
    down = [o.name for o in snapshot.osds if not o.up]
    click.echo(
        f"OSDs: {st.num_up_osds} up, {st.num_in_osds} in, of {st.num_osds}"
        + (f" ({', '.join(down)} down)" if down else "")
        + f"; PGs: {st.num_pgs}, {pgs}; mgr {'active' if st.mgr_available else 'NOT active'}"
    )
    click.echo(
        f"PGs per OSD: {snapshot.pgs_per_osd():.0f} (mon_max_pg_per_osd {snapshot.mon_max_pg_per_osd}); the monitor "
        f"refuses a pg_num increase past {snapshot.mon_pg_limit} PG replicas in all"
    )
    rows = [("pool", "size", "pg_num", "pgp_num", "target", "mode", "autoscaler")]
    for p in snapshot.pools:
        row = snapshot.autoscale_row(p.name)
        rows.append(
            (p.name, str(p.size), str(p.pg_num), str(p.pgp_num), str(p.pg_num_target), p.autoscale_mode,
             str(row.pg_num_final) if row else "-")
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    click.echo("")
    for r in rows:
        click.echo(
            "  ".join(
                cell.ljust(w) if i in (0, 5) else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )


def render_decision(decision: Any, policy: Any, dry: bool) -> None:
    mode = f", then pg_autoscale_mode {policy.pin_mode_after}" if policy.strategy == "pin" else ""
    click.echo(f"Fix (strategy {policy.strategy}{mode}):")
    for line in decision.pool_lines:
        click.echo(f"  | {line}")
    for note in decision.notes:
        click.echo(f"  = {note}")
    for merge in decision.merges:
        click.echo(f"  ... {merge}")
    for wait in decision.waits:
        click.echo(f"  ... waiting: {wait}")
    for left in decision.remaining:
        click.echo(f"  ! remains: {left}")
    if decision.refused:
        for refusal in decision.refusals:
            click.echo(f"  ! refused: {refusal}")
        return
    if not decision.has_changes:
        click.echo("  = nothing to change" + ("" if decision.flagged else " (no PG-count warning names a pool)"))
        return
    verb = "would set" if dry else "set"
    for change in decision.changes:
        click.echo(f"  ~ {verb} {change.describe()}")
    click.echo(f"  PGs per OSD: {decision.pgs_per_osd_now:.0f} now, {decision.pgs_per_osd_after:.0f} after")
