"""The role proposal: which host does what, derived from measurements, with the reasons.

One pass, in this order (every reason names its input: measured, role map, placement or rule):

1. what cannot be believed is set aside, one line each: a host that did not answer, is not in
   the role map, is one machine measured under a second name (same machine-id or address), or
   whose numbers are impossible (more available than total) keeps its role-map role (or none)
   and takes no part in the placement;
2. latency and loss from the reference host decide what is near: beyond the budget, or losing
   more than LOSS_LIMIT_PCT of its pings, a host gets no latency-sensitive role (backups & batch);
3. inference goes to the near host whose GPU carries the role map's models: the VRAM they need
   (vLLM models, and whisper/embeddings on the GPU) within gpu_memory_utilization_max, the
   NVIDIA driver present (CUDA >= inference.min_cuda where reported). A card without its driver
   is its own finding ("GPU present, driver missing"); a small card is just a card;
4. the role map's VMs are placed as one problem with planning's own placement
   (`brainall_ops.planning.placement.place`) on the Proxmox nodes: each tier whole on one node
   where it fits (the largest tier on the node with the most free RAM that leaves the others a
   home), the data tier on a node of its own; only a tier that fits on no single node is spread,
   and that is said. The VM storage's free space (pvesm/lvs) is the disk figure, not `/`'s;
5. roles follow from where the VMs land: a node with app VMs is the application server, one with
   the data VM the data node (mail and staging VMs named in the role); a near Proxmox node
   where nothing lands is spare; the reasons and the plan table come from the same result;
6. a dev sandbox is given for a reason (a VM, or running dev tools), never by elimination; a host
   with no role that fits is spare, and says why.

Every role carries its duties (the Storage Box plan among them: SSHFS models on the inference
host, CIFS uploads on the application node, rsync backups from the data node; PostgreSQL and
Redis on the data node; Ceph OSDs kept; the bastion's disk clean-up).
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from brainall_ops.planning.placement import (
    HostCapacity,
    Placement,
    PlacementError,
    VMRequest,
    place,
    why_not,
)
from brainall_ops.rolemap.models import VM, Host, RoleMap
from brainall_ops.survey.measurements import GPUCard, HostMeasurements, LatencySample, Survey

APP_TIER = "app"
DATA_TIER = "data"
# A disk is nearly full below either threshold (the bastion: 6.7 GB free of 50 GB).
DISK_FREE_WARN_GB = 10.0
DISK_FREE_WARN_PCT = 15.0
# Above this loss (from the reference host) a host gets no latency-sensitive role: TCP retransmits
# turn every lost packet into a 200 ms+ stall, whatever the round-trip time.
LOSS_LIMIT_PCT = 5.0
# The tier search tries at most this many nodes per tier (the free-RAM leaders): fleets a person reads.
SEARCH_NODES = 8
# Existing VMs a Proxmox node runs that name a service in its role (by VM name or role-map note).
SERVICE_PATTERNS = {
    "mail": re.compile(r"(^|[^a-z])(mail|mx|smtp|imap)([^a-z]|$)", re.IGNORECASE),
    "staging": re.compile(r"stag(e|ing)", re.IGNORECASE),
}
# What makes a host a dev sandbox: it is a VM, or runs a developer's tools (role map's services).
DEV_SERVICES = re.compile(r"docker|vscode|code-server|caddy|jupyter|workspace|dev", re.IGNORECASE)
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
        RoleSpec("spare", "spare", (), False),
        RoleSpec("gpu-driver-missing", "GPU present, driver missing", (), False),
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
    duties: tuple[str, ...] = ()
    vms: tuple[str, ...] = ()  # the planned VMs that land here (from the same placement as the plan)

    @property
    def differs(self) -> bool:
        return self.current_role is not None and self.current_role != self.role


@dataclass
class Proposal:
    reference_host: str
    budget_ms: float
    roles: list[HostRole]
    warnings: list[str] = field(default_factory=list)
    plan: list[Placement] = field(default_factory=list)
    storage_plan: list[str] = field(default_factory=list)
    tiers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # tier -> the node(s) it landed on
    app_placements: list[Placement] = field(default_factory=list)

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
    cards: list[GPUCard] = field(default_factory=list)
    gpu_reason: Reason | None = None
    gpu_driver_missing: bool = False
    proxmox: bool = False
    proxmox_reason: Reason | None = None
    vms: list[tuple[str, float | None, int | None, str]] = field(default_factory=list)  # name, GB, vCPU, note
    vms_source: str = ""
    running_vms: int = 0
    set_aside: Reason | None = None  # why its numbers take no part (duplicate, unknown, implausible)
    set_aside_role: str | None = None  # the role it is shown with then (None: the role map's)

    @property
    def answered(self) -> bool:
        return self.measured is not None and self.measured.answered

    @property
    def usable(self) -> bool:
        return self.answered and self.set_aside is None

    def near(self, budget: float) -> bool:
        return self.latency_ms is not None and self.latency_ms <= budget and (self.loss_pct or 0) <= LOSS_LIMIT_PCT


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


def _gb(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _card_text(card: GPUCard) -> str:
    vram = f" {_num(card.vram_gb)} GB VRAM" if card.vram_gb is not None else ""
    return f"{card.model}{vram}"


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

    # GPU: the survey's nvidia-smi, or lspci's card without a driver; the role map only where the
    # probe itself failed.
    rm_gpu = rm_host.hardware.gpu if rm_host else None
    if measured.gpu:
        view.cards = list(measured.gpu)
        view.gpu_driver_missing = any(card.driver is None for card in measured.gpu)
        models = ", ".join(_card_text(card) for card in measured.gpu)
        seen = " (lspci: no NVIDIA driver)" if view.gpu_driver_missing else ""
        view.gpu_reason = Reason(f"GPU {models}{seen}", "measured")
    elif "gpu" in measured.absent:
        why = measured.absent["gpu"]
        if rm_gpu and "lspci" not in why and "nvidia-smi" in why:
            # an older survey, or a host without lspci: the role map's card, its driver not found
            view.cards = [GPUCard(model=rm_gpu.model, vram_gb=rm_gpu.vram_gb, source="hand")]
            view.gpu_driver_missing = True
            view.gpu_reason = Reason(f"GPU {rm_gpu.model} {_num(rm_gpu.vram_gb)} GB VRAM per the role map", "role map")
            warnings.append(f"{name}: the role map lists a {rm_gpu.model}, the survey found no driver for it ({why})")
        else:
            view.gpu_reason = Reason(f"no GPU ({why})", "measured")
            if rm_gpu:
                warnings.append(f"{name}: the role map lists a {rm_gpu.model}, the survey found none ({why})")
    elif rm_gpu:
        view.cards = [
            GPUCard(model=rm_gpu.model, vram_gb=rm_gpu.vram_gb, driver=rm_gpu.driver, cuda=rm_gpu.cuda, source="hand")
        ]
        view.gpu_reason = Reason(f"GPU {rm_gpu.model} (GPU probe failed)", "role map")
    else:
        view.gpu_reason = Reason("no GPU in the role map (GPU probe failed)", "role map")

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


# --------------------------------------------------------------------------- what cannot be believed
def implausible(measured: HostMeasurements) -> list[str]:
    """Numbers no machine can produce: each one a line naming the field and both figures."""
    out: list[str] = []

    def more(what: str, part: float | None, whole: float | None, unit: str = "GB") -> None:
        if part is not None and whole is not None and part > whole * 1.001 + 0.01:
            out.append(f"{what}: {_num(part)} {unit} > {_num(whole)} {unit} total")

    memory = measured.memory
    if memory is not None:
        more("memory.available_gb", memory.available_gb, memory.total_gb)
        more("memory.used_gb", memory.used_gb, memory.total_gb)
        more("memory.free_gb", memory.free_gb, memory.total_gb)
    disk = measured.disk
    if disk is not None:
        more("disk.free_gb", disk.free_gb, disk.total_gb)
        more("disk.used_gb", disk.used_gb, disk.total_gb)
    for area in measured.vm_storage.storages if measured.vm_storage else []:
        more(f"vm_storage.{area.name}.free_gb", area.free_gb, area.total_gb)
        more(f"vm_storage.{area.name}.used_gb", area.used_gb, area.total_gb)
    for storage in measured.proxmox.storages if measured.proxmox else []:
        more(f"proxmox.storages.{storage.name}.free_gb", storage.free_gb, storage.total_gb)
    for card in measured.gpu or []:
        more(f"gpu {card.model} vram_used_mib", card.vram_used_mib, card.vram_mib, "MiB")
    if measured.cpu is not None and measured.cpu.threads < measured.cpu.cores:
        out.append(f"cpu: {measured.cpu.threads} threads < {measured.cpu.cores} cores")
    return out


def _same_machine(views: list[_View], rm: RoleMap) -> dict[str, tuple[str, str]]:
    """Second names of one machine: name -> (the name it is counted as, the evidence). Evidence is
    the same machine-id, the same address the survey reached, or one reached at an address the
    other holds (container bridges never count: every Docker host has 172.17.0.1)."""
    answered = [v for v in views if v.answered]
    parent = {v.name: v.name for v in answered}
    evidence: dict[frozenset[str], str] = {}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    for a, b in itertools.combinations(answered, 2):
        ma, mb = a.measured, b.measured
        assert ma is not None and mb is not None
        why = ""
        ida, idb = ma.identity, mb.identity
        if ida and idb and ida.machine_id and ida.machine_id == idb.machine_id:
            why = f"machine-id {ida.machine_id}"
        elif ma.address and ma.address == mb.address:
            why = f"address {ma.address}"
        elif ma.address and idb and ma.address in idb.addresses:
            why = f"{a.name}'s address {ma.address} is on {b.name}"
        elif mb.address and ida and mb.address in ida.addresses:
            why = f"{b.name}'s address {mb.address} is on {a.name}"
        if why:
            evidence[frozenset((a.name, b.name))] = why
            parent[root(b.name)] = root(a.name)
    groups: dict[str, list[_View]] = {}
    for v in answered:
        groups.setdefault(root(v.name), []).append(v)
    out: dict[str, tuple[str, str]] = {}
    for members in groups.values():
        if len(members) < 2:
            continue

        def rank(v: _View, members: list[_View] = members) -> tuple[int, int]:
            in_map = v.rm_host is not None
            address_matches = in_map and v.measured is not None and str(v.rm_host.address) == v.measured.address
            return (0 if address_matches else 1 if in_map else 2, members.index(v))

        keep = min(members, key=rank)
        for v in members:
            if v is not keep:
                pair = frozenset((keep.name, v.name))
                why = evidence.get(pair) or next(e for p, e in evidence.items() if v.name in p)
                out[v.name] = (keep.name, why)
    return out


def _set_aside(views: list[_View], survey: Survey, rm: RoleMap, warnings: list[str]) -> None:
    known = [h.name for h in rm.hosts]
    for name, (kept, why) in _same_machine(views, rm).items():
        view = next(v for v in views if v.name == name)
        view.set_aside = Reason(f"the same machine as {kept} ({why}): counted once, as {kept}", "measured")
        view.set_aside_role = None if view.rm_host else "duplicate"
        warnings.append(f"{name} and {kept} are one machine ({why}): counted once, as {kept}")
    for view in views:
        if view.set_aside is not None or not view.answered:
            continue
        if view.rm_host is None:
            close = difflib.get_close_matches(view.name, known, n=1, cutoff=0.6)
            hint = f" (a typo of {close[0]}?)" if close else ""
            view.set_aside = Reason(f"not in the role map{hint}: no role and no VM until it is added", "role map")
            view.set_aside_role = "unknown"
            warnings.append(f"{view.name}: measured but not in the role map{hint}: given no role, no VM planned on it")
            continue
        assert view.measured is not None
        problems = implausible(view.measured)
        if problems:
            view.set_aside = Reason(f"implausible measurements ({'; '.join(problems)}): not used", "measured")
            warnings.append(
                f"{view.name}: implausible measurements, not used: {'; '.join(problems)}; it keeps its role-map role"
            )


# --------------------------------------------------------------------------- the GPU's judgement
def vram_needed(rm: RoleMap) -> tuple[float, str]:
    """The VRAM the role map's models need together (vLLM models, and whisper/embeddings on cuda)."""
    if rm.inference is None:
        return 0.0, "the role map names no models"
    parts = [(m.name, m.gpu_memory_gb) for m in rm.inference.models]
    for aux in (rm.inference.whisper, rm.inference.embeddings):
        if aux is not None and aux.device == "cuda" and aux.gpu_memory_gb:
            parts.append((aux.name, aux.gpu_memory_gb))
    total = sum(gb for _, gb in parts)
    detail = " + ".join(f"{name} {_gb(gb)}" for name, gb in parts)
    return total, f"{_gb(total)} GB ({detail})"


def _version(text: str | None) -> tuple[int, ...] | None:
    if not text or not re.fullmatch(r"\d+(\.\d+)*", text):
        return None
    return tuple(int(part) for part in text.split("."))


def gpu_verdict(view: _View, rm: RoleMap, budget: float) -> tuple[bool, str]:
    """Whether this host's GPU can serve the role map's models here, and the one-line why."""
    if not view.cards:
        return False, "no GPU"
    if view.gpu_driver_missing:
        return False, "GPU present, driver missing: no CUDA until the NVIDIA driver is installed"
    need, detail = vram_needed(rm)
    utilization = rm.inference.gpu_memory_utilization_max if rm.inference else 1.0
    known = [card.vram_gb for card in view.cards if card.vram_gb is not None]
    if not known:
        return False, "the GPU's VRAM is unknown"
    usable = sum(known) * utilization
    if usable + 1e-9 < need:
        return False, (
            f"{_gb(sum(known))} GB VRAM ({_gb(usable)} GB usable at {utilization:g}) cannot carry the role map's "
            f"models: {detail}"
        )
    min_cuda = _version(rm.inference.min_cuda) if rm.inference else None
    cudas = [_version(card.cuda) for card in view.cards if card.cuda]
    if min_cuda and cudas and any(c is not None and c < min_cuda for c in cudas):
        assert rm.inference is not None
        return False, f"CUDA {view.cards[0].cuda} < {rm.inference.min_cuda}, what the pinned vLLM needs"
    if not view.near(budget):
        where = (
            f"losing {_num(view.loss_pct or 0)} % of its pings (> {_num(LOSS_LIMIT_PCT)} %)"
            if view.latency_ms is not None and view.latency_ms <= budget
            else "latency unknown"
            if view.latency_ms is None
            else f"{_num(view.latency_ms)} ms away, beyond the {_num(budget)} ms budget of the application tier"
        )
        return False, f"its GPU carries the models, but it is {where}: batch inference at most"
    return True, f"{_gb(usable)} GB usable VRAM carries the role map's models ({detail}); driver present"


# --------------------------------------------------------------------------- capacity for placement
def _capacity(view: _View, rm: RoleMap, serves: Iterable[str], budget: float) -> HostCapacity | None:
    measured = view.measured
    if measured is None or measured.memory is None:
        return None
    headroom = rm.placement.headroom
    hardware = view.rm_host.hardware if view.rm_host else None
    threads = measured.cpu.threads if measured.cpu else (hardware.threads if hardware else 0)
    disk_total, disk_free = None, None
    area, _ = measured.vm_disk(rm.proxmox.storage if rm.proxmox else None)
    if area is not None:
        disk_total, disk_free = area.total_gb, area.free_gb
    elif measured.vm_storage is None and measured.disk is not None:
        # no VM storage measured (a hand benchmark): the root filesystem is the best figure there is
        disk_total, disk_free = measured.disk.total_gb, measured.disk.free_gb
    if disk_free is None and view.rm_host is not None:
        disk_free = view.rm_host.measured.disk_free_gb  # not measured by the survey
    if disk_total is None:
        disk_total = hardware.disk_gb if hardware else (disk_free or 0)
    total = measured.memory.total_gb
    return HostCapacity(
        name=view.name,
        # a lossy host is no place for latency-sensitive VMs, whatever its round trip
        latency_ms=view.latency_ms if (view.loss_pct or 0) <= LOSS_LIMIT_PCT else None,
        serves=frozenset(serves),
        ram_total_gb=total,
        ram_free_gb=measured.memory.available_gb,
        ram_headroom_gb=total * headroom.ram_pct / 100,
        vcpu_total=threads * headroom.vcpu_overcommit,
        vcpu_used=sum(vcpu or 0 for _, _, vcpu, _ in view.vms),
        disk_free_gb=disk_free if disk_free is not None else float("inf"),
        disk_headroom_gb=(disk_total or 0) * headroom.disk_pct / 100,
    )


def describe(host: HostCapacity) -> str:
    return (
        f"{host.name}: {_gb(host.ram_available)} GB RAM, {_gb(host.vcpu_available)} vCPU, "
        f"{_gb(host.disk_available)} GB disk free after headroom"
    )


# --------------------------------------------------------------------------- the VMs as one problem
@dataclass
class _Layout:
    placements: list[Placement]
    tier_nodes: dict[str, tuple[str, ...]]
    notes: dict[str, list[Reason]]  # host -> placement reasons
    warnings: list[str]


def _requests(vms: Sequence[VM], node: str | None = None) -> list[VMRequest]:
    return [
        VMRequest(vm.name, vm.tier, vm.vcpu, vm.memory_gb, vm.disk_gb, vm.latency_sensitive, node or vm.host)
        for vm in vms
    ]


def _try(
    assignment: dict[str, str], tiers: dict[str, list[VM]], fresh: dict[str, HostCapacity], budget: float, ref: str
) -> list[Placement] | None:
    capacities = _copies(fresh, {node: tier for tier, node in assignment.items()})
    requests = [r for tier, node in assignment.items() for r in _requests(tiers[tier], node)]
    try:
        return place(requests, list(capacities.values()), budget, ref).placements
    except PlacementError:
        return None


def _copies(fresh: dict[str, HostCapacity], serves: dict[str, str] | None = None) -> dict[str, HostCapacity]:
    serves = serves or {}
    return {
        name: HostCapacity(
            name=c.name,
            latency_ms=c.latency_ms,
            serves=frozenset({serves[name]} if name in serves else ()),
            ram_total_gb=c.ram_total_gb,
            ram_free_gb=c.ram_free_gb,
            ram_headroom_gb=c.ram_headroom_gb,
            vcpu_total=c.vcpu_total,
            vcpu_used=c.vcpu_used,
            disk_free_gb=c.disk_free_gb,
            disk_headroom_gb=c.disk_headroom_gb,
        )
        for name, c in fresh.items()
    }


def _tier_request(tier: str, vms: Sequence[VM]) -> VMRequest:
    """A whole tier as one VM: what a node must have free to hold all of it."""
    return VMRequest(
        f"the {tier} tier",
        tier,
        sum(vm.vcpu for vm in vms),
        sum(vm.memory_gb for vm in vms),
        sum(vm.disk_gb for vm in vms),
        any(vm.latency_sensitive for vm in vms),
    )


def _tier_text(tier: str, vms: Sequence[VM]) -> str:
    req = _tier_request(tier, vms)
    return (
        f"the {tier} tier ({', '.join(vm.name for vm in vms)}: {req.vcpu} vCPU, {_gb(req.memory_gb)} GB RAM, "
        f"{_gb(req.disk_gb)} GB disk)"
    )


def layout(
    rm: RoleMap, fresh: dict[str, HostCapacity], running: dict[str, str], budget: float, reference: str
) -> _Layout:
    """Where the role map's VMs land, every tier decided together. VMs already running stay."""
    notes: dict[str, list[Reason]] = {}
    warnings: list[str] = []
    placements: list[Placement] = []
    for vm in rm.vms:
        if vm.name in running:
            host = running[vm.name]
            placements.append(Placement(vm.name, host, vm.vcpu, vm.memory_gb, vm.disk_gb, f"already running on {host}"))
            notes.setdefault(host, []).append(Reason(f"{vm.name} already runs here", "measured"))
    tiers: dict[str, list[VM]] = {}
    for vm in rm.vms:
        if vm.name not in running:
            tiers.setdefault(vm.tier, []).append(vm)
    # tiers whose VMs already run (or are pinned) stay on that node
    fixed: dict[str, str] = {}
    for tier, vms in tiers.items():
        homes = {running[v.name] for v in rm.vms if v.tier == tier and v.name in running}
        homes |= {vm.host for vm in vms if vm.host}
        if len(homes) == 1:
            fixed[tier] = homes.pop()
    order = sorted(tiers, key=lambda t: (-sum(vm.memory_gb for vm in tiers[t]), t))
    if not order:
        return _Layout(placements, {}, notes, warnings)
    if not fresh:
        warnings.append("no measured Proxmox node: the planned VMs have nowhere to go")
        return _Layout(placements, {}, notes, warnings)
    ranked = sorted(fresh.values(), key=lambda c: (-c.ram_available, c.name))
    options = {
        tier: [fixed[tier]]
        if tier in fixed
        else [c.name for c in ranked if why_not(c, _tier_request(tier, tiers[tier]), budget) is None][:SEARCH_NODES]
        for tier in order
    }

    def distinct(assignment: dict[str, str]) -> bool:
        return len(set(assignment.values())) == len(assignment)

    def data_apart(assignment: dict[str, str]) -> bool:
        node = assignment.get(DATA_TIER)
        return node is None or all(n != node for t, n in assignment.items() if t != DATA_TIER)

    for level, accept in enumerate((distinct, data_apart, lambda a: True)):
        for combo in itertools.product(*(options[t] for t in order)):
            assignment = dict(zip(order, combo, strict=True))
            if not accept(assignment):
                continue
            result = _try(assignment, tiers, fresh, budget, reference)
            if result is None:
                continue
            placements.extend(
                replace(p, reason=f"the {_tier_of(rm, p.vm)} tier fits whole on {p.host}", rejected=()) for p in result
            )
            for tier, node in assignment.items():
                c = fresh[node]
                text = (
                    f"{_tier_text(tier, tiers[tier])} stays with its VMs already on {node} ({describe(c)})"
                    if tier in fixed
                    else f"{_tier_text(tier, tiers[tier])} fits whole here: the most free RAM among the nodes that "
                    f"can hold it with every tier placed ({describe(c)})"
                )
                notes.setdefault(node, []).append(Reason(text, "placement"))
                if level == 2 and tier == DATA_TIER:
                    shared = ", ".join(t for t, n in assignment.items() if n == node and t != tier)
                    warnings.append(
                        f"the data tier shares {node} with the {shared} tier: no other node within the budget "
                        "can hold it"
                    )
                for o in ranked:
                    if o.name == node:
                        continue
                    held = [t for t, n in assignment.items() if n == o.name]
                    if o.ram_available < c.ram_available:
                        why = f"less free RAM ({_gb(o.ram_available)} GB) than {node} ({_gb(c.ram_available)} GB)"
                    elif held:
                        apart = "the data tier kept apart" if DATA_TIER in (tier, *held) else "a node per tier"
                        why = f"it holds the {', '.join(held)} tier ({apart})"
                    elif o.ram_available == c.ram_available:
                        why = f"as much free RAM ({_gb(o.ram_available)} GB) as {node}, first by name"
                    else:
                        why = f"more free RAM ({_gb(o.ram_available)} GB), but then another tier has no home"
                    cannot = why_not(o, _tier_request(tier, tiers[tier]), budget)
                    if cannot:
                        why += f"; cannot hold it whole: {cannot}"
                    notes.setdefault(o.name, []).append(Reason(f"not where the {tier} tier goes: {why}", "placement"))
            return _Layout(placements, dict((t, (n,)) for t, n in assignment.items()), _dedupe(notes), warnings)
    # Some tier fits on no single node: tier by tier (largest first), whole where it still fits,
    # else spread by placement; a tier that fits nowhere is said, and the others still placed.
    capacities = _copies(fresh)
    tier_nodes: dict[str, tuple[str, ...]] = {}
    taken: set[str] = set()
    for tier in order:
        vms = tiers[tier]
        whole = _tier_request(tier, vms)
        candidates = sorted(
            capacities.values(), key=lambda c: (c.name in taken if tier == DATA_TIER else 0, -c.ram_available, c.name)
        )
        node = fixed.get(tier) or next((c.name for c in candidates if why_not(c, whole, budget) is None), None)
        requests = _requests(vms, node)
        try:
            result = place(requests, list(capacities.values()), budget, reference).placements
        except PlacementError as exc:
            label = "app VMs" if tier == APP_TIER else f"{tier} VMs"
            warnings.append(f"the {label} fit on no Proxmox node within the budget: {exc}")
            continue
        for p in result:
            c = capacities[p.host]
            c.placed_ram_gb += p.memory_gb
            c.placed_vcpu += p.vcpu
            c.placed_disk_gb += p.disk_gb
        placements.extend(result)
        hosts = tuple(dict.fromkeys(p.host for p in result))
        tier_nodes[tier] = hosts
        taken.update(hosts)
        if len(hosts) > 1:
            warnings.append(f"{_tier_text(tier, vms)} fits on no single node: spread over {', '.join(hosts)}")
        for p in result:
            text = (
                f"{p.vm}: {p.reason}"
                if len(hosts) > 1
                else f"{_tier_text(tier, vms)} fits whole here ({p.reason.split(': ', 1)[-1]})"
            )
            notes.setdefault(p.host, []).append(Reason(text, "placement"))
    return _Layout(placements, tier_nodes, _dedupe(notes), warnings)


def _tier_of(rm: RoleMap, vm_name: str) -> str:
    return next((vm.tier for vm in rm.vms if vm.name == vm_name), "?")


def _dedupe(notes: dict[str, list[Reason]]) -> dict[str, list[Reason]]:
    return {host: list(dict.fromkeys(reasons)) for host, reasons in notes.items()}


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
    _set_aside(views, survey, rm, warnings)
    usable = [v for v in views if v.usable]

    # Inference: the near host whose GPU carries the models (most VRAM, then the nearest, then by name).
    verdicts = {v.name: gpu_verdict(v, rm, budget) for v in usable if v.cards}
    able = [v for v in usable if verdicts.get(v.name, (False, ""))[0]]
    inference = min(
        able,
        key=lambda v: (-sum(c.vram_gb or 0 for c in v.cards), v.latency_ms or 0, v.name),
        default=None,
    )

    # The VMs, as one problem, on the Proxmox nodes that are not the inference host.
    running = _running_elsewhere(usable)
    nodes = [v for v in usable if v.proxmox and v is not inference]
    fresh = {c.name: c for c in (_capacity(v, rm, (), budget) for v in nodes) if c is not None}
    result = layout(rm, fresh, running, budget, reference)
    warnings.extend(result.warnings)
    on_host: dict[str, list[Placement]] = {}
    for p in result.placements:
        on_host.setdefault(p.host, []).append(p)

    roles = [
        _decide(v, rm, budget, inference, verdicts, on_host.get(v.name, []), result.notes.get(v.name, []))
        for v in views
    ]
    if survey.storagebox is not None or rm.storage is not None:
        roles.append(_storage_box(survey, rm, warnings))
    storage_plan = _storage_plan(roles, rm, warnings)
    roles = [_with_duties(r, views, rm, result.placements, storage_plan) for r in roles]

    warnings.extend(_measurement_warnings(survey, views, reference, rm))
    if inference is None:
        gpus = [v for v in usable if v.cards]
        if not gpus:
            warnings.append("no host has a GPU: no host gets inference")
        else:
            detail = "; ".join(f"{v.name}: {verdicts[v.name][1]}" for v in gpus)
            warnings.append(f"no GPU can serve the role map's models: no host gets inference ({detail})")
    for v in usable:
        if v.gpu_driver_missing:
            warnings.append(
                f"{v.name}: GPU present, driver missing ({', '.join(c.model for c in v.cards)}): install the NVIDIA "
                f"driver (CUDA >= {rm.inference.min_cuda if rm.inference else '?'}) and survey again"
            )
        elif (v.loss_pct or 0) > LOSS_LIMIT_PCT:
            warnings.append(
                f"{v.name}: {_num(v.loss_pct or 0)} % packet loss from {reference} (> {_num(LOSS_LIMIT_PCT)} %): "
                "no latency-sensitive role"
            )
    if not any(r.role == "backup" for r in roles):
        warnings.append(f"no host lies beyond the {_num(budget)} ms budget: no far site for backups & batch")
    plan_order = {vm.name: i for i, vm in enumerate(rm.vms)}
    plan = sorted(result.placements, key=lambda p: plan_order.get(p.vm, len(plan_order)))
    app = [p for p in plan if _tier_of(rm, p.vm) == APP_TIER]
    return Proposal(reference, budget, roles, _unique(warnings), plan, storage_plan, result.tier_nodes, app)


def _keep(view: _View, why: Reason, role: str | None = None) -> HostRole:
    current = role or (view.rm_host.role if view.rm_host else "unassigned")
    spec = ROLES.get(current)
    kept = (
        Reason(f"the role map's role {current!r} is kept", "role map")
        if role is None
        else Reason(f"shown as {current!r}: no role of its own", "rule")
    )
    return HostRole(
        view.name,
        current,
        spec.label if spec and role is None else current,
        tuple(view.rm_host.serves) if view.rm_host and role is None else (),
        (why, kept),
        current_role=view.rm_host.role if view.rm_host else None,
        current_serves=tuple(view.rm_host.serves) if view.rm_host else None,
        derived=False,
    )


def _decide(
    view: _View,
    rm: RoleMap,
    budget: float,
    inference: _View | None,
    verdicts: dict[str, tuple[bool, str]],
    placed: list[Placement],
    notes: list[Reason],
) -> HostRole:
    if view.measured is None:
        return _keep(view, Reason("not in the measurements", "measured"))
    if not view.answered:
        return _keep(view, Reason(f"did not answer the survey: {view.measured.reason or 'no answer'}", "measured"))
    if view.set_aside is not None:
        return _keep(view, view.set_aside, view.set_aside_role)
    vms = tuple(p.vm for p in placed)

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
            vms=vms,
        )

    assert view.gpu_reason is not None and view.proxmox_reason is not None and view.latency_reason is not None
    gpu_why = verdicts.get(view.name, (False, ""))[1]
    gpu_reasons = [view.gpu_reason] + ([Reason(gpu_why, "rule")] if gpu_why and view is not inference else [])
    if view is inference:
        return role(
            "inference",
            [
                view.gpu_reason,
                view.latency_reason,
                Reason(gpu_why, "rule"),
                Reason("the GPU host gets inference", "rule"),
            ],
        )
    if view.latency_ms is None:
        return _keep(view, view.latency_reason)
    if view.latency_ms > budget or (view.loss_pct or 0) > LOSS_LIMIT_PCT:
        why = (
            f"beyond the {_num(budget)} ms budget: never latency-sensitive work, so backups & batch"
            if view.latency_ms > budget
            else f"{_num(view.loss_pct or 0)} % packet loss, above the {_num(LOSS_LIMIT_PCT)} % limit: "
            "no latency-sensitive role, so backups & batch"
        )
        reasons = [view.latency_reason, *(gpu_reasons if view.cards else []), Reason(why, "rule")]
        return role("backup", [*reasons, *notes])
    within = Reason(f"{view.latency_reason.text}: within the {_num(budget)} ms budget", "measured")
    cards = gpu_reasons if view.cards else []
    if view.gpu_driver_missing and not view.proxmox:
        return role(
            "gpu-driver-missing",
            [*cards, within, Reason("a GPU host without its driver: inference once the driver is installed", "rule")],
        )
    if view.proxmox:
        tiers = {_tier_of(rm, vm) for vm in vms}
        reasons = [view.proxmox_reason, within, *cards]
        if view.vms:
            vm_names = ", ".join(name for name, _, _, _ in view.vms)
            reasons.append(Reason(f"runs {view.running_vms} VM(s): {vm_names}", view.vms_source or "measured"))
        services = _services(view)
        for service, found in services.items():
            reasons.append(Reason(f"{service}: {', '.join(found)}", view.vms_source or "measured"))
        reasons.extend(notes)
        if APP_TIER in tiers:
            serves = (APP_TIER, DATA_TIER) if DATA_TIER in tiers else (APP_TIER,)
            if DATA_TIER in tiers:
                reasons.append(Reason("the data VM lands here too: it takes the data tier as well", "placement"))
            return role("application", reasons, serves=serves)
        if DATA_TIER in tiers:
            extras = tuple(s for s in ("mail", "staging") if s in services)
            label = "data & mail" if "mail" in services else "data"
            reasons.append(Reason(f"the data VM lands here ({', '.join(vms)}): the data node", "placement"))
            return role("data", reasons, label=label, serves=(DATA_TIER, *extras))
        reasons.append(Reason("no planned VM lands here: spare Proxmox capacity within the budget", "placement"))
        return role("spare", reasons, label="spare Proxmox node")
    # Neither inference host nor Proxmox node: a dev sandbox only for a reason.
    reasons = [*(cards or [view.gpu_reason]), view.proxmox_reason, within]
    dev: list[Reason] = []
    virt = view.measured.system.virtualization if view.measured.system else ""
    if virt in VIRTUAL_MACHINE_TYPES:
        dev.append(Reason(f"a virtual machine ({virt})", "measured"))
    if view.rm_host is not None and view.rm_host.kind == "vm":
        host_of = f" on {view.rm_host.vm_of}" if view.rm_host.vm_of else ""
        vmid = f" {view.rm_host.vmid}" if view.rm_host.vmid else ""
        dev.append(Reason(f"a VM{vmid}{host_of}", "role map"))
    tools = [s for s in (view.rm_host.services if view.rm_host else []) if DEV_SERVICES.search(s)]
    if tools and view.rm_host is not None:
        dev.append(Reason(f"runs {', '.join(view.rm_host.services)}", "role map"))
    if dev:
        return role(
            "bastion",
            [*reasons, *dev, Reason("a VM or a host with dev tools, within the budget: a dev sandbox", "rule")],
        )
    return role(
        "spare",
        [
            *reasons,
            Reason("no GPU that carries the models, not a Proxmox node, neither a VM nor dev tools: spare", "rule"),
        ],
    )


# --------------------------------------------------------------------------- duties and the Storage Box plan
def _storage_plan(roles: list[HostRole], rm: RoleMap, warnings: list[str]) -> list[str]:
    """SSHFS models on the inference host, CIFS uploads on the application node, rsync backups from
    the data node: from this proposal, compared with the role map's storage section."""

    def first(role_id: str) -> str | None:
        hosts = [r for r in roles if r.role == role_id and r.derived]
        hosts.sort(key=lambda r: -len(r.vms))
        return hosts[0].host if hosts else None

    inference, app = first("inference"), first("application")
    data = first("data") or next((r.host for r in roles if r.derived and DATA_TIER in r.serves), None)
    box = rm.storage.box.name if rm.storage else "the Storage Box"
    out: list[str] = []
    wanted = (
        ("sshfs", inference, "models: SSHFS mount", "the inference host"),
        ("cifs", app, "uploads: CIFS mount", "the application node"),
        ("backups", data, "backups: rsync", "the data node"),
    )
    for section, host, what, whom in wanted:
        if host is None:
            out.append(f"{what} waits: this proposal has no {whom[4:]}")
            continue
        out.append(f"{what} on {host} ({whom})" if section != "backups" else f"{what} from {host} to {box} ({whom})")
        if rm.storage is None:
            continue
        entries = getattr(rm.storage, section)
        placed = sorted({e.host for e in entries})
        if entries and host not in placed:
            warnings.append(
                f"Storage Box plan: the role map has storage.{section} on {', '.join(placed)}; {whom} of this proposal "
                f"is {host}"
            )
    return out


def _with_duties(
    r: HostRole, views: list[_View], rm: RoleMap, plan: list[Placement], storage_plan: list[str]
) -> HostRole:
    if not r.derived:
        return r
    duties: list[str] = []
    view = next((v for v in views if v.name == r.host), None)
    vm_by_name = {vm.name: vm for vm in rm.vms}
    for name in r.vms:
        vm = vm_by_name.get(name)
        if vm is not None:
            duties.append(f"VM {name}: {', '.join(vm.services) or vm.tier}")
    duties.extend(line for line in storage_plan if f" {r.host} " in f"{line} " and r.role != "storage")
    if r.role == "inference" and rm.inference is not None:
        inf = rm.inference
        duties.append(
            "vLLM: " + ", ".join(f"{m.name} ({_gb(m.gpu_memory_gb)} GB VRAM, port {m.port})" for m in inf.models)
        )
        for aux in (inf.whisper, inf.embeddings):
            if aux is not None:
                duties.append(
                    f"{aux.name} on the {aux.device.upper() if aux.device == 'cpu' else 'GPU'}, port {aux.port}"
                )
        duties.append(f"local Redis cache (port {inf.redis_port}, {inf.redis_maxmemory_mb} MB LRU)")
        if rm.storage is not None and rm.storage.ollama is not None:
            duties.append(f"Ollama's models to the Storage Box ({rm.storage.ollama.remote_path}), then Ollama stopped")
    if r.role in ("data", "application") and DATA_TIER in r.serves and rm.data is not None:
        data_vm = rm.data.host
        where = "here" if data_vm in r.vms or data_vm == r.host else f"on {data_vm}"
        duties.append(
            f"PostgreSQL {rm.data.postgres.version} and Redis {where}; nightly pg_dump to the Storage Box "
            f"({rm.data.dump.destination})"
        )
    if view is not None and view.proxmox:
        kept = [name for name, _, _, _ in view.vms if name not in vm_by_name]
        if kept:
            duties.append(f"keeps its VMs: {', '.join(kept)}")
        node = view.rm_host.proxmox if view.rm_host else None
        osd = (node is not None and node.ceph_osd) or (rm.ceph is not None and r.host in rm.ceph.osd_hosts)
        if osd:
            duties.append("keeps its Ceph OSD" + (" and monitor" if node is not None and node.ceph_mon else ""))
    if r.role == "bastion" and view is not None and view.measured is not None:
        disk = view.measured.disk
        full = (
            disk is not None
            and disk.free_gb is not None
            and disk.total_gb
            and (disk.free_gb < DISK_FREE_WARN_GB or 100 * disk.free_gb / disk.total_gb < DISK_FREE_WARN_PCT)
        )
        cleanup = rm.data.cleanup if rm.data is not None else None
        if cleanup is not None and cleanup.host == r.host:
            duties.append(
                f"disk clean-up ({cleanup.on_calendar}): journal to {cleanup.journal_max_mb} MB, logs older than "
                f"{cleanup.log_max_age_days} days, unused Docker images older than {cleanup.docker_image_age_h} h"
            )
        elif full:
            assert disk is not None
            duties.append(
                f"disk clean-up needed: {_gb(disk.free_gb or 0)} GB free of {_gb(disk.total_gb or 0)} GB "
                "(old logs, unused Docker images); the role map has no data.cleanup for it"
            )
    if r.role == "storage":
        duties.extend(storage_plan)
        if rm.data is not None and rm.data.vzdump is not None:
            duties.append(f"vzdump of the VMs (CIFS share {rm.data.vzdump.share}/{rm.data.vzdump.subdir})")
        if rm.storage is not None and rm.storage.config_git is not None:
            duties.append(f"configs to Git ({rm.storage.config_git.destination})")
    if r.role == "backup":
        duties.append("backups & batch: never latency-sensitive or real-time work")
    return replace(r, duties=tuple(dict.fromkeys(duties)))


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
        if view.loss_pct and view.loss_pct <= LOSS_LIMIT_PCT:  # above the limit: its own line, with the verdict
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
        latency, loss, _ = _latency(survey, reference, r.host)
        near = latency is not None and latency <= budget and (loss or 0) <= LOSS_LIMIT_PCT
        if ROLES[r.role].latency_sensitive and not near:
            problems.append(f"{r.host}: latency-sensitive role {r.role} beyond the {_num(budget)} ms budget or lossy")
        if r.role == "backup" and near:
            problems.append(f"{r.host}: backup role although within the {_num(budget)} ms budget")
    # the reasons and the table come from one placement: every role agrees with where the VMs land
    landed: dict[str, list[str]] = {}
    for p in proposal.plan:
        landed.setdefault(p.host, []).append(p.vm)
    tier = {vm.name: vm.tier for vm in rm.vms}
    for r in proposal.roles:
        if not r.derived:
            if landed.get(r.host):
                problems.append(f"{r.host}: VMs planned on a host whose numbers are not used")
            continue
        if tuple(landed.get(r.host, ())) != r.vms:
            problems.append(f"{r.host}: its role lists VMs {list(r.vms)}, the plan {landed.get(r.host, [])}")
        tiers = {tier.get(vm) for vm in landed.get(r.host, [])}
        if APP_TIER in tiers and r.role != "application":
            problems.append(f"{r.host}: app VMs land there, but its role is {r.role}")
        if r.role == "application" and APP_TIER not in tiers:
            problems.append(f"{r.host}: application role without an app VM")
        if r.role == "data" and DATA_TIER not in tiers:
            problems.append(f"{r.host}: data role without the data VM")
    # every node holds what lands on it (RAM, vCPU and disk), from fresh capacities
    views = [_view(n, survey, rm, []) for n in survey.hosts]
    capacities = {
        c.name: c for c in (_capacity(v, rm, (), budget) for v in views if v.answered and v.proxmox) if c is not None
    }
    running = _running_elsewhere([v for v in views if v.answered])
    for host in landed:
        c = capacities.get(host)
        if c is None:
            problems.append(f"{host}: VMs planned on a host with no measured capacity")
            continue
        new = [p for p in proposal.plan if p.host == host and p.vm not in running]
        ram, vcpu, disk = (sum(getattr(p, k) for p in new) for k in ("memory_gb", "vcpu", "disk_gb"))
        if ram > c.ram_available + 1e-6 or vcpu > c.vcpu_available + 1e-6 or disk > c.disk_available + 1e-6:
            problems.append(
                f"{host}: {', '.join(p.vm for p in new)} need {_gb(ram)} GB RAM, {vcpu} vCPU, {_gb(disk)} GB disk; "
                f"it has {describe(c)}"
            )
    for p in proposal.plan:
        vm = next((v for v in rm.vms if v.name == p.vm), None)
        if vm is not None and vm.latency_sensitive and by_host.get(p.host) and by_host[p.host].role == "backup":
            problems.append(f"{p.vm}: latency-sensitive VM planned on the far host {p.host}")
    for r in proposal.roles:
        if r.role == "inference" and r.derived:
            view = next((v for v in views if v.name == r.host), None)
            ok, why = gpu_verdict(view, rm, budget) if view is not None else (False, "not measured")
            if not ok:
                problems.append(f"{r.host}: inference, but {why}")
    return problems
