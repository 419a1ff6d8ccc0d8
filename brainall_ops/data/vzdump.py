"""Proxmox vzdump to a Storage Box-backed storage, rendered from the role map.

Two config entries in Proxmox's own formats: a `cifs` storage in /etc/pve/storage.cfg on the
box's share, and a vzdump job in /etc/pve/jobs.cfg writing to it. Rendered and unit-tested only:
the lab has no Proxmox, so neither is exercised against a real cluster. On a node they are
applied with `pvesm add cifs ...` (which stores the box password in /etc/pve/priv/storage/ID.pw)
and `pvesh create /cluster/backup ...`, or by merging the rendered entries.
"""

from __future__ import annotations

from dataclasses import dataclass

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.environment import PRODUCTION
from brainall_ops.rolemap.models import RoleMap, VzdumpBackup


@dataclass(frozen=True)
class VzdumpConfig:
    storage_cfg: str
    jobs_cfg: str


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


def render_vzdump(rm: RoleMap, environment: str = PRODUCTION) -> VzdumpConfig:
    from brainall_ops.data.rendering import render
    from brainall_ops.storage.logic import box_endpoint

    if rm.data is None or rm.data.vzdump is None:
        raise BrainallError("the role map has no data.vzdump section")
    vz = rm.data.vzdump
    box = box_endpoint(rm, environment)
    prune = ",".join(
        f"{key}={value}" for key, value in (("keep-daily", vz.keep_daily), ("keep-weekly", vz.keep_weekly)) if value
    )
    return VzdumpConfig(
        storage_cfg=render("vzdump-storage.cfg.j2", vz=vz, server=box.address, user=box.user, prune=prune),
        jobs_cfg=render("vzdump-job.cfg.j2", vz=vz, vmids=vzdump_vmids(rm, vz)),
    )
