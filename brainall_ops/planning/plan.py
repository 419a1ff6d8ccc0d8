"""`brainall-ops plan`: what the deploys would do, phase by phase, without touching anything.

Offline by default: everything comes from the role map. Each concern contributes its own
changes through a `plan_changes(rolemap, context)` function in its `plan` module; those
modules are pure logic (no pyinfra, no proxmoxer), so an offline plan starts fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from brainall_ops.planning.changes import Change
from brainall_ops.planning.fleet import Budget, budgets, place_rolemap
from brainall_ops.planning.placement import PlacementResult
from brainall_ops.rolemap.models import RoleMap

# Order is the order of the phases in the output.
CONTRIBUTORS = (
    "brainall_ops.storage.plan",
    "brainall_ops.proxmox.plan",
    "brainall_ops.ceph.plan",
    "brainall_ops.firewall.plan",
    "brainall_ops.inference.plan",
    "brainall_ops.backends.plan",
    "brainall_ops.data.plan",
)


@dataclass
class PlanContext:
    """What contributors may use: the placement, and live readers when `--live` is given."""

    placement: PlacementResult
    live: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    rolemap_name: str
    source: str
    placement: PlacementResult
    budgets: list[Budget]
    changes: list[Change]
    warnings: list[str]
    refusals: list[str]

    @property
    def has_changes(self) -> bool:
        return any(c.is_change for c in self.changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "rolemap": self.rolemap_name,
            "source": self.source,
            "placements": [
                {
                    "vm": p.vm,
                    "host": p.host,
                    "vcpu": p.vcpu,
                    "memory_gb": p.memory_gb,
                    "disk_gb": p.disk_gb,
                    "reason": p.reason,
                    "pinned": p.pinned,
                    "rejected": [{"host": host, "why": why} for host, why in p.rejected],
                }
                for p in self.placement.placements
            ],
            "budgets": [
                {
                    "host": b.host,
                    "ram_total_gb": b.ram_total_gb,
                    "ram_free_gb": b.ram_free_gb,
                    "planned_gb": b.planned_gb,
                    "planned_pct_of_free": round(b.planned_pct_of_free, 2),
                    "used_after_gb": b.used_after_gb,
                    "used_after_pct": round(b.used_after_pct, 2),
                    "vcpu_planned": b.vcpu_planned,
                    "vms": list(b.vms),
                }
                for b in self.budgets
            ],
            "changes": [c.to_json() for c in self.changes],
            "warnings": self.warnings,
            "refusals": self.refusals,
        }


def build_plan(rm: RoleMap, source: str, live: bool = False, **options: Any) -> Plan:
    """Raises PlacementError when a VM cannot be placed (place_located gives it a file:line)."""
    placement = place_rolemap(rm)
    context = PlanContext(placement=placement, live=live, options=options)
    changes: list[Change] = []
    warnings: list[str] = []
    refusals: list[str] = []
    for module_name in CONTRIBUTORS:
        module = importlib.import_module(module_name)
        contribution = module.plan_changes(rm, context)
        changes.extend(contribution.changes)
        warnings.extend(contribution.warnings)
        refusals.extend(contribution.refusals)
    warnings.extend(disk_warnings(rm))
    return Plan(rm.name, source, placement, budgets(rm, placement), changes, warnings, refusals)


DISK_WARN_PCT = 85.0


def disk_warnings(rm: RoleMap) -> list[str]:
    out = []
    for h in rm.hosts:
        total = h.hardware.disk_gb
        used_pct = 100 * (total - h.measured.disk_free_gb) / total if total else 0
        if used_pct > DISK_WARN_PCT:
            out.append(f"{h.name}: disk {used_pct:.0f} % used ({h.measured.disk_free_gb:g} GB free of {total:g} GB)")
    return out
