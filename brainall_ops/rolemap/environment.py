"""Environment layer: the same fleet with production or lab addresses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Literal

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.models import RoleMap

PRODUCTION = "production"


@dataclass(frozen=True)
class Endpoint:
    """Where a fleet member answers in one environment."""

    name: str
    kind: Literal["host", "vm", "storage_box"]
    address: IPv4Address
    public_address: IPv4Address | None
    ssh_port: int
    ssh_user: str
    site: str


def endpoints(
    rm: RoleMap, environment: str = PRODUCTION, vm_hosts: Mapping[str, str] | None = None
) -> dict[str, Endpoint]:
    """Every host, VM to create and the Storage Box, with the environment's overrides applied.

    In production the Storage Box is addressed by its DNS name and is not an IP endpoint; it is
    left out. In other environments it appears when the environment gives it an address.
    `vm_hosts` (VM -> Proxmox host, from placement) gives each VM the site of its host.
    """
    if environment != PRODUCTION and environment not in rm.environments:
        known = ", ".join(sorted({PRODUCTION, *rm.environments}))
        raise BrainallError(f"unknown environment {environment!r} (known: {known})")
    overrides = rm.environments[environment].hosts if environment in rm.environments else {}
    ci_user = rm.proxmox.ci_user if rm.proxmox else "root"

    base: list[Endpoint] = [
        Endpoint(
            h.name,
            "host" if h.kind == "bare_metal" else "vm",
            h.address,
            h.public_address,
            h.ssh.port,
            h.ssh.user,
            h.site,
        )
        for h in rm.hosts
    ]
    placed_site = {h.name: h.site for h in rm.hosts}
    for vm in rm.vms:
        host = (vm_hosts or {}).get(vm.name) or vm.host
        site = placed_site.get(host or "", rm.sites[0].name)
        base.append(Endpoint(vm.name, "vm", vm.address, None, 22, ci_user, site))
    if rm.storage and rm.storage.box.name in overrides:
        box = rm.storage.box
        base.append(Endpoint(box.name, "storage_box", IPv4Address("0.0.0.0"), None, box.ssh_port, box.user, box.site))

    result: dict[str, Endpoint] = {}
    for ep in base:
        o = overrides.get(ep.name)
        if o is not None:
            ep = Endpoint(
                ep.name,
                ep.kind,
                o.address or ep.address,
                o.public_address or ep.public_address,
                o.ssh_port or ep.ssh_port,
                o.ssh_user or ep.ssh_user,
                ep.site,
            )
        result[ep.name] = ep
    return result
