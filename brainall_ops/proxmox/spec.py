"""What a VM of the role map should be on Proxmox, and what it takes to get it there. Pure logic.

A `VMSpec` is one VM's desired state in one environment (its node from placement, its address
from the environment layer). Against the cluster it gives a `VMPlan`:

- from `/cluster/resources` alone (one call for the whole fleet) it sees name, node, cores,
  memory, boot-disk size, power state, lock and tags. The settings that call does not show
  (bridge, cloud-init user, SSH keys, ipconfig, onboot) are summed up in a *spec tag*
  (`bo-<digest>`), written with them, so a VM that matches needs no further call;
- when something differs, the VM's config (and pending changes) say exactly what to set:
  `steps_for` returns the config keys, the disk growth, start or reboot.

Changes PVE cannot hot-plug into a running VM (cores, memory, cloud-init) stay pending until it
reboots; the toolkit reboots it only when allowed (`allow_reboot`), and otherwise says so.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, Literal
from urllib.parse import quote, unquote

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.models import RoleMap

MIB = 1024**2
GIB = 1024**3
SPEC_TAG_PREFIX = "bo-"
# Config keys this toolkit manages; other keys (and their pending changes) are left alone.
MANAGED_KEYS = (
    "name",
    "cores",
    "sockets",
    "vcpus",
    "memory",
    "net0",
    "ipconfig0",
    "ciuser",
    "sshkeys",
    "tags",
    "onboot",
)
# What PVE applies to a running VM at once; the rest of MANAGED_KEYS goes pending.
HOT_KEYS = frozenset({"name", "tags", "onboot", "net0"})
DISK_KEY = re.compile(r"^(ide|sata|scsi|virtio)\d+$")
ALLOW_REBOOT_HINT = "rerun with --data brainall_proxmox_allow_reboot=true to reboot it"


class ProxmoxRefusal(BrainallError):
    """The cluster holds something the role map cannot be reconciled with safely."""


# --------------------------------------------------------------------------- desired state
@dataclass(frozen=True)
class VMSpec:
    name: str
    host: str  # the role map's Proxmox host (the pyinfra target)
    node: str  # its Proxmox node name
    vmid: int | None
    template: str
    storage: str
    cores: int
    memory_mib: int
    disk_gib: int
    bridge: str
    address: IPv4Address
    prefix_length: int
    gateway: IPv4Address | None
    ci_user: str
    ssh_keys: tuple[str, ...]
    tags: tuple[str, ...]
    onboot: bool = True

    def __repr__(self) -> str:  # shown by pyinfra's --debug-operations; keep it short
        return f"VMSpec({self.name} on {self.node})"

    @property
    def disk_bytes(self) -> int:
        return self.disk_gib * GIB

    @property
    def ipconfig0(self) -> str:
        value = f"ip={self.address}/{self.prefix_length}"
        return value + (f",gw={self.gateway}" if self.gateway else "")

    @property
    def sshkeys(self) -> str:
        # PVE wants the keys URL-encoded inside the (form-encoded) request: encoded twice on the wire.
        return quote("\n".join(self.ssh_keys), safe="")

    @property
    def spec_tag(self) -> str:
        hidden = "\n".join(
            ["virtio", self.bridge, self.ipconfig0, self.ci_user, *self.ssh_keys, "onboot" if self.onboot else "-"]
        )
        return SPEC_TAG_PREFIX + hashlib.sha256(hidden.encode()).hexdigest()[:10]

    @property
    def all_tags(self) -> tuple[str, ...]:
        return tuple(sorted({t.lower() for t in self.tags} | {self.spec_tag}))

    def desired_config(self, net0_now: str | None = None) -> dict[str, str]:
        """Every managed key as the API takes it. `net0_now` keeps the MAC address and other options."""
        return {
            "name": self.name,
            "cores": str(self.cores),
            "sockets": "1",
            "memory": str(self.memory_mib),
            "net0": desired_net0(self.bridge, net0_now),
            "ipconfig0": self.ipconfig0,
            "ciuser": self.ci_user,
            "sshkeys": self.sshkeys,
            "tags": ";".join(self.all_tags),
            "onboot": "1" if self.onboot else "0",
        }

    def describe(self) -> str:
        return (
            f"{self.cores} vCPU, {fmt_gib(self.memory_mib * MIB)} GiB RAM, {self.disk_gib} GiB disk, "
            f"{self.address}/{self.prefix_length} on {self.bridge}"
        )


def fmt_gib(size: int | float) -> str:
    return f"{size / GIB:.1f}".rstrip("0").rstrip(".")


def memory_mib_of(gigabytes: float) -> int:
    return round(gigabytes * 1024)


def disk_gib_of(gigabytes: float) -> int:
    return max(math.ceil(gigabytes), 1)


# --------------------------------------------------------------------------- property strings
def split_property_string(value: str, default_key: str) -> dict[str, str]:
    """PVE property strings: `virtio=MAC,bridge=vmbr1` (net: the model key carries the MAC),
    `local-lvm:vm-1-disk-0,size=3G` (disk: the bare value is the volume)."""
    out: dict[str, str] = {}
    for part in str(value).split(","):
        if not part:
            continue
        key, eq, raw = part.partition("=")
        if not eq:
            out[default_key] = part
        elif default_key == "model" and "model" not in out and re.fullmatch(r"[a-z0-9_-]+", key) and ":" in raw:
            out["model"], out["macaddr"] = key, raw
        else:
            out[key] = raw
    return out


def desired_net0(bridge: str, now: str | None) -> str:
    parts = split_property_string(now or "", "model")
    mac = parts.pop("macaddr", None)
    parts.pop("model", None)
    parts["bridge"] = bridge
    head = f"virtio={mac}" if mac else "virtio"
    return ",".join([head, *(f"{k}={v}" for k, v in parts.items())])


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", text)
    if not match:
        return 0
    unit = {"": 1, "K": 1024, "M": MIB, "G": GIB, "T": 1024 * GIB}[match.group(2)]
    return int(float(match.group(1)) * unit)


def boot_disk(config: Mapping[str, Any]) -> tuple[str, int] | None:
    """The boot disk's config key and size: first disk of `boot: order=...`, else the first disk."""
    disks = {}
    for key, value in config.items():
        if DISK_KEY.match(key):
            parts = split_property_string(str(value), "file")
            if parts.get("media") != "cdrom" and "cloudinit" not in parts.get("file", ""):
                disks[key] = parse_size(parts.get("size", "0"))
    order = re.search(r"order=([^,]+)", str(config.get("boot", "")))
    for key in order.group(1).split(";") if order else []:
        if key in disks:
            return key, disks[key]
    buses = ("scsi", "virtio", "sata", "ide")
    for key in sorted(disks, key=lambda k: (buses.index(re.sub(r"\d+", "", k)), int(re.sub(r"\D", "", k)))):
        return key, disks[key]
    return None


def memory_of(config: Mapping[str, Any]) -> int:
    current = split_property_string(str(config.get("memory", "512")), "current").get("current", "512")
    return int(current)


def tags_of(value: str | None) -> frozenset[str]:
    return frozenset(t.lower() for t in re.split(r"[;,\s]+", value or "") if t)


def sshkeys_of(value: str | None) -> tuple[str, ...]:
    return tuple(line.strip() for line in unquote(value or "").splitlines() if line.strip())


# --------------------------------------------------------------------------- observed state
@dataclass(frozen=True)
class ObservedVM:
    """A qemu VM as `/cluster/resources` shows it."""

    vmid: int
    name: str
    node: str
    status: str
    maxcpu: int
    maxmem: int
    maxdisk: int
    tags: frozenset[str]
    template: bool
    lock: str | None


@dataclass(frozen=True)
class VMDetail:
    """A VM's config (pending values applied, as PVE's GET config gives it) and what is pending."""

    config: Mapping[str, Any]
    pending_keys: frozenset[str]


def locate(spec: VMSpec, vms: Sequence[ObservedVM]) -> ObservedVM | None:
    """The VM that is `spec` on the cluster, None if there is none; refuse what is ambiguous."""
    named = sorted((v for v in vms if v.name == spec.name and not v.template), key=lambda v: v.vmid)
    if len(named) > 1:
        ids = ", ".join(f"{v.vmid} on {v.node}" for v in named)
        raise ProxmoxRefusal(
            f"{spec.name}: {len(named)} VMs have this name (VMIDs {ids}); delete the extra one explicitly"
        )
    if spec.vmid is not None:
        holder = next((v for v in vms if v.vmid == spec.vmid), None)
        if holder is not None and holder.name != spec.name:
            raise ProxmoxRefusal(
                f"{spec.name}: the role map pins VMID {spec.vmid}, which is {holder.name!r} on {holder.node}"
            )
    if not named:
        return None
    vm = named[0]
    if spec.vmid is not None and vm.vmid != spec.vmid:
        raise ProxmoxRefusal(f"{spec.name}: it exists as VMID {vm.vmid}, but the role map pins VMID {spec.vmid}")
    if vm.node != spec.node:
        raise ProxmoxRefusal(
            f"{spec.name}: it exists on {vm.node} (VMID {vm.vmid}) but placement puts it on {spec.node}; "
            f"migrate it, or pin it with `host:` in the role map"
        )
    return vm


def quick_drift(spec: VMSpec, vm: ObservedVM) -> list[str]:
    """What `/cluster/resources` shows to differ from the spec (empty: nothing to do)."""
    reasons = []
    if vm.maxcpu != spec.cores:
        reasons.append(f"cores {vm.maxcpu} → {spec.cores}")
    if vm.maxmem != spec.memory_mib * MIB:
        reasons.append(f"memory {fmt_gib(vm.maxmem)} → {fmt_gib(spec.memory_mib * MIB)} GiB")
    if vm.maxdisk < spec.disk_bytes:
        reasons.append(f"disk {fmt_gib(vm.maxdisk)} → {spec.disk_gib} GiB")
    wanted = frozenset(spec.all_tags)
    if vm.tags != wanted:
        if spec.spec_tag not in vm.tags:
            reasons.append("network/cloud-init settings")
        if {t for t in vm.tags if not t.startswith(SPEC_TAG_PREFIX)} != {t for t in wanted if t != spec.spec_tag}:
            reasons.append("tags")
    if vm.status != "running":
        reasons.append(f"start (it is {vm.status})")
    if vm.lock:
        reasons.append(f"wait for its '{vm.lock}' lock")
    return reasons


# --------------------------------------------------------------------------- what to do
@dataclass(frozen=True)
class Steps:
    config: dict[str, str]
    delete: tuple[str, ...]
    disk_key: str | None
    grow_to_gib: int | None
    start: bool
    reboot: bool
    pending_left: tuple[str, ...]
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.config or self.delete or self.grow_to_gib or self.start or self.reboot)


def config_changes(spec: VMSpec, config: Mapping[str, Any]) -> tuple[dict[str, str], list[str], list[str]]:
    """Managed keys to set, keys to delete, and why, from the VM's (pending-applied) config."""
    desired = spec.desired_config(net0_now=str(config.get("net0", "")) or None)
    changes: dict[str, str] = {}
    reasons: list[str] = []
    if config.get("name") != spec.name:
        changes["name"] = desired["name"]
        reasons.append(f"name → {spec.name}")
    if int(config.get("cores", 1)) != spec.cores:
        changes["cores"] = desired["cores"]
        reasons.append(f"cores {config.get('cores', 1)} → {spec.cores}")
    if int(config.get("sockets", 1)) != 1:
        changes["sockets"] = "1"
        reasons.append(f"sockets {config.get('sockets')} → 1")
    if memory_of(config) != spec.memory_mib:
        changes["memory"] = desired["memory"]
        reasons.append(f"memory {fmt_gib(memory_of(config) * MIB)} → {fmt_gib(spec.memory_mib * MIB)} GiB")
    net = split_property_string(str(config.get("net0", "")), "model")
    if net.get("model") != "virtio" or net.get("bridge") != spec.bridge:
        changes["net0"] = desired["net0"]
        reasons.append(f"net0 {net.get('model', 'none')} on {net.get('bridge', 'no bridge')} → virtio on {spec.bridge}")
    if split_property_string(str(config.get("ipconfig0", "")), "ip") != split_property_string(spec.ipconfig0, "ip"):
        changes["ipconfig0"] = desired["ipconfig0"]
        reasons.append(f"ipconfig0 {config.get('ipconfig0', 'none')} → {spec.ipconfig0}")
    if config.get("ciuser") != spec.ci_user:
        changes["ciuser"] = desired["ciuser"]
        reasons.append(f"cloud-init user → {spec.ci_user}")
    if sshkeys_of(config.get("sshkeys")) != spec.ssh_keys:
        changes["sshkeys"] = desired["sshkeys"]
        reasons.append(f"SSH keys ({len(spec.ssh_keys)})")
    if tags_of(config.get("tags")) != frozenset(spec.all_tags):
        changes["tags"] = desired["tags"]
        reasons.append(f"tags → {desired['tags']}")
    if bool(int(config.get("onboot", 0))) != spec.onboot:
        changes["onboot"] = desired["onboot"]
        reasons.append(f"onboot → {desired['onboot']}")
    deletes = []
    if "vcpus" in config and int(config["vcpus"]) != spec.cores:
        deletes.append("vcpus")
        reasons.append("vcpus limit removed")
    return changes, deletes, reasons


def steps_for(spec: VMSpec, vm: ObservedVM, detail: VMDetail, allow_reboot: bool) -> Steps:
    changes, deletes, reasons = config_changes(spec, detail.config)
    warnings: list[str] = []
    disk = boot_disk(detail.config)
    grow_to = None
    if disk is None:
        warnings.append(f"{spec.name}: no boot disk found in its config; disk size not managed")
    elif disk[1] < spec.disk_bytes:
        grow_to = spec.disk_gib
        reasons.append(f"grow {disk[0]} {fmt_gib(disk[1])} → {spec.disk_gib} GiB")
    elif disk[1] > spec.disk_bytes:
        warnings.append(
            f"{spec.name}: {disk[0]} is {fmt_gib(disk[1])} GiB, more than the role map's {spec.disk_gib} GiB; "
            "disks are never shrunk"
        )
    running = vm.status == "running"
    pending = set(detail.pending_keys) & set(MANAGED_KEYS)
    if running:
        pending |= {key for key in [*changes, *deletes] if key not in HOT_KEYS}
    reboot = running and bool(pending) and allow_reboot
    pending_left = tuple(sorted(pending)) if running and not allow_reboot else ()
    if pending_left and "tags" in changes:
        # Keep the old spec tag while changes wait for a reboot: the fast path (which trusts the
        # tag) then keeps reading this VM's config and reminding the operator.
        held = {t for t in tags_of(detail.config.get("tags")) if t.startswith(SPEC_TAG_PREFIX)}
        tags = sorted({t.lower() for t in spec.tags} | held)
        reasons = [r for r in reasons if not r.startswith("tags →")]
        if frozenset(tags) == tags_of(detail.config.get("tags")):
            del changes["tags"]
        else:
            changes["tags"] = ";".join(tags)
            reasons.append(f"tags → {changes['tags']}")
    if reboot:
        reasons.append(f"reboot to apply {', '.join(sorted(pending))}")
    if pending_left:
        warnings.append(f"{spec.name}: {', '.join(pending_left)} pending until it reboots; {ALLOW_REBOOT_HINT}")
    if not running:
        reasons.append(f"start (it is {vm.status})")
    return Steps(
        config=changes,
        delete=tuple(deletes),
        disk_key=disk[0] if disk else None,
        grow_to_gib=grow_to,
        start=not running,
        reboot=reboot,
        pending_left=pending_left,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
    )


Action = Literal["create", "update", "unchanged"]


@dataclass(frozen=True)
class VMPlan:
    spec: VMSpec
    action: Action
    vm: ObservedVM | None
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def symbol(self) -> str:
        return {"create": "+", "update": "~", "unchanged": "="}[self.action]

    def line(self) -> str:
        spec = self.spec
        if self.action == "create":
            vmid = f"VMID {spec.vmid}" if spec.vmid else "VMID from /cluster/nextid"
            return f"+ create {spec.name} on {spec.node} ({vmid}): {spec.describe()}"
        where = f"{spec.name} (VMID {self.vm.vmid if self.vm else '?'}) on {spec.node}"
        if self.action == "update":
            return f"~ update {where}: {'; '.join(self.reasons)}"
        return f"= {where}: {spec.describe()}"


def plan_vm(
    spec: VMSpec, vms: Sequence[ObservedVM], detail: VMDetail | None = None, allow_reboot: bool = False
) -> VMPlan:
    """The plan for one VM. Without `detail` it decides from `/cluster/resources`; `needs_detail`
    tells when the config must be read to say exactly what changes."""
    vm = locate(spec, vms)
    if vm is None:
        return VMPlan(spec, "create", None)
    drift = quick_drift(spec, vm)
    if detail is None:
        warnings = ()
        if vm.maxdisk > spec.disk_bytes:
            warnings = (
                f"{spec.name}: its disk is {fmt_gib(vm.maxdisk)} GiB, more than the role map's "
                f"{spec.disk_gib} GiB; disks are never shrunk",
            )
        return VMPlan(spec, "update" if drift else "unchanged", vm, tuple(drift), warnings)
    steps = steps_for(spec, vm, detail, allow_reboot)
    reasons = list(steps.reasons)
    if vm.lock:
        reasons.append(f"wait for its '{vm.lock}' lock")
    return VMPlan(spec, "update" if not steps.empty else "unchanged", vm, tuple(reasons), steps.warnings)


def needs_detail(spec: VMSpec, vms: Sequence[ObservedVM]) -> ObservedVM | None:
    """The VM whose config must be read to plan it exactly (it exists and differs), else None."""
    vm = locate(spec, vms)
    if vm is None or not quick_drift(spec, vm):
        return None
    return vm


# --------------------------------------------------------------------------- from the role map
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


def expand_path(text: str, env: Mapping[str, str]) -> str:
    """`~`, `$VAR`, `${VAR}` and `${VAR:-default}`; an unset variable without default is an error."""

    def variable(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name in env and env[name] != "":
            return env[name]
        if match.group(2) is not None:
            return match.group(2)
        raise BrainallError(f"proxmox: {text!r} uses ${name}, which is not set")

    expanded = _VAR.sub(variable, text)
    if expanded.startswith("~"):
        home = env.get("HOME") or "~"
        expanded = home + expanded[1:] if expanded == "~" or expanded.startswith("~/") else expanded
    return expanded


def read_ssh_keys(rm: RoleMap, environment: str, env: Mapping[str, str]) -> tuple[str, ...]:
    """The public keys cloud-init installs: `ssh_keys`, then every line of `ssh_key_files`."""
    proxmox = rm.proxmox
    if proxmox is None:
        return ()
    override = proxmox.environments.get(environment)
    files = override.ssh_key_files if override and override.ssh_key_files is not None else proxmox.ssh_key_files
    keys = list(proxmox.ssh_keys)
    for name in files:
        path = expand_path(name, env)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise BrainallError(f"proxmox.ssh_key_files: {path}: {exc.strerror}") from None
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not lines or any("PRIVATE KEY" in line for line in lines):
            raise BrainallError(f"proxmox.ssh_key_files: {path}: not a public key file")
        keys.extend(lines)
    return tuple(dict.fromkeys(keys))


def vm_specs(rm: RoleMap, environment: str, vm_hosts: Mapping[str, str], ssh_keys: Sequence[str]) -> list[VMSpec]:
    """Every VM of the role map as it should be in `environment`, on the host placement chose."""
    from brainall_ops.rolemap.environment import endpoints

    proxmox = rm.proxmox
    if proxmox is None:
        return []
    override = proxmox.environments.get(environment)
    prefix = override.prefix_length if override and override.prefix_length is not None else proxmox.prefix_length
    gateway = override.gateway if override and override.gateway is not None else proxmox.gateway
    addresses = endpoints(rm, environment, vm_hosts)
    specs = []
    for vm in rm.vms:
        host = rm.host(vm_hosts[vm.name])
        assert host.proxmox is not None
        specs.append(
            VMSpec(
                name=vm.name,
                host=host.name,
                node=host.proxmox.node,
                vmid=vm.vmid,
                template=proxmox.template,
                storage=proxmox.storage,
                cores=vm.vcpu,
                memory_mib=memory_mib_of(vm.memory_gb),
                disk_gib=disk_gib_of(vm.disk_gb),
                bridge=proxmox.bridge,
                address=addresses[vm.name].address,
                prefix_length=prefix,
                gateway=gateway,
                ci_user=proxmox.ci_user,
                ssh_keys=tuple(ssh_keys),
                tags=tuple(vm.tags),
                onboot=proxmox.onboot,
            )
        )
    return specs


# --------------------------------------------------------------------------- the template
TEMPLATE_CORES = 2
TEMPLATE_MEMORY_MIB = 2048


@dataclass(frozen=True)
class TemplateSpec:
    """`proxmox.template` on one node, and how to build it there (`proxmox.template_image`)."""

    name: str
    node: str
    storage: str  # where the imported disk and the cloud-init drive go
    bridge: str
    url: str | None = None
    checksum: str | None = None
    checksum_algorithm: str = "sha512"
    download_storage: str = "local"
    vmid: int | None = None

    @property
    def filename(self) -> str:
        """The image's file name in the storage's import/ directory (PVE allows .qcow2/.raw there)."""
        assert self.url is not None
        name = self.url.rsplit("/", 1)[-1]
        return name[: -len(".img")] + ".qcow2" if name.endswith(".img") else name

    @property
    def import_volume(self) -> str:
        return f"{self.download_storage}:import/{self.filename}"

    def create_params(self, vmid: int) -> dict[str, str | int]:
        """POST /nodes/{node}/qemu: the image imported as scsi0, a cloud-init drive, a serial console."""
        return {
            "vmid": vmid,
            "name": self.name,
            "ostype": "l26",
            "cores": TEMPLATE_CORES,
            "memory": TEMPLATE_MEMORY_MIB,
            "cpu": "x86-64-v2-AES",
            "scsihw": "virtio-scsi-pci",
            "scsi0": f"{self.storage}:0,import-from={self.import_volume}",
            "ide2": f"{self.storage}:cloudinit",
            "boot": "order=scsi0",
            "serial0": "socket",
            "vga": "serial0",
            "agent": "1",
            "net0": f"virtio,bridge={self.bridge}",
        }


@dataclass(frozen=True)
class TemplatePlan:
    spec: TemplateSpec
    action: Literal["unchanged", "create", "convert", "refuse"]
    reason: str

    def line(self) -> str:
        symbol = {"unchanged": "=", "create": "+", "convert": "~", "refuse": "!"}[self.action]
        return f"{symbol} {self.action} template {self.spec.name} on {self.spec.node}: {self.reason}"


def template_specs(rm: RoleMap, nodes: Sequence[str]) -> list[TemplateSpec]:
    """The template on each of `nodes` (those phase 2 places VMs on)."""
    proxmox = rm.proxmox
    if proxmox is None:
        return []
    image = proxmox.template_image
    out = []
    for node in dict.fromkeys(nodes):
        extra: dict[str, Any] = {}
        if image is not None:
            extra = {
                "url": image.url,
                "checksum": image.checksum.lower(),
                "checksum_algorithm": image.checksum_algorithm,
                "download_storage": image.download_storage,
                "vmid": image.vmid if image.vmid is not None and len(set(nodes)) == 1 else None,
            }
        out.append(TemplateSpec(proxmox.template, node, proxmox.storage, proxmox.bridge, **extra))
    return out


def plan_template(spec: TemplateSpec, vms: Sequence[ObservedVM]) -> TemplatePlan:
    """Unchanged when the node has a template of that name (a clone to this node may also use one on
    shared storage elsewhere, but a local one is what phase 2 keeps); convert a VM of that name
    that a failed run left before it became a template; else create it, if the role map says from
    what."""
    named = [v for v in vms if v.name == spec.name and v.node == spec.node]
    if any(v.template for v in named):
        template = next(v for v in named if v.template)
        return TemplatePlan(spec, "unchanged", f"VMID {template.vmid}")
    if named:
        vm = named[0]
        if vm.lock:
            return TemplatePlan(spec, "refuse", f"VMID {vm.vmid} of that name is locked ({vm.lock}); rerun later")
        if vm.status == "running":
            return TemplatePlan(spec, "refuse", f"VMID {vm.vmid} of that name is running; it is not a template")
        return TemplatePlan(spec, "convert", f"VMID {vm.vmid} (created by an earlier run) becomes the template")
    if spec.url is None:
        return TemplatePlan(
            spec, "refuse", "none on this node; set proxmox.template_image (url, checksum) to have phase 2 build it"
        )
    return TemplatePlan(
        spec,
        "create",
        f"download {spec.filename} ({spec.checksum_algorithm} checked) to {spec.download_storage}, "
        f"import it to {spec.storage}, cloud-init drive, serial console, convert",
    )
