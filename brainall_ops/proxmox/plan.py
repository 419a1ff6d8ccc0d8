"""Phase 2 plan: the VMs to create, from the placement (offline) or the live cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainall_ops.planning.changes import Change, Contribution
from brainall_ops.planning.fleet import existing_vm_hosts
from brainall_ops.rolemap.models import RoleMap

if TYPE_CHECKING:
    from brainall_ops.planning.plan import PlanContext


def plan_changes(rm: RoleMap, context: PlanContext) -> Contribution:
    out = Contribution()
    already = existing_vm_hosts(rm)
    placements = context.placement.by_vm()
    for vm in rm.vms:
        p = placements[vm.name]
        spec = f"{vm.vcpu} vCPU, {vm.memory_gb:g} GB RAM, {vm.disk_gb:g} GB disk, {vm.address}"
        detail = {
            "host": p.host,
            "vcpu": vm.vcpu,
            "memory_gb": vm.memory_gb,
            "disk_gb": vm.disk_gb,
            "address": str(vm.address),
            "vmid": vm.vmid,
            "reason": p.reason,
        }
        if vm.name in already:
            out.changes.append(Change("phase2", "proxmox", "unchanged", vm.name, f"on {p.host} ({spec})", detail))
        else:
            out.changes.append(Change("phase2", "proxmox", "create", vm.name, f"on {p.host}: {spec}", detail))
    return out
