"""Phase 2 plan: each host's nftables ruleset from the role map, as a diff of rules added and removed.

Offline, against the ruleset this controller last confirmed on the host (firewall/record.py);
with `--live`, against the host's live table (read over SSH, read-only). Options: `environment`
(default production) picks the addresses the rulesets are rendered with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainall_ops.errors import BrainallError
from brainall_ops.planning.changes import Change, Contribution
from brainall_ops.rolemap.environment import PRODUCTION
from brainall_ops.rolemap.models import RoleMap

if TYPE_CHECKING:
    from brainall_ops.planning.plan import PlanContext


def plan_changes(rm: RoleMap, context: PlanContext) -> Contribution:
    out = Contribution()
    fw_policy = rm.firewall
    if fw_policy is None:
        return out
    # Imported here: the plan of a map without a firewall pays nothing for rendering.
    from brainall_ops.firewall.diff import diff
    from brainall_ops.firewall.policy import compile_policy
    from brainall_ops.firewall.record import read_record
    from brainall_ops.firewall.render import render_ruleset

    environment = str(context.options.get("environment") or PRODUCTION)
    try:
        policy = compile_policy(rm, environment)
    except BrainallError as exc:
        out.refusals.append(f"firewall: {exc}")
        return out
    live = {}
    if context.live:
        from brainall_ops.firewall.live import read_live

        live = read_live(rm, environment, list(policy))
    proxmox = {h.name for h in rm.proxmox_hosts}

    for name, fw in policy.items():
        text = render_ruleset(fw)
        table = live.get(name)
        if table is not None and table.error is None:
            current, basis = table.listing, "the live table"
            if table.state.get("pending") == "yes":
                out.warnings.append(f"firewall {name}: an unconfirmed ruleset is live (its rollback is pending)")
            if table.state.get("rolled_back") == "yes":
                out.warnings.append(f"firewall {name}: the last ruleset applied was not confirmed and was rolled back")
        else:
            if table is not None:
                out.warnings.append(f"firewall {name}: live table not read ({table.error}); compared with the record")
            current, basis = read_record(environment, name), "the last deploy from this controller"
        changes = diff(current, text)
        extras = ([f"fail2ban on SSH {fw.ssh_port}"] if fw.exposed else []) + (
            ["pve-firewall node rules off"] if name in proxmox else []
        )
        tail = "".join(f"; {extra}" for extra in extras)
        if current is None:
            action = "create"
            closed = ", ".join(str(p) for p in fw.closed_ports)
            summary = (
                f"nftables table inet brainall: input drop, {len(fw.rules)} rule(s) ({', '.join(fw.rules)})"
                + (f"; {closed} closed" if closed else "")
                + tail
                + ("" if table is not None and table.error is None else " (no recorded deploy)")
            )
        elif changes.changed:
            action = "update"
            summary = f"{len(changes.added)} added, {len(changes.removed)} removed vs {basis}: {changes.summary()}"
        else:
            action = "unchanged"
            summary = f"as {basis}: {len(fw.rules)} rule(s) ({', '.join(fw.rules)}){tail}"
        out.changes.append(
            Change(
                "phase2",
                "firewall",
                action,
                name,
                summary,
                {
                    "environment": environment,
                    "compared_with": basis if current is not None else None,
                    "rules": fw.rules,
                    "added": [f"{block}: {line}" for block, line in changes.added],
                    "removed": [f"{block}: {line}" for block, line in changes.removed],
                    "fail2ban": fw.exposed,
                },
            )
        )
    return out
