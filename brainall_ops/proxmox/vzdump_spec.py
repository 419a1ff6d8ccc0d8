"""Proxmox vzdump to a Storage Box-backed storage: the role map's `data.vzdump` as Proxmox API
parameters, and what differs between them and what the API reports.

Two objects of the cluster's configuration (/etc/pve, shared by every node), both applied by
phase 2 through the API (`brainall_ops.proxmox.vzdump`) and listed by `brainall-ops plan`:

- a `cifs` storage on the box's share (`POST /storage`). PVE keeps the password apart, in
  /etc/pve/priv/storage/ID.pw, and never returns it: a changed password cannot be seen, so it is
  sent only when the storage is created or when the operator asks for a rotation;
- a vzdump job writing to it (`POST /cluster/backup`, id `brainall-STORAGE`).

This module is pure (role map in, parameters and differences out): the plan imports it offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.environment import PRODUCTION
from brainall_ops.rolemap.models import RoleMap, VzdumpBackup

CONTENT = "backup"
SMB_VERSION = "3.0"
JOB_COMMENT = "brainall-ops: data.vzdump of the role map"
# What PVE assumes for a job option it does not store (its schema's defaults).
JOB_DEFAULTS = {"mode": "snapshot", "compress": "0", "enabled": 1, "all": 0}


@dataclass(frozen=True)
class VzdumpSpec:
    """The storage and the job as they should be in one environment."""

    storage_id: str
    server: str
    share: str
    subdir: str
    username: str
    job_id: str
    schedule: str
    vmids: tuple[int, ...]
    mode: str
    compress: str
    prune: Mapping[str, int] = field(default_factory=dict)

    @property
    def prune_backups(self) -> str:
        """PVE's property string; `keep-all=1` when the role map keeps no count (PVE's default)."""
        return ",".join(f"{key}={value}" for key, value in self.prune.items()) or "keep-all=1"

    @property
    def unc(self) -> str:
        return f"//{self.server}/{self.share}{self.subdir}"

    @property
    def which(self) -> str:
        return "VMIDs " + ",".join(map(str, self.vmids)) if self.vmids else "all VMs"

    def storage_params(self) -> dict[str, str]:
        """`POST /storage` without the password (the caller adds it to the request body only)."""
        return {
            "storage": self.storage_id,
            "type": "cifs",
            "server": self.server,
            "share": self.share,
            "subdir": self.subdir,
            "username": self.username,
            "content": CONTENT,
            "smbversion": SMB_VERSION,
            "prune-backups": self.prune_backups,
        }

    def job_params(self) -> dict[str, str]:
        """`POST /cluster/backup`: the whole job."""
        params = {
            "id": self.job_id,
            "schedule": self.schedule,
            "storage": self.storage_id,
            "mode": self.mode,
            "compress": self.compress,
            "enabled": "1",
            "prune-backups": self.prune_backups,
            "comment": JOB_COMMENT,
        }
        if self.vmids:
            params["vmid"] = ",".join(map(str, self.vmids))
        else:
            params["all"] = "1"
        return params

    def describe_storage(self) -> str:
        return f"CIFS storage '{self.storage_id}' on {self.unc} (user {self.username}, content {CONTENT})"

    def describe_job(self) -> str:
        return (
            f"vzdump job '{self.job_id}' of {self.which} at '{self.schedule}' to '{self.storage_id}' "
            f"({self.mode}, {self.compress}, {self.prune_backups})"
        )


def vzdump_vmids(rm: RoleMap, vz: VzdumpBackup) -> list[int]:
    """The vmids of the named VMs; empty when every VM is backed up (`all 1`)."""
    ids = []
    for name in vz.vms:
        try:
            vm = rm.vm(name)
        except KeyError:
            raise BrainallError(f"data.vzdump.vms: {name!r} is not a VM of the role map") from None
        if vm.vmid is None:
            raise BrainallError(f"data.vzdump.vms: {name!r} has no vmid in the role map (vms[].vmid)")
        ids.append(vm.vmid)
    return ids


def vzdump_spec(rm: RoleMap, environment: str = PRODUCTION) -> VzdumpSpec | None:
    """The storage and job of `environment`; None when the role map has no `data.vzdump`."""
    from brainall_ops.storage import box_endpoint

    if rm.data is None or rm.data.vzdump is None:
        return None
    vz = rm.data.vzdump
    box = box_endpoint(rm, environment)
    prune = {key: value for key, value in (("keep-daily", vz.keep_daily), ("keep-weekly", vz.keep_weekly)) if value}
    return VzdumpSpec(
        storage_id=vz.storage_id,
        server=box.address,
        share=vz.share,
        subdir=f"/{vz.subdir.strip('/')}",
        username=box.user,
        job_id=f"brainall-{vz.storage_id}",
        schedule=vz.schedule,
        vmids=tuple(vzdump_vmids(rm, vz)),
        mode=vz.mode,
        compress=vz.compress,
        prune=prune,
    )


# --------------------------------------------------------------------------- differences
class VzdumpRefusal(BrainallError):
    """The cluster holds something under our ID that the API cannot turn into what we want."""


@dataclass(frozen=True)
class Update:
    """A `PUT` to converge one object: parameters to set, options to delete, and why."""

    params: dict[str, str]
    delete: tuple[str, ...]
    reasons: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.params or self.delete)


def parse_prune(value: Any) -> dict[str, int]:
    """`keep-daily=7,keep-weekly=4` (storage config) or {'keep-daily': 7} (a job's GET) as a dict."""
    if isinstance(value, Mapping):
        items = [(str(k), int(v)) for k, v in value.items()]
    else:
        items = []
        for part in str(value or "").split(","):
            key, eq, raw = part.partition("=")
            if eq:
                items.append((key.strip(), int(raw)))
    out = {key: number for key, number in items if number}
    return out or {"keep-all": 1}


def storage_update(spec: VzdumpSpec, observed: Mapping[str, Any]) -> Update:
    """What `PUT /storage/ID` must set on the observed storage (`GET /storage/ID`).

    The type, server and share of a CIFS storage are fixed in PVE: a storage with our ID that
    differs in them is refused, never deleted (it may hold backups)."""
    name = spec.storage_id
    if observed.get("type") != "cifs":
        raise VzdumpRefusal(
            f"storage '{name}' exists with type {observed.get('type')!r}, not cifs; "
            f"remove it (pvesm remove {name}) or choose another data.vzdump.storage_id"
        )
    for key in ("server", "share"):
        if str(observed.get(key, "")) != getattr(spec, key):
            raise VzdumpRefusal(
                f"storage '{name}' points at {key} {observed.get(key)!r}, the role map at {getattr(spec, key)!r}; "
                f"PVE cannot change a CIFS storage's {key}: remove it (pvesm remove {name}) and rerun"
            )
    wanted = spec.storage_params()
    params: dict[str, str] = {}
    reasons: list[str] = []
    for key in ("subdir", "username", "smbversion"):
        if str(observed.get(key, "")) != wanted[key]:
            params[key] = wanted[key]
            reasons.append(f"{key} {observed.get(key, 'unset')} → {wanted[key]}")
    content = set(str(observed.get("content", "")).split(",")) - {""}
    if content != {CONTENT}:
        params["content"] = CONTENT
        reasons.append(f"content {','.join(sorted(content)) or 'none'} → {CONTENT}")
    if parse_prune(observed.get("prune-backups")) != parse_prune(spec.prune_backups):
        params["prune-backups"] = spec.prune_backups
        reasons.append(f"prune-backups {observed.get('prune-backups', 'unset')} → {spec.prune_backups}")
    delete = ("disable",) if int(observed.get("disable", 0) or 0) else ()
    if delete:
        reasons.append("enabled")
    return Update(params, delete, tuple(reasons))


def _vmids_of(value: Any) -> tuple[int, ...]:
    return tuple(sorted(int(v) for v in str(value or "").replace(";", ",").split(",") if v.strip()))


def job_update(spec: VzdumpSpec, observed: Mapping[str, Any]) -> Update:
    """What `PUT /cluster/backup/ID` must set on the observed job (`GET /cluster/backup/ID`)."""
    wanted = spec.job_params()
    params: dict[str, str] = {}
    delete: list[str] = []
    reasons: list[str] = []
    for key in ("schedule", "storage", "mode", "compress", "comment"):
        now = observed.get(key, JOB_DEFAULTS.get(key))
        if str(now) != wanted[key]:
            params[key] = wanted[key]
            reasons.append(f"{key} {now if now is not None else 'unset'} → {wanted[key]}")
    if int(observed.get("enabled", JOB_DEFAULTS["enabled"])) != 1:
        params["enabled"] = "1"
        reasons.append("enabled")
    if parse_prune(observed.get("prune-backups")) != parse_prune(spec.prune_backups):
        params["prune-backups"] = spec.prune_backups
        reasons.append(f"prune-backups → {spec.prune_backups}")
    every = bool(int(observed.get("all", 0) or 0))
    vmids = _vmids_of(observed.get("vmid"))
    if spec.vmids:
        if every or vmids != tuple(sorted(spec.vmids)):
            params["vmid"] = wanted["vmid"]
            delete += ["all"] if every else []
            reasons.append(f"guests {'all' if every else ','.join(map(str, vmids)) or 'none'} → {wanted['vmid']}")
    elif not every or vmids:
        params["all"] = "1"
        delete += ["vmid"] if vmids else []
        reasons.append(f"guests {','.join(map(str, vmids)) or 'none'} → all")
    return Update(params, tuple(delete), tuple(reasons))


# --------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class VzdumpPlan:
    """What one object (the storage or the job) needs: create, update (how) or nothing."""

    kind: str  # "storage" or "job"
    target: str
    action: Literal["create", "update", "unchanged"]
    summary: str
    update: Update | None = None

    @property
    def symbol(self) -> str:
        return {"create": "+", "update": "~", "unchanged": "="}[self.action]

    def line(self) -> str:
        return f"{self.symbol} {self.action} {self.summary}" if self.action != "unchanged" else f"= {self.summary}"


ROTATE_REASON = "password sent again (rotation asked for)"


def plan_storage(spec: VzdumpSpec, observed: Mapping[str, Any] | None, rotate_password: bool = False) -> VzdumpPlan:
    """The storage's plan from `GET /storage/ID` (None: missing). A password change cannot be seen
    (PVE never returns it): `rotate_password` sends it again, and makes the plan an update."""
    if observed is None:
        return VzdumpPlan("storage", spec.storage_id, "create", spec.describe_storage())
    update = storage_update(spec, observed)
    reasons = update.reasons + ((ROTATE_REASON,) if rotate_password else ())
    if not reasons:
        return VzdumpPlan("storage", spec.storage_id, "unchanged", spec.describe_storage(), update)
    summary = f"storage '{spec.storage_id}': {'; '.join(reasons)}"
    return VzdumpPlan("storage", spec.storage_id, "update", summary, update)


def plan_job(spec: VzdumpSpec, observed: Mapping[str, Any] | None) -> VzdumpPlan:
    """The job's plan from its entry in `GET /cluster/backup` (None: missing)."""
    if observed is None:
        return VzdumpPlan("job", spec.job_id, "create", spec.describe_job())
    update = job_update(spec, observed)
    if update.empty:
        return VzdumpPlan("job", spec.job_id, "unchanged", spec.describe_job(), update)
    return VzdumpPlan("job", spec.job_id, "update", f"vzdump job '{spec.job_id}': {'; '.join(update.reasons)}", update)
