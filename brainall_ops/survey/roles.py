"""The role proposal: which host does what, derived from measurements, with the reasons.

Rules, in order, for each host (the numbers come from the measurements; which hosts are Proxmox
nodes, what already runs on them and what a host is for come from what the survey saw, or from
the role map's facts where the survey could not see them; every reason names its input):

1. a host that did not answer, or whose latency from the reference host (the GPU box) is
   unknown, keeps its role-map role;
2. a host with a GPU gets inference;
3. a host beyond the latency budget of the reference host (the far site) gets backups & batch:
   never latency-sensitive work;
4. the Proxmox node(s) where placement puts the app VMs get the application role: planning's own
   placement (`brainall_ops.planning.placement.place`), run with no tier preference, picks the
   node with the most free RAM within the budget, if they fit there;
5. the other Proxmox nodes within the budget keep the data tier, next to what they already run
   (mail and staging VMs are named in the role: "data & mail");
6. any other host within the budget (a VM such as the bastion) is a dev sandbox.

The Storage Box is central storage; its reasons say from where its port was reachable. Warnings
list nearly full disks, Ceph health, packet loss, probes that failed and where the survey and the
role map disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from brainall_ops.planning.placement import (
    HostCapacity,
    Placement,
    PlacementError,
    VMRequest,
    place,
)
from brainall_ops.rolemap.models import Host, RoleMap
from brainall_ops.survey.measurements import HostMeasurements, LatencySample, Survey

APP_TIER = "app"
DATA_TIER = "data"
# A disk is nearly full below either threshold (the bastion: 6.7 GB free of 50 GB).
DISK_FREE_WARN_GB = 10.0
DISK_FREE_WARN_PCT = 15.0
# Existing VMs a Proxmox node runs that name a service in its role (by VM name or role-map note).
SERVICE_PATTERNS = {
    "mail": re.compile(r"(^|[^a-z])(mail|mx|smtp|imap)([^a-z]|$)", re.IGNORECASE),
    "staging": re.compile(r"stag(e|ing)", re.IGNORECASE),
}
VIRTUAL_MACHINE_TYPES = {"kvm", "qemu", "vmware", "microsoft", "xen", "oracle", "bochs", "parallels", "zvm"}


@dataclass(frozen=True)
class RoleSpec:
    id: str
    label: str
    serves: tuple[str, ...]
    latency_sensitive: bool


ROLES: dict[str, RoleSpec] = {
    spec.id: spec
    for spec in (
        RoleSpec("inference", "AI inference", ("inference",), True),
        RoleSpec("data", "data", (DATA_TIER,), True),
        RoleSpec("application", "application server", (APP_TIER,), True),
        RoleSpec("backup", "backups & batch only", ("backup", "batch", "dev"), False),
        RoleSpec("bastion", "dev sandbox", ("dev",), False),
        RoleSpec("storage", "central storage", ("storage",), False),
    )
}


@dataclass(frozen=True)
class Reason:
    text: str
    source: str  # measured | role map | placement | rule

    def __str__(self) -> str:
        return f"{self.text} [{self.source}]"


@dataclass(frozen=True)
class HostRole:
    host: str
    role: str
    label: str
    serves: tuple[str, ...]
    reasons: tuple[Reason, ...]
    current_role: str | None = None
    current_serves: tuple[str, ...] | None = None
    derived: bool = True  # False: the role map's role was kept (not enough measurements)

    @property
    def differs(self) -> bool:
        return self.current_role is not None and self.current_role != self.role


@dataclass
class Proposal:
    reference_host: str
    budget_ms: float
    roles: list[HostRole]
    warnings: list[str] = field(default_factory=list)
    app_placements: list[Placement] = field(default_factory=list)
    plan: list[Placement] = field(default_factory=list)

    def role_of(self, host: str) -> HostRole:
        for role in self.roles:
            if role.host == host:
                return role
        raise KeyError(host)

    def table(self) -> dict[str, str]:
        return {r.host: r.role for r in self.roles}


# --------------------------------------------------------------------------- one host's inputs
@dataclass
class _View:
    name: str
    measured: HostMeasurements | None
    rm_host: Host | None
    latency_ms: float | None = None
    loss_pct: float | None = None
    latency_reason: Reason | None = None
    gpu: list[str] | None = None  # models; [] none
    gpu_reason: Reason | None = None
    proxmox: bool = False
    proxmox_reason: Reason | None = None
    vms: list[tuple[str, float | None, int | None, str]] = field(default_factory=list)  # name, GB, vCPU, note
    vms_source: str = ""
    running_vms: int = 0

    @property
    def answered(self) -> bool:
        return self.measured is not None and self.measured.answered


def _num(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _latency(survey: Survey, reference: str, name: str) -> tuple[float | None, float | None, Reason]:
    if name == reference:
        return 0.0, 0.0, Reason(f"it is the reference host {reference}", "rule")
    for source, target, how in ((reference, name, "from"), (name, reference, "to")):
        sample: LatencySample | None = survey.latency_between(source, target)
        if sample is None:
            continue
        typical = sample.typical_ms
        if typical is None:
            why = sample.reason or "no reply"
            return None, sample.loss_pct, Reason(f"no latency {how} {reference}: {why}", "measured")
        statistic = f"median, mean {_num(sample.avg_ms)}, " if sample.median_ms is not None and sample.avg_ms else ""
        detail = f"{statistic}{sample.method}, {_num(sample.loss_pct)} % loss"
        return typical, sample.loss_pct, Reason(f"{_num(typical)} ms {how} {reference} ({detail})", "measured")
    return None, None, Reason(f"latency from {reference} not measured", "measured")


def _view(name: str, survey: Survey, rm: RoleMap, warnings: list[str]) -> _View:
    measured = survey.hosts.get(name)
    try:
        rm_host: Host | None = rm.host(name)
    except KeyError:
        rm_host = None
    view = _View(name, measured, rm_host)
    if not view.answered:
        return view
    assert measured is not None
    view.latency_ms, view.loss_pct, view.latency_reason = _latency(survey, rm.placement.reference_host, name)

    # GPU: the survey's nvidia-smi; the role map only where the probe itself failed.
    rm_gpu = rm_host.hardware.gpu if rm_host else None
    if measured.gpu:
        models = [f"{card.model} {_num(card.vram_gb)} GB VRAM" for card in measured.gpu]
        view.gpu, view.gpu_reason = models, Reason(f"GPU {', '.join(models)}", "measured")
    elif "gpu" in measured.absent:
        view.gpu, view.gpu_reason = [], Reason(f"no GPU ({measured.absent['gpu']})", "measured")
        if rm_gpu:
            warnings.append(
                f"{name}: the role map lists a {rm_gpu.model}, the survey found none ({measured.absent['gpu']})"
            )
    elif rm_gpu:
        view.gpu, view.gpu_reason = [rm_gpu.model], Reason(f"GPU {rm_gpu.model} (GPU probe failed)", "role map")
    else:
        view.gpu, view.gpu_reason = [], Reason("no GPU in the role map (GPU probe failed)", "role map")

    # Proxmox node: the survey's pvesh; the role map where the survey could not see it.
    if measured.proxmox is not None:
        view.proxmox = True
        view.proxmox_reason = Reason(f"Proxmox VE node {measured.proxmox.node}", "measured")
        names_notes = {
            vm.name: vm.notes for vm in (rm_host.proxmox.existing_vms if rm_host and rm_host.proxmox else [])
        }
        view.vms = [(vm.name, vm.memory_gb, vm.vcpu, names_notes.get(vm.name, "")) for vm in measured.proxmox.running]
        view.running_vms = measured.proxmox.running_count
        view.vms_source = "measured"
    elif rm_host is not None and rm_host.proxmox is not None:
        view.proxmox = True
        seen = measured.absent.get("proxmox") or measured.errors.get("proxmox") or "not probed"
        view.proxmox_reason = Reason(f"Proxmox node {rm_host.proxmox.node} (survey: {seen})", "role map")
        if "proxmox" in measured.absent:
            warnings.append(f"{name}: the role map says Proxmox node, the survey found none ({seen})")
        view.vms = [(vm.name, vm.memory_gb, vm.vcpu, vm.notes) for vm in rm_host.proxmox.existing_vms]
        view.running_vms = max(rm_host.proxmox.running_vms, len(view.vms))
        view.vms_source = "role map"
    else:
        why = measured.absent.get("proxmox", "not a Proxmox node in the role map")
        view.proxmox_reason = Reason(
            f"not a Proxmox node ({why})", "measured" if "proxmox" in measured.absent else "role map"
        )
    return view


# --------------------------------------------------------------------------- capacity for placement
def _capacity(view: _View, rm: RoleMap, serves: Iterable[str]) -> HostCapacity | None:
    measured = view.measured
    if measured is None or measured.memory is None:
        return None
    headroom = rm.placement.headroom
    hardware = view.rm_host.hardware if view.rm_host else None
    threads = measured.cpu.threads if measured.cpu else (hardware.threads if hardware else 0)
    disk_total, disk_free = None, None
    storage_name = rm.proxmox.storage if rm.proxmox else None
    if measured.proxmox is not None:
        for storage in measured.proxmox.storages:
            if storage.name == storage_name:
                disk_total, disk_free = storage.total_gb, storage.free_gb
    if disk_free is None and measured.disk is not None:
        disk_total, disk_free = measured.disk.total_gb, measured.disk.free_gb
    if disk_free is None and view.rm_host is not None:
        disk_free = view.rm_host.measured.disk_free_gb  # not measured by the survey
    if disk_total is None:
        disk_total = hardware.disk_gb if hardware else (disk_free or 0)
    total = measured.memory.total_gb
    return HostCapacity(
        name=view.name,
        latency_ms=view.latency_ms,
        serves=frozenset(serves),
        ram_total_gb=total,
        ram_free_gb=measured.memory.available_gb,
        ram_headroom_gb=total * headroom.ram_pct / 100,
        vcpu_total=threads * headroom.vcpu_overcommit,
        vcpu_used=sum(vcpu or 0 for _, _, vcpu, _ in view.vms),
        disk_free_gb=disk_free if disk_free is not None else float("inf"),
        disk_headroom_gb=(disk_total or 0) * headroom.disk_pct / 100,
    )


def _services(view: _View) -> dict[str, list[str]]:
    """Service -> the existing VMs that name it, each with where the name came from."""
    found: dict[str, list[str]] = {}
    for name, _, _, note in view.vms:
        for service, pattern in SERVICE_PATTERNS.items():
            if note and pattern.search(note):
                found.setdefault(service, []).append(f"{name} ({note}, role-map note)")
            elif pattern.search(name):
                found.setdefault(service, []).append(name)
    return found


def _running_elsewhere(views: list[_View]) -> dict[str, str]:
    return {vm_name: v.name for v in views for vm_name, _, _, _ in v.vms}


# --------------------------------------------------------------------------- the proposal
def propose_roles(survey: Survey, rm: RoleMap) -> Proposal:
    reference = rm.placement.reference_host
    budget = rm.placement.latency_budget_ms
    warnings: list[str] = []
    names = list(survey.hosts) + [h.name for h in rm.hosts if h.name not in survey.hosts]
    views = [_view(name, survey, rm, warnings) for name in names]
    if reference not in survey.hosts or not survey.hosts[reference].answered:
        warnings.append(f"the reference host {reference} was not measured: no latency can be judged")

    # Rule 4 first: where the app VMs go decides the application role.
    running = _running_elsewhere(views)
    app_vms = [vm for vm in rm.vms if vm.tier == APP_TIER]
    app_hosts: dict[str, list[str]] = {}
    for vm in app_vms:
        if vm.name in running:
            app_hosts.setdefault(running[vm.name], []).append(f"{vm.name} already runs there")
    candidates = [v for v in views if v.answered and v.proxmox and not v.gpu and v.latency_ms is not None]
    capacities = [c for c in (_capacity(v, rm, ()) for v in candidates) if c is not None]
    requests = [
        VMRequest(vm.name, vm.tier, vm.vcpu, vm.memory_gb, vm.disk_gb, vm.latency_sensitive)
        for vm in app_vms
        if vm.name not in running
    ]
    app_placements: list[Placement] = []
    if requests and capacities:
        try:
            app_placements = place(requests, capacities, budget, reference).placements
        except PlacementError as exc:
            warnings.append(f"the app VMs fit on no Proxmox node within the budget: {exc}")
    elif requests:
        warnings.append("no Proxmox node with measured RAM within the budget: the app VMs have nowhere to go")
    for p in app_placements:
        app_hosts.setdefault(p.host, []).append(p.vm)

    roles = [_decide(v, rm, budget, reference, app_hosts, app_placements) for v in views]
    roles = _data_fallback(roles)
    if survey.storagebox is not None or rm.storage is not None:
        roles.append(_storage_box(survey, rm, warnings))

    warnings.extend(_measurement_warnings(survey, views, reference, rm))
    if not any(r.role == "inference" for r in roles):
        warnings.append("no host has a GPU: no host gets inference")
    if not any(r.role == "backup" for r in roles):
        warnings.append(f"no host lies beyond the {_num(budget)} ms budget: no far site for backups & batch")

    plan = _plan(views, roles, rm, budget, reference, warnings)
    return Proposal(reference, budget, roles, _unique(warnings), app_placements, plan)


def _keep(view: _View, why: Reason) -> HostRole:
    current = view.rm_host.role if view.rm_host else "unassigned"
    spec = ROLES.get(current)
    return HostRole(
        view.name,
        current,
        spec.label if spec else current,
        tuple(view.rm_host.serves) if view.rm_host else (),
        (why, Reason(f"the role map's role {current!r} is kept", "role map")),
        current_role=view.rm_host.role if view.rm_host else None,
        current_serves=tuple(view.rm_host.serves) if view.rm_host else None,
        derived=False,
    )


def _decide(
    view: _View,
    rm: RoleMap,
    budget: float,
    reference: str,
    app_hosts: dict[str, list[str]],
    app_placements: list[Placement],
) -> HostRole:
    if view.measured is None:
        return _keep(view, Reason("not in the measurements", "measured"))
    if not view.answered:
        return _keep(view, Reason(f"did not answer the survey: {view.measured.reason or 'no answer'}", "measured"))

    def role(role_id: str, reasons: list[Reason], label: str | None = None, serves: tuple[str, ...] | None = None):
        spec = ROLES[role_id]
        return HostRole(
            view.name,
            role_id,
            label or spec.label,
            serves if serves is not None else spec.serves,
            tuple(r for r in reasons if r is not None),
            current_role=view.rm_host.role if view.rm_host else None,
            current_serves=tuple(view.rm_host.serves) if view.rm_host else None,
        )

    assert view.gpu_reason is not None and view.proxmox_reason is not None and view.latency_reason is not None
    if view.gpu:
        return role("inference", [view.gpu_reason, view.latency_reason, Reason("the GPU host gets inference", "rule")])
    if view.latency_ms is None:
        return _keep(view, view.latency_reason)
    if view.latency_ms > budget:
        return role(
            "backup",
            [
                view.latency_reason,
                Reason(
                    f"beyond the {_num(budget)} ms budget: never latency-sensitive work, so backups & batch", "rule"
                ),
            ],
        )
    within = Reason(f"{view.latency_reason.text}: within the {_num(budget)} ms budget", "measured")
    if view.proxmox:
        if view.name in app_hosts:
            placed = [p for p in app_placements if p.host == view.name]
            reasons = [view.proxmox_reason, within]
            if placed:
                reasons.append(
                    Reason(
                        f"placement puts the app VMs here ({', '.join(p.vm for p in placed)}): {placed[0].reason}",
                        "placement",
                    )
                )
            others = [note for note in app_hosts[view.name] if note.endswith("already runs there")]
            if others:
                reasons.append(Reason("; ".join(others), view.vms_source or "measured"))
            return role("application", reasons)
        services = _services(view)
        extras = tuple(s for s in ("mail", "staging") if s in services)
        label = "data & mail" if "mail" in services else "data"
        vm_names = ", ".join(name for name, _, _, _ in view.vms) or "none"
        reasons = [
            view.proxmox_reason,
            within,
            Reason(f"runs {view.running_vms} VM(s): {vm_names}", view.vms_source or "measured"),
        ]
        for service, found in services.items():
            reasons.append(Reason(f"{service}: {', '.join(found)}", view.vms_source or "measured"))
        if app_placements:
            rejected = dict(app_placements[0].rejected)
            why_not = f"not where the app VMs go ({rejected.get(view.name, 'placed elsewhere')})"
        elif any(vm.tier == APP_TIER for vm in rm.vms):
            why_not = "the app VMs fit on no node (see the warnings)"
        else:
            why_not = "the role map plans no app VM"
        reasons.append(Reason(f"{why_not}: keeps the data tier next to what it runs", "placement"))
        return role("data", reasons, label=label, serves=(DATA_TIER, *extras))
    reasons = [view.gpu_reason, view.proxmox_reason, within]
    virt = view.measured.system.virtualization if view.measured.system else ""
    if virt in VIRTUAL_MACHINE_TYPES:
        reasons.append(Reason(f"a virtual machine ({virt})", "measured"))
    if view.rm_host is not None and view.rm_host.kind == "vm":
        host_of = f" on {view.rm_host.vm_of}" if view.rm_host.vm_of else ""
        vmid = f" {view.rm_host.vmid}" if view.rm_host.vmid else ""
        reasons.append(Reason(f"a VM{vmid}{host_of}", "role map"))
    if view.rm_host is not None and view.rm_host.services:
        reasons.append(Reason(f"runs {', '.join(view.rm_host.services)}", "role map"))
    reasons.append(Reason("neither GPU nor Proxmox node, within the budget: a dev sandbox", "rule"))
    return role("bastion", reasons)


def _data_fallback(roles: list[HostRole]) -> list[HostRole]:
    """With no Proxmox node left for the data tier, the application node(s) take it too."""
    if any(r.role == "data" for r in roles) or not any(r.role == "application" for r in roles):
        return roles
    out = []
    for r in roles:
        if r.role == "application":
            r = HostRole(
                r.host,
                r.role,
                r.label,
                (*r.serves, DATA_TIER),
                (*r.reasons, Reason("no other Proxmox node within the budget: it takes the data tier too", "rule")),
                r.current_role,
                r.current_serves,
            )
        out.append(r)
    return out


def _storage_box(survey: Survey, rm: RoleMap, warnings: list[str]) -> HostRole:
    name = survey.storagebox.name if survey.storagebox else (rm.storage.box.name if rm.storage else "storagebox")
    port = survey.storagebox.port if survey.storagebox else (rm.storage.box.ssh_port if rm.storage else 23)
    reached = {n: h.storagebox for n, h in survey.hosts.items() if h.storagebox is not None}
    reasons: list[Reason] = []
    if reached:
        ok = sorted(n for n, r in reached.items() if r.reachable)
        bad = {n: r.reason for n, r in reached.items() if not r.reachable}
        if ok:
            reasons.append(Reason(f"port {port} reachable from {', '.join(ok)}", "measured"))
        if bad:
            detail = "; ".join(f"{n}: {why}" for n, why in sorted(bad.items()))
            reasons.append(Reason(f"port {port} unreachable from {detail}", "measured"))
            warnings.append(f"{name}: port {port} unreachable from {detail}")
        ref = reached.get(rm.placement.reference_host)
        if ref is not None and ref.connect_ms is not None:
            reasons.append(Reason(f"connect {_num(ref.connect_ms)} ms from {rm.placement.reference_host}", "measured"))
    else:
        reasons.append(Reason(f"port {port} not probed", "measured"))
    if rm.storage is not None:
        box = rm.storage.box
        reasons.append(Reason(f"{box.capacity_tb:g} TB Storage Box ({', '.join(box.protocols)})", "role map"))
    reasons.append(Reason("the Storage Box is the central storage", "rule"))
    spec = ROLES["storage"]
    return HostRole(name, "storage", spec.label, spec.serves, tuple(reasons), current_role="storage")


def _plan(
    views: list[_View], roles: list[HostRole], rm: RoleMap, budget: float, reference: str, warnings: list[str]
) -> list[Placement]:
    """The role map's VMs placed on this proposal (serves from the proposed roles, pins honoured):
    the check that the proposal leaves every planned VM a home."""
    serves = {r.host: r.serves for r in roles}
    running = _running_elsewhere(views)
    capacities = [
        c
        for c in (_capacity(v, rm, serves.get(v.name, ())) for v in views if v.answered and v.proxmox and not v.gpu)
        if c is not None
    ]
    requests = [
        VMRequest(vm.name, vm.tier, vm.vcpu, vm.memory_gb, vm.disk_gb, vm.latency_sensitive, vm.host)
        for vm in rm.vms
        if vm.name not in running
    ]
    if not requests:
        return []
    if not capacities:
        warnings.append("no measured Proxmox node: the planned VMs cannot be placed on this proposal")
        return []
    try:
        return place(requests, capacities, budget, reference).placements
    except PlacementError as exc:
        warnings.append(f"the planned VMs do not all fit on this proposal: {exc}")
        return []


def _measurement_warnings(survey: Survey, views: list[_View], reference: str, rm: RoleMap) -> list[str]:
    out: list[str] = []
    ceph_seen: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for view in views:
        measured = view.measured
        if measured is None:
            continue
        if not measured.answered:
            out.append(f"{view.name}: did not answer: {measured.reason or 'no answer'}")
            continue
        for probe, error in measured.errors.items():
            out.append(f"{view.name}: {probe}: {error}")
        disk = measured.disk
        if disk is not None and disk.free_gb is not None and disk.total_gb:
            pct = 100 * disk.free_gb / disk.total_gb
            if disk.free_gb < DISK_FREE_WARN_GB or pct < DISK_FREE_WARN_PCT:
                out.append(
                    f"{view.name}: disk nearly full: {_num(disk.free_gb)} GB free of {_num(disk.total_gb)} GB "
                    f"({pct:.0f} %) on {disk.path}"
                )
        if measured.ceph is not None and measured.ceph.status != "HEALTH_OK":
            checks = tuple(f"{c.name}" + (f" ({c.message})" if c.message else "") for c in measured.ceph.checks)
            ceph_seen.setdefault((measured.ceph.status, checks), []).append(view.name)
        if view.loss_pct:
            out.append(f"{view.name}: {_num(view.loss_pct)} % packet loss from {reference}")
    for (status, checks), hosts in ceph_seen.items():
        out.append(f"Ceph {status}: {'; '.join(checks) or 'no check named'} (seen from {', '.join(hosts)})")
    for source, row in survey.latency.items():
        for target, sample in row.items():
            if sample.loss_pct and source != reference:
                out.append(
                    f"{source} -> {target}: {_num(sample.loss_pct)} % packet loss ({sample.reason or sample.method})"
                )
    return out


def _unique(items: list[str]) -> list[str]:
    seen: set[str] = set()
    return [i for i in items if not (i in seen or seen.add(i))]  # type: ignore[func-returns-value]


# --------------------------------------------------------------------------- invariants
def check_proposal(proposal: Proposal, survey: Survey, rm: RoleMap) -> list[str]:
    """What must hold for any proposal (empty list: valid). Used before `--write` and by tests."""
    problems: list[str] = []
    budget = proposal.budget_ms
    reference = proposal.reference_host
    names = [r.host for r in proposal.roles]
    by_host = {r.host: r for r in proposal.roles}
    if len(names) != len(set(names)):
        problems.append(f"a host has more than one role: {names}")
    for name in survey.hosts:
        if name not in names:
            problems.append(f"{name}: measured but given no role")
    for r in proposal.roles:
        if not r.reasons:
            problems.append(f"{r.host}: role {r.role} without a reason")
        if r.derived and r.role not in ROLES:
            problems.append(f"{r.host}: unknown role {r.role}")
        if not r.derived or r.role == "storage":
            continue
        latency, _, _ = _latency(survey, reference, r.host)
        spec = ROLES[r.role]
        if spec.latency_sensitive and r.role != "inference" and (latency is None or latency > budget):
            problems.append(f"{r.host}: latency-sensitive role {r.role} beyond the {_num(budget)} ms budget")
        if r.role == "backup" and (latency is None or latency <= budget):
            problems.append(f"{r.host}: backup role although within the {_num(budget)} ms budget")
    if proposal.app_placements:
        # Placement takes the largest VM first, onto the eligible node with the most free RAM.
        first = min(proposal.app_placements, key=lambda p: (-p.memory_gb, p.vm))
        views = [_view(n, survey, rm, []) for n in survey.hosts]
        eligible = [
            c
            for c in (_capacity(v, rm, ()) for v in views if v.answered and v.proxmox and not v.gpu)
            if c is not None and c.latency_ms is not None and c.latency_ms <= budget
        ]
        best = min(eligible, key=lambda c: (-c.ram_available, c.name), default=None)
        if best is not None and first.host != best.name and best.ram_available >= first.memory_gb:
            problems.append(f"the largest app VM went to {first.host}, but {best.name} has the most free RAM")
        if any(by_host.get(p.host) is None or by_host[p.host].role != "application" for p in proposal.app_placements):
            problems.append("an app VM is placed on a host that is not given the application role")
    for p in proposal.plan:
        vm = next((v for v in rm.vms if v.name == p.vm), None)
        if vm is not None and vm.latency_sensitive and by_host.get(p.host) and by_host[p.host].role == "backup":
            problems.append(f"{p.vm}: latency-sensitive VM planned on the far host {p.host}")
    return problems
