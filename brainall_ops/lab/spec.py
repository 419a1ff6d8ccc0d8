"""The lab's host list, derived from the role map's `lab` environment."""

from __future__ import annotations

from pathlib import Path

from brainall_ops.lab.model import LabHost

LAB_ENVIRONMENT = "lab"


def lab_hosts(rolemap_path: Path | None = None, *, with_vms: bool = False) -> list[LabHost]:
    """Every fleet host of the role map (and the Storage Box's stand-in) at its lab address.

    The VMs of phase 2 are left out by default: in a rehearsal they appear when phase 2 creates
    them through the Proxmox API (the simulator's lab hook boots them). `with_vms` boots them at
    once, for rehearsing later phases without going through phase 2.
    """
    from brainall_ops.planning.fleet import place_rolemap
    from brainall_ops.rolemap import load_rolemap
    from brainall_ops.rolemap.environment import endpoints

    rm = load_rolemap(rolemap_path)
    vm_names = {vm.name for vm in rm.vms}
    vm_hosts = {p.vm: p.host for p in place_rolemap(rm).placements}
    hosts = []
    for ep in endpoints(rm, LAB_ENVIRONMENT, vm_hosts).values():
        if ep.name in vm_names and not with_vms:
            continue
        hosts.append(
            LabHost(
                name=ep.name,
                hostname=ep.name,
                address=str(ep.address),
                # the Storage Box stand-in answers SSH on its production port too (23)
                ssh_port=ep.ssh_port,
                extra_addresses=(str(ep.public_address),) if ep.public_address else (),
            )
        )
    return hosts
