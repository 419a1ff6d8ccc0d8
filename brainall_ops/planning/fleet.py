"""From the role map to placement inputs, and the budget each Proxmox host is left with."""

from __future__ import annotations

from dataclasses import dataclass

from brainall_ops.planning.placement import (
    AntiAffinityRule,
    HostCapacity,
    Placement,
    PlacementError,
    PlacementResult,
    VMRequest,
    place,
)
from brainall_ops.rolemap.models import RoleMap


def host_capacities(rm: RoleMap) -> list[HostCapacity]:
    headroom = rm.placement.headroom
    out = []
    for h in rm.proxmox_hosts:
        assert h.proxmox is not None
        known_vcpu = sum(vm.vcpu or 0 for vm in h.proxmox.existing_vms)
        out.append(
            HostCapacity(
                name=h.name,
                latency_ms=h.measured.latency_from_gpu_ms,
                serves=frozenset(h.serves),
                ram_total_gb=h.hardware.ram_gb,
                ram_free_gb=h.measured.ram_free_gb,
                ram_headroom_gb=h.hardware.ram_gb * headroom.ram_pct / 100,
                vcpu_total=h.hardware.threads * headroom.vcpu_overcommit,
                vcpu_used=known_vcpu,
                disk_free_gb=h.measured.disk_free_gb,
                disk_headroom_gb=h.hardware.disk_gb * headroom.disk_pct / 100,
            )
        )
    return out


def existing_vm_hosts(rm: RoleMap) -> dict[str, str]:
    """VMs of the plan that the role map already records as running: VM -> host."""
    wanted = {vm.name for vm in rm.vms}
    return {
        existing.name: h.name
        for h in rm.proxmox_hosts
        for existing in (h.proxmox.existing_vms if h.proxmox else [])
        if existing.name in wanted
    }


def anti_affinity_rules(rm: RoleMap) -> list[AntiAffinityRule]:
    """placement.anti_affinity with groups resolved to the VMs in them."""
    groups: dict[str, set[str]] = {}
    for vm in rm.vms:
        groups.setdefault(vm.name, set()).add(vm.name)
        for group in vm.groups:
            groups.setdefault(group, set()).add(vm.name)

    def members(names: list[str]) -> frozenset[str]:
        return frozenset(vm for name in names for vm in groups.get(name, ()))

    return [
        AntiAffinityRule(rule.name, members(rule.vms), members(rule.apart_from) if rule.apart_from else None, i)
        for i, rule in enumerate(rm.placement.anti_affinity)
    ]


def headroom_text(rm: RoleMap) -> str:
    """How "after headroom" is computed, for refusals."""
    h = rm.placement.headroom
    return (
        f"After headroom (placement.headroom): a host's free RAM less {h.ram_pct:g} % of its total RAM, its free "
        f"disk less {h.disk_pct:g} % of its total disk, its threads x {h.vcpu_overcommit:g} less its existing "
        "VMs' vCPUs; less what this plan put there before"
    )


def place_rolemap(rm: RoleMap) -> PlacementResult:
    """Placement of every VM of the role map (VMs already running stay where they are)."""
    already = existing_vm_hosts(rm)
    requests = [
        VMRequest(vm.name, vm.tier, vm.vcpu, vm.memory_gb, vm.disk_gb, vm.latency_sensitive, vm.host)
        for vm in rm.vms
        if vm.name not in already
    ]
    result = place(
        requests,
        host_capacities(rm),
        rm.placement.latency_budget_ms,
        rm.placement.reference_host,
        strategy=rm.placement.strategy,
        anti_affinity=anti_affinity_rules(rm),
        fixed=already,
        headroom=headroom_text(rm),
    )
    for vm in rm.vms:
        if vm.name in already:
            result.placements.append(
                Placement(
                    vm.name,
                    already[vm.name],
                    vm.vcpu,
                    vm.memory_gb,
                    vm.disk_gb,
                    f"already running on {already[vm.name]} (recorded in the role map)",
                )
            )
    order = {vm.name: i for i, vm in enumerate(rm.vms)}
    result.placements.sort(key=lambda p: order[p.vm])
    return result


def place_located(rm: RoleMap) -> PlacementResult:
    """place_rolemap, with a refusal turned into one `file:line: field: message` line (RoleMapError)."""
    try:
        return place_rolemap(rm)
    except PlacementError as exc:
        raise located_refusal(rm, exc) from None


def located_refusal(rm: RoleMap, exc: PlacementError) -> Exception:
    """The refusal as one `file:line: field: message` line (a RoleMapError)."""
    from brainall_ops.errors import RoleMapError
    from brainall_ops.rolemap.loader import locate

    return RoleMapError([f"{locate(rm, refusal_loc(rm, exc))}: {exc}"])


def refusal_loc(rm: RoleMap, exc: PlacementError) -> tuple[str | int, ...]:
    """The role-map field a placement refusal is about."""
    if exc.rule is not None:
        return ("placement", "anti_affinity", exc.rule)
    index = next((i for i, vm in enumerate(rm.vms) if vm.name == exc.vm), None)
    if index is None:
        return ("vms",)
    return ("vms", index, exc.field) if exc.field else ("vms", index)


@dataclass(frozen=True)
class Budget:
    """A Proxmox host's memory budget after the plan."""

    host: str
    ram_total_gb: float
    ram_free_gb: float
    planned_gb: float
    used_after_gb: float
    vcpu_planned: int
    vms: tuple[str, ...]

    @property
    def planned_pct_of_free(self) -> float:
        return 100 * self.planned_gb / self.ram_free_gb if self.ram_free_gb else 0.0

    @property
    def used_after_pct(self) -> float:
        return 100 * self.used_after_gb / self.ram_total_gb if self.ram_total_gb else 0.0


def budgets(rm: RoleMap, result: PlacementResult) -> list[Budget]:
    """Both readings of the seed: new VMs against free RAM (prox-106: 56 of 118 GB, 47 %)
    and the host's total use after the plan against its RAM."""
    already = existing_vm_hosts(rm)
    placed_on: dict[str, list[Placement]] = {}
    for p in result.placements:
        if p.vm not in already:
            placed_on.setdefault(p.host, []).append(p)
    out = []
    for h in rm.proxmox_hosts:
        placed = placed_on.get(h.name, [])
        planned = sum(p.memory_gb for p in placed)
        used = (
            h.measured.ram_used_gb if h.measured.ram_used_gb is not None else h.hardware.ram_gb - h.measured.ram_free_gb
        )
        out.append(
            Budget(
                host=h.name,
                ram_total_gb=h.hardware.ram_gb,
                ram_free_gb=h.measured.ram_free_gb,
                planned_gb=planned,
                used_after_gb=used + planned,
                vcpu_planned=sum(p.vcpu for p in placed),
                vms=tuple(p.vm for p in placed),
            )
        )
    return out
