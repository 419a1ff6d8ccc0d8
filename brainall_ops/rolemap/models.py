"""The role map: every fact the toolkit works from, as strict pydantic models.

Structural checks (types, unknown keys, ranges) live here; checks that need the whole map
(duplicates, references between sections) live in `references.py`, so each problem can be
reported with the exact path of the field at fault.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=63)]
Port = Annotated[int, Field(ge=1, le=65535)]
PositiveGB = Annotated[float, Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    vram_gb: PositiveGB
    cuda: str | None = None
    driver: str | None = None


class Hardware(Strict):
    cpu_model: str
    cores: int = Field(ge=1)
    threads: int = Field(ge=1)
    ram_gb: PositiveGB
    disk_gb: PositiveGB
    gpu: GPU | None = None


class Measured(Strict):
    """What the benchmark measured (15 Nov 2025), refreshed by `brainall-ops survey`."""

    latency_from_gpu_ms: float | None = Field(default=None, ge=0)
    packet_loss_pct: float = Field(default=0, ge=0, le=100)
    disk_write_gbps: float | None = Field(default=None, ge=0)
    disk_read_gbps: float | None = Field(default=None, ge=0)
    ram_used_gb: PositiveGB | None = None
    ram_free_gb: PositiveGB
    disk_used_gb: PositiveGB | None = None
    disk_free_gb: PositiveGB


class ExistingVM(Strict):
    name: str
    vmid: int | None = Field(default=None, ge=100, le=999_999_999)
    vcpu: int | None = Field(default=None, ge=1)
    memory_gb: PositiveGB | None = None
    notes: str = ""


class ProxmoxNode(Strict):
    node: Name
    ceph_osd: bool = False
    ceph_mon: bool = False
    running_vms: int = Field(default=0, ge=0)
    existing_vms: list[ExistingVM] = []


class Host(Strict):
    name: Name
    site: Name
    kind: Literal["bare_metal", "vm"]
    role: str
    groups: list[Name] = []
    serves: list[Name] = Field(default=[], description="service tiers this host may take: app, data, ...")
    address: IPv4Address = Field(description="vSwitch address")
    public_address: IPv4Address | None = None
    nat_address: IPv4Address | None = None
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
    capacity_tb: PositiveGB
    used_gb: PositiveGB = 0
    latency_from_gpu_ms: float = Field(ge=0)
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
    memory_gb: PositiveGB
    disk_gb: PositiveGB
    address: IPv4Address
    groups: list[Name] = []
    services: list[str] = []
    tags: list[Name] = []


class Headroom(Strict):
    ram_pct: float = Field(default=10, ge=0, lt=100)
    disk_pct: float = Field(default=10, ge=0, lt=100)
    vcpu_overcommit: float = Field(default=1.0, gt=0, le=16)


class Placement(Strict):
    reference_host: Name = Field(description="latencies are measured from this host")
    latency_budget_ms: float = Field(default=2.0, gt=0)
    headroom: Headroom = Headroom()


class Proxmox(Strict):
    api_host: Name
    api_port: Port = 8006
    token_id: str = Field(pattern=r"^[^@\s]+@[^!\s]+![A-Za-z0-9_.-]+$")
    verify_ssl: bool = True
    template: Name = Field(description="cloud-init template VM to full-clone")
    storage: Name = "local-lvm"
    bridge: Name = "vmbr1"
    gateway: IPv4Address | None = None
    prefix_length: int = Field(default=24, ge=8, le=32)
    ci_user: str = "brainall"
    task_timeout_s: int = Field(default=600, ge=1)


# --------------------------------------------------------------------------- storage
class SSHFSMount(Strict):
    host: Name
    remote_path: str
    mount_point: str = Field(pattern=r"^/")
    allow_other: bool = False
    purpose: str = ""


class CIFSMount(Strict):
    host: Name
    share: str
    subdir: str = ""
    mount_point: str = Field(pattern=r"^/")
    uid: int = 0
    gid: int = 0
    file_mode: str = Field(default="0640", pattern=r"^0[0-7]{3}$")
    dir_mode: str = Field(default="0750", pattern=r"^0[0-7]{3}$")
    purpose: str = ""


class RsyncBackup(Strict):
    name: Name
    host: Name
    sources: list[str] = Field(min_length=1)
    destination: str
    on_calendar: str = "daily"


class Storage(Strict):
    box: StorageBox
    sshfs: list[SSHFSMount] = []
    cifs: list[CIFSMount] = []
    backups: list[RsyncBackup] = []


# --------------------------------------------------------------------------- ceph
class CephPool(Strict):
    name: Name
    size: int = Field(default=3, ge=1, le=10)
    pg_num: int | None = Field(default=None, ge=1)
    autoscale_mode: Literal["on", "off", "warn"] | None = None


class Ceph(Strict):
    monitor_host: Name
    osd_hosts: list[Name] = Field(min_length=1)
    raw_tb: PositiveGB
    used_gb: PositiveGB
    stored_gb: PositiveGB | None = None
    objects: int = Field(default=0, ge=0)
    health: Literal["HEALTH_OK", "HEALTH_WARN", "HEALTH_ERR"]
    health_checks: list[str] = []
    strategy: Literal["autoscale", "pin"] = "autoscale"
    pin_mode_after: Literal["off", "on"] = "off"
    target_pgs_per_osd: int = Field(default=100, ge=1)
    wait_timeout_s: int = Field(default=900, ge=1)
    pools: list[CephPool] = []


# --------------------------------------------------------------------------- inference
class ServedModel(Strict):
    name: Name
    source: str
    served_name: str
    port: Port
    gpu_memory_gb: PositiveGB
    max_model_len: int = Field(ge=256)
    extra_args: list[str] = []


class AuxService(Strict):
    name: Name
    port: Port
    device: Literal["cuda", "cpu"] = "cuda"
    gpu_memory_gb: PositiveGB = 0
    model: str


class Inference(Strict):
    host: Name
    vllm_version: str
    package_index: str = "https://pypi.org/simple"
    venv: str = "/opt/vllm"
    hf_home: str = "/var/lib/vllm/hf"
    models_dir: str = "/var/lib/vllm/models"
    gpu_memory_utilization_max: float = Field(default=0.95, gt=0, le=1)
    models: list[ServedModel] = Field(min_length=1)
    whisper: AuxService | None = None
    embeddings: AuxService | None = None
    redis_port: Port = 6379
    ollama_service: str = "ollama"
    ollama_models_dir: str = "/usr/share/ollama/.ollama/models"
    ollama_ram_gb: PositiveGB = 0


# --------------------------------------------------------------------------- backends
class BackendInstance(Strict):
    port: Port
    role: Literal["primary", "secondary", "fallback"]


class BackendMode(Strict):
    backends: int = Field(ge=1)
    workers: int = Field(ge=1)


class Backends(Strict):
    host: Name
    proxy_host: Name
    app: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="ASGI import path, module:attr")
    app_dir: str = Field(pattern=r"^/")
    env_file: str = Field(pattern=r"^/")
    instances: list[BackendInstance] = Field(min_length=1)
    production: BackendMode
    validation: BackendMode
    mode: Literal["production", "validation"] = "production"


# --------------------------------------------------------------------------- firewall
class FirewallRule(Strict):
    name: Name
    to: list[str] = Field(min_length=1, description="host names or groups the rule opens on")
    ports: list[Annotated[str, Field(pattern=r"^\d{1,5}(-\d{1,5})?$")]] = Field(min_length=1)
    proto: Literal["tcp", "udp"] = "tcp"
    sources: list[str] = Field(min_length=1, description="'any', 'vswitch', 'admins', a host or a group")


class Firewall(Strict):
    ssh_port: Port = 22
    admin_sources: list[str] = []
    vswitch: IPv4Network
    closed_ports: list[Port] = []
    log_drops_per_minute: int = Field(default=10, ge=0)
    rules: list[FirewallRule] = []


# --------------------------------------------------------------------------- environments
class HostOverride(Strict):
    address: IPv4Address | None = None
    public_address: IPv4Address | None = None
    ssh_port: Port | None = None
    ssh_user: str | None = None


class Environment(Strict):
    description: str = ""
    network: IPv4Network | None = None
    hosts: dict[Name, HostOverride] = {}


# --------------------------------------------------------------------------- the map
class RoleMap(Strict):
    version: Literal[1]
    name: Name
    measured_at: str
    sites: list[Site] = Field(min_length=1)
    hosts: list[Host] = Field(min_length=1)
    storage: Storage | None = None
    placement: Placement
    proxmox: Proxmox | None = None
    vms: list[VM] = []
    ceph: Ceph | None = None
    inference: Inference | None = None
    backends: Backends | None = None
    firewall: Firewall | None = None
    environments: dict[Name, Environment] = {}

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
