"""What a lab is made of: the host spec and the fixed names of the lab network.

The names are fixed on purpose: the leftover sweep in `runtime.up` finds what a killed run
left behind by exactly these names, so only one lab can run on a machine at a time.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from brainall_ops.errors import BrainallError

LAB_NETWORK = ipaddress.IPv4Network("10.77.0.0/16")
BRIDGE_NAME = "br-brainall"
BRIDGE_ADDRESS = ipaddress.IPv4Interface("10.77.0.1/16")
NFT_FAMILY = "inet"
NFT_TABLE = "brainall_lab"
CGROUP_NAME = "brainall-lab"
APT_PROXY_PORT = 3142
APT_PROXY_URL = f"http://{BRIDGE_ADDRESS.ip}:{APT_PROXY_PORT}"

# systemd-nspawn machine names; they also name the veth (vb-NAME) and the cgroup dir.
_MACHINE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
# RFC 1123 host name (dots allowed for an FQDN).
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


class LabSpecError(BrainallError, ValueError):
    """The host list cannot be booted as a lab."""


@dataclass(frozen=True)
class LabHost:
    """One lab host: `name` is the SSH alias and machine name, `hostname` what the host calls itself.

    `ssh_port`: a port sshd also listens on besides 22 (e.g. 23, as a Hetzner Storage Box), and
    the one the ssh_config alias uses. `extra_addresses`: more lab addresses on the same host
    (e.g. the lab stand-in for a public address).
    """

    name: str
    hostname: str
    address: str
    ssh_port: int = 22
    extra_addresses: tuple[str, ...] = ()
    # Devices this host is denied even where the machine has them (features.WITHHOLDABLE): the
    # path a kernel without them takes (e.g. no autofs: mount units instead of automounts) then
    # runs on any kernel.
    withhold: frozenset[str] = frozenset()

    @property
    def addresses(self) -> tuple[str, ...]:
        return (self.address, *self.extra_addresses)

    def validate(self) -> None:
        if not _MACHINE_NAME.match(self.name):
            raise LabSpecError(f"lab host name {self.name!r}: use 1-31 of [a-z0-9-], starting alphanumeric")
        if not _HOSTNAME.match(self.hostname):
            raise LabSpecError(f"lab host {self.name}: hostname {self.hostname!r} is not a valid host name")
        from brainall_ops.lab.features import WITHHOLDABLE

        if unknown := sorted(self.withhold - WITHHOLDABLE):
            raise LabSpecError(
                f"lab host {self.name}: cannot withhold {', '.join(unknown)} (only {', '.join(sorted(WITHHOLDABLE))})"
            )
        if not 1 <= self.ssh_port <= 65535:
            raise LabSpecError(f"lab host {self.name}: ssh_port {self.ssh_port} is not a TCP port")
        for text in self.addresses:
            try:
                address = ipaddress.IPv4Address(text)
            except ValueError as exc:
                raise LabSpecError(f"lab host {self.name}: address {text!r}: {exc}") from exc
            if address not in LAB_NETWORK or address in (
                LAB_NETWORK.network_address,
                LAB_NETWORK.broadcast_address,
                BRIDGE_ADDRESS.ip,
            ):
                raise LabSpecError(
                    f"lab host {self.name}: address {address} must be a host address of {LAB_NETWORK} "
                    f"other than the bridge {BRIDGE_ADDRESS.ip}"
                )


def validate_hosts(hosts: Sequence[LabHost]) -> None:
    """Each host valid on its own; names, hostnames and addresses unique across the lab."""
    for host in hosts:
        host.validate()
    for what, values in (
        ("name", [host.name for host in hosts]),
        ("hostname", [host.hostname for host in hosts]),
        ("address", [address for host in hosts for address in host.addresses]),
    ):
        duplicates = sorted({value for value in values if values.count(value) > 1})
        if duplicates:
            raise LabSpecError(f"lab hosts share a {what}: {', '.join(duplicates)}")
