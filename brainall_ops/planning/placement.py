"""Which Proxmox host each VM goes on, from measured capacity and latency.

Rules, in order:
1. a latency-sensitive VM only goes on a host within the latency budget of the reference
   host (the GPU box): the 25 ms Frankfurt host never gets api/workers/nginx/db;
2. the VM must fit in what the host has free after its existing VMs, the VMs placed before
   it, and the configured headroom (RAM, vCPU, disk);
3. among the hosts that qualify, hosts that serve the VM's tier come first, then the one with
   the most free RAM (ties by name);
4. a pin (`host:` on the VM) is honoured, but checked against rules 1 and 2.

VMs are placed pinned first, then largest memory first, which packs well and is deterministic.
Candidates are kept in heaps ordered by free RAM, so a plan of 10,000 VMs on 1,000 hosts
stays well under a second or two.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from brainall_ops.errors import BrainallError

# Reasons are listed host by host only for fleets a person reads; beyond this the
# rejected hosts are summarised.
DETAIL_LIMIT = 32


class PlacementError(BrainallError):
    pass


@dataclass
class HostCapacity:
    """A Proxmox host's capacity as placement sees it (all in GB / vCPU)."""

    name: str
    latency_ms: float | None
    serves: frozenset[str]
    ram_total_gb: float
    ram_free_gb: float  # measured, before headroom
    ram_headroom_gb: float
    vcpu_total: float  # threads x overcommit
    vcpu_used: float  # known vCPUs of existing VMs
    disk_free_gb: float
    disk_headroom_gb: float
    placed_ram_gb: float = 0
    placed_vcpu: float = 0
    placed_disk_gb: float = 0
    version: int = 0

    @property
    def ram_available(self) -> float:
        return self.ram_free_gb - self.ram_headroom_gb - self.placed_ram_gb

    @property
    def vcpu_available(self) -> float:
        return self.vcpu_total - self.vcpu_used - self.placed_vcpu

    @property
    def disk_available(self) -> float:
        return self.disk_free_gb - self.disk_headroom_gb - self.placed_disk_gb


@dataclass(frozen=True)
class VMRequest:
    name: str
    tier: str
    vcpu: int
    memory_gb: float
    disk_gb: float
    latency_sensitive: bool = True
    pinned_host: str | None = None


@dataclass(frozen=True)
class Placement:
    vm: str
    host: str
    vcpu: int
    memory_gb: float
    disk_gb: float
    reason: str
    rejected: tuple[tuple[str, str], ...] = ()
    pinned: bool = False


@dataclass
class PlacementResult:
    placements: list[Placement]
    hosts: dict[str, HostCapacity] = field(default_factory=dict)

    def by_vm(self) -> dict[str, Placement]:
        return {p.vm: p for p in self.placements}


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _ms(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") + " ms"


def _latency_ok(host: HostCapacity, vm: VMRequest, budget_ms: float) -> bool:
    return not vm.latency_sensitive or (host.latency_ms is not None and host.latency_ms <= budget_ms)


def why_not(host: HostCapacity, vm: VMRequest, budget_ms: float) -> str | None:
    """Why `vm` cannot go on `host` now, or None when it can."""
    if not _latency_ok(host, vm, budget_ms):
        latency = "unmeasured" if host.latency_ms is None else _ms(host.latency_ms)
        return f"latency {latency} > {_ms(budget_ms)} budget"
    lacks = []
    if vm.memory_gb > host.ram_available + 1e-9:
        lacks.append(f"{_num(host.ram_available)} GB RAM free after headroom (needs {_num(vm.memory_gb)})")
    if vm.vcpu > host.vcpu_available + 1e-9:
        lacks.append(f"{_num(host.vcpu_available)} vCPU free (needs {vm.vcpu})")
    if vm.disk_gb > host.disk_available + 1e-9:
        lacks.append(f"{_num(host.disk_available)} GB disk free after headroom (needs {_num(vm.disk_gb)})")
    return "only " + ", ".join(lacks) if lacks else None


def _describe(host: HostCapacity) -> str:
    latency = "latency unmeasured" if host.latency_ms is None else _ms(host.latency_ms)
    return (
        f"{host.name}: {_num(host.ram_available)} GB RAM, {_num(host.vcpu_available)} vCPU, "
        f"{_num(host.disk_available)} GB disk free after headroom, {latency}"
    )


class _Heaps:
    """Per-tier max-heaps of hosts by free RAM, with lazy invalidation by version."""

    def __init__(self, hosts: Sequence[HostCapacity]) -> None:
        self.hosts = hosts
        self.by_tier: dict[str, tuple[list, list]] = {}

    def for_tier(self, tier: str) -> tuple[list, list]:
        if tier not in self.by_tier:
            serving = [(-h.ram_available, h.name, h.version, h) for h in self.hosts if tier in h.serves]
            others = [(-h.ram_available, h.name, h.version, h) for h in self.hosts if tier not in h.serves]
            heapq.heapify(serving)
            heapq.heapify(others)
            self.by_tier[tier] = (serving, others)
        return self.by_tier[tier]

    def updated(self, host: HostCapacity) -> None:
        host.version += 1
        for tier, (serving, others) in self.by_tier.items():
            heapq.heappush(
                serving if tier in host.serves else others, (-host.ram_available, host.name, host.version, host)
            )


def _best(heap: list, vm: VMRequest, budget_ms: float, rejected: list[tuple[str, str]]) -> HostCapacity | None:
    set_aside = []
    chosen = None
    while heap:
        entry = heapq.heappop(heap)
        host: HostCapacity = entry[3]
        if entry[2] != host.version:
            continue  # stale entry; a fresh one is in the heap
        set_aside.append(entry)
        problem = why_not(host, vm, budget_ms)
        if problem is None:
            chosen = host
            break
        rejected.append((host.name, problem))
        if -entry[0] < vm.memory_gb:
            break  # every host below has less free RAM: none can fit
    for entry in set_aside:
        heapq.heappush(heap, entry)
    return chosen


def place(
    vms: Iterable[VMRequest],
    hosts: Sequence[HostCapacity],
    latency_budget_ms: float,
    reference_host: str = "the reference host",
) -> PlacementResult:
    """Place every VM or raise PlacementError with the numbers."""
    vm_list = list(vms)
    by_name = {h.name: h for h in hosts}
    heaps = _Heaps(hosts)
    detail = len(hosts) <= DETAIL_LIMIT
    decided: dict[str, Placement] = {}

    order = sorted(vm_list, key=lambda v: (v.pinned_host is None, -v.memory_gb, v.name))
    for vm in order:
        if vm.pinned_host is not None:
            host = by_name.get(vm.pinned_host)
            if host is None:
                raise PlacementError(f"{vm.name}: pinned to {vm.pinned_host!r}, which is not a Proxmox host")
            problem = why_not(host, vm, latency_budget_ms)
            if problem is not None:
                raise PlacementError(f"{vm.name}: pinned to {host.name}, but {host.name} has {problem}")
            reason = f"pinned in the role map; fits: {_describe(host)}"
            rejected: list[tuple[str, str]] = []
        else:
            rejected = []
            serving, others = heaps.for_tier(vm.tier)
            host = _best(serving, vm, latency_budget_ms, rejected)
            fallback = host is None
            if host is None:
                host = _best(others, vm, latency_budget_ms, rejected)
            if host is None:
                raise PlacementError(_nowhere(vm, hosts, latency_budget_ms))
            tier_note = (
                f"no host serving '{vm.tier}' had room, so the best other host"
                if fallback and any(vm.tier in h.serves for h in hosts)
                else f"serves '{vm.tier}'"
                if vm.tier in host.serves
                else f"no host serves '{vm.tier}'"
            )
            latency_note = (
                f"within the {_ms(latency_budget_ms)} budget from {reference_host}"
                if vm.latency_sensitive
                else "not latency-sensitive"
            )
            reason = f"most free RAM among qualifying hosts ({tier_note}; {latency_note}): {_describe(host)}"

        if detail:
            seen = {name for name, _ in rejected}
            for other in hosts:
                if other is host or other.name in seen:
                    continue
                problem = why_not(other, vm, latency_budget_ms)
                if problem is None:
                    if vm.pinned_host is not None:
                        problem = "not the pinned host"
                    elif vm.tier in host.serves and vm.tier not in other.serves:
                        problem = f"does not serve '{vm.tier}'"
                    else:
                        problem = f"less free RAM ({_num(other.ram_available)} GB)"
                rejected.append((other.name, problem))
        else:
            skipped = len(hosts) - 1 - len(rejected)
            if skipped > 0:
                rejected.append((f"{skipped} other hosts", "less free RAM or later in the order"))

        host.placed_ram_gb += vm.memory_gb
        host.placed_vcpu += vm.vcpu
        host.placed_disk_gb += vm.disk_gb
        heaps.updated(host)
        decided[vm.name] = Placement(
            vm=vm.name,
            host=host.name,
            vcpu=vm.vcpu,
            memory_gb=vm.memory_gb,
            disk_gb=vm.disk_gb,
            reason=reason,
            rejected=tuple(rejected),
            pinned=vm.pinned_host is not None,
        )
    return PlacementResult([decided[v.name] for v in vm_list], dict(by_name))


def _nowhere(vm: VMRequest, hosts: Sequence[HostCapacity], budget_ms: float) -> str:
    shown = [f"{h.name}: {why_not(h, vm, budget_ms) or 'fits'}" for h in hosts[:10]]
    more = f"; and {len(hosts) - 10} more hosts" if len(hosts) > 10 else ""
    return (
        f"{vm.name} fits on no Proxmox host: it needs {vm.vcpu} vCPU, {_num(vm.memory_gb)} GB RAM, "
        f"{_num(vm.disk_gb)} GB disk"
        + (" within the latency budget" if vm.latency_sensitive else "")
        + " — "
        + "; ".join(shown)
        + more
    )
