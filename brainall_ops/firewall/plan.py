"""Phase 2 plan: one nftables ruleset per host and VM, from the role map's policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainall_ops.planning.changes import Change, Contribution
from brainall_ops.rolemap.models import RoleMap

if TYPE_CHECKING:
    from brainall_ops.planning.plan import PlanContext


def rules_for(rm: RoleMap, member: str, groups: dict[str, list[str]] | None = None) -> list[str]:
    """Names of the policy rules that open something on `member` (pass `groups` when calling in a loop)."""
    assert rm.firewall is not None
    groups = groups if groups is not None else rm.groups()
    return [
        rule.name
        for rule in rm.firewall.rules
        if any(t == "all" or t == member or member in groups.get(t, []) for t in rule.to)
    ]


def plan_changes(rm: RoleMap, context: PlanContext) -> Contribution:
    out = Contribution()
    fw = rm.firewall
    if fw is None:
        return out
    closed = ", ".join(str(p) for p in fw.closed_ports)
    groups = rm.groups()
    for name in [h.name for h in rm.hosts] + [v.name for v in rm.vms]:
        rules = rules_for(rm, name, groups)
        out.changes.append(
            Change(
                "phase2",
                "firewall",
                "create",
                name,
                f"nftables table inet brainall: input drop, {len(rules)} allow rule(s) "
                f"({', '.join(rules)})" + (f"; {closed} closed" if closed else ""),
                {"rules": rules},
            )
        )
    return out
