"""The PVE API endpoints the simulator implements, behind PVE's own request pipeline:

authentication (API token) → the method from the official schema (501 when PVE has none) →
parameter verification (400) → the schema's permission check (403) → the handler → the answer
checked against the declared return shape. Endpoints that exist in PVE but are not simulated
answer 501 "... not implemented by the simulator", so a client using one is noticed at once.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from brainall_ops.lab.pve_simulator.cluster import (
    DISK_KEY,
    FAST_PLUG,
    GIB,
    KEY_PRIVILEGE,
    MIB,
    NET_KEY,
    TIB,
    VM,
    ApiError,
    Cluster,
    Storage,
    Task,
    TaskError,
    format_size,
    join_disk,
    join_net,
    parse_size,
    split_property_string,
)
from brainall_ops.lab.pve_simulator.schema import (
    PRUNE_BACKUPS_FORMAT,
    ApiSchema,
    Method,
    NoSuchMethod,
    ParameterError,
    parse_property_string,
    property_schema,
)

PVE_VERSION = "9.1.3"
# Parameters of a config update that are not config keys.
CONFIG_CONTROL = {
    "node", "vmid", "digest", "delete", "skiplock", "background_delay", "revert", "force", "skip_cloud_init",
    "import-working-storage",
}  # fmt: skip
# What vm_config and vm_pending show for a cipassword (the config holds only its crypt() hash).
MASKED = "**********"
# PVE::UPID::decode's pattern: node, pid, pstart, starttime, type, id, user.
UPID_RE = re.compile(
    r"^UPID:(?P<node>[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):(?P<pid>[0-9A-Fa-f]{8}):(?P<pstart>[0-9A-Fa-f]{8,9}):"
    r"(?P<starttime>[0-9A-Fa-f]{8}):(?P<type>[^:\s]+):(?P<id>[^:\s]*):(?P<user>[^:\s]+):$"
)
# PVE's CIFSPlugin options: what a `cifs` section of storage.cfg may hold. `fixed` ones are set
# at creation and never changed; server and share are required.
CIFS_OPTIONS = {
    "path", "content-dirs", "server", "share", "subdir", "nodes", "disable", "prune-backups",
    "max-protected-backups", "content", "format", "username", "password", "domain", "smbversion",
    "mkdir", "create-base-path", "create-subdirs", "bwlimit", "preallocation", "options",
}  # fmt: skip
CIFS_FIXED = {"path", "server", "share"}
CIFS_SIZE = 1 * TIB  # a BX11 Storage Box
# What PVE sends that its return schema does not declare (the schema is not the whole wire format):
# vmstatus()'s `disk` in the VM list, Tasks.pm's `tokenid` ($convert_token_task) in a task's status.
WIRE_ONLY: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/nodes/{node}/qemu"): frozenset({"disk"}),
    ("GET", "/nodes/{node}/qemu/{vmid}/status/current"): frozenset({"disk"}),
    ("GET", "/nodes/{node}/tasks/{upid}/status"): frozenset({"tokenid"}),
    # Config.pm index declares `storage` only and sends each whole section ($api_storage_config)
    ("GET", "/storage"): frozenset({"*"}),
}
# Storage types whose plugin has a `path` (download-url needs one).
FILE_STORAGES = {"dir", "nfs", "cifs", "cephfs", "glusterfs", "btrfs"}
# Storage options PVE types as booleans.
STORAGE_FLAGS = {"disable", "mkdir", "create-base-path", "create-subdirs", "shared", "sparse", "krbd", "saferemove"}
# Job options the simulator keeps as given but does not model (objects PVE parses further).
UNMODELLED_JOB_OPTIONS = {"fleecing", "performance", "exclude-path"}


def _without(data: Any, keys: frozenset[str]) -> Any:
    """The answer less the keys PVE sends beyond its declared return schema (checked against it)."""
    if not keys:
        return data
    if isinstance(data, list):
        return [_without(item, keys) for item in data]
    if isinstance(data, dict):
        if "*" in keys:
            return {k: v for k, v in data.items() if k == "storage"}
        return {k: v for k, v in data.items() if k not in keys}
    return data


def image_virtual_size(data: bytes, fmt: str) -> int | None:
    """What `qemu-img info` would call the image's virtual size (None: not an image of that format).
    qcow2: the big-endian size at offset 24 after the 'QFI\\xfb' magic; raw: its length."""
    if fmt == "qcow2":
        if len(data) < 32 or data[:4] != b"QFI\xfb":
            return None
        return int.from_bytes(data[24:32], "big")
    if fmt == "raw":
        return len(data)
    return None


def content_string(content: str) -> str:
    """PVE::Storage::Plugin::content_hash_to_string: the content types, sorted."""
    return ",".join(sorted(set(split_list(content))))


def split_list(text: str) -> list[str]:
    """PVE::Tools::split_list: items separated by commas, semicolons or white space."""
    return [item for item in re.split(r"[,;\s\0]+", text) if item]


@dataclass(frozen=True)
class ConfigUpdate:
    """A config change that passed update_vm_api's early checks."""

    changes: dict[str, str]
    deletes: list[str]
    revert: list[str]
    digest: str | None
    skiplock: bool


@dataclass(frozen=True)
class CloneCheck:
    newid: int
    full: bool
    storage: str | None
    disks: dict[str, dict[str, str]]


@dataclass(frozen=True)
class Request:
    http_method: str
    path: str
    method: Method
    params: dict[str, Any]
    user: str

    @property
    def vmid(self) -> int:
        return int(self.params["vmid"])

    @property
    def node(self) -> str:
        return str(self.params["node"])


Handler = Callable[[Request], Any]


class Api:
    def __init__(self, cluster: Cluster, schema: ApiSchema) -> None:
        self.cluster = cluster
        self.schema = schema
        self.config_props: dict[str, Any] = schema.method("GET", "/nodes/{node}/qemu/{vmid}/config").returns[
            "properties"
        ]
        q = "/nodes/{node}/qemu/{vmid}"
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/version"): self.version,
            ("GET", "/nodes"): self.nodes,
            ("GET", "/nodes/{node}/status"): self.node_status,
            ("GET", "/cluster/resources"): self.cluster_resources,
            ("GET", "/cluster/nextid"): self.nextid,
            ("GET", "/nodes/{node}/qemu"): self.qemu_list,
            ("GET", f"{q}/config"): self.config_get,
            ("POST", f"{q}/config"): self.config_post,
            ("PUT", f"{q}/config"): self.config_put,
            ("GET", f"{q}/pending"): self.pending,
            ("POST", f"{q}/clone"): self.clone,
            ("PUT", f"{q}/resize"): self.resize,
            ("POST", f"{q}/status/start"): self.start,
            ("POST", f"{q}/status/stop"): self.stop,
            ("POST", f"{q}/status/shutdown"): self.shutdown,
            ("POST", f"{q}/status/reboot"): self.reboot,
            ("GET", f"{q}/status/current"): self.status_current,
            ("DELETE", q): self.destroy,
            ("GET", "/nodes/{node}/tasks"): self.task_list,
            ("GET", "/nodes/{node}/tasks/{upid}/status"): self.task_status,
            ("GET", "/nodes/{node}/tasks/{upid}/log"): self.task_log,
            ("GET", "/nodes/{node}/storage"): self.node_storage,
            ("GET", "/nodes/{node}/storage/{storage}/status"): self.storage_status,
            ("POST", "/nodes/{node}/storage/{storage}/download-url"): self.download_url,
            ("POST", "/nodes/{node}/qemu"): self.create_vm,
            ("POST", f"{q}/template"): self.template,
            ("GET", "/storage"): self.storage_index,
            ("POST", "/storage"): self.storage_create,
            ("GET", "/storage/{storage}"): self.storage_get,
            ("PUT", "/storage/{storage}"): self.storage_update,
            ("DELETE", "/storage/{storage}"): self.storage_delete,
            ("GET", "/cluster/backup"): self.backup_index,
            ("POST", "/cluster/backup"): self.backup_create,
            ("GET", "/cluster/backup/{id}"): self.backup_get,
            ("PUT", "/cluster/backup/{id}"): self.backup_update,
            ("DELETE", "/cluster/backup/{id}"): self.backup_delete,
        }
        self.job_props: dict[str, Any] = schema.method("GET", "/cluster/backup/{id}").returns["properties"]

    # ----------------------------------------------------------------------- pipeline
    def authenticate(self, authorization: str | None) -> str:
        if not authorization:
            raise ApiError(401, "No ticket")
        kind, _, credentials = authorization.partition("=")
        if kind != "PVEAPIToken":
            raise ApiError(401, "No ticket")
        token_id, _, secret = credentials.partition("=")
        token = self.cluster.tokens.get(token_id)
        if token is None or not secret or token.secret != secret:
            raise ApiError(401, "authentication failure")
        return token_id

    def resolve(self, http_method: str, path: str, raw: dict[str, str], user: str) -> Request:
        try:
            method, path_params = self.schema.match(http_method, path)
        except NoSuchMethod as exc:
            raise ApiError(501, str(exc)) from None
        try:
            params = self.schema.check_parameters(method, {**raw, **path_params})
        except ParameterError as exc:
            raise ApiError(400, "Parameter verification failed.", exc.errors) from None
        request = Request(http_method, path, method, params, user)
        self.check_permissions(request)
        return request

    def call(self, request: Request) -> Any:
        key = (request.http_method, request.method.path)
        handler = self.routes.get(key)
        if handler is None:
            raise ApiError(
                501, f"Method '{request.http_method} {request.method.path}' not implemented by the simulator"
            )
        with self.cluster.lock:
            data = handler(request)
        problems = self.schema.check_return(request.method, _without(data, WIRE_ONLY.get(key, frozenset())))
        if problems:
            raise ApiError(500, f"simulator bug: answer does not match the schema: {'; '.join(problems[:3])}")
        return data

    # ----------------------------------------------------------------------- permissions
    def check_permissions(self, request: Request) -> None:
        permissions = request.method.permissions
        if permissions.get("user") in ("all", "world"):
            return
        check = permissions.get("check")
        if check is None:
            return
        missing: list[tuple[str, str]] = []
        if not self._evaluate(check, request, missing):
            path, privilege = missing[0] if missing else ("/", "?")
            raise ApiError(403, f"Permission check failed ({path}, {privilege})")

    def _evaluate(self, expr: list[Any], request: Request, missing: list[tuple[str, str]]) -> bool:
        op = expr[0]
        if op == "and":
            return all(self._evaluate(sub, request, missing) for sub in expr[1:])
        if op == "or":
            return any(self._evaluate(sub, request, missing) for sub in expr[1:])
        if op == "perm":
            options = expr[3:]
            if "require_param" in options:
                wanted = options[options.index("require_param") + 1]
                if wanted not in request.params:
                    return False
            path = re.sub(r"\{(\w+)\}", lambda m: str(request.params.get(m.group(1), m.group(0))), expr[1])
            privileges = expr[2]
            token = self.cluster.tokens[request.user]
            if "any" in options:
                if any(token.allows(path, p) for p in privileges):
                    return True
                missing.append((path, privileges[0]))
                return False
            for privilege in privileges:
                if not token.allows(path, privilege):
                    missing.append((path, privilege))
                    return False
            return True
        return True  # userid-param / userid-group checks: tokens here act for themselves

    def require(self, request: Request, path: str, privilege: str) -> None:
        if not self.cluster.tokens[request.user].allows(path, privilege):
            raise ApiError(403, f"Permission check failed ({path}, {privilege})")

    # ----------------------------------------------------------------------- cluster & nodes
    def version(self, request: Request) -> dict[str, Any]:
        # pve-manager PVE/API2.pm version: `console` only where datacenter.cfg sets one
        return {"version": PVE_VERSION, "release": "9.1", "repoid": "5b0b6a4d2c1e9f37"}

    def nodes(self, request: Request) -> list[dict[str, Any]]:
        return [self._node_entry(name) for name in sorted(self.cluster.nodes)]

    def _node_entry(self, name: str) -> dict[str, Any]:
        node = self.cluster.nodes[name]
        return {
            "node": name,
            "status": "online" if node.online else "offline",
            "maxcpu": node.cpus,
            "maxmem": node.memory_total,
            "mem": self.cluster.node_memory_used(name),
            "cpu": 0.04,
            "uptime": 86400,
            "level": "",
        }

    def node_status(self, request: Request) -> dict[str, Any]:
        node = self.cluster.node(request.node)
        used = self.cluster.node_memory_used(node.name)
        free = max(node.memory_total - used, 0)
        return {
            "boot-info": {"mode": "efi", "secureboot": 0},
            "cpu": 0.04,
            "cpuinfo": {"cores": node.cores, "cpus": node.cpus, "model": node.cpu_model, "sockets": 1},
            "current-kernel": {
                "machine": "x86_64",
                "release": "6.17.2-1-pve",
                "sysname": "Linux",
                "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.17.2-1",
            },
            "loadavg": ["0.12", "0.18", "0.21"],
            "memory": {"total": node.memory_total, "used": used, "free": free, "available": free},
            "pveversion": f"pve-manager/{PVE_VERSION}/5b0b6a4d2c1e9f37",
            "rootfs": {
                "total": node.rootfs_total,
                "used": 8 * GIB,
                "free": node.rootfs_total - 8 * GIB,
                "avail": node.rootfs_total - 8 * GIB,
            },
            "uptime": 86400,
        }

    def cluster_resources(self, request: Request) -> list[dict[str, Any]]:
        """pve-manager PVE/API2/Cluster.pm resources: VMs (VM.Audit on /vms/<vmid>), nodes (stats only
        with Sys.Audit on /nodes/<node>), storage (Datastore.Audit) and the localnetwork zone
        (SDN.Audit), in that order; a token without the privilege does not see the entry at all."""
        kind = request.params.get("type")
        token = self.cluster.tokens[request.user]
        out: list[dict[str, Any]] = []
        if kind in (None, "vm"):
            for vmid in sorted(self.cluster.vms):
                if token.allows(f"/vms/{vmid}", "VM.Audit"):
                    out.append(self._vm_resource(self.cluster.vms[vmid]))
        if kind in (None, "node"):
            for name in sorted(self.cluster.nodes):
                node = self._node_entry(name)
                entry: dict[str, Any] = {"id": f"node/{name}", "node": name, "type": "node", "status": node["status"]}
                if node["status"] == "online" and token.allows(f"/nodes/{name}", "Sys.Audit"):
                    entry.update({k: node[k] for k in ("uptime", "cpu", "mem", "maxcpu", "maxmem")})
                    entry.update({"disk": 8 * GIB, "maxdisk": 100 * GIB})
                entry["level"] = ""
                entry["cgroup-mode"] = 2
                out.append(entry)
        if kind in (None, "storage"):
            for storage in sorted(self.cluster.storages.values(), key=lambda st: st.name):
                if not token.allows(f"/storage/{storage.name}", "Datastore.Audit"):
                    continue
                for name in sorted(self.cluster.nodes):
                    if not storage.on(name) or storage.options.get("disable") == "1":
                        continue
                    out.append(
                        {
                            "id": f"storage/{name}/{storage.name}",
                            "storage": storage.name,
                            "node": name,
                            "type": "storage",
                            "plugintype": storage.type,
                            "status": "available",
                            "shared": int(storage.shared),
                            "content": storage.content,
                            "maxdisk": storage.total,
                            "disk": self.cluster.storage_used(storage, name),
                        }
                    )
        if kind in (None, "network") and token.allows("/sdn/zones/localnetwork", "SDN.Audit"):
            for name in sorted(self.cluster.nodes):
                out.append(
                    {
                        "id": f"network/{name}/zone/localnetwork",
                        "type": "network",
                        "network-type": "zone",
                        "network": "localnetwork",
                        "node": name,
                        "status": "ok",
                    }
                )
        return out

    def _vm_resource(self, vm: VM) -> dict[str, Any]:
        running = vm.status == "running"
        entry: dict[str, Any] = {
            "id": f"qemu/{vm.vmid}",
            "type": "qemu",
            "vmid": vm.vmid,
            "node": vm.node,
            "name": vm.name,
            "status": vm.status,
            "maxcpu": vm.cpus(),
            "maxmem": vm.memory_bytes(),
            "maxdisk": vm.boot_disk_size(),
            "mem": int(vm.memory_bytes() * 0.35) if running else 0,
            "memhost": int(vm.memory_bytes() * 0.37) if running else 0,
            "cpu": 0.02 if running else 0,
            "disk": 0,
            "uptime": int(time.time() - vm.started_at) if running and vm.started_at else 0,
            "netin": 0,
            "netout": 0,
            "diskread": 0,
            "diskwrite": 0,
            "template": int(vm.template),
        }
        if vm.config.get("tags"):
            entry["tags"] = vm.config["tags"]
        if vm.config.get("lock"):
            entry["lock"] = vm.config["lock"]
        return entry

    def nextid(self, request: Request) -> int:
        wanted = request.params.get("vmid")
        if wanted is not None:
            if wanted in self.cluster.vms:
                raise ApiError(400, "Parameter verification failed.", {"vmid": f"VM {wanted} already exists"})
            return int(wanted)
        return self.cluster.next_free_vmid()

    # ----------------------------------------------------------------------- qemu: read
    def qemu_list(self, request: Request) -> list[dict[str, Any]]:
        """qemu-server PVE/API2/Qemu.pm vmlist: only VMs with VM.Audit on /vms/<vmid>, as vmstatus() sends them."""
        self.cluster.node(request.node)
        token = self.cluster.tokens[request.user]
        out = []
        for vm in sorted(self.cluster.vms.values(), key=lambda v: v.vmid):
            if vm.node != request.node or not token.allows(f"/vms/{vm.vmid}", "VM.Audit"):
                continue
            out.append(self._vmstatus(vm))
        return out

    def _vmstatus(self, vm: VM) -> dict[str, Any]:
        """PVE::QemuServer::vmstatus: the fields it always sends, and those it sends when they apply."""
        r = self._vm_resource(vm)
        entry: dict[str, Any] = {
            k: r[k]
            for k in ("vmid", "name", "status", "maxmem", "maxdisk", "disk", "mem", "cpu", "uptime", "netin", "netout")
        }
        entry.update({"cpus": r["maxcpu"], "memhost": r["memhost"], "diskread": 0, "diskwrite": 0})
        if vm.status == "running":
            entry["pid"] = 40000 + vm.vmid
        for key in ("tags", "lock"):
            if key in r:
                entry[key] = r[key]
        if vm.template:
            entry["template"] = 1
        if any(re.fullmatch(r"serial\d", key) for key in vm.config):
            entry["serial"] = 1
        return entry

    def _typed(self, config: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in config.items():
            schema = property_schema(self.config_props, key) or {}
            kind = schema.get("type")
            if kind in ("integer", "boolean"):
                out[key] = int(value)
            elif kind == "number":
                out[key] = float(value)
            else:
                out[key] = value
        return out

    def config_get(self, request: Request) -> dict[str, Any]:
        """qemu-server PVE/API2/Qemu.pm vm_config: pending applied unless `current`; cipassword masked."""
        p = request.params
        if p.get("snapshot") and p.get("current"):
            message = "cannot use 'snapshot' parameter with 'current'"
            raise ApiError(400, "Parameter verification failed.", {"snapshot": message, "current": message})
        vm = self.cluster.vm(request.node, request.vmid)
        if p.get("snapshot"):
            raise ApiError(500, f"snapshot '{p['snapshot']}' does not exist")
        config = dict(vm.config) if p.get("current") else vm.merged()
        if config.get("cipassword"):
            config["cipassword"] = MASKED
        out = self._typed(config)
        out["digest"] = vm.digest()
        return out

    def pending(self, request: Request) -> list[dict[str, Any]]:
        """qemu-server PVE/API2/Qemu.pm vm_pending (PVE::GuestHelpers::config_with_pending_array)."""
        vm = self.cluster.vm(request.node, request.vmid)
        config = dict(vm.config)
        pending = dict(vm.pending)
        if "cipassword" in config:
            config["cipassword"] = MASKED
        if "cipassword" in pending:
            pending["cipassword"] = MASKED + " "  # sic: PVE's vm_pending masks it with a trailing space
        out = []
        for key in sorted(set(config) | set(pending) | set(vm.pending_delete)):
            entry: dict[str, Any] = {"key": key}
            if key in config:
                entry["value"] = config[key]
            if key in pending:
                entry["pending"] = pending[key]
            if key in vm.pending_delete:
                entry["delete"] = 1
            out.append(entry)
        return out

    def status_current(self, request: Request) -> dict[str, Any]:
        vm = self.cluster.vm(request.node, request.vmid)
        out = self._vmstatus(vm)
        out.update({"qmpstatus": vm.status, "ha": {"managed": 0}})
        if vm.config.get("agent"):
            out["agent"] = 1
        if vm.status == "running":
            out["running-qemu"] = "10.1.2"
            out["running-machine"] = "pc-i440fx-10.1+pve0"
        return out

    # ----------------------------------------------------------------------- qemu: config
    def _root_only(self, request: Request, *names: str) -> None:
        """`skiplock` and friends: "Only root may use this option." (an API token is never root@pam)."""
        for name in names:
            if request.params.get(name) and request.user != "root@pam":
                raise ApiError(400, "Parameter verification failed.", {name: "Only root may use this option."})

    @staticmethod
    def _check_lock(vm: VM, skiplock: bool = False) -> None:
        """PVE::AbstractConfig::check_lock, raised as the caller needs it (TaskError in a task)."""
        lock = vm.config.get("lock")
        if lock and not skiplock:
            raise TaskError(f"VM is locked ({lock})")

    def _config_privileges(self, request: Request, keys: list[str]) -> None:
        path = f"/vms/{request.vmid}"
        for key in keys:
            privilege = next((p for pattern, p in KEY_PRIVILEGE if pattern.match(key)), "VM.Config.Options")
            self.require(request, path, privilege)
            if NET_KEY.match(key) and key in request.params:
                bridge = split_property_string(str(request.params[key]), "model").get("bridge")
                if bridge:
                    self.require(request, f"/sdn/zones/localnetwork/{bridge}", "SDN.Use")

    def _normalize(self, key: str, value: Any) -> str:
        text = str(value)
        if NET_KEY.match(key):
            parts = split_property_string(text, "model")
            parts.setdefault("macaddr", self.cluster.random_mac())
            return join_net(parts)
        if key == "tags":
            tags = sorted({t.lower() for t in re.split(r"[;,\s]+", text) if t})
            return ";".join(tags)
        if key == "cipassword" and not re.match(r"^\$(?:[156]|2[ay])(\$.+){2}", text):
            # PVE::Tools::encrypt_pw: crypt() with a SHA-256 salt; the config never holds the clear text
            salt = f"{self.cluster.random.getrandbits(64):016x}"
            return f"$5${salt}${hashlib.sha256((salt + text).encode()).hexdigest()}"
        return text

    def _option_exists(self, key: str) -> bool:
        return key != "digest" and property_schema(self.config_props, key) is not None

    def _prepare_update(self, request: Request) -> ConfigUpdate:
        """update_vm_api's checks before it locks or forks: all answered at once (400/403/500)."""
        p = request.params
        self._root_only(request, "skiplock")
        changes = {k: v for k, v in p.items() if k not in CONFIG_CONTROL}
        delete_str, revert_str = str(p.get("delete") or ""), str(p.get("revert") or "")
        if not delete_str and not revert_str and not changes:
            raise ApiError(500, "no options specified")
        revert: list[str] = []
        for opt in split_list(revert_str):
            if not self._option_exists(opt):
                raise ApiError(400, "Parameter verification failed.", {"revert": f"unknown option '{opt}'"})
            if opt in changes:
                message = f"you can't use '-{opt}' and -revert {opt}' at the same time"
                raise ApiError(400, "Parameter verification failed.", {"delete": message})
            revert.append(opt)
        deletes: list[str] = []
        for opt in split_list(delete_str):
            opt = "ide2" if opt == "cdrom" else opt
            if opt in changes:
                message = f"you can't use '-{opt}' and -delete {opt}' at the same time"
                raise ApiError(400, "Parameter verification failed.", {"delete": message})
            if opt in revert:
                message = f"you can't use '-delete {opt}' and -revert {opt}' at the same time"
                raise ApiError(400, "Parameter verification failed.", {"revert": message})
            if not self._option_exists(opt):
                raise ApiError(400, "Parameter verification failed.", {"delete": f"unknown option '{opt}'"})
            deletes.append(opt)
        if any(DISK_KEY.match(k) for k in changes):
            raise ApiError(501, "adding or replacing disks through the config is not implemented by the simulator")
        self._config_privileges(request, deletes)
        self._config_privileges(request, list(changes))
        return ConfigUpdate(
            changes={key: self._normalize(key, value) for key, value in changes.items()},
            deletes=deletes,
            revert=revert,
            digest=p.get("digest"),
            skiplock=bool(p.get("skiplock")),
        )

    def _load_and_check(self, vm: VM, update: ConfigUpdate) -> None:
        """update_vm_api's $load_and_check_config: the digest, then the lock (raises ApiError 500)."""
        if update.digest and update.digest != vm.digest():
            raise ApiError(500, "checksum mismatch (file change by other user?)")
        try:
            self._check_lock(vm, update.skiplock)
        except TaskError as exc:
            raise ApiError(500, str(exc)) from None

    def _apply_update(self, vm: VM, update: ConfigUpdate, log: list[str]) -> None:
        """update_vm_api's $updatefn: writes to pending, then applies (stopped) or hot-plugs (running)."""
        running = vm.status == "running"

        def hot(key: str) -> bool:
            return not running or key in FAST_PLUG or bool(NET_KEY.match(key))

        for key in update.revert:
            vm.pending.pop(key, None)
            if key in vm.pending_delete:
                vm.pending_delete.remove(key)
        for key in update.deletes:
            if key not in vm.config and key not in vm.pending:
                log.append(f"cannot delete '{key}' - not set in current configuration!")
                continue
            vm.pending.pop(key, None)
            if hot(key):
                vm.config.pop(key, None)
            elif key in vm.config and key not in vm.pending_delete:
                vm.pending_delete.append(key)
        for key, text in update.changes.items():
            if key == "cipassword" or hot(key):  # a cipassword goes to the config itself, never pending
                vm.config[key] = text
                vm.pending.pop(key, None)
            elif vm.config.get(key) == text:
                vm.pending.pop(key, None)  # cleanup_pending: nothing changed
            else:
                vm.pending[key] = text
            if key in vm.pending_delete:
                vm.pending_delete.remove(key)
        self.cluster.save()

    def config_put(self, request: Request) -> None:
        """qemu-server PVE/API2/Qemu.pm update_vm (sync): every refusal is the call's HTTP 500."""
        update = self._prepare_update(request)
        vm = self.cluster.vm(request.node, request.vmid)
        self._load_and_check(vm, update)
        if self.cluster.take_fault(("lock_timeout",), "PUT", request.path):
            raise ApiError(500, f"can't lock file '/var/lock/qemu-server/lock-{request.vmid}.conf' - got timeout")
        self.cluster.lock.release()  # wait for the VM's file lock without blocking the cluster
        try:
            with self.cluster.file_lock(request.node, request.vmid), self.cluster.lock:
                self._load_and_check(vm, update)
                self._apply_update(vm, update, [])
        finally:
            self.cluster.lock.acquire()
        return None

    def config_post(self, request: Request) -> str | None:
        """qemu-server PVE/API2/Qemu.pm update_vm_async: early checks at once, the rest in a qmconfig task."""
        update = self._prepare_update(request)
        vm = self.cluster.vm(request.node, request.vmid)
        self._load_and_check(vm, update)  # "early checks before forking/locking"

        def work(task: Task) -> None:
            task.log.append(f"update VM {vm.vmid}: " + " ".join(self._logged_params(request)))
            try:
                self._load_and_check(vm, update)  # again, under the lock: it may have changed
            except ApiError as exc:
                raise TaskError(exc.message) from None
            self._apply_update(vm, update, task.log)

        upid = self.cluster.spawn_task(
            (request.http_method, request.path), request.node, "qmconfig", request.vmid, request.user, work
        )
        delay = request.params.get("background_delay")
        if delay:
            return self._wait_briefly(upid, float(delay), vm.vmid)
        return upid

    @staticmethod
    def _logged_params(request: Request) -> list[str]:
        out = []
        for key in sorted(k for k in request.params if k not in ("node", "vmid", "digest", "background_delay")):
            out += [f"-{key}", "<hidden>" if key == "cipassword" else str(request.params[key])]
        return out

    def _wait_briefly(self, upid: str, seconds: float, vmid: int) -> str | None:
        deadline = time.monotonic() + seconds
        self.cluster.lock.release()
        try:
            while time.monotonic() < deadline:
                task = self.cluster.tasks[upid]
                if task.status == "stopped":
                    if task.exitstatus != "OK" and not str(task.exitstatus).startswith("WARNINGS"):
                        raise ApiError(500, f"failed to update VM {vmid}: {task.exitstatus}")
                    return None
                time.sleep(0.02)
        finally:
            self.cluster.lock.acquire()
        return upid

    # ----------------------------------------------------------------------- qemu: clone, resize, destroy
    def _clone_checks(self, request: Request, source: VM, target: str | None) -> CloneCheck:
        """clone_vm's $load_and_check: run before forking (HTTP 500/400) and again in the task."""
        p = request.params
        newid = int(p["newid"])
        if p.get("pool"):
            raise ApiError(500, f"pool '{p['pool']}' does not exist")
        if target and target not in self.cluster.nodes:
            raise ApiError(500, f"no such cluster node '{target}'")
        storage_name = p.get("storage")
        if storage_name is not None:
            storage = self._enabled_storage(storage_name, request.node)
            if "images" not in storage.content.split(","):
                raise ApiError(
                    400,
                    "Parameter verification failed.",
                    {"storage": f"storage '{storage_name}' does not support vm images"},
                )
            if target:
                self._enabled_storage(storage_name, target)
                if not storage.shared:
                    raise ApiError(500, f"can't clone to non-shared storage '{storage_name}'")
        try:
            self._check_lock(source)
        except TaskError as exc:
            raise ApiError(500, str(exc)) from None
        if p.get("snapname"):
            raise ApiError(500, f"snapshot '{p['snapname']}' does not exist")
        full = bool(p["full"]) if "full" in p else not source.template
        if storage_name is not None and not full:
            raise ApiError(500, "parameter 'storage' not allowed for linked clones")
        if p.get("format") is not None and not full:
            raise ApiError(500, "parameter 'format' not allowed for linked clones")
        disks = {
            k: d
            for k, d in source.disks().items()
            if d.get("media") != "cdrom" and ":" in d["file"] and d["file"] not in ("none", "cdrom")
        }
        # $check_storage_access_clone: AllocateSpace where the new disks go; "shared" when all are
        shared = True
        for disk in disks.values():
            old_storage = disk["file"].split(":", 1)[0]
            shared = shared and self.cluster.storages[old_storage].shared
            self.require(request, f"/storage/{storage_name or old_storage}", "Datastore.AllocateSpace")
        if target and not shared:
            raise ApiError(500, f"can't clone VM to node '{target}' (VM uses local storage)")
        existing = self.cluster.vms.get(newid)
        if existing is not None and existing.node == request.node:  # -f on this node's qemu-server/
            raise ApiError(500, f"unable to create VM {newid}: config file already exists")
        if not full:
            raise ApiError(501, "linked clones are not implemented by the simulator")
        return CloneCheck(newid=newid, full=full, storage=storage_name, disks=disks)

    def _rival_clone(self, vmid: int, node: str) -> None:
        """The `vmid_race` fault: someone else's clone placeholder for `vmid` appears on `node`."""
        if vmid not in self.cluster.vms:
            self.cluster.vms[vmid] = VM(vmid=vmid, node=node, config={"name": f"rival-{vmid}"})

    def _enabled_storage(self, name: str, node: str) -> Storage:
        """PVE::Storage::storage_check_enabled."""
        storage = self.cluster.storages.get(name)
        if storage is None:
            raise ApiError(500, f"storage '{name}' does not exist")
        if storage.options.get("disable") == "1":
            raise ApiError(500, f"storage '{name}' is disabled")
        if not storage.on(node):
            raise ApiError(500, f"storage '{name}' is not available on node '{node}'")
        return storage

    def clone(self, request: Request) -> str:
        """qemu-server PVE/API2/Qemu.pm clone_vm: early checks at once, then a qmclone task that locks
        source (shared) and new VMID (1 s), checks again, writes the placeholder config and copies."""
        p = request.params
        source = self.cluster.vm(request.node, request.vmid)
        target = p.get("target") or None
        if target == request.node:
            target = None
        race = self.cluster.take_fault(("vmid_race",), request.http_method, request.path)
        rival_node = (race.message or request.node) if race is not None else None
        if rival_node == request.node:
            self._rival_clone(int(p["newid"]), request.node)
        check = self._clone_checks(request, source, target)
        newid = check.newid
        holder: dict[str, VM] = {}
        conffile = f"/etc/pve/nodes/{request.node}/qemu-server/{newid}.conf"

        def begin(task: Task) -> None:
            try:
                self._clone_checks(request, source, target)
            except ApiError as exc:
                raise TaskError(exc.message) from None
            task.log.append(f"creating a clone of VM {source.vmid} with ID {newid}")
            if rival_node is not None and rival_node != request.node:
                self._rival_clone(newid, rival_node)
            if newid in self.cluster.vms:  # pmxcfs: the VMID is taken on another node
                raise TaskError(f"close (rename) atomic file '{conffile}' failed: File exists")
            # "# qmclone temporary file\nlock: clone\n": no name until the disks are copied
            holder["vm"] = VM(vmid=newid, node=request.node, config={"lock": "clone"})
            self.cluster.vms[newid] = holder["vm"]
            self.cluster.save()

        def work(task: Task) -> None:
            try:
                self._clone_disks(
                    task, source, holder["vm"], check, target or request.node, p.get("name"), p.get("description")
                )
            except TaskError as exc:
                raise TaskError(f"clone failed: {exc}") from None

        def failed() -> None:
            if "vm" in holder and self.cluster.vms.get(newid) is holder["vm"]:  # unlink $conffile
                del self.cluster.vms[newid]

        running = source.status == "running"
        return self.cluster.spawn_task(
            (request.http_method, request.path),
            request.node,
            "qmclone",
            source.vmid,
            request.user,
            work,
            locks=[(source.vmid, not running, 1.0), (newid, False, 1.0)],
            on_failure=failed,
            begin=begin,
        )

    def _clone_disks(
        self,
        task: Task,
        source: VM,
        new_vm: VM,
        check: CloneCheck,
        target: str,
        name: str | None,
        description: str | None,
    ) -> None:
        newid = new_vm.vmid
        config = self.cluster.copy_config(source)
        for key in ("template", "lock", "parent", "snaptime", "vmstate", "snapstate", "runningcpu", "runningmachine"):
            config.pop(key, None)
        for key in [k for k in config if k.startswith("unused")]:
            config.pop(key)
        config["name"] = name or f"Copy-of-VM-{source.config.get('name') or source.vmid}"
        if description:
            config["description"] = description
        needed: dict[str, int] = {}
        index = 0
        for key, disk in sorted(check.disks.items()):
            old_storage, volume = disk["file"].split(":", 1)
            new_storage = check.storage or old_storage
            if "cloudinit" in volume:
                new_volume = f"vm-{newid}-cloudinit"
            else:
                new_volume = f"vm-{newid}-disk-{index}"
                index += 1
                task.log.append(f"create full clone of drive {key} ({old_storage}:{volume})")
                task.log.append(f'  Logical volume "{new_volume}" created.')
            size = parse_size(disk.get("size", "4M"))
            needed[new_storage] = needed.get(new_storage, 0) + size
            config[key] = join_disk({**disk, "file": f"{new_storage}:{new_volume}"})
        for name, size in needed.items():
            storage = self.cluster.storages[name]
            free = storage.total - self.cluster.storage_used(storage, target)
            if size > free and storage.type != "lvmthin":
                raise TaskError(
                    f"lvcreate: insufficient free space on storage '{name}' "
                    f"(need {format_size(size)}, {format_size(free)} free)"
                )
        for key in list(config):
            if NET_KEY.match(key):
                parts = split_property_string(config[key], "model")
                parts["macaddr"] = self.cluster.random_mac()
                config[key] = join_net(parts)
        config["smbios1"] = f"uuid={self.cluster.random_uuid()}"
        if "vmgenid" in config:
            config["vmgenid"] = self.cluster.random_uuid()
        task.log.append(f"transferred {sum(needed.values()) / GIB:.1f} GiB of {sum(needed.values()) / GIB:.1f} GiB")
        new_vm.config = config
        new_vm.node = target  # the config file is renamed into the target node's directory

    def resize(self, request: Request) -> str:
        """qemu-server PVE/API2/Qemu.pm resize_vm: only `skiplock` is refused at once; every other
        check (digest, lock, disk, cdrom, storage permission, shrink) fails the resize task."""
        self._root_only(request, "skiplock")
        vm = self.cluster.vm(request.node, request.vmid)
        key = str(request.params["disk"])
        size_text = str(request.params["size"])
        digest = request.params.get("digest")
        skiplock = bool(request.params.get("skiplock"))

        def work(task: Task) -> None:
            if digest and digest != vm.digest():
                raise TaskError("checksum mismatch (file change by other user?)")
            self._check_lock(vm, skiplock)
            value = vm.config.get(key)
            if not value:
                raise TaskError(f"disk '{key}' does not exist")
            disk = split_property_string(value, "file")
            if disk.get("media") == "cdrom":
                raise TaskError("you can't resize a cdrom")
            storage_name = disk["file"].split(":", 1)[0]
            if not self.cluster.tokens[request.user].allows(f"/storage/{storage_name}", "Datastore.AllocateSpace"):
                raise TaskError(f"Permission check failed (/storage/{storage_name}, Datastore.AllocateSpace)")
            current = parse_size(disk.get("size", "0"))
            grow = parse_size(size_text.lstrip("+"))
            new = current + grow if size_text.startswith("+") else grow
            if new < current:
                raise TaskError("shrinking disks is not supported")
            if new == current:
                return
            storage = self.cluster.storages[storage_name]
            free = storage.total - self.cluster.storage_used(storage, vm.node)
            if storage.type != "lvmthin" and new - current > free:  # a thin pool may be overcommitted
                raise TaskError(f"lvextend: insufficient free space on storage '{storage_name}'")
            task.log.append(
                f"  Size of logical volume pve/{disk['file'].split(':', 1)[1]} changed from "
                f"{format_size(current)} to {format_size(new)}."
            )
            disk["size"] = format_size(new)
            vm.config[key] = join_disk(disk)
            self.cluster.save()

        return self.cluster.spawn_task(
            (request.http_method, request.path), request.node, "resize", request.vmid, request.user, work
        )

    def destroy(self, request: Request) -> str:
        """qemu-server PVE/API2/Qemu.pm destroy_vm: $early_checks at once and again in the task."""
        self._root_only(request, "skiplock")
        vm = self.cluster.vm(request.node, request.vmid)
        skiplock = bool(request.params.get("skiplock"))

        def early_checks() -> None:
            if vm.config.get("protection") == "1":
                raise ApiError(500, f"can't remove VM {vm.vmid} - protection mode enabled")
            if vm.status == "running":
                raise ApiError(500, f"VM {vm.vmid} is running - destroy failed")

        early_checks()

        def work(task: Task) -> None:
            try:
                early_checks()
            except ApiError as exc:
                raise TaskError(exc.message) from None
            self._check_lock(vm, skiplock)
            for disk in vm.disks().values():
                if ":" in disk["file"]:
                    task.log.append(f'  Logical volume "{disk["file"].split(":", 1)[1]}" successfully removed.')
            del self.cluster.vms[vm.vmid]

        return self.cluster.spawn_task(
            (request.http_method, request.path), request.node, "qmdestroy", request.vmid, request.user, work
        )

    # ----------------------------------------------------------------------- qemu: power
    def start(self, request: Request) -> str:
        """qemu-server PVE/API2/Qemu.pm vm_start → PVE::QemuServer::vm_start: every check in the task."""
        self._root_only(request, "skiplock", "stateuri", "migratedfrom", "migration_type", "targetstorage")
        vm = self.cluster.vm(request.node, request.vmid)
        skiplock = bool(request.params.get("skiplock"))

        def work(task: Task) -> list[Callable[[], None]]:
            if vm.template:
                raise TaskError("you can't start a vm if it's a template")
            self._check_lock(vm, skiplock)
            if vm.status == "running":
                raise TaskError(f"VM {vm.vmid} already running")
            node = self.cluster.nodes[vm.node]
            pending_memory = VM(vm.vmid, vm.node, vm.merged()).memory_bytes()
            free = node.memory_total - self.cluster.node_memory_used(vm.node)
            if pending_memory > free:
                task.log.append("kvm: cannot set up guest memory 'pc.ram': Cannot allocate memory")
                raise TaskError("start failed: QEMU exited with code 1")
            vm.apply_pending()
            vm.status, vm.started_at = "running", time.time()
            task.log.append(f"generating cloud-init ISO for VM {vm.vmid}")
            return [self.cluster.hook_started(vm)]

        return self.cluster.spawn_task(
            (request.http_method, request.path), request.node, "qmstart", request.vmid, request.user, work
        )

    def _stop(self, request: Request, task_type: str) -> str:
        """PVE::QemuServer::vm_stop/_do_vm_stop: a VM that is not running ends the task OK (before any
        lock check); otherwise the lock is checked, and vm_stop_cleanup writes pending changes."""
        self._root_only(request, "skiplock", "keepActive", "migratedfrom")
        vm = self.cluster.vm(request.node, request.vmid)
        skiplock = bool(request.params.get("skiplock"))

        def work(task: Task) -> list[Callable[[], None]]:
            if vm.status != "running":
                return []
            self._check_lock(vm, skiplock)
            vm.status, vm.started_at = "stopped", None
            vm.apply_pending()  # vm_stop_cleanup(..., $apply_pending_changes = 1)
            self.cluster.save()
            return [self.cluster.hook_stopped(vm)]

        return self.cluster.spawn_task(
            (request.http_method, request.path), request.node, task_type, request.vmid, request.user, work
        )

    def stop(self, request: Request) -> str:
        return self._stop(request, "qmstop")

    def shutdown(self, request: Request) -> str:
        return self._stop(request, "qmshutdown")

    def reboot(self, request: Request) -> str:
        """qemu-server PVE/API2/Qemu.pm vm_reboot: "VM N not running" at once; in the task vm_reboot
        stops it (lock checked, pending written by vm_stop_cleanup) and qmeventd starts it again."""
        vm = self.cluster.vm(request.node, request.vmid)
        if vm.status != "running":
            raise ApiError(500, f"VM {vm.vmid} not running")

        def work(task: Task) -> list[Callable[[], None]]:
            if vm.status != "running":
                return []
            self._check_lock(vm)
            stopped = self.cluster.hook_stopped(vm)
            vm.apply_pending()
            vm.started_at = time.time()
            self.cluster.save()
            return [stopped, self.cluster.hook_started(vm)]

        return self.cluster.spawn_task(
            (request.http_method, request.path), request.node, "qmreboot", request.vmid, request.user, work
        )

    # ----------------------------------------------------------------------- tasks
    def _task(self, request: Request, need_file: bool = True) -> tuple[dict[str, str], Task | None]:
        """pve-manager PVE/API2/Tasks.pm: PVE::Tools::upid_decode, then the task's file on this node."""
        self.cluster.node(request.node)
        upid = str(request.params["upid"])
        match = UPID_RE.match(upid)
        if match is None:
            raise ApiError(400, "Parameter verification failed.", {"upid": "unable to parse worker upid"})
        decoded = match.groupdict()
        task = self.cluster.tasks.get(upid)
        if task is not None and task.node != request.node:
            task = None  # its log file is on another node
        if task is None and need_file:
            raise ApiError(400, "Parameter verification failed.", {"upid": "no such task"})
        # $check_task_user: a token sees its own tasks, a user its own and its tokens'
        if request.user != decoded["user"] and request.user.split("!")[0] != decoded["user"]:
            self.require(request, f"/nodes/{request.node}", "Sys.Audit")
        return decoded, task

    def task_status(self, request: Request) -> dict[str, Any]:
        _, task = self._task(request)
        assert task is not None
        out = task.status_json()
        user, _, tokenid = task.user.partition("!")
        if tokenid:  # $convert_token_task
            out["user"], out["tokenid"] = user, tokenid
        return out

    def task_log(self, request: Request) -> list[dict[str, Any]]:
        _, task = self._task(request, need_file=False)
        if task is None:  # PVE::Tools::dump_logfile of a file that is not there
            return [{"n": 1, "t": "unable to open file - No such file or directory"}]
        start = int(request.params.get("start", 0))
        limit = int(request.params.get("limit", 50)) or len(task.log)
        return [{"n": i + 1, "t": line} for i, line in enumerate(task.log) if start <= i < start + limit]

    def task_list(self, request: Request) -> list[dict[str, Any]]:
        self.cluster.node(request.node)
        p = request.params
        tasks = [t for t in self.cluster.tasks.values() if t.node == request.node]
        if p.get("vmid") is not None:
            tasks = [t for t in tasks if t.id == str(p["vmid"])]
        if p.get("typefilter"):
            tasks = [t for t in tasks if t.type == p["typefilter"]]
        tasks.sort(key=lambda t: (t.starttime, t.pid), reverse=True)
        start, limit = int(p.get("start", 0)), int(p.get("limit", 50))
        out = []
        for t in tasks[start : start + limit]:
            entry: dict[str, Any] = {
                k: v
                for k, v in t.status_json().items()
                if k in ("upid", "node", "pid", "pstart", "starttime", "type", "id", "user")
            }
            if t.status == "stopped":
                entry["status"] = t.exitstatus or "OK"
                entry["endtime"] = t.endtime or t.starttime
            out.append(entry)
        return out

    # ----------------------------------------------------------------------- storage
    def _storage_info(self, node: str, storage: Storage) -> dict[str, Any]:
        """PVE::Storage::storage_info's entry: zeros and `enabled: 0` for a storage not on the node."""
        enabled = storage.on(node) and storage.options.get("disable") != "1"
        entry: dict[str, Any] = {
            "type": storage.type,
            "total": 0,
            "avail": 0,
            "used": 0,
            "shared": int(storage.shared),
            "content": content_string(storage.content),
            "active": 0,
            "enabled": int(enabled),
        }
        if enabled:
            used = self.cluster.storage_used(storage, node)
            entry.update({"total": storage.total, "used": used, "avail": storage.total - used, "active": 1})
        return entry

    def _storage_infos(self, node: str, content: str | None) -> dict[str, dict[str, Any]]:
        wanted = split_list(content) if content is not None else None
        infos = {}
        for name, storage in sorted(self.cluster.storages.items()):
            info = self._storage_info(node, storage)
            if wanted is not None and (not set(wanted) & set(storage.content.split(",")) or not info["enabled"]):
                continue
            infos[name] = info
        return infos

    def node_storage(self, request: Request) -> list[dict[str, Any]]:
        """pve-storage PVE/API2/Storage/Status.pm index: every storage of storage.cfg (not enabled
        on this node: zeros), those the token may audit or allocate on, with used_fraction."""
        self.cluster.node(request.node)
        p = request.params
        infos = self._storage_infos(request.node, p.get("content"))
        if p.get("storage") and p["storage"] not in infos:
            raise ApiError(400, "Parameter verification failed.", {"storage": "No such storage."})
        token = self.cluster.tokens[request.user]
        target = p.get("target") if p.get("target") != request.node else None
        out = []
        for name, info in infos.items():
            storage = self.cluster.storages[name]
            path = f"/storage/{name}"
            if not (token.allows(path, "Datastore.Audit") or token.allows(path, "Datastore.AllocateSpace")):
                continue
            if p.get("storage") and p["storage"] != name:
                continue
            if p.get("enabled") and storage.options.get("disable") == "1":
                continue
            if target and not (storage.shared and storage.on(request.node) and storage.on(target)):
                continue
            entry = {"storage": name, **info}
            if entry["total"]:
                entry["used_fraction"] = entry["used"] / entry["total"]
            out.append(entry)
        return out

    def storage_status(self, request: Request) -> dict[str, Any]:
        """pve-storage PVE/API2/Storage/Status.pm read_status: storage_info's entry, 400 when there is none."""
        self.cluster.node(request.node)
        info = self._storage_infos(request.node, request.params.get("content")).get(request.params["storage"])
        if info is None:
            raise ApiError(400, "Parameter verification failed.", {"storage": "No such storage."})
        return info

    def storage_index(self, request: Request) -> list[dict[str, Any]]:
        """pve-storage PVE/API2/Storage/Config.pm index: each section of storage.cfg the token may
        audit or allocate on, as $api_storage_config shows it (never a password)."""
        token = self.cluster.tokens[request.user]
        out = []
        for name, storage in sorted(self.cluster.storages.items()):
            path = f"/storage/{name}"
            if not (token.allows(path, "Datastore.Audit") or token.allows(path, "Datastore.AllocateSpace")):
                continue
            if request.params.get("type") and request.params["type"] != storage.type:
                continue
            out.append(self._api_storage_config(storage))
        return out

    def _api_storage_config(self, storage: Storage) -> dict[str, Any]:
        out: dict[str, Any] = {"storage": storage.name, "type": storage.type}
        out["content"] = content_string(storage.content)
        if storage.nodes is not None:
            out["nodes"] = ",".join(storage.nodes)
        if storage.shared and storage.type not in ("cifs", "nfs", "rbd", "cephfs", "pbs"):
            out["shared"] = 1  # a plugin that is always shared does not write the flag
        for key, value in storage.options.items():
            out[key] = int(value) if key in STORAGE_FLAGS else value
        out["digest"] = self.cluster.storage_cfg_digest()
        return out

    # ----------------------------------------------------------------------- storage: download-url
    def download_url(self, request: Request) -> str:
        """pve-storage src/PVE/API2/Storage/Status.pm download_url: the storage's checks at once (a file
        storage, the content type, the file name), then a `download` task that runs
        PVE::Tools::download_file_from_url: an existing file with the right checksum is kept, a wrong
        one refused, a download checked against the checksum before it is renamed into place. The
        simulator reads the URL's bytes from a mapped local file and never from the network."""
        p = request.params
        node, name = request.node, str(p["storage"])
        self.cluster.node(node)
        storage = self._enabled_storage(name, node)
        if storage.type not in FILE_STORAGES:
            raise ApiError(500, f"can't upload to storage type '{storage.type}', not a file based storage!")
        content, url = str(p["content"]), str(p["url"])
        if content not in storage.content.split(","):
            raise ApiError(500, f"storage '{name}' is not configured for content-type '{content}'")
        filename = re.sub(r"[^A-Za-z0-9_.+=-]", "_", str(p["filename"]))  # normalize_content_filename
        if content == "import":
            if not re.fullmatch(r"[A-Za-z0-9\-.+=_]+\.(ova|qcow2|raw|vmdk)", filename):
                raise ApiError(
                    400, "Parameter verification failed.", {"filename": "invalid filename or wrong extension"}
                )
        elif content == "iso":
            if not re.fullmatch(r"[^/]+\.(iso|img)", filename):
                raise ApiError(400, "Parameter verification failed.", {"filename": "wrong file extension"})
        elif not re.fullmatch(r"[^/]+\.tar\.(gz|xz|zst|bz2)", filename):
            raise ApiError(400, "Parameter verification failed.", {"filename": "wrong file extension"})
        algorithm, expected = p.get("checksum-algorithm"), p.get("checksum")
        path = storage.options.get("path", f"/mnt/pve/{name}")
        directory = {"import": "import", "iso": "template/iso", "vztmpl": "template/cache"}[content]
        dest = f"{path}/{directory}/{filename}"
        volname = f"{directory}/{filename}" if content != "import" else f"import/{filename}"
        files = self.cluster.volumes.setdefault(f"{node}/{name}", {})

        def work(task: Task) -> None:
            if p.get("compression") and content != "iso":
                raise TaskError(f"decompression not supported for {content}")
            task.log.append(f"downloading {url} to {dest}")
            if volname in files:
                if not algorithm:
                    raise TaskError(f"refusing to override existing file '{dest}'")
                task.log.append("calculating checksum of existing file...")
                got = files[volname]["checksums"][algorithm]
                if got.lower() == str(expected).lower():
                    task.log.append("OK, got correct file already, no need to download")
                    return
                raise TaskError(f"checksum mismatch: got '{got}' != expect '{expected}', aborting")
            source = self.cluster.image_sources.get(url)
            tmp = f"{dest}.tmp_dwnl.{task.pid}"
            if source is None or not source.is_file():
                # wget's exit code 4: network failure (the simulator has no network at all)
                task.log.append(f"--  {url}: the simulator fetches nothing from the network; map this URL to a file")
                raise TaskError(
                    f"download failed: command 'wget --progress=dot:giga -O {tmp} {url}' failed: exit code 4"
                )
            data = source.read_bytes()
            task.log.append(f"{len(data) / MIB:.1f}M downloaded")
            checksums = {a: hashlib.new(a, data).hexdigest() for a in ("sha256", "sha512", "sha1", "md5")}
            if algorithm:
                task.log.append("calculating checksum...")
                got = checksums.get(str(algorithm)) or hashlib.new(str(algorithm), data).hexdigest()
                if got.lower() != str(expected).lower():
                    raise TaskError(f"checksum mismatch: got '{got}' != expect '{expected}'")
                task.log.append("OK, checksum verified")
            fmt = filename.rsplit(".", 1)[-1]
            virtual = image_virtual_size(data, fmt)
            if virtual is None:
                raise TaskError(f"failed to verify file: image '{tmp}' is not a valid {fmt} image")
            files[volname] = {
                "size": len(data),
                "format": fmt,
                "virtual": virtual,
                "ctime": int(time.time()),
                "checksums": checksums,
            }
            task.log.append(f"download of '{url}' to '{dest}' finished")
            self.cluster.save()

        return self.cluster.spawn_task(
            (request.http_method, request.path), node, "download", filename, request.user, work, locks=[]
        )

    # ----------------------------------------------------------------------- qemu: create, template
    def create_vm(self, request: Request) -> str:
        """qemu-server src/PVE/API2/Qemu.pm create_vm: VM.Allocate, storage access, then
        create_and_lock_config at once ("unable to create VM N - VM N already exists on node 'X'"),
        then a qmcreate task that creates the disks (`import-from` copies the image's virtual size)
        and writes the config; a failure removes what it created."""
        p = request.params
        node = request.node
        self.cluster.node(node)
        vmid = int(p["vmid"])
        self.require(request, f"/vms/{vmid}", "VM.Allocate")
        unsupported = sorted(set(p) & {"archive", "pool", "start", "live-restore", "unique", "force"})
        if unsupported:
            raise ApiError(501, f"create_vm option '{unsupported[0]}' is not implemented by the simulator")
        config: dict[str, str] = {}
        disks: dict[str, dict[str, str]] = {}
        for key, value in p.items():
            if key in ("node", "vmid"):
                continue
            if DISK_KEY.match(key):
                disk = split_property_string(str(value), "file")
                storage_name, _, size = disk["file"].partition(":")
                storage = self._enabled_storage(storage_name, node)
                self.require(request, f"/storage/{storage_name}", "Datastore.AllocateSpace")
                if size != "cloudinit" and "images" not in storage.content.split(","):
                    raise ApiError(500, f"storage '{storage_name}' does not support vm images")
                if "import-from" in disk:
                    source_storage = disk["import-from"].split(":", 1)[0]
                    self.require(request, f"/storage/{source_storage}", "Datastore.Audit")
                elif size != "cloudinit" and not re.fullmatch(r"\d+(\.\d+)?", size):
                    raise ApiError(
                        501, f"{key}: an existing volume as a new VM's disk is not implemented by the simulator"
                    )
                disks[key] = disk
            else:
                config[key] = self._normalize(key, value)
        self._config_privileges(request, [k for k in config if not NET_KEY.match(k)])
        existing = self.cluster.vms.get(vmid)
        if existing is not None:  # create_and_lock_config → PVE::Cluster::check_vmid_unused
            raise ApiError(500, f"unable to create VM {vmid} - VM {vmid} already exists on node '{existing.node}'")
        new_vm = VM(vmid=vmid, node=node, config={"lock": "create"})
        self.cluster.vms[vmid] = new_vm
        self.cluster.save()

        def work(task: Task) -> None:
            try:
                created = self._create_disks(task, node, vmid, disks)
            except TaskError as exc:
                raise TaskError(f"unable to create VM {vmid} - {exc}") from None
            final = {**config, **created}
            final.setdefault("boot", "order=" + ";".join(k for k in sorted(created) if "cloudinit" not in created[k]))
            final.setdefault("smbios1", f"uuid={self.cluster.random_uuid()}")
            final.setdefault("vmgenid", self.cluster.random_uuid())
            final["meta"] = f"creation-qemu=10.1.2,ctime={int(time.time())}"
            new_vm.config = final

        def failed() -> None:
            if self.cluster.vms.get(vmid) is new_vm:
                del self.cluster.vms[vmid]

        return self.cluster.spawn_task(
            (request.http_method, request.path), node, "qmcreate", vmid, request.user, work, on_failure=failed
        )

    def _create_disks(self, task: Task, node: str, vmid: int, disks: dict[str, dict[str, str]]) -> dict[str, str]:
        out: dict[str, str] = {}
        index = 0
        for key, disk in sorted(disks.items()):
            storage_name, _, size = disk.pop("file").partition(":")
            if size == "cloudinit":
                out[key] = f"{storage_name}:vm-{vmid}-cloudinit,media=cdrom"
                continue
            volume = f"vm-{vmid}-disk-{index}"
            index += 1
            source = disk.pop("import-from", None)
            if source is not None:
                source_storage, _, volname = source.partition(":")
                found = self.cluster.volumes.get(f"{node}/{source_storage}", {}).get(volname)
                if found is None:
                    raise TaskError(f"volume '{source}' does not exist")
                task.log.append(f"importing disk '{source}' to VM {vmid} ...")
                task.log.append(f'  Logical volume "{volume}" created.')
                task.log.append(
                    f"transferred {found['virtual'] / GIB:.1f} GiB of {found['virtual'] / GIB:.1f} GiB (100.00%)"
                )
                task.log.append(
                    f"{key}: successfully created disk '{storage_name}:{volume},size={format_size(found['virtual'])}'"
                )
                bytes_ = found["virtual"]
            else:
                bytes_ = int(float(size) * GIB)
                task.log.append(f'  Logical volume "{volume}" created.')
            out[key] = join_disk({"file": f"{storage_name}:{volume}", **disk, "size": format_size(bytes_)})
        return out

    def template(self, request: Request) -> str:
        """qemu-server src/PVE/API2/Qemu.pm template: $load_and_check (check_lock, "you can't convert a
        template to a template", "...if VM is running") at once and again in the qmtemplate task,
        which sets `template: 1` and renames the disks base-N-disk-K (template_create)."""
        vm = self.cluster.vm(request.node, request.vmid)

        def load_and_check() -> None:
            try:
                self._check_lock(vm)
            except TaskError as exc:
                raise ApiError(500, str(exc)) from None
            if vm.template and not request.params.get("disk"):
                raise ApiError(500, "you can't convert a template to a template")
            if vm.status == "running":
                raise ApiError(500, "you can't convert a VM to template if VM is running")

        load_and_check()

        def work(task: Task) -> None:
            try:
                load_and_check()
            except ApiError as exc:
                raise TaskError(exc.message) from None
            vm.config["template"] = "1"
            for key, disk in vm.disks().items():
                if disk.get("media") == "cdrom" or ":" not in disk["file"]:
                    continue
                storage_name, volume = disk["file"].split(":", 1)
                base = volume.replace(f"vm-{vm.vmid}-disk-", f"base-{vm.vmid}-disk-")
                task.log.append(f'  Renamed "{volume}" to "{base}" in volume group "pve"')
                vm.config[key] = join_disk({**disk, "file": f"{storage_name}:{base}"})
            self.cluster.save()

        return self.cluster.spawn_task(
            (request.http_method, request.path), request.node, "qmtemplate", request.vmid, request.user, work
        )

    # ----------------------------------------------------------------------- storage config
    def _storage(self, name: str) -> Storage:
        storage = self.cluster.storages.get(name)
        if storage is None:
            raise ApiError(500, f"storage '{name}' does not exist")
        return storage

    def storage_get(self, request: Request) -> dict[str, Any]:
        """pve-storage PVE/API2/Storage/Config.pm read: the storage's section, as `pvesh get /storage/ID`
        shows it: never the password; `digest` is storage.cfg's."""
        return self._api_storage_config(self._storage(request.params["storage"]))

    def storage_create(self, request: Request) -> dict[str, Any]:
        p = dict(request.params)
        name, kind = p.pop("storage"), p.pop("type")
        if kind != "cifs":
            raise ApiError(501, f"storage type '{kind}' is not implemented by the simulator")
        errors = {key: "unexpected property" for key in p if key not in CIFS_OPTIONS}
        missing = [key for key in ("server", "share") if key not in p]
        errors.update({key: "property is missing and it is not optional" for key in missing})
        if errors:
            raise ApiError(400, "Parameter verification failed.", errors)
        if name in self.cluster.storages:
            raise ApiError(500, f"create storage failed: storage ID '{name}' already defined")
        password = p.pop("password", None)
        content = p.pop("content", "backup,images,iso,rootdir,snippets,vztmpl")
        nodes = p.pop("nodes", None)
        options = {key: str(value) for key, value in p.items()}
        options.setdefault("path", f"/mnt/pve/{name}")  # CIFSPlugin's check_config
        storage = Storage(
            name,
            "cifs",
            shared=True,
            total=CIFS_SIZE,
            content=content,
            nodes=nodes.split(",") if nodes else None,
            options=options,
            password_sha256=hashlib.sha256(password.encode()).hexdigest() if password else None,
        )
        self.cluster.storages[name] = storage
        self.cluster.save()
        return {"storage": name, "type": "cifs"}

    def storage_update(self, request: Request) -> dict[str, Any]:
        storage = self._storage(request.params["storage"])
        p = {k: v for k, v in request.params.items() if k not in ("storage", "digest", "delete")}
        digest = request.params.get("digest")
        if digest and digest != self.cluster.storage_cfg_digest():
            raise ApiError(500, "detected modified configuration - file changed by other user? Try again.")
        deletes = [d for d in re.split(r"[;,\s]+", request.params.get("delete", "")) if d]
        if storage.type != "cifs":
            raise ApiError(501, f"updating a '{storage.type}' storage is not implemented by the simulator")
        errors = {key: "unexpected property" for key in p if key not in CIFS_OPTIONS}
        errors.update({key: f"can't change value of fixed parameter '{key}'" for key in p if key in CIFS_FIXED})
        errors.update({key: f"cannot delete fixed option '{key}'" for key in deletes if key in CIFS_FIXED})
        errors.update({key: "both set and deleted" for key in deletes if key in p})
        if errors:
            raise ApiError(400, "Parameter verification failed.", errors)
        for key in deletes:
            if key == "password":
                storage.password_sha256 = None
            elif key == "nodes":
                storage.nodes = None
            storage.options.pop(key, None)
        if "password" in p:
            storage.password_sha256 = hashlib.sha256(str(p.pop("password")).encode()).hexdigest()
        if "content" in p:
            storage.content = str(p.pop("content"))
        if "nodes" in p:
            storage.nodes = str(p.pop("nodes")).split(",")
        storage.options.update({key: str(value) for key, value in p.items()})
        self.cluster.save()
        return {"storage": storage.name, "type": storage.type}

    def storage_delete(self, request: Request) -> None:
        storage = self._storage(request.params["storage"])
        del self.cluster.storages[storage.name]
        self.cluster.save()
        return None

    # ----------------------------------------------------------------------- backup jobs
    def _job_json(self, job_id: str, job: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": job_id}
        for key, value in job.items():
            kind = (property_schema(self.job_props, key) or {}).get("type")
            if key == "prune-backups":
                out[key] = parse_property_string(PRUNE_BACKUPS_FORMAT, value)
            elif kind in ("integer", "boolean"):
                out[key] = int(value)
            else:
                out[key] = value
        return out

    def _job(self, job_id: str) -> dict[str, str]:
        job = self.cluster.backup_jobs.get(job_id)
        if job is None:
            raise ApiError(500, f"job '{job_id}' does not exist")
        return job

    def _check_job(self, request: Request, job: dict[str, str]) -> None:
        """PVE's verify_vzdump_parameters and the storage and guest checks of a job."""
        if job.get("all") == "1" and job.get("vmid"):
            raise ApiError(400, "Parameter verification failed.", {"all": "option conflicts with option 'vmid'"})
        if job.get("all") != "1" and not job.get("vmid") and not job.get("pool"):
            raise ApiError(400, "Parameter verification failed.", {"vmid": "property is missing"})
        if not job.get("schedule"):
            raise ApiError(400, "Parameter verification failed.", {"schedule": "property is missing"})
        name = job.get("storage", "local")
        storage = self.cluster.storages.get(name)
        if storage is None:
            raise ApiError(400, "Parameter verification failed.", {"storage": f"storage '{name}' does not exist"})
        if "backup" not in storage.content.split(","):
            raise ApiError(
                400, "Parameter verification failed.", {"storage": f"storage '{name}' does not support backups"}
            )
        self.require(request, f"/storage/{name}", "Datastore.AllocateSpace")
        for vmid in [v for v in re.split(r"[;,\s]+", job.get("vmid", "")) if v]:
            self.require(request, f"/vms/{vmid}", "VM.Backup")
        if job.get("all") == "1":
            self.require(request, "/", "VM.Backup")

    def _job_options(self, request: Request) -> dict[str, str]:
        p = {k: v for k, v in request.params.items() if k not in ("id", "delete")}
        unmodelled = sorted(set(p) & UNMODELLED_JOB_OPTIONS)
        if unmodelled:
            raise ApiError(501, f"job option '{unmodelled[0]}' is not implemented by the simulator")
        return {key: str(value) for key, value in p.items()}

    def backup_index(self, request: Request) -> list[dict[str, Any]]:
        return [self._job_json(job_id, job) for job_id, job in sorted(self.cluster.backup_jobs.items())]

    def backup_get(self, request: Request) -> dict[str, Any]:
        job_id = str(request.params["id"])
        return self._job_json(job_id, self._job(job_id))

    def backup_create(self, request: Request) -> None:
        job_id = str(request.params.get("id") or f"backup-{self.cluster.random.getrandbits(48):012x}"[:20])
        if job_id in self.cluster.backup_jobs:
            raise ApiError(500, f"Job '{job_id}' already exists")
        job = self._job_options(request)
        self._check_job(request, job)
        self.cluster.backup_jobs[job_id] = job
        self.cluster.save()
        return None

    def backup_update(self, request: Request) -> None:
        job_id = str(request.params["id"])
        job = dict(self._job(job_id))
        options = self._job_options(request)
        deletes = [d for d in re.split(r"[;,\s]+", request.params.get("delete", "")) if d]
        both = sorted(set(deletes) & set(options))
        if both:
            raise ApiError(400, "Parameter verification failed.", {both[0]: "both set and deleted"})
        for key in deletes:
            job.pop(key, None)
        job.update(options)
        self._check_job(request, job)
        self.cluster.backup_jobs[job_id] = job
        self.cluster.save()
        return None

    def backup_delete(self, request: Request) -> None:
        job_id = str(request.params["id"])
        self._job(job_id)
        del self.cluster.backup_jobs[job_id]
        self.cluster.save()
        return None
