"""Phase 2 plan: the Ceph placement-group fix.

Offline (the default): from the health the role map records. With `brainall-ops plan --live`:
from the cluster itself, read on the monitor host exactly as `brainall-ops ceph fix --dry` reads
it, one change per pool a PG-count warning names, in the order the fix sends them (decreases,
their merges, increases; each line says its step, the target and why), or the gate that would
refuse the fix. Where the live
reading fails, the plan says why in a warning and falls back to the recorded state.

Which cluster the live plan reads: `context.options["ceph_conf"]` or the environment variable
BRAINALL_CEPH_CONF names a ceph.conf used on this machine (a test cluster, a rehearsal);
otherwise the role map's monitor host through its generated site inventory over SSH
(`context.options["ceph_inventory"]` names another inventory file).

Kept light at import: the live reader (pyinfra) is imported only when `live` is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from brainall_ops.planning.changes import Change, Contribution
from brainall_ops.rolemap.models import RoleMap

if TYPE_CHECKING:
    from brainall_ops.planning.plan import PlanContext

CONF_ENV = "BRAINALL_CEPH_CONF"


def plan_changes(rm: RoleMap, context: PlanContext) -> Contribution:
    out = Contribution()
    ceph = rm.ceph
    if ceph is None:
        return out
    if context.live and _live_changes(rm, context, out):
        return out
    checks = [c for c in ("POOL_TOO_MANY_PGS", "POOL_TOO_FEW_PGS", "TOO_MANY_PGS") if c in ceph.health_checks]
    if checks:
        how = (
            "set pg_autoscale_mode on for each pool named (pg_num pinned to Ceph's target first where the "
            "autoscaler would not act, within its 3x threshold)"
            if ceph.strategy == "autoscale"
            else f"set pg_num to Ceph's target, then pg_autoscale_mode {ceph.pin_mode_after}"
        )
        out.changes.append(
            Change(
                "phase2",
                "ceph",
                "update",
                ceph.monitor_host,
                f"{', '.join(checks)} ({ceph.health}, {len(ceph.osd_hosts)} OSDs): {how}; decreases first, "
                "their merges, then increases; the pools are read from the cluster when it can be reached",
                {"strategy": ceph.strategy, "osds": len(ceph.osd_hosts)},
            )
        )
    else:
        out.changes.append(Change("phase2", "ceph", "unchanged", ceph.monitor_host, f"{ceph.health}"))
    return out


def _live_changes(rm: RoleMap, context: PlanContext, out: Contribution) -> bool:
    """Add the live changes to `out`; False (with a warning) when the cluster cannot be read."""
    from brainall_ops.ceph.run import resolve_target, session
    from brainall_ops.ceph.targets import Policy, decide
    from brainall_ops.errors import BrainallError

    assert rm.ceph is not None
    conf = context.options.get("ceph_conf") or os.environ.get(CONF_ENV)
    inventory = context.options.get("ceph_inventory")
    try:
        target = resolve_target(rm, local=bool(conf), ceph_conf=conf, inventory=Path(inventory) if inventory else None)
        with session(target) as reader:
            snapshot = reader.read()
    except BrainallError as exc:
        out.warnings.append(f"ceph: not read live ({exc}); showing the recorded health")
        return False
    policy = Policy.from_rolemap(rm.ceph)
    decision = decide(snapshot, policy)
    where = rm.ceph.monitor_host if target.name != "@local" else target.where
    detail = {"strategy": policy.strategy, "source": "live", "health": snapshot.health.status}
    if decision.refused:
        for refusal in decision.refusals:
            out.changes.append(Change("phase2", "ceph", "refuse", where, f"fix refused now: {refusal}", detail))
            out.warnings.append(f"ceph: `brainall-ops ceph fix` would refuse: {refusal}")
        return True
    for merge in (*decision.merges, *decision.waits):
        out.warnings.append(f"ceph: the fix waits first: {merge}")
    for change in decision.changes:
        out.changes.append(
            Change(
                "phase2",
                "ceph",
                "update",
                where,
                f"{change.describe()}; why: {change.why}",
                {
                    **detail,
                    "pool": change.pool,
                    "target": change.target,
                    "order": change.order,
                    "phase": change.phase,
                    "why": change.why,
                    "settings": {s.key: [s.old, s.new] for s in change.settings},
                },
            )
        )
    if not decision.changes:
        flagged = "no PG-count warning names a pool" if not decision.flagged else "nothing to change"
        out.changes.append(Change("phase2", "ceph", "unchanged", where, f"{snapshot.health.status} (live): {flagged}"))
    return True
