"""The measurements file `brainall-ops survey` writes and `brainall-ops roles` reads.

YAML, timestamped, one section per host with each probe's values (units in the key names: `_gb`
GiB, `_gbps` GB/s, `_ms` milliseconds), what was absent and why, each probe's errors, and the
latency matrix (source -> target). Strict like the role map: unknown keys and wrong types are
refused with `file:line: field: message`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from brainall_ops.errors import BrainallError

UNITS = {
    "_gb": "GiB (2^30 bytes), as free -g and df -h print them",
    "_gbps": "GB/s (10^9 bytes/s), as dd prints it",
    "_ms": "milliseconds",
    "_mib": "MiB (2^20 bytes)",
    "_pct": "percent",
    "_s": "seconds",
}


class MeasurementsError(BrainallError):
    pass


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class System(Strict):
    hostname: str = ""
    virtualization: str = "unknown"  # systemd-detect-virt: none, kvm, systemd-nspawn, ...
    kernel: str = ""
    os: str = ""


class CPU(Strict):
    model: str
    sockets: int | None = None
    cores: int = Field(ge=1)
    threads: int = Field(ge=1)


class Memory(Strict):
    total_gb: float = Field(ge=0)
    available_gb: float = Field(ge=0, description="free + reclaimable cache: what the role map calls free")
    used_gb: float | None = Field(default=None, ge=0)
    free_gb: float | None = Field(default=None, ge=0)
    cached_gb: float | None = Field(default=None, ge=0)


class DiskSpace(Strict):
    path: str = "/"
    filesystem: str = ""
    total_gb: float | None = Field(default=None, ge=0)
    used_gb: float | None = Field(default=None, ge=0)
    free_gb: float | None = Field(default=None, ge=0)


class DiskSpeed(Strict):
    path: str = ""
    method: Literal["dd", "fio", "hand"] = "dd"
    size_mb: int = Field(default=0, ge=0)
    write_gbps: float | None = Field(default=None, ge=0)
    read_gbps: float | None = Field(default=None, ge=0)


class GPUCard(Strict):
    model: str
    vram_gb: float | None = Field(default=None, ge=0, description="unknown where lspci saw the card without it")
    vram_mib: int | None = Field(default=None, ge=0)
    vram_used_mib: int | None = Field(default=None, ge=0)
    driver: str | None = Field(default=None, description="the NVIDIA driver; null: GPU present, driver missing")
    cuda: str | None = None
    source: Literal["nvidia-smi", "lspci", "hand"] = "nvidia-smi"
    pci_slot: str | None = None
    kernel_driver: str | None = Field(default=None, description="what the kernel binds instead (nouveau, vfio-pci)")


class VMStorageArea(Strict):
    """One place VM disks can go on a Proxmox node (a PVE storage, or an LVM thin pool)."""

    name: str
    type: str = ""
    status: str = "active"
    source: Literal["pvesm", "lvs", "pvesh", "hand"] = "pvesm"
    total_gb: float = Field(ge=0)
    used_gb: float = Field(ge=0)
    free_gb: float = Field(ge=0)


class VMStorage(Strict):
    storages: list[VMStorageArea] = []
    problems: list[str] = Field(default=[], description="what could not be read (pvesm hung, ...)")


class Identity(Strict):
    machine_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    addresses: list[str] = Field(default=[], description="global addresses, container bridges left out")


class GuestVM(Strict):
    vmid: int | None = None
    name: str
    status: str = "running"
    memory_gb: float | None = Field(default=None, ge=0)
    vcpu: int | None = Field(default=None, ge=1)


class ProxmoxStorage(Strict):
    name: str
    type: str = ""
    total_gb: float = Field(ge=0)
    used_gb: float = Field(ge=0)
    free_gb: float = Field(ge=0)


class Proxmox(Strict):
    node: str
    vms: list[GuestVM] = []
    running_vms: int | None = Field(default=None, ge=0, description="when more run than are listed by name")
    storages: list[ProxmoxStorage] = []

    @property
    def running(self) -> list[GuestVM]:
        return [vm for vm in self.vms if vm.status == "running"]

    @property
    def running_count(self) -> int:
        return max(self.running_vms or 0, len(self.running))


class CephCheck(Strict):
    name: str
    severity: str = ""
    message: str = ""


class Ceph(Strict):
    status: str
    checks: list[CephCheck] = []
    osds: int | None = None
    osds_up: int | None = None
    raw_tb: float | None = None
    used_gb: float | None = None
    objects: int | None = None


class Reachability(Strict):
    port: int = Field(ge=1, le=65535)
    reachable: bool
    connect_ms: float | None = Field(default=None, ge=0)
    reason: str = ""


class LatencySample(Strict):
    method: str = "icmp"
    sent: int = Field(default=0, ge=0)
    received: int = Field(default=0, ge=0)
    loss_pct: float = Field(default=0, ge=0, le=100)
    min_ms: float | None = Field(default=None, ge=0)
    avg_ms: float | None = Field(default=None, ge=0)
    max_ms: float | None = Field(default=None, ge=0)
    median_ms: float | None = Field(default=None, ge=0)
    reason: str = ""

    @property
    def typical_ms(self) -> float | None:
        """The figure decisions use: the median where the replies were kept (one slow reply on a
        busy host does not move it), else the mean (what ping -q and the hand benchmark give)."""
        return self.median_ms if self.median_ms is not None else self.avg_ms


class HostMeasurements(Strict):
    address: str = ""
    answered: bool = True
    reason: str = Field(default="", description="why the host did not answer")
    system: System | None = None
    cpu: CPU | None = None
    memory: Memory | None = None
    disk: DiskSpace | None = None
    disk_speed: DiskSpeed | None = None
    identity: Identity | None = None
    gpu: list[GPUCard] | None = None
    proxmox: Proxmox | None = None
    vm_storage: VMStorage | None = None
    ceph: Ceph | None = None
    storagebox: Reachability | None = None
    absent: dict[str, str] = Field(default={}, description="probe -> why it does not apply here")
    errors: dict[str, str] = Field(default={}, description="probe -> what went wrong (cut at its bound, ...)")
    probe_seconds: dict[str, float] = {}

    def vm_disk(self, storage: str | None) -> tuple[VMStorageArea | None, str]:
        """The area the role map's VM disks go to (`proxmox.storage`, e.g. local-lvm), and where the
        figure came from; (None, why) where the survey did not see it. A standard PVE install's
        local-lvm is the thin pool pve/data, so lvs stands in for pvesm where pvesm did not answer."""
        if storage is None:
            return None, "the role map names no VM storage (proxmox.storage)"
        areas = list(self.vm_storage.storages) if self.vm_storage else []
        if self.proxmox is not None:
            areas += [
                VMStorageArea(
                    name=s.name, type=s.type, source="pvesh", total_gb=s.total_gb, used_gb=s.used_gb, free_gb=s.free_gb
                )
                for s in self.proxmox.storages
            ]
        for area in areas:
            if area.name == storage and area.source != "lvs":
                return area, f"{area.name} ({area.type or 'storage'}, {area.source})"
        pools = [a for a in areas if a.source == "lvs"]
        if storage == "local-lvm" and pools:
            pool = next((a for a in pools if a.name == "pve/data"), pools[0] if len(pools) == 1 else None)
            if pool is not None:
                return pool, f"thin pool {pool.name} (lvs; local-lvm on a standard install)"
        if areas:
            seen = ", ".join(sorted({a.name for a in areas}))
            return None, f"no VM storage {storage!r} among {seen}"
        return None, "VM storage not measured"


class Target(Strict):
    name: str = "storagebox"
    address: str
    port: int = Field(ge=1, le=65535)


class Bounds(Strict):
    connect_s: int = Field(default=10, ge=1)
    probe_s: int = Field(default=20, ge=1)
    disk_s: int = Field(default=60, ge=1)
    grace_s: int = Field(default=5, ge=1)
    disk_test_mb: int = Field(default=256, ge=0)
    ping_count: int = Field(default=5, ge=1)


class Survey(Strict):
    version: Literal[1] = 1
    measured_at: str
    source: str = "brainall-ops survey"
    inventory: list[str] = []
    rolemap: str | None = None
    environment: str | None = None
    reference_host: str | None = None
    units: dict[str, str] = UNITS
    bounds: Bounds = Bounds()
    storagebox: Target | None = None
    hosts: dict[str, HostMeasurements]
    latency: dict[str, dict[str, LatencySample]] = Field(default={}, description="source -> target -> sample")
    seconds: float | None = None
    notes: str = ""

    def latency_between(self, source: str, target: str) -> LatencySample | None:
        return self.latency.get(source, {}).get(target)


# --------------------------------------------------------------------------- reading
def _problems(exc: ValidationError, text: str, source: str) -> list[str]:
    from brainall_ops.rolemap.loader import LineIndex, format_path

    loader = yaml.SafeLoader(text)
    try:
        index = LineIndex(loader.get_single_node())
    finally:
        loader.dispose()
    out = []
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if isinstance(part, int) or str(part) in _known_keys(index))
        message = (
            f"unknown key {error['loc'][-1]!r}"
            if error["type"] == "extra_forbidden"
            else "required field is missing"
            if error["type"] == "missing"
            else error["msg"]
        )
        out.append(f"{source}:{index.line_of(loc)}: {format_path(loc)}: {message}")
    return out


def _known_keys(index: Any) -> set[str]:
    return {str(part) for loc in index.lines for part in loc}


def _duplicate_keys(text: str, source: str) -> list[str]:
    """YAML keeps the last of two equal keys without a word: a host measured twice, or one probe's
    section written twice, would silently replace the first. Each one is refused, with its line."""
    from brainall_ops.rolemap.loader import LineIndex, format_path

    loader = yaml.SafeLoader(text)
    try:
        index = LineIndex(loader.get_single_node())
    finally:
        loader.dispose()
    out = []
    for loc, line in index.duplicates:
        what = (
            "the same host twice (YAML would keep only the last): one name per host"
            if len(loc) == 2 and loc[0] == "hosts"
            else "duplicate key (YAML would keep only the last)"
        )
        out.append(f"{source}:{line}: {format_path(loc)}: {what}")
    return out


def parse_survey(text: str, source: str) -> Survey:
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise MeasurementsError(f"{source}:{mark.line + 1 if mark else 1}: (yaml): {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise MeasurementsError(f"{source}:1: (yaml): {exc}") from None
    if not isinstance(data, dict):
        raise MeasurementsError(f"{source}:1: (top level): a measurements file is a mapping")
    duplicates = _duplicate_keys(text, source)
    if duplicates:
        raise MeasurementsError("\n".join(duplicates))
    try:
        return Survey.model_validate(data)
    except ValidationError as exc:
        raise MeasurementsError("\n".join(_problems(exc, text, source))) from None


def load_survey(path: Path | str) -> Survey:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise MeasurementsError(f"{file}: cannot read the measurements: {exc.strerror}") from None
    return parse_survey(text, str(path))


# --------------------------------------------------------------------------- writing
HEADER = (
    "# Fleet measurements by `brainall-ops survey` (read by `brainall-ops roles --measurements`).\n"
    "# Units are in the key names: _gb GiB, _gbps GB/s (decimal), _ms milliseconds, _pct percent.\n"
)


def _without_empty_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_empty_text(v) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [_without_empty_text(v) for v in value]
    return value


def dump_survey(survey: Survey) -> str:
    data = _without_empty_text(survey.model_dump(mode="json", exclude_none=True))
    return HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


def write_survey(survey: Survey, path: Path) -> None:
    """Write atomically (a reader never sees half a file); the caller checked overwriting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dump_survey(survey)
    parse_survey(text, str(path))  # what is written must read back
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
