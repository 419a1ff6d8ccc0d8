"""Facts about the Proxmox cluster, read on the controller through the API.

pyinfra's `FactBase` runs a shell command on the target host; this state lives behind the
Proxmox API and is read on the controller, so these facts mirror FactBase's shape (a name, a
`default`, a `process` of the raw answer) with a `read(client)` instead of a `command`. They are
cached per pyinfra run: `/cluster/resources` is read once and serves the plan of every host
(pyinfra prepares hosts in parallel greenlets; the first one reads, the others wait for it),
and the operation bodies that pyinfra runs again at execute time reuse it. What an operation
changes, it reads fresh (`read_cluster`) at execute time, not from this cache.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from brainall_ops.proxmox.client import ConnectionSettings, ProxmoxClient
from brainall_ops.proxmox.spec import ObservedVM, VMDetail, tags_of

T = TypeVar("T")


@dataclass(frozen=True)
class NodeUsage:
    node: str
    status: str
    maxmem: int
    mem: int
    maxcpu: int

    @property
    def free(self) -> int:
        return max(self.maxmem - self.mem, 0)


@dataclass(frozen=True)
class ClusterState:
    vms: tuple[ObservedVM, ...]
    nodes: dict[str, NodeUsage]

    def vm(self, name: str) -> ObservedVM | None:
        return next((v for v in self.vms if v.name == name and not v.template), None)

    def templates(self, name: str) -> list[ObservedVM]:
        return [v for v in self.vms if v.template and v.name == name]


def parse_resources(raw: list[dict[str, Any]]) -> ClusterState:
    vms = []
    nodes = {}
    for entry in raw:
        if entry.get("type") == "qemu":
            vms.append(
                ObservedVM(
                    vmid=int(entry["vmid"]),
                    name=str(entry.get("name", "")),
                    node=str(entry.get("node", "")),
                    status=str(entry.get("status", "unknown")),
                    maxcpu=int(entry.get("maxcpu", 0)),
                    maxmem=int(entry.get("maxmem", 0)),
                    maxdisk=int(entry.get("maxdisk", 0)),
                    tags=tags_of(entry.get("tags")),
                    template=bool(int(entry.get("template", 0) or 0)),
                    lock=entry.get("lock") or None,
                )
            )
        elif entry.get("type") == "node":
            nodes[entry["node"]] = NodeUsage(
                node=entry["node"],
                status=str(entry.get("status", "unknown")),
                maxmem=int(entry.get("maxmem", 0)),
                mem=int(entry.get("mem", 0)),
                maxcpu=int(entry.get("maxcpu", 0)),
            )
    return ClusterState(tuple(sorted(vms, key=lambda v: v.vmid)), nodes)


def read_cluster(client: ProxmoxClient) -> ClusterState:
    """One `/cluster/resources` call: every node and VM of the cluster."""
    return parse_resources(client.get("/cluster/resources"))


def read_vm_detail(client: ProxmoxClient, vm: ObservedVM) -> VMDetail:
    """The VM's config as PVE will run it (pending values applied) and which keys are pending."""
    config = client.get(f"/nodes/{vm.node}/qemu/{vm.vmid}/config")
    pending: frozenset[str] = frozenset()
    if vm.status == "running":
        entries = client.get(f"/nodes/{vm.node}/qemu/{vm.vmid}/pending")
        pending = frozenset(e["key"] for e in entries if "pending" in e or e.get("delete"))
    return VMDetail(config=config, pending_keys=pending)


def read_storage(client: ProxmoxClient, storage_id: str) -> dict[str, Any] | None:
    """A storage's section of storage.cfg (`GET /storage/ID`; never its password), None if there is none."""
    from brainall_ops.proxmox.client import ApiError

    try:
        return dict(client.get(f"/storage/{storage_id}"))
    except ApiError as exc:
        if exc.status == 500 and f"storage '{storage_id}' does not exist" in exc.reason:
            return None
        raise


def read_backup_job(client: ProxmoxClient, job_id: str) -> dict[str, Any] | None:
    """A vzdump job from `GET /cluster/backup` (the list: no error message to tell "missing" by)."""
    return next((dict(job) for job in client.get("/cluster/backup") if job.get("id") == job_id), None)


# --------------------------------------------------------------------------- facts, cached per run
class ApiFact(Generic[T]):
    """A fact read from the Proxmox API on the controller (see the module docstring)."""

    name: ClassVar[str]

    def __init_subclass__(cls) -> None:
        cls.name = f"proxmox.{cls.__name__}"

    @staticmethod
    def default() -> T:  # type: ignore[misc]
        raise NotImplementedError

    def read(self, client: ProxmoxClient, *args: Any) -> T:
        raise NotImplementedError


class ClusterResources(ApiFact[ClusterState]):
    """Nodes and qemu VMs of the whole cluster (`GET /cluster/resources`)."""

    def read(self, client: ProxmoxClient, *args: Any) -> ClusterState:
        return read_cluster(client)


class VMConfig(ApiFact[VMDetail]):
    """One VM's config and pending keys (`GET .../config`, and `.../pending` when it runs)."""

    def read(self, client: ProxmoxClient, *args: Any) -> VMDetail:
        (vm,) = args
        return read_vm_detail(client, vm)


class StorageConfig(ApiFact["dict[str, Any] | None"]):
    """One storage's config (`GET /storage/ID`), None when it does not exist."""

    def read(self, client: ProxmoxClient, *args: Any) -> dict[str, Any] | None:
        (storage_id,) = args
        return read_storage(client, storage_id)


class BackupJob(ApiFact["dict[str, Any] | None"]):
    """One vzdump job of the cluster (`GET /cluster/backup`), None when it does not exist."""

    def read(self, client: ProxmoxClient, *args: Any) -> dict[str, Any] | None:
        (job_id,) = args
        return read_backup_job(client, job_id)


_cache: dict[Hashable, Any] = {}
_cache_lock = threading.Lock()
_clients: dict[Hashable, ProxmoxClient] = {}


def client_for(settings: ConnectionSettings, owner: str = "facts") -> ProxmoxClient:
    """One client per connection and owner (a pyinfra host executes with its own session)."""
    key = (settings, owner)
    with _cache_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = ProxmoxClient(settings)
        return client


def get_api_fact(fact: type[ApiFact[T]], settings: ConnectionSettings, *args: Hashable) -> T:
    key = (fact.name, settings, args)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    client = client_for(settings)
    with _fact_lock(key):
        with _cache_lock:
            if key in _cache:
                return _cache[key]
        value = fact().read(client, *args)
        with _cache_lock:
            _cache[key] = value
    return value


_key_locks: dict[Hashable, threading.Lock] = {}


def _fact_lock(key: Hashable) -> threading.Lock:
    with _cache_lock:
        return _key_locks.setdefault(key, threading.Lock())


def forget_facts() -> None:
    """Drop cached facts and clients (a new run in the same process: pyinfra's API, tests)."""
    with _cache_lock:
        _cache.clear()
        _clients.clear()
        _key_locks.clear()
