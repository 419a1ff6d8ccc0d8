"""Which Proxmox host each VM goes on, from measured capacity and latency.

Rules, in order:
1. a latency-sensitive VM only goes on a host within the latency budget of the reference
   host (the GPU box): the 25 ms Frankfurt host never gets api/workers/nginx/db;
2. the VM must fit in what the host has free after its existing VMs, the VMs placed before
   it, and the configured headroom (RAM, vCPU, disk);
3. anti-affinity: a VM never shares a host with a VM its rules keep it apart from;
4. among the hosts that qualify, hosts that serve the VM's tier come first, then, with the
   `pack` strategy, the one with the most free RAM; with `spread`, the one with the fewest VMs
   of this plan, then the most free RAM (ties by name);
5. a pin (`host:` on the VM) is honoured, but checked against rules 1 to 3.

VMs are placed pinned first, then largest memory first, which packs well and is deterministic.
Candidates are kept in heaps ordered by the strategy's key, so a plan of 10,000 VMs on 1,000
hosts stays well under a second or two. When that greedy pass leaves a VM with no host (an
anti-affinity rule met a full host, or a packing the first choice spoiled) and the fleet is
small, a bounded backtracking search over assignments looks for a placement that keeps every
rule; when none exists, the refusal lists every host with what it has and why it was not chosen.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from brainall_ops.errors import BrainallError

# Reasons are listed host by host only for fleets a person reads; beyond this the
# rejected hosts are summarised.
DETAIL_LIMIT = 32
# The backtracking search runs on fleets up to this size (VMs x hosts), for at most this many steps.
SEARCH_MAX_CELLS = 64 * 64
SEARCH_MAX_STEPS = 20_000
EPSILON = 1e-9

Strategy = Literal["pack", "spread"]


class PlacementError(BrainallError):
    """A VM cannot be placed. `vm` and `field` (or `rule`, the index of an anti-affinity rule)
    say which part of the role map the refusal is about, for its file:line."""

    def __init__(self, message: str, vm: str | None = None, field: str | None = None, rule: int | None = None):
        super().__init__(message)
        self.vm, self.field, self.rule = vm, field, rule


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
    placed_count: int = 0

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
class AntiAffinityRule:
    """VMs kept on different hosts: every two of `vms` when `apart_from` is None, else no VM of
    `vms` with any of `apart_from`. `index` is the rule's place in placement.anti_affinity."""

    name: str
    vms: frozenset[str]
    apart_from: frozenset[str] | None = None
    index: int = 0

    def keeps_apart(self, vm: str) -> frozenset[str]:
        """The VMs `vm` must not share a host with, under this rule."""
        if self.apart_from is None:
            return self.vms - {vm} if vm in self.vms else frozenset()
        if vm in self.vms:
            return self.apart_from
        if vm in self.apart_from:
            return self.vms
        return frozenset()


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


def _lacks(host: HostCapacity, vm: VMRequest) -> list[tuple[str, str]]:
    """(field of the VM, what the host lacks) for each resource the VM does not fit in."""
    lacks = []
    if vm.memory_gb > host.ram_available + EPSILON:
        lacks.append(
            ("memory_gb", f"{_num(host.ram_available)} GB RAM free after headroom (needs {_num(vm.memory_gb)})")
        )
    if vm.vcpu > host.vcpu_available + EPSILON:
        lacks.append(("vcpu", f"{_num(host.vcpu_available)} vCPU free (needs {vm.vcpu})"))
    if vm.disk_gb > host.disk_available + EPSILON:
        lacks.append(("disk_gb", f"{_num(host.disk_available)} GB disk free after headroom (needs {_num(vm.disk_gb)})"))
    return lacks


def why_not(host: HostCapacity, vm: VMRequest, budget_ms: float) -> str | None:
    """Why `vm` cannot go on `host` now (latency or capacity), or None when it can."""
    if not _latency_ok(host, vm, budget_ms):
        latency = "unmeasured" if host.latency_ms is None else _ms(host.latency_ms)
        return f"latency {latency} > {_ms(budget_ms)} budget"
    lacks = _lacks(host, vm)
    return "only " + ", ".join(text for _, text in lacks) if lacks else None


def _describe(host: HostCapacity) -> str:
    latency = "latency unmeasured" if host.latency_ms is None else _ms(host.latency_ms)
    return (
        f"{host.name}: {_num(host.ram_available)} GB RAM, {_num(host.vcpu_available)} vCPU, "
        f"{_num(host.disk_available)} GB disk free after headroom, {latency}"
    )


def _has(host: HostCapacity) -> str:
    """What a host has, for a refusal: the same numbers as _describe, after the host's name."""
    return "has " + _describe(host).split(": ", 1)[1]


class _Rules:
    """Anti-affinity as placement asks it: which VMs a VM must avoid, and who is on each host."""

    def __init__(self, rules: Sequence[AntiAffinityRule], fixed: Mapping[str, str]) -> None:
        self.rules = list(rules)
        self.of_vm: dict[str, list[AntiAffinityRule]] = {}
        for rule in self.rules:
            for vm in rule.vms | (rule.apart_from or frozenset()):
                self.of_vm.setdefault(vm, []).append(rule)
        self.residents: dict[str, set[str]] = {}
        for vm, host in fixed.items():
            if vm in self.of_vm:
                self.residents.setdefault(host, set()).add(vm)

    def conflicts(self, vm: str, host: str) -> list[tuple[AntiAffinityRule, list[str]]]:
        """The rules `vm` would break on `host`, each with the VMs there it must avoid."""
        rules = self.of_vm.get(vm)
        there = self.residents.get(host)
        if not rules or not there:
            return []
        out = []
        for rule in rules:
            clash = sorted(rule.keeps_apart(vm) & there)
            if clash:
                out.append((rule, clash))
        return out

    def conflict_text(self, vm: str, host: str) -> str | None:
        found = self.conflicts(vm, host)
        if not found:
            return None
        return "; ".join(
            f"anti-affinity '{rule.name}': {', '.join(clash)} {'is' if len(clash) == 1 else 'are'} there"
            for rule, clash in found
        )

    def of_vm_avoid(self, vm: str) -> set[str]:
        return {other for rule in self.of_vm.get(vm, []) for other in rule.keeps_apart(vm)}

    def add(self, vm: str, host: str) -> None:
        if vm in self.of_vm:
            self.residents.setdefault(host, set()).add(vm)

    def remove(self, vm: str, host: str) -> None:
        if vm in self.of_vm:
            self.residents.get(host, set()).discard(vm)

    def note(self, vm: str, host: str, placed: Mapping[str, str]) -> str:
        """How the chosen host keeps `vm`'s rules, for its reason ('' when it has none)."""
        parts = []
        for rule in self.of_vm.get(vm, []):
            avoid = sorted(rule.keeps_apart(vm))
            where = [f"{v} on {placed[v]}" for v in avoid if v in placed]
            kept = f" ({', '.join(where)})" if where else ""
            parts.append(f"anti-affinity '{rule.name}': not with {', '.join(avoid)}{kept}")
        return "; " + "; ".join(parts) if parts else ""


def _key(host: HostCapacity, strategy: Strategy) -> tuple:
    if strategy == "spread":
        return (host.placed_count, -host.ram_available, host.name, host.version)
    return (-host.ram_available, host.name, host.version)


class _Heaps:
    """Per-tier heaps of hosts in the strategy's order, with lazy invalidation by version."""

    def __init__(self, hosts: Sequence[HostCapacity], strategy: Strategy) -> None:
        self.hosts = hosts
        self.strategy = strategy
        self.by_tier: dict[str, tuple[list, list]] = {}

    def entry(self, host: HostCapacity) -> tuple:
        return (*_key(host, self.strategy), host)

    def for_tier(self, tier: str) -> tuple[list, list]:
        if tier not in self.by_tier:
            serving = [self.entry(h) for h in self.hosts if tier in h.serves]
            others = [self.entry(h) for h in self.hosts if tier not in h.serves]
            heapq.heapify(serving)
            heapq.heapify(others)
            self.by_tier[tier] = (serving, others)
        return self.by_tier[tier]

    def updated(self, host: HostCapacity) -> None:
        host.version += 1
        for tier, (serving, others) in self.by_tier.items():
            heapq.heappush(serving if tier in host.serves else others, self.entry(host))


def _best(
    heap: list,
    vm: VMRequest,
    budget_ms: float,
    rejected: list[tuple[str, str]],
    rules: _Rules,
    strategy: Strategy,
) -> HostCapacity | None:
    set_aside = []
    chosen = None
    while heap:
        entry = heapq.heappop(heap)
        host: HostCapacity = entry[-1]
        if entry[-2] != host.version:
            continue  # stale entry; a fresh one is in the heap
        set_aside.append(entry)
        problem = why_not(host, vm, budget_ms) or rules.conflict_text(vm.name, host.name)
        if problem is None:
            chosen = host
            break
        rejected.append((host.name, problem))
        if strategy == "pack" and host.ram_available < vm.memory_gb:
            break  # every host below has less free RAM: none can fit
    for entry in set_aside:
        heapq.heappush(heap, entry)
    return chosen


def _order(vms: Iterable[VMRequest]) -> list[VMRequest]:
    return sorted(vms, key=lambda v: (v.pinned_host is None, -v.memory_gb, v.name))


def _tier_note(vm: VMRequest, host: HostCapacity, hosts: Sequence[HostCapacity], fallback: bool) -> str:
    if fallback and any(vm.tier in h.serves for h in hosts):
        return f"no host serving '{vm.tier}' had room, so the best other host"
    if vm.tier in host.serves:
        return f"serves '{vm.tier}'"
    return f"no host serves '{vm.tier}'"


def _choice_reason(
    vm: VMRequest,
    host: HostCapacity,
    hosts: Sequence[HostCapacity],
    fallback: bool,
    budget_ms: float,
    reference_host: str,
    strategy: Strategy,
) -> str:
    tier_note = _tier_note(vm, host, hosts, fallback)
    latency_note = (
        f"within the {_ms(budget_ms)} budget from {reference_host}" if vm.latency_sensitive else "not latency-sensitive"
    )
    if strategy == "spread":
        head = f"spread: fewest VMs of this plan ({host.placed_count}) among qualifying hosts, then most free RAM"
    else:
        head = "most free RAM among qualifying hosts"
    return f"{head} ({tier_note}; {latency_note}): {_describe(host)}"


def _other_reasons(
    vm: VMRequest,
    host: HostCapacity,
    hosts: Sequence[HostCapacity],
    rejected: list[tuple[str, str]],
    budget_ms: float,
    rules: _Rules,
    strategy: Strategy,
    searched: bool = False,
) -> None:
    """Why every other host was not chosen (appended to `rejected`)."""
    if len(hosts) > DETAIL_LIMIT:
        skipped = len(hosts) - 1 - len(rejected)
        if skipped > 0:
            rejected.append((f"{skipped} other hosts", "less free RAM or later in the order"))
        return
    seen = {name for name, _ in rejected}
    for other in hosts:
        if other is host or other.name in seen:
            continue
        problem = why_not(other, vm, budget_ms) or rules.conflict_text(vm.name, other.name)
        if problem is None:
            if vm.pinned_host is not None:
                problem = "not the pinned host"
            elif searched:
                problem = "fits, but the search over assignments needed it for the anti-affinity rules elsewhere"
            elif vm.tier in host.serves and vm.tier not in other.serves:
                problem = f"does not serve '{vm.tier}'"
            elif strategy == "spread" and other.placed_count > host.placed_count:
                problem = f"more VMs of this plan ({other.placed_count})"
            else:
                problem = f"less free RAM ({_num(other.ram_available)} GB)"
        rejected.append((other.name, problem))


def _commit(host: HostCapacity, vm: VMRequest) -> None:
    host.placed_ram_gb += vm.memory_gb
    host.placed_vcpu += vm.vcpu
    host.placed_disk_gb += vm.disk_gb
    host.placed_count += 1


def _uncommit(host: HostCapacity, vm: VMRequest) -> None:
    host.placed_ram_gb -= vm.memory_gb
    host.placed_vcpu -= vm.vcpu
    host.placed_disk_gb -= vm.disk_gb
    host.placed_count -= 1


class _Unplaced(Exception):
    """The greedy pass found no host for `vm`; `refusal` says why, with the hosts as they were then."""

    def __init__(self, vm: VMRequest, refusal: PlacementError) -> None:
        self.vm, self.refusal = vm, refusal


def place(
    vms: Iterable[VMRequest],
    hosts: Sequence[HostCapacity],
    latency_budget_ms: float,
    reference_host: str = "the reference host",
    *,
    strategy: Strategy = "pack",
    anti_affinity: Sequence[AntiAffinityRule] = (),
    fixed: Mapping[str, str] | None = None,
    headroom: str = "",
) -> PlacementResult:
    """Place every VM or raise PlacementError with the numbers.

    `fixed`: VMs already running (VM -> host), which anti-affinity rules count where they are.
    `headroom`: how the headroom was computed, for refusals (placement.headroom in the role map)."""
    vm_list = list(vms)
    by_name = {h.name: h for h in hosts}
    fixed = dict(fixed or {})
    for vm in vm_list:
        if vm.pinned_host is not None and vm.pinned_host not in by_name:
            raise PlacementError(
                f"{vm.name}: pinned to {vm.pinned_host!r}, which is not a Proxmox host", vm=vm.name, field="host"
            )
    start = {h.name: (h.placed_ram_gb, h.placed_vcpu, h.placed_disk_gb, h.placed_count) for h in hosts}
    try:
        return _greedy(
            vm_list, hosts, by_name, latency_budget_ms, reference_host, strategy, anti_affinity, fixed, headroom
        )
    except _Unplaced as unplaced:
        for h in hosts:  # the search starts from where the greedy pass started
            h.placed_ram_gb, h.placed_vcpu, h.placed_disk_gb, h.placed_count = start[h.name]
            h.version += 1
        alone = _Rules(anti_affinity, fixed)
        fits_alone = any(
            why_not(h, unplaced.vm, latency_budget_ms) is None and not alone.conflicts(unplaced.vm.name, h.name)
            for h in hosts
            if unplaced.vm.pinned_host in (None, h.name)
        )
        if not fits_alone:  # no other placement could help it
            raise unplaced.refusal from None
        impossible = _too_few_hosts(vm_list, hosts, latency_budget_ms, anti_affinity, headroom)
        if impossible is not None:
            raise impossible from None
        if len(vm_list) * len(hosts) > SEARCH_MAX_CELLS:
            unplaced.refusal.args = (
                f"{unplaced.refusal} (the fleet is too large for the search over assignments that could "
                f"reorder the placement: {len(vm_list)} VMs x {len(hosts)} hosts > {SEARCH_MAX_CELLS:,})",
            )
            raise unplaced.refusal from None
        return _search(
            vm_list,
            hosts,
            by_name,
            latency_budget_ms,
            reference_host,
            strategy,
            anti_affinity,
            fixed,
            headroom,
            unplaced.vm,
        )


def _greedy(
    vm_list: list[VMRequest],
    hosts: Sequence[HostCapacity],
    by_name: dict[str, HostCapacity],
    budget_ms: float,
    reference_host: str,
    strategy: Strategy,
    anti_affinity: Sequence[AntiAffinityRule],
    fixed: Mapping[str, str],
    headroom: str,
) -> PlacementResult:
    heaps = _Heaps(hosts, strategy)
    rules = _Rules(anti_affinity, fixed)
    decided: dict[str, Placement] = {}
    placed: dict[str, str] = dict(fixed)
    for vm in _order(vm_list):
        rejected: list[tuple[str, str]] = []
        if vm.pinned_host is not None:
            host = by_name[vm.pinned_host]
            problem = why_not(host, vm, budget_ms)
            conflict = rules.conflict_text(vm.name, host.name)
            if problem is not None:
                raise _pin_refusal(vm, host, problem, hosts, budget_ms, rules, headroom, "host")
            if conflict is not None:  # may still work out if the other VM moves: the search decides
                raise _Unplaced(vm, _pin_refusal(vm, host, conflict, hosts, budget_ms, rules, headroom, "host"))
            reason = f"pinned in the role map; fits: {_describe(host)}"
        else:
            serving, others = heaps.for_tier(vm.tier)
            found = _best(serving, vm, budget_ms, rejected, rules, strategy)
            fallback = found is None
            if found is None:
                found = _best(others, vm, budget_ms, rejected, rules, strategy)
            if found is None:
                raise _Unplaced(vm, _refusal(vm, hosts, budget_ms, rules, headroom))
            host = found
            reason = _choice_reason(vm, host, hosts, fallback, budget_ms, reference_host, strategy)
        reason += rules.note(vm.name, host.name, placed)
        _other_reasons(vm, host, hosts, rejected, budget_ms, rules, strategy)
        _commit(host, vm)
        rules.add(vm.name, host.name)
        placed[vm.name] = host.name
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


def _too_few_hosts(
    vm_list: list[VMRequest],
    hosts: Sequence[HostCapacity],
    budget_ms: float,
    anti_affinity: Sequence[AntiAffinityRule],
    headroom: str,
) -> PlacementError | None:
    """A rule that needs more hosts than can take its VMs at all (counting: no search needed)."""
    by_name = {vm.name: vm for vm in vm_list}
    for rule in anti_affinity:
        members = [by_name[n] for n in sorted(rule.vms | (rule.apart_from or frozenset())) if n in by_name]
        needed = len([n for n in rule.vms if n in by_name]) if rule.apart_from is None else 2
        if rule.apart_from is not None and not (
            any(n in by_name for n in rule.vms) and any(n in by_name for n in rule.apart_from)
        ):
            continue
        able = [
            h
            for h in hosts
            if any(why_not(h, vm, budget_ms) is None and vm.pinned_host in (None, h.name) for vm in members)
        ]
        if len(able) >= needed:
            continue
        unable = [
            f"{h.name}: {why_not(h, members[0], budget_ms) or 'takes none of them'} ({_has(h)})"
            for h in hosts
            if h not in able
        ]
        what = (
            f"keeps {needed} VMs ({', '.join(vm.name for vm in members)}) on {needed} different hosts"
            if rule.apart_from is None
            else f"keeps {', '.join(sorted(n for n in rule.vms if n in by_name))} off the hosts of "
            f"{', '.join(sorted(n for n in rule.apart_from if n in by_name))}, which takes 2 hosts"
        )
        message = (
            f"anti-affinity '{rule.name}' {what}, but only {len(able)} Proxmox host"
            f"{'' if len(able) == 1 else 's'} can take any of them"
            + (f" ({'; '.join(_describe(h) for h in able[:DETAIL_LIMIT])})" if able else "")
            + (f" — the others: {_shown_hosts(unable)}" if unable else "")
            + (f". {headroom}" if headroom else "")
        )
        return PlacementError(message, vm=members[0].name if members else None, rule=rule.index)
    return None


def _preference(vm: VMRequest, host: HostCapacity, strategy: Strategy) -> tuple:
    return (vm.tier not in host.serves, *_key(host, strategy))


def _search(
    vm_list: list[VMRequest],
    hosts: Sequence[HostCapacity],
    by_name: dict[str, HostCapacity],
    budget_ms: float,
    reference_host: str,
    strategy: Strategy,
    anti_affinity: Sequence[AntiAffinityRule],
    fixed: Mapping[str, str],
    headroom: str,
    first_unplaced: VMRequest,
) -> PlacementResult:
    """Backtracking over assignments in preference order, bounded by SEARCH_MAX_STEPS."""
    order = _order(vm_list)
    rules = _Rules(anti_affinity, fixed)

    def candidates(vm: VMRequest) -> list[HostCapacity]:
        pool = [by_name[vm.pinned_host]] if vm.pinned_host is not None else list(hosts)
        ok = [h for h in pool if why_not(h, vm, budget_ms) is None and not rules.conflicts(vm.name, h.name)]
        return sorted(ok, key=lambda h: _preference(vm, h, strategy))

    chosen: list[HostCapacity] = []
    stack: list[list[HostCapacity]] = []
    steps = 0
    deepest = -1
    # The refusal, should there be one: taken at the deepest dead end, with the hosts as they were there.
    refusal: PlacementError | None = None
    while len(chosen) < len(order):
        k = len(chosen)
        if len(stack) == k:
            stack.append(candidates(order[k]))
            if not stack[k] and k > deepest:
                deepest = k
                earlier = [
                    f"{order[j].name} on {chosen[j].name}"
                    for j in range(k)
                    if order[j].name in rules.of_vm_avoid(order[k].name)
                ]
                refusal = _refusal(
                    order[k],
                    hosts,
                    budget_ms,
                    rules,
                    headroom,
                    note=f" (with {', '.join(earlier)})" if earlier else "",
                )
        options = stack[k]
        steps += 1
        if options and steps <= SEARCH_MAX_STEPS:
            host = options.pop(0)
            _commit(host, order[k])
            rules.add(order[k].name, host.name)
            chosen.append(host)
            continue
        # dead end: undo the previous choice and try its next option
        stack.pop()
        if not chosen or steps > SEARCH_MAX_STEPS:
            for j, h in enumerate(chosen):  # leave the hosts as they were
                _uncommit(h, order[j])
                rules.remove(order[j].name, h.name)
            searched = (
                f"no placement of the {len(order)} VMs keeps every rule and limit ({steps:,} steps of the search "
                "over assignments); where it got furthest: "
                if steps <= SEARCH_MAX_STEPS
                else f"the search over assignments stopped after {SEARCH_MAX_STEPS:,} steps; where it got furthest: "
            )
            if refusal is None:
                refusal = _refusal(first_unplaced, hosts, budget_ms, _Rules(anti_affinity, fixed), headroom)
            refusal.args = (searched + str(refusal),)
            raise refusal
        last = chosen.pop()
        _uncommit(last, order[len(chosen)])
        rules.remove(order[len(chosen)].name, last.name)

    # Replay the assignment in order to give each placement its reason against the state it met.
    assignment = {vm.name: h for vm, h in zip(order, chosen, strict=True)}
    for vm, h in zip(order, chosen, strict=True):
        _uncommit(h, vm)
    replay = _Rules(anti_affinity, fixed)
    placed: dict[str, str] = dict(fixed)
    decided: dict[str, Placement] = {}
    for vm in order:
        host = assignment[vm.name]
        if vm.pinned_host is not None:
            reason = f"pinned in the role map; fits: {_describe(host)}"
        else:
            reason = (
                "chosen by a search over assignments (the first choices left "
                f"{first_unplaced.name} without a host): {_describe(host)}"
            )
        reason += replay.note(vm.name, host.name, placed)
        rejected: list[tuple[str, str]] = []
        _other_reasons(vm, host, hosts, rejected, budget_ms, replay, strategy, searched=True)
        _commit(host, vm)
        replay.add(vm.name, host.name)
        placed[vm.name] = host.name
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
    for h in hosts:
        h.version += 1
    return PlacementResult([decided[v.name] for v in vm_list], dict(by_name))


def _host_lines(
    vm: VMRequest, hosts: Sequence[HostCapacity], budget_ms: float, rules: _Rules, skip: str | None = None
) -> tuple[list[str], dict[str, int]]:
    """One entry per host (`name: why not (has ...)`), and how often each field of the VM was the cause."""
    lines: list[str] = []
    causes: dict[str, int] = {}
    for h in hosts:
        if h.name == skip:
            continue
        if not _latency_ok(h, vm, budget_ms):
            problem = why_not(h, vm, budget_ms) or ""
            causes["latency_sensitive"] = causes.get("latency_sensitive", 0) + 1
        else:
            lacks = _lacks(h, vm)
            for name, _ in lacks:
                causes[name] = causes.get(name, 0) + 1
            conflict = rules.conflict_text(vm.name, h.name)
            if lacks:
                problem = "only " + ", ".join(text for _, text in lacks)
            elif conflict:
                problem = conflict
                for rule, _ in rules.conflicts(vm.name, h.name):
                    causes[f"rule:{rule.index}"] = causes.get(f"rule:{rule.index}", 0) + 1
            else:
                problem = "fits"
        lines.append(f"{h.name}: {problem} ({_has(h)})")
    return lines, causes


def _shown_hosts(lines: list[str]) -> str:
    if len(lines) <= DETAIL_LIMIT:
        return "; ".join(lines)
    return "; ".join(lines[:DETAIL_LIMIT]) + f"; and {len(lines) - DETAIL_LIMIT} more hosts"


def _field_of(causes: dict[str, int]) -> tuple[str | None, int | None]:
    """The field a refusal points at: the cause that stopped the VM on the most hosts."""
    if not causes:
        return None, None
    cause = max(causes, key=lambda c: (causes[c], c == "memory_gb", c))
    if cause.startswith("rule:"):
        return None, int(cause[5:])
    return cause, None


def _refusal(
    vm: VMRequest, hosts: Sequence[HostCapacity], budget_ms: float, rules: _Rules, headroom: str, note: str = ""
) -> PlacementError:
    lines, causes = _host_lines(vm, hosts, budget_ms, rules)
    field_name, rule = _field_of(causes)
    message = (
        f"{vm.name} fits on no Proxmox host: it needs {vm.vcpu} vCPU, {_num(vm.memory_gb)} GB RAM, "
        f"{_num(vm.disk_gb)} GB disk"
        + (" within the latency budget" if vm.latency_sensitive else "")
        + (f", apart from {', '.join(sorted(rules.of_vm_avoid(vm.name)))}" if rules.of_vm.get(vm.name) else "")
        + note
        + " — "
        + _shown_hosts(lines)
        + (f". {headroom}" if headroom else "")
    )
    return PlacementError(message, vm=vm.name, field=field_name, rule=rule)


def _pin_refusal(
    vm: VMRequest,
    host: HostCapacity,
    problem: str,
    hosts: Sequence[HostCapacity],
    budget_ms: float,
    rules: _Rules,
    headroom: str,
    field_name: str,
) -> PlacementError:
    others, _ = _host_lines(vm, hosts, budget_ms, rules, skip=host.name)
    message = (
        f"{vm.name}: pinned to {host.name}, but {host.name} has {problem} ({_has(host)})"
        + (f"; the other hosts: {_shown_hosts(others)}" if others else "")
        + (f". {headroom}" if headroom else "")
    )
    return PlacementError(message, vm=vm.name, field=field_name)
