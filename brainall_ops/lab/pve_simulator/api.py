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
CONFIG_CONTROL = {"node", "vmid", "digest", "delete", "skiplock", "background_delay", "revert", "force"}
# PVE's CIFSPlugin options: what a `cifs` section of storage.cfg may hold. `fixed` ones are set
# at creation and never changed; server and share are required.
CIFS_OPTIONS = {
    "path", "content-dirs", "server", "share", "subdir", "nodes", "disable", "prune-backups",
    "max-protected-backups", "content", "format", "username", "password", "domain", "smbversion",
    "mkdir", "create-base-path", "create-subdirs", "bwlimit", "preallocation", "options",
}  # fmt: skip
CIFS_FIXED = {"path", "server", "share"}
CIFS_SIZE = 1 * TIB  # a BX11 Storage Box
# Job options the simulator keeps as given but does not model (objects PVE parses further).
UNMODELLED_JOB_OPTIONS = {"fleecing", "performance", "exclude-path"}


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
        handler = self.routes.get((request.http_method, request.method.path))
        if handler is None:
            raise ApiError(
                501, f"Method '{request.http_method} {request.method.path}' not implemented by the simulator"
            )
        with self.cluster.lock:
            data = handler(request)
        problems = self.schema.check_return(request.method, data)
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
        return {"version": PVE_VERSION, "release": "9.1", "repoid": "5b0b6a4d2c1e9f37", "console": "html5"}

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
        kind = request.params.get("type")
        out: list[dict[str, Any]] = []
        if kind in (None, "node"):
            for name in sorted(self.cluster.nodes):
                entry = self._node_entry(name)
                entry.update({"id": f"node/{name}", "type": "node", "maxdisk": 100 * GIB, "disk": 8 * GIB})
                entry["cgroup-mode"] = 2
                out.append(entry)
        if kind in (None, "storage"):
            for name in sorted(self.cluster.nodes):
                for storage in self.cluster.storages.values():
                    if not storage.on(name):
                        continue
                    out.append(
                        {
                            "id": f"storage/{name}/{storage.name}",
                            "type": "storage",
                            "node": name,
                            "storage": storage.name,
                            "status": "available",
                            "maxdisk": storage.total,
                            "disk": self.cluster.storage_used(storage, name),
                            "content": storage.content,
                            "plugintype": storage.type,
                            "shared": int(storage.shared),
                        }
                    )
        if kind in (None, "vm"):
            for vmid in sorted(self.cluster.vms):
                out.append(self._vm_resource(self.cluster.vms[vmid]))
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
        self.cluster.node(request.node)
        out = []
        for vm in sorted(self.cluster.vms.values(), key=lambda v: v.vmid):
            if vm.node != request.node:
                continue
            r = self._vm_resource(vm)
            entry = {k: r[k] for k in ("vmid", "name", "status", "maxmem", "maxdisk", "mem", "cpu", "uptime")}
            entry["cpus"] = r["maxcpu"]
            for key in ("tags", "lock"):
                if key in r:
                    entry[key] = r[key]
            if vm.template:
                entry["template"] = 1
            out.append(entry)
        return out

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
        vm = self.cluster.vm(request.node, request.vmid)
        if "snapshot" in request.params:
            raise ApiError(500, f"snapshot '{request.params['snapshot']}' does not exist")
        config = vm.config if request.params.get("current") else vm.merged()
        out = self._typed(config)
        out["digest"] = vm.digest()
        return out

    def pending(self, request: Request) -> list[dict[str, Any]]:
        vm = self.cluster.vm(request.node, request.vmid)
        out = []
        for key in sorted(set(vm.config) | set(vm.pending) | set(vm.pending_delete)):
            entry: dict[str, Any] = {"key": key}
            if key in vm.config:
                entry["value"] = vm.config[key]
            if key in vm.pending:
                entry["pending"] = vm.pending[key]
            if key in vm.pending_delete:
                entry["delete"] = 1
            out.append(entry)
        return out

    def status_current(self, request: Request) -> dict[str, Any]:
        vm = self.cluster.vm(request.node, request.vmid)
        r = self._vm_resource(vm)
        out: dict[str, Any] = {k: r[k] for k in ("vmid", "name", "status", "maxmem", "maxdisk", "mem", "cpu", "uptime")}
        out.update({"cpus": r["maxcpu"], "qmpstatus": vm.status, "ha": {"managed": 0}})
        for key in ("tags", "lock"):
            if key in r:
                out[key] = r[key]
        if vm.template:
            out["template"] = 1
        if vm.status == "running":
            out["pid"] = 40000 + vm.vmid
            out["running-qemu"] = "10.1.2"
            out["running-machine"] = "pc-i440fx-10.1+pve0"
        return out

    # ----------------------------------------------------------------------- qemu: config
    def _check_lock(self, vm: VM, request: Request) -> None:
        lock = vm.config.get("lock")
        if lock and not request.params.get("skiplock"):
            raise TaskError(f"VM is locked ({lock})")

    def _config_privileges(self, request: Request, keys: list[str]) -> None:
        path = f"/vms/{request.vmid}"
        for key in keys:
            privilege = next((p for pattern, p in KEY_PRIVILEGE if pattern.match(key)), "VM.Config.Options")
            self.require(request, path, privilege)
            if NET_KEY.match(key):
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
        return text

    def _update_config(self, request: Request) -> None:
        """PVE's update_vm: check, then write now (stopped VM, hot-pluggable keys) or as pending."""
        vm = self.cluster.vm(request.node, request.vmid)
        self._check_lock(vm, request)
        digest = request.params.get("digest")
        if digest and digest != vm.digest():
            raise TaskError("detected modified configuration - file changed by other user? Try again.")
        changes = {k: v for k, v in request.params.items() if k not in CONFIG_CONTROL}
        deletes = [k for k in re.split(r"[;,\s]+", str(request.params.get("delete", ""))) if k]
        if any(DISK_KEY.match(k) for k in changes):
            raise TaskError("simulator: adding or replacing disks through the config is not simulated")
        for key in changes:
            if key in deletes:
                raise TaskError(f"unable to delete '{key}' - option is also set")
        for key in request.params.get("revert", "").split(",") if request.params.get("revert") else []:
            vm.pending.pop(key, None)
            if key in vm.pending_delete:
                vm.pending_delete.remove(key)
        running = vm.status == "running"
        for key, value in changes.items():
            text = self._normalize(key, value)
            if running and key not in FAST_PLUG and not NET_KEY.match(key):
                if vm.config.get(key) == text:
                    vm.pending.pop(key, None)
                else:
                    vm.pending[key] = text
            else:
                vm.config[key] = text
                vm.pending.pop(key, None)
        for key in deletes:
            if running and key not in FAST_PLUG and not NET_KEY.match(key):
                if key in vm.config and key not in vm.pending_delete:
                    vm.pending_delete.append(key)
            else:
                vm.config.pop(key, None)
                vm.pending.pop(key, None)
        self.cluster.save()

    def config_put(self, request: Request) -> None:
        keys = [k for k in request.params if k not in CONFIG_CONTROL]
        self._config_privileges(request, keys)
        self.cluster.vm(request.node, request.vmid)
        if self.cluster.take_fault(("lock_timeout",), "PUT", request.path):
            raise ApiError(500, f"can't lock file '/var/lock/qemu-server/lock-{request.vmid}.conf' - got timeout")
        self.cluster.lock.release()  # wait for the VM's file lock without blocking the cluster
        try:
            with self.cluster.file_lock(request.vmid), self.cluster.lock:
                try:
                    self._update_config(request)
                except TaskError as exc:
                    raise ApiError(500, str(exc)) from None
        finally:
            self.cluster.lock.acquire()
        return None

    def config_post(self, request: Request) -> str | None:
        keys = [k for k in request.params if k not in CONFIG_CONTROL]
        self._config_privileges(request, keys)
        self.cluster.vm(request.node, request.vmid)
        upid = self.cluster.spawn_task(
            (request.http_method, request.path),
            request.node,
            "qmconfig",
            request.vmid,
            request.user,
            lambda task: self._update_config(request),
        )
        delay = request.params.get("background_delay")
        if delay:
            return self._wait_briefly(upid, float(delay))
        return upid

    def _wait_briefly(self, upid: str, seconds: float) -> str | None:
        deadline = time.monotonic() + seconds
        self.cluster.lock.release()
        try:
            while time.monotonic() < deadline:
                task = self.cluster.tasks[upid]
                if task.status == "stopped":
                    if task.exitstatus != "OK":
                        raise ApiError(500, task.exitstatus or "task failed")
                    return None
                time.sleep(0.02)
        finally:
            self.cluster.lock.acquire()
        return upid

    # ----------------------------------------------------------------------- qemu: clone, resize, destroy
    def clone(self, request: Request) -> str:
        p = request.params
        source = self.cluster.vm(request.node, request.vmid)
        newid = int(p["newid"])
        target = p.get("target") or request.node
        self.cluster.node(target)
        if p.get("snapname"):
            raise ApiError(500, f"snapshot '{p['snapname']}' does not exist")
        if p.get("pool"):
            raise ApiError(500, f"pool '{p['pool']}' does not exist")
        full = bool(p.get("full", 0 if source.template else 1))
        if not source.template and not full:
            raise ApiError(500, "linked clone feature for a VM that is not a template is not supported")
        source_disks = {
            k: d for k, d in source.disks().items() if d["file"] not in ("none", "cdrom") and ":" in d["file"]
        }
        source_storages = {d["file"].split(":", 1)[0] for d in source_disks.values()}
        if target != request.node and not all(self.cluster.storages[s].shared for s in source_storages):
            raise ApiError(500, f"Can't clone to node '{target}': VM {source.vmid} uses local storage")
        storage_name = p.get("storage")
        if storage_name is not None:
            if not full:
                raise ApiError(500, "Storage migration requires full clone")
            storage = self.cluster.storages.get(storage_name)
            if storage is None:
                raise ApiError(500, f"storage '{storage_name}' does not exist")
            if not storage.on(target):
                raise ApiError(500, f"storage '{storage_name}' is not available on node '{target}'")
            if "images" not in storage.content.split(","):
                raise ApiError(500, f"storage '{storage_name}' does not support vm images")
        for name in {storage_name} if storage_name else source_storages:
            self.require(request, f"/storage/{name}", "Datastore.AllocateSpace")
        if newid in self.cluster.vms:
            raise ApiError(500, f"VM {newid} already exists on node '{self.cluster.vms[newid].node}'")
        if source.config.get("lock") and not source.template:
            raise ApiError(500, f"VM is locked ({source.config['lock']})")

        placeholder: dict[str, str] = {"lock": "clone"}
        if p.get("name"):
            placeholder["name"] = p["name"]
        new_vm = VM(vmid=newid, node=target, config=placeholder)
        self.cluster.vms[newid] = new_vm  # the config file exists from now on, locked 'clone'
        self.cluster.save()

        def work(task: Task) -> None:
            config = self.cluster.copy_config(source)
            for key in ("template", "lock", "parent", "snaptime", "vmstate"):
                config.pop(key, None)
            config["name"] = p.get("name") or f"Copy-of-VM-{source.name}"
            if p.get("description"):
                config["description"] = p["description"]
            needed: dict[str, int] = {}
            index = 0
            for key, disk in sorted(source_disks.items()):
                old_storage, volume = disk["file"].split(":", 1)
                new_storage = storage_name if full and storage_name else old_storage
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
                if size > free:
                    raise TaskError(
                        f"clone failed: lvcreate: insufficient free space on storage '{name}' "
                        f"(need {format_size(size)}, {format_size(free)} free)"
                    )
            for key in list(config):
                if NET_KEY.match(key):
                    parts = split_property_string(config[key], "model")
                    parts["macaddr"] = self.cluster.random_mac()
                    config[key] = join_net(parts)
            config["smbios1"] = f"uuid={self.cluster.random_uuid()}"
            config["vmgenid"] = self.cluster.random_uuid()
            config["meta"] = f"creation-qemu=10.1.2,ctime={int(time.time())}"
            task.log.append(f"transferred {sum(needed.values()) / GIB:.1f} GiB of {sum(needed.values()) / GIB:.1f} GiB")
            new_vm.config = config

        def failed() -> None:
            if self.cluster.vms.get(newid) is new_vm:  # PVE removes what a failed clone created
                del self.cluster.vms[newid]

        return self.cluster.spawn_task(
            (request.http_method, request.path),
            request.node,
            "qmclone",
            source.vmid,
            request.user,
            work,
            locks=[(source.vmid, source.template), (newid, False)],
            on_failure=failed,
        )

    def resize(self, request: Request) -> str:
        vm = self.cluster.vm(request.node, request.vmid)
        key = request.params["disk"]
        disk_value = vm.merged().get(key)
        if disk_value is None:
            raise ApiError(500, f"disk '{key}' does not exist")
        disk = split_property_string(disk_value, "file")
        if disk.get("media") == "cdrom":
            raise ApiError(500, f"you can't resize a cdrom ({key})")
        storage_name = disk["file"].split(":", 1)[0]
        self.require(request, f"/storage/{storage_name}", "Datastore.AllocateSpace")
        size_text = request.params["size"]
        current = parse_size(disk.get("size", "0"))
        new = current + parse_size(size_text[1:]) if size_text.startswith("+") else parse_size(size_text)
        if new < current:
            raise ApiError(500, f"shrinking disks is not supported (current size {format_size(current)})")

        def work(task: Task) -> None:
            self._check_lock(vm, request)
            digest = request.params.get("digest")
            if digest and digest != vm.digest():
                raise TaskError("detected modified configuration - file changed by other user? Try again.")
            storage = self.cluster.storages[storage_name]
            free = storage.total - self.cluster.storage_used(storage, vm.node)
            if new - current > free:
                raise TaskError(f"lvextend: insufficient free space on storage '{storage_name}'")
            task.log.append(
                f"  Size of logical volume pve/{disk['file'].split(':', 1)[1]} changed from "
                f"{format_size(current)} to {format_size(new)}."
            )
            for config in (vm.config, vm.pending):
                if key in config:
                    parts = split_property_string(config[key], "file")
                    parts["size"] = format_size(new)
                    config[key] = join_disk(parts)

        return self.cluster.spawn_task(
            (request.http_method, request.path), request.node, "resize", request.vmid, request.user, work
        )

    def destroy(self, request: Request) -> str:
        vm = self.cluster.vm(request.node, request.vmid)
        if vm.status == "running":
            raise ApiError(500, f"VM {vm.vmid} is running - destroy failed")
        if vm.config.get("protection") == "1":
            raise ApiError(500, f"can't remove VM {vm.vmid} - protection mode enabled")

        def work(task: Task) -> None:
            self._check_lock(vm, request)
            for disk in vm.disks().values():
                if ":" in disk["file"]:
                    task.log.append(f'  Logical volume "{disk["file"].split(":", 1)[1]}" successfully removed.')
            del self.cluster.vms[vm.vmid]

        return self.cluster.spawn_task(
            (request.http_method, request.path), request.node, "qmdestroy", request.vmid, request.user, work
        )

    # ----------------------------------------------------------------------- qemu: power
    def start(self, request: Request) -> str:
        vm = self.cluster.vm(request.node, request.vmid)

        def work(task: Task) -> list[Callable[[], None]]:
            self._check_lock(vm, request)
            if vm.template:
                raise TaskError("you can't start a vm if it's a template")
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

    def _stop(self, request: Request, task_type: str, must_run: bool) -> str:
        vm = self.cluster.vm(request.node, request.vmid)

        def work(task: Task) -> list[Callable[[], None]]:
            self._check_lock(vm, request)
            if vm.status != "running":
                if must_run:
                    raise TaskError(f"VM {vm.vmid} not running")
                return []
            vm.status, vm.started_at = "stopped", None
            return [self.cluster.hook_stopped(vm)]

        return self.cluster.spawn_task(
            (request.http_method, request.path), request.node, task_type, request.vmid, request.user, work
        )

    def stop(self, request: Request) -> str:
        return self._stop(request, "qmstop", must_run=False)

    def shutdown(self, request: Request) -> str:
        return self._stop(request, "qmshutdown", must_run=True)

    def reboot(self, request: Request) -> str:
        vm = self.cluster.vm(request.node, request.vmid)

        def work(task: Task) -> list[Callable[[], None]]:
            self._check_lock(vm, request)
            if vm.status != "running":
                raise TaskError(f"VM {vm.vmid} not running")
            stopped = self.cluster.hook_stopped(vm)
            vm.apply_pending()  # a reboot through the API applies pending changes
            vm.started_at = time.time()
            return [stopped, self.cluster.hook_started(vm)]

        return self.cluster.spawn_task(
            (request.http_method, request.path), request.node, "qmreboot", request.vmid, request.user, work
        )

    # ----------------------------------------------------------------------- tasks
    def _task(self, request: Request) -> Task:
        self.cluster.node(request.node)
        upid = str(request.params["upid"])
        task = self.cluster.tasks.get(upid)
        if task is None or task.node != request.node:
            raise ApiError(
                500, f"unable to open file '/var/log/pve/tasks/{upid[-2:]}/{upid}' - No such file or directory"
            )
        if task.user != request.user:
            self.require(request, f"/nodes/{request.node}", "Sys.Audit")
        return task

    def task_status(self, request: Request) -> dict[str, Any]:
        return self._task(request).status_json()

    def task_log(self, request: Request) -> list[dict[str, Any]]:
        task = self._task(request)
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
    def _storage_entry(self, node: str, name: str) -> dict[str, Any]:
        storage = self.cluster.storages[name]
        used = self.cluster.storage_used(storage, node)
        return {
            "storage": name,
            "type": storage.type,
            "content": storage.content,
            "active": 1,
            "enabled": 1,
            "shared": int(storage.shared),
            "total": storage.total,
            "used": used,
            "avail": storage.total - used,
        }

    def node_storage(self, request: Request) -> list[dict[str, Any]]:
        self.cluster.node(request.node)
        p = request.params
        out = []
        for name, storage in sorted(self.cluster.storages.items()):
            if not storage.on(request.node):
                continue
            if p.get("storage") and p["storage"] != name:
                continue
            if p.get("content") and not set(p["content"].split(",")) & set(storage.content.split(",")):
                continue
            entry = self._storage_entry(request.node, name)
            entry["used_fraction"] = entry["used"] / entry["total"] if entry["total"] else 0.0
            out.append(entry)
        return out

    def storage_status(self, request: Request) -> dict[str, Any]:
        self.cluster.node(request.node)
        storage = self.cluster.storages.get(request.params["storage"])
        if storage is None or not storage.on(request.node):
            raise ApiError(500, f"storage '{request.params['storage']}' does not exist")
        return self._storage_entry(request.node, storage.name)

    def storage_index(self, request: Request) -> list[dict[str, Any]]:
        return self.storage_index_filtered(request.params.get("type"))

    def storage_index_filtered(self, kind: str | None) -> list[dict[str, Any]]:
        return [{"storage": n} for n, st in sorted(self.cluster.storages.items()) if kind in (None, st.type)]

    # ----------------------------------------------------------------------- storage config
    def _storage(self, name: str) -> Storage:
        storage = self.cluster.storages.get(name)
        if storage is None:
            raise ApiError(500, f"storage '{name}' does not exist")
        return storage

    def storage_get(self, request: Request) -> dict[str, Any]:
        """The storage's section of storage.cfg, as `pvesh get /storage/ID` shows it: never the password."""
        storage = self._storage(request.params["storage"])
        out: dict[str, Any] = {"storage": storage.name, "type": storage.type, "content": storage.content}
        if storage.nodes is not None:
            out["nodes"] = ",".join(storage.nodes)
        for key, value in storage.options.items():
            out[key] = int(value) if key in ("disable", "mkdir", "create-base-path", "create-subdirs") else value
        out["digest"] = storage.digest()
        return out

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
        if digest and digest != storage.digest():
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
