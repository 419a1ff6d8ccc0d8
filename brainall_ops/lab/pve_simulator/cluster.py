"""The simulated cluster: nodes, storage, qemu VMs with their config, per-VM locks and async tasks.

Behaviour follows PVE's qemu-server where the toolkit can observe it:

- a VM's config has a current and a pending part; changes to a running VM that cannot be
  hot-plugged (cores, memory, cloud-init, ...) stay pending until the VM is rebooted or
  restarted, while name, tags, onboot, description and network devices apply at once;
- `/cluster/resources` reports current values (maxcpu, maxmem, maxdisk of the boot disk);
- every task holds the VM's config file lock (`/var/lock/qemu-server/lock-VMID.conf`) while it
  runs; another writer waits `lock_wait_s` (PVE: 10 s) and then fails "can't lock file ... got
  timeout"; a clone marks the new VM `lock: clone` until it ends and removes it if it fails;
- `/cluster/nextid` gives the lowest free VMID, with the same race PVE has: two clients can get
  the same number. The loser's clone fails as PVE's clone_vm does: on the same node at once
  ("unable to create VM N: config file already exists", or that as the task's error when both
  passed the early check), from another node as a failing task (pmxcfs refuses the config
  file's rename: "close (rename) atomic file '...' failed: File exists").
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import hashlib
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from brainall_ops.lab.pve_simulator.hooks import VMEvent, VMHook

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4

DISK_KEY = re.compile(r"^(ide|sata|scsi|virtio)\d+$|^(efidisk|tpmstate)0$")
NET_KEY = re.compile(r"^net\d+$")
# Keys PVE applies to a running VM at once (its "fast plug" options and, with the default
# hotplug setting network,disk,usb, network devices); everything else goes pending.
FAST_PLUG = {"name", "description", "onboot", "tags", "protection", "startup", "hookscript", "lock"}
DEFAULT_PRIVILEGES = frozenset(
    {
        "VM.Allocate",
        "VM.Audit",
        "VM.Backup",
        "VM.Clone",
        "VM.Config.CDROM",
        "VM.Config.CPU",
        "VM.Config.Cloudinit",
        "VM.Config.Disk",
        "VM.Config.HWType",
        "VM.Config.Memory",
        "VM.Config.Network",
        "VM.Config.Options",
        "VM.Console",
        "VM.Migrate",
        "VM.PowerMgmt",
        "VM.Snapshot",
        "Datastore.Allocate",
        "Datastore.AllocateSpace",
        "Datastore.AllocateTemplate",  # download-url of the template's image
        "Datastore.Audit",
        "Sys.Audit",
        "Sys.Modify",
        "Sys.AccessNetwork",
        "SDN.Use",
        "Pool.Allocate",
    }
)
# Which privilege a config key needs (PVE's check_vm_modify_config_perm).
KEY_PRIVILEGE: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(cores|sockets|vcpus|cpu|cpulimit|cpuunits|affinity|numa\d*)$"), "VM.Config.CPU"),
    (re.compile(r"^(memory|balloon|shares|hugepages)$"), "VM.Config.Memory"),
    (re.compile(r"^net\d+$"), "VM.Config.Network"),
    (
        re.compile(r"^(ipconfig\d+|ciuser|cipassword|citype|ciupgrade|cicustom|sshkeys|nameserver|searchdomain)$"),
        "VM.Config.Cloudinit",
    ),
    (re.compile(r"^((ide|sata|scsi|virtio)\d+|efidisk0|tpmstate0|unused\d+|scsihw)$"), "VM.Config.Disk"),
    (
        re.compile(r"^(vga|machine|bios|ostype|serial\d+|usb\d+|hostpci\d+|rng0|tablet|keyboard|audio0|agent)$"),
        "VM.Config.HWType",
    ),
]


class ApiError(Exception):
    """An answer PVE gives as an HTTP error: status, the reason line, and per-parameter errors."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        self.status = status
        self.message = message
        self.errors = errors
        super().__init__(message)


class TaskError(Exception):
    """A task that ends with this exit status."""


def lock_error(vmid: int) -> str:
    return f"can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout"


# --------------------------------------------------------------------------- sizes & property strings
def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", text)
    if not match:
        raise ValueError(f"invalid size '{text}'")
    unit = {"": 1, "K": KIB, "M": MIB, "G": GIB, "T": TIB}[match.group(2)]
    return int(float(match.group(1)) * unit)


def format_size(size: int) -> str:
    for unit, factor in (("T", TIB), ("G", GIB), ("M", MIB), ("K", KIB)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def split_property_string(value: str, default_key: str) -> dict[str, str]:
    """`virtio=AA:..,bridge=vmbr1` → {'model': 'virtio', 'macaddr': 'AA:..', 'bridge': 'vmbr1'} (nets),
    `local-lvm:vm-1-disk-0,size=3G` → {'file': ..., 'size': '3G'} (disks). Values stay strings."""
    out: dict[str, str] = {}
    for part in value.split(","):
        if not part:
            continue
        key, eq, raw = part.partition("=")
        if not eq:
            out[default_key] = part
        elif default_key == "model" and re.fullmatch(r"[a-z0-9_-]+", key) and ":" in raw and "model" not in out:
            out["model"], out["macaddr"] = key, raw
        else:
            out[key] = raw
    return out


def join_disk(parts: dict[str, str]) -> str:
    rest = [f"{k}={v}" for k, v in parts.items() if k != "file"]
    return ",".join([parts["file"], *rest])


def join_net(parts: dict[str, str]) -> str:
    head = f"{parts['model']}={parts['macaddr']}" if "macaddr" in parts else parts["model"]
    rest = [f"{k}={v}" for k, v in parts.items() if k not in ("model", "macaddr")]
    return ",".join([head, *rest])


# --------------------------------------------------------------------------- state
@dataclass
class Token:
    secret: str
    # ACL path -> privileges, propagated to every path below it
    privileges: dict[str, set[str]] = field(default_factory=lambda: {"/": set(DEFAULT_PRIVILEGES)})

    def allows(self, path: str, privilege: str) -> bool:
        for acl_path, privileges in self.privileges.items():
            below = acl_path == "/" or path == acl_path or path.startswith(acl_path.rstrip("/") + "/")
            if below and privilege in privileges:
                return True
        return False


@dataclass
class Node:
    name: str
    cpus: int
    cores: int
    cpu_model: str
    memory_total: int
    memory_base_used: int  # the host itself and VMs the simulator does not model
    rootfs_total: int = 100 * GIB
    online: bool = True


@dataclass
class Storage:
    name: str
    type: Literal["lvmthin", "rbd", "dir", "lvm", "cifs"]
    shared: bool
    total: int
    base_used: int = 0
    content: str = "images,rootdir"
    nodes: list[str] | None = None  # None: every node
    # The rest of the storage's section in storage.cfg (server, share, subdir, prune-backups, ...),
    # as PVE keeps it: strings, the password never among them.
    options: dict[str, str] = field(default_factory=dict)
    # PVE keeps a CIFS password in /etc/pve/priv/storage/ID.pw; the simulator mounts nothing, so it
    # keeps only a digest (enough for tests to see a rotation, and nothing to leak).
    password_sha256: str | None = None

    def on(self, node: str) -> bool:
        return self.nodes is None or node in self.nodes

    def digest(self) -> str:
        text = json.dumps([self.type, self.content, self.nodes, self.options], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()


@dataclass
class VM:
    vmid: int
    node: str
    config: dict[str, str]
    pending: dict[str, str] = field(default_factory=dict)
    pending_delete: list[str] = field(default_factory=list)
    status: Literal["running", "stopped"] = "stopped"
    started_at: float | None = None

    @property
    def name(self) -> str:
        return self.config.get("name", f"VM {self.vmid}")

    @property
    def template(self) -> bool:
        return self.config.get("template") == "1"

    def merged(self) -> dict[str, str]:
        merged = {k: v for k, v in self.config.items() if k not in self.pending_delete}
        merged.update(self.pending)
        return merged

    def apply_pending(self) -> None:
        for key in self.pending_delete:
            self.config.pop(key, None)
        self.config.update(self.pending)
        self.pending.clear()
        self.pending_delete.clear()

    def cpus(self) -> int:
        if "vcpus" in self.config:
            return int(self.config["vcpus"])
        return int(self.config.get("sockets", "1")) * int(self.config.get("cores", "1"))

    def memory_bytes(self) -> int:
        raw = self.config.get("memory", "512")
        current = split_property_string(raw, "current").get("current", "512")
        return int(current) * MIB

    def disks(self, config: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
        return {
            key: split_property_string(value, "file")
            for key, value in (config or self.config).items()
            if DISK_KEY.match(key)
        }

    def boot_disk(self) -> tuple[str, dict[str, str]] | None:
        disks = {k: d for k, d in self.disks().items() if d.get("media") != "cdrom" and "cloudinit" not in d["file"]}
        order = re.search(r"order=([^,]+)", self.config.get("boot", ""))
        for key in order.group(1).split(";") if order else []:
            if key in disks:
                return key, disks[key]
        for key in sorted(disks, key=_disk_sort_key):
            return key, disks[key]
        return None

    def boot_disk_size(self) -> int:
        boot = self.boot_disk()
        return parse_size(boot[1].get("size", "0")) if boot else 0

    def ip_address(self) -> str | None:
        ipconfig = split_property_string(self.config.get("ipconfig0", ""), "ip")
        ip = ipconfig.get("ip", "")
        return ip.split("/")[0] if "/" in ip else None

    def digest(self) -> str:
        text = json.dumps([self.config, self.pending, self.pending_delete], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()


def _disk_sort_key(key: str) -> tuple[int, int]:
    order = ["scsi", "virtio", "sata", "ide", "efidisk", "tpmstate"]
    bus = re.match(r"[a-z]+", key)
    assert bus is not None
    return order.index(bus.group(0)), int(key[bus.end() :] or 0)


@dataclass
class Task:
    upid: str
    node: str
    type: str
    id: str
    user: str
    pid: int
    pstart: int
    starttime: int
    status: Literal["running", "stopped"] = "running"
    exitstatus: str | None = None
    log: list[str] = field(default_factory=list)
    endtime: int | None = None
    started_mono: float = 0.0
    ended_mono: float | None = None

    def status_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "upid": self.upid,
            "node": self.node,
            "pid": self.pid,
            "pstart": self.pstart,
            "starttime": self.starttime,
            "type": self.type,
            "id": self.id,
            "user": self.user,
            "status": self.status,
        }
        if self.status == "stopped":
            out["exitstatus"] = self.exitstatus or "OK"
        return out


FaultKind = Literal["http_error", "drop", "lock_timeout", "task_fail", "task_slow", "vmid_race"]
REQUEST_FAULTS = ("http_error", "drop")
TASK_FAULTS = ("task_fail", "task_slow", "lock_timeout")


@dataclass
class Fault:
    """An injected fault: the next `count` matching requests (after `skip` matches) get it.

    http_error: answer `status` with `message` instead of doing anything.
    drop: close the connection without an answer; `when` = before (nothing done), or after a
        request that succeeded (done, but its answer is lost).
    lock_timeout: a sync call answers 500 "can't lock file ... got timeout"; an async one's task fails so.
    task_fail: the task fails with `message` (and what it would have done is not done).
    task_slow: the task takes `seconds` longer.
    vmid_race: another client's clone takes this clone's new VMID first, on node `message` (this
        clone's node when unset): on the same node it lands before the early check, on another
        node just before this clone's task writes its config; PVE's answer follows from that.
    """

    kind: FaultKind
    method: str | None = None
    path: str | None = None  # glob on the API path, e.g. /nodes/*/qemu/*/clone
    task_type: str | None = None
    count: int = 1
    skip: int = 0
    status: int = 500
    message: str | None = None
    seconds: float = 0.0
    when: Literal["before", "after"] = "before"
    fired: int = 0

    def matches(self, method: str, path: str, task_type: str | None) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if self.path and not fnmatch.fnmatchcase(path, self.path):
            return False
        return not (self.task_type and self.task_type != task_type)


@dataclass
class Settings:
    latency_s: float = 0.0  # added to every API call (25 ms: Frankfurt from Helsinki)
    task_seconds: float = 0.05  # how long each task runs
    lock_wait_s: float = 10.0  # how long a writer waits for a VM's file lock (PVE: 10 s)
    boot_seconds: float = 0.0  # extra time a start task takes (a real VM boots)


@dataclass
class RequestRecord:
    seq: int
    time: float
    method: str
    path: str
    params: dict[str, str]
    status: int | str
    user: str | None


# --------------------------------------------------------------------------- the cluster
class Cluster:
    def __init__(
        self,
        settings: Settings | None = None,
        hook: VMHook | None = None,
        state_file: Path | None = None,
        seed: int = 1,
        image_sources: dict[str, Path] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.hook = hook
        self.state_file = state_file
        self.lock = threading.RLock()
        self.lock_changed = threading.Condition(self.lock)
        self.nodes: dict[str, Node] = {}
        self.storages: dict[str, Storage] = {}
        self.backup_jobs: dict[str, dict[str, str]] = {}  # jobs.cfg `vzdump:` sections, by job id
        self.vms: dict[int, VM] = {}
        # Files in file-based storages ("NODE/STORAGE" -> volname -> size, format, ctime), e.g.
        # "import/debian-12-genericcloud-amd64.qcow2" in local after a download-url.
        self.volumes: dict[str, dict[str, dict[str, Any]]] = {}
        # What a download-url of a URL reads instead (the simulator never fetches from the network).
        self.image_sources: dict[str, Path] = dict(image_sources or {})
        self.tasks: dict[str, Task] = {}
        self.tokens: dict[str, Token] = {}
        self.faults: list[Fault] = []
        self.requests: list[RequestRecord] = []
        # (node, vmid) -> (mode, holders): /var/lock/qemu-server/lock-VMID.conf is each node's own file
        self.file_locks: dict[tuple[str, int], tuple[str, int]] = {}
        self.random = random.Random(seed)
        self.next_pid = 0x1000
        self.pstart = int(time.monotonic() * 100) % 0xFFFFFFF
        self.threads: list[threading.Thread] = []
        if state_file is not None and state_file.exists():
            self.load(state_file)

    # ----------------------------------------------------------------------- building
    def add_node(self, node: Node) -> None:
        with self.lock:
            self.nodes[node.name] = node

    def add_storage(self, storage: Storage) -> None:
        with self.lock:
            self.storages[storage.name] = storage

    def add_vm(self, vm: VM) -> None:
        with self.lock:
            if vm.vmid in self.vms:
                raise ValueError(f"VMID {vm.vmid} is taken")
            self.vms[vm.vmid] = vm

    def add_token(self, token_id: str, secret: str, privileges: dict[str, set[str]] | None = None) -> None:
        with self.lock:
            self.tokens[token_id] = Token(secret, privileges or {"/": set(DEFAULT_PRIVILEGES)})

    def random_mac(self) -> str:
        tail = ":".join(f"{self.random.randrange(256):02X}" for _ in range(3))
        return f"BC:24:11:{tail}"

    def random_uuid(self) -> str:
        h = f"{self.random.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    # ----------------------------------------------------------------------- lookups
    def node(self, name: str) -> Node:
        node = self.nodes.get(name)
        if node is None:
            raise ApiError(595, f"no such cluster node '{name}'")
        return node

    def vm(self, node: str, vmid: int) -> VM:
        self.node(node)
        vm = self.vms.get(vmid)
        if vm is None or vm.node != node:
            raise ApiError(500, f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist")
        return vm

    def vm_by_name(self, name: str) -> list[VM]:
        with self.lock:
            return [vm for vm in self.vms.values() if vm.config.get("name") == name]

    def storage_used(self, storage: Storage, node: str) -> int:
        used = storage.base_used
        for vm in self.vms.values():
            if not storage.shared and vm.node != node:
                continue
            for disk in vm.disks(vm.merged()).values():
                if disk["file"].split(":", 1)[0] == storage.name and "size" in disk:
                    used += parse_size(disk["size"])
        for volume in self.volumes.get(f"{node}/{storage.name}", {}).values():
            used += int(volume["size"])
        return used

    def storage_cfg_digest(self) -> str:
        """The digest of /etc/pve/storage.cfg: any storage's change changes it."""
        with self.lock:
            return hashlib.sha1("".join(s.digest() for _, s in sorted(self.storages.items())).encode()).hexdigest()

    def node_memory_used(self, node: str) -> int:
        running = sum(vm.memory_bytes() for vm in self.vms.values() if vm.node == node and vm.status == "running")
        return self.nodes[node].memory_base_used + running

    def next_free_vmid(self) -> int:
        vmid = 100
        while vmid in self.vms:
            vmid += 1
        return vmid

    # ----------------------------------------------------------------------- faults & log
    def add_fault(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_fault(
        self, kinds: tuple[str, ...], method: str, path: str, task_type: str | None = None, when: str | None = None
    ) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.kind not in kinds or not fault.matches(method, path, task_type):
                    continue
                if when is not None and fault.when != when:
                    continue
                fault.fired += 1
                if fault.fired <= fault.skip:
                    continue
                if fault.fired - fault.skip >= fault.count:
                    self.faults.remove(fault)
                return fault
        return None

    def record(self, record: RequestRecord) -> None:
        with self.lock:
            self.requests.append(record)

    def request_log(self, since: int = 0) -> list[dict[str, Any]]:
        with self.lock:
            return [asdict(r) for r in self.requests if r.seq >= since]

    def next_seq(self) -> int:
        with self.lock:
            return len(self.requests)

    # ----------------------------------------------------------------------- file locks
    def acquire(self, key: tuple[str, int], timeout: float, shared: bool = False) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock_changed:
            while True:
                held = self.file_locks.get(key)
                if held is None:
                    self.file_locks[key] = ("shared" if shared else "exclusive", 1)
                    return True
                if shared and held[0] == "shared":
                    self.file_locks[key] = ("shared", held[1] + 1)
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock_changed.wait(left)

    def release(self, key: tuple[str, int]) -> None:
        with self.lock_changed:
            mode, holders = self.file_locks.get(key, ("exclusive", 1))
            if holders > 1:
                self.file_locks[key] = (mode, holders - 1)
            else:
                self.file_locks.pop(key, None)
            self.lock_changed.notify_all()

    @contextlib.contextmanager
    def file_lock(self, node: str, vmid: int) -> Iterator[None]:
        """A sync call's file lock: waits like PVE, then fails with PVE's message."""
        if not self.acquire((node, vmid), self.settings.lock_wait_s):
            raise ApiError(500, lock_error(vmid))
        try:
            yield
        finally:
            self.release((node, vmid))

    # ----------------------------------------------------------------------- tasks
    def new_upid(self, node: str, task_type: str, task_id: str, user: str) -> Task:
        with self.lock:
            self.next_pid += 1
            starttime = int(time.time())
            upid = f"UPID:{node}:{self.next_pid:08X}:{self.pstart:08X}:{starttime:08X}:{task_type}:{task_id}:{user}:"
            task = Task(upid, node, task_type, task_id, user, self.next_pid, self.pstart, starttime)
            task.started_mono = time.monotonic()
            self.tasks[upid] = task
            return task

    def spawn_task(
        self,
        request: tuple[str, str],
        node: str,
        task_type: str,
        vmid: int,
        user: str,
        work: Callable[[Task], list[Callable[[], None]] | None],
        locks: list[tuple[int, bool, float | None]] | None = None,
        on_failure: Callable[[], None] | None = None,
        begin: Callable[[Task], None] | None = None,
    ) -> str:
        """Start a worker: lock, `begin`, wait the task's duration, then `work` under the state lock.

        `locks` are (vmid, shared, timeout: None for `lock_wait_s`). `begin` runs under the
        state lock once the locks are held (a clone writes its placeholder config there). Both
        may raise TaskError; `work` may return callbacks run after it, outside the state lock
        (the lab hook boots a host there); if one raises, the task fails.
        """
        method, path = request
        fault = self.take_fault(TASK_FAULTS, method, path, task_type)
        task = self.new_upid(node, task_type, str(vmid), user)
        duration = self.settings.task_seconds + (fault.seconds if fault and fault.kind == "task_slow" else 0.0)
        if task_type in ("qmstart", "qmreboot"):
            duration += self.settings.boot_seconds

        def run() -> None:
            held: list[int] = []
            try:
                for lock_vmid, shared, wait in locks if locks is not None else [(vmid, False, None)]:
                    timeout = self.settings.lock_wait_s if wait is None else min(wait, self.settings.lock_wait_s)
                    if not self.acquire((node, lock_vmid), timeout, shared):
                        raise TaskError(lock_error(lock_vmid))
                    held.append(lock_vmid)
                if fault is not None and fault.kind == "lock_timeout":
                    time.sleep(min(self.settings.lock_wait_s, 0.05))
                    raise TaskError(lock_error(vmid))
                if begin is not None:
                    with self.lock:
                        begin(task)
                time.sleep(duration)
                if fault is not None and fault.kind == "task_fail":
                    for line in (fault.message or "injected failure").splitlines()[1:]:
                        task.log.append(line)
                    raise TaskError((fault.message or "injected failure").splitlines()[0])
                with self.lock:
                    after = work(task) or []
                for callback in after:
                    callback()
                self.finish(task, "OK")
            except TaskError as exc:
                if on_failure is not None:
                    with self.lock:
                        on_failure()
                self.finish(task, str(exc))
            except Exception as exc:  # a bug in the simulator: report it as the task's failure
                if on_failure is not None:
                    with self.lock:
                        on_failure()
                self.finish(task, f"simulator error: {type(exc).__name__}: {exc}")
            finally:
                for lock_vmid in held:
                    self.release((node, lock_vmid))

        thread = threading.Thread(target=run, name=f"task-{task_type}-{vmid}", daemon=True)
        with self.lock:
            self.threads = [t for t in self.threads if t.is_alive()]
            self.threads.append(thread)
        thread.start()
        return task.upid

    def finish(self, task: Task, exitstatus: str) -> None:
        exitstatus = exitstatus.rstrip("\n").replace("\n", " ")  # fork_worker: s/\n/ /mg
        with self.lock:
            task.log.append("TASK OK" if exitstatus == "OK" else f"TASK ERROR: {exitstatus}")
            task.exitstatus = exitstatus
            task.status = "stopped"
            task.endtime = int(time.time())
            task.ended_mono = time.monotonic()
            self.save()

    def running_tasks(self) -> list[Task]:
        with self.lock:
            return [t for t in self.tasks.values() if t.status == "running"]

    def wait_idle(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running_tasks():
                return True
            time.sleep(0.02)
        return False

    # ----------------------------------------------------------------------- events for the hook
    def vm_event(self, vm: VM) -> VMEvent:
        keys = unquote(vm.config.get("sshkeys", ""))
        return VMEvent(
            vmid=vm.vmid,
            name=vm.name,
            node=vm.node,
            address=vm.ip_address(),
            ci_user=vm.config.get("ciuser"),
            ssh_keys=tuple(line for line in keys.splitlines() if line.strip()),
        )

    def hook_started(self, vm: VM) -> Callable[[], None]:
        event = self.vm_event(vm)

        def call() -> None:
            if self.hook is not None:
                try:
                    self.hook.on_vm_started(event)
                except Exception as exc:
                    with self.lock:
                        vm.status = "stopped"
                        vm.started_at = None
                    raise TaskError(f"start failed: the VM did not come up: {exc}") from None

        return call

    def hook_stopped(self, vm: VM) -> Callable[[], None]:
        event = self.vm_event(vm)

        def call() -> None:
            if self.hook is not None:
                try:
                    self.hook.on_vm_stopped(event)
                except Exception as exc:
                    raise TaskError(f"stop failed: {exc}") from None

        return call

    # ----------------------------------------------------------------------- persistence
    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "nodes": [asdict(n) for n in self.nodes.values()],
                "storages": [asdict(s) for s in self.storages.values()],
                "vms": [asdict(v) for v in self.vms.values()],
                "backup_jobs": copy.deepcopy(self.backup_jobs),
                "volumes": copy.deepcopy(self.volumes),
                "tasks": [
                    {k: v for k, v in asdict(t).items() if k not in ("started_mono", "ended_mono")}
                    for t in list(self.tasks.values())[-500:]
                ],
                "next_pid": self.next_pid,
            }

    def save(self) -> None:
        if self.state_file is None:
            return
        with self.lock:
            data = self.snapshot()
            tmp = self.state_file.with_name(self.state_file.name + ".tmp")
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, self.state_file)

    def load(self, path: Path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        with self.lock:
            self.nodes = {n["name"]: Node(**n) for n in data["nodes"]}
            self.storages = {s["name"]: Storage(**s) for s in data["storages"]}
            self.vms = {v["vmid"]: VM(**v) for v in data["vms"]}
            self.backup_jobs = data.get("backup_jobs", {})
            self.volumes = data.get("volumes", {})
            for raw in data.get("tasks", []):
                task = Task(**raw)
                if task.status == "running":  # the simulator stopped while it ran
                    task.status, task.exitstatus = "stopped", "interrupted by simulator restart"
                self.tasks[task.upid] = task
            for vm in self.vms.values():  # a clone that was running when the simulator stopped
                if vm.config.get("lock") == "clone":
                    vm.config.pop("lock")
            self.next_pid = data.get("next_pid", self.next_pid)

    def copy_config(self, vm: VM) -> dict[str, str]:
        return copy.deepcopy(vm.config)
