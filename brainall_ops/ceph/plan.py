"""Phase 2 plan: the Ceph placement-group fix (offline: from the recorded health)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainall_ops.planning.changes import Change, Contribution
from brainall_ops.rolemap.models import RoleMap

if TYPE_CHECKING:
    from brainall_ops.planning.plan import PlanContext


def plan_changes(rm: RoleMap, context: PlanContext) -> Contribution:
    out = Contribution()
    ceph = rm.ceph
    if ceph is None:
        return out
    if "POOL_TOO_MANY_PGS" in ceph.health_checks:
        how = (
            "set pg_autoscale_mode on for the pool(s) with too many PGs"
            if ceph.strategy == "autoscale"
            else f"set pg_num to the target in merge-sized steps, then pg_autoscale_mode {ceph.pin_mode_after}"
        )
        out.changes.append(
            Change(
                "phase2",
                "ceph",
                "update",
                ceph.monitor_host,
                f"POOL_TOO_MANY_PGS ({ceph.health}, {len(ceph.osd_hosts)} OSDs): {how}; "
                "the pools are read from the cluster when it can be reached",
                {"strategy": ceph.strategy, "osds": len(ceph.osd_hosts)},
            )
        )
    else:
        out.changes.append(Change("phase2", "ceph", "unchanged", ceph.monitor_host, f"{ceph.health}"))
    return out
