"""The lab's host list, derived from the role map's `lab` environment."""

from __future__ import annotations

from pathlib import Path

from brainall_ops.lab.model import LabHost

LAB_ENVIRONMENT = "lab"


def parse_withhold(specs: list[str] | tuple[str, ...]) -> dict[str, frozenset[str]]:
    """`HOST=FEATURE[,FEATURE]` items (`lab up --withhold`, BRAINALL_LAB_WITHHOLD split on spaces)."""
    from brainall_ops.lab.model import LabSpecError

    out: dict[str, set[str]] = {}
    for spec in specs:
        host, sep, features = spec.partition("=")
        if not sep or not host or not features:
            raise LabSpecError(f"--withhold {spec!r}: use HOST=FEATURE (e.g. gpu=autofs)")
        out.setdefault(host, set()).update(f for f in features.split(",") if f)
    return {host: frozenset(features) for host, features in out.items()}


def lab_hosts(
    rolemap_path: Path | None = None,
    *,
    with_vms: bool = False,
    withhold: dict[str, frozenset[str]] | None = None,
) -> list[LabHost]:
    """Every fleet host of the role map (and the Storage Box's stand-in) at its lab address.

    The VMs of phase 2 are left out by default: in a rehearsal they appear when phase 2 creates
    them through the Proxmox API (the simulator's lab hook boots them). `with_vms` boots them at
    once, for rehearsing later phases without going through phase 2. `withhold`: devices a host
    is denied (LabHost.withhold), by host name.
    """
    from brainall_ops.lab.model import LabSpecError
    from brainall_ops.planning.fleet import place_rolemap
    from brainall_ops.rolemap import load_rolemap
    from brainall_ops.rolemap.environment import endpoints

    withhold = withhold or {}
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
                withhold=withhold.get(ep.name, frozenset()),
            )
        )
    if unknown := sorted(set(withhold) - {h.name for h in hosts}):
        raise LabSpecError(f"--withhold names {', '.join(unknown)}, not lab hosts ({', '.join(h.name for h in hosts)})")
    return hosts
