"""The role map's firewall policy, compiled for one host: which sources may reach which ports.

Pure logic (no pyinfra, no jinja2): the deploy renders a `HostFirewall` into an nftables ruleset,
`brainall-ops plan` diffs the renderings. The role map loader has already refused unknown names,
bad ports, ports the policy closes and hosts left without SSH (rolemap/references.py), so what
is left to fail here is an environment that does not exist or a member without an address.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, collapse_addresses

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.environment import PRODUCTION, Endpoint, endpoints
from brainall_ops.rolemap.models import RoleMap

TABLE = "brainall"  # the nftables table every host gets: `table inet brainall`
ANY = "any"


class FirewallPolicyError(BrainallError):
    """The policy cannot be compiled for a host (one line, names the host and the field)."""


@dataclass(frozen=True)
class SourceSet:
    """A named nftables set of source addresses: one per policy source a host's rules use."""

    name: str  # nft set name: src_<source>
    source: str  # the role map's name for it: a host, a group, "vswitch" or "admins"
    elements: tuple[str, ...]  # addresses and CIDRs, sorted and merged


@dataclass(frozen=True)
class Allow:
    """One accept rule: a policy rule opening ports for one source (None: any source)."""

    rule: str
    proto: str
    ports: tuple[str, ...]
    source_set: str | None


@dataclass(frozen=True)
class HostFirewall:
    """Everything the ruleset, fail2ban and the confirmation of one host are rendered from."""

    name: str
    environment: str
    ssh_port: int
    sets: tuple[SourceSet, ...]
    allows: tuple[Allow, ...]
    closed_ports: tuple[int, ...]
    log_drops_per_minute: int
    exposed: bool  # reachable from the internet (a public or NAT address): fail2ban guards SSH
    admin_sources: tuple[str, ...]
    rollback_after_s: int

    @property
    def rules(self) -> list[str]:
        """Names of the policy rules that open something here, in policy order."""
        return list(dict.fromkeys(allow.rule for allow in self.allows))


def members(rm: RoleMap) -> list[str]:
    """Every host and VM that gets a firewall, in role-map order (not the Storage Box: its
    provider runs its firewall)."""
    return [h.name for h in rm.hosts] + [v.name for v in rm.vms]


def set_name(source: str) -> str:
    return "src_" + re.sub(r"[^A-Za-z0-9_]", "_", source)


def _format(networks: Iterable[IPv4Network]) -> tuple[str, ...]:
    merged = sorted(collapse_addresses(networks))
    return tuple(str(n.network_address) if n.prefixlen == 32 else str(n) for n in merged)


def _vswitch(rm: RoleMap, environment: str) -> IPv4Network:
    assert rm.firewall is not None
    env = rm.environments.get(environment)
    return env.vswitch if env is not None and env.vswitch is not None else rm.firewall.vswitch


def admin_sources(rm: RoleMap, environment: str) -> list[IPv4Network]:
    assert rm.firewall is not None
    env = rm.environments.get(environment)
    if env is not None and env.firewall_admin_sources is not None:
        return list(env.firewall_admin_sources)
    return list(rm.firewall.admin_sources)


def _exposed(rm: RoleMap, endpoint: Endpoint) -> bool:
    if endpoint.public_address is not None:
        return True
    host = next((h for h in rm.hosts if h.name == endpoint.name), None)
    return host is not None and (host.nat_address is not None or host.public_ssh_port is not None)


def _targets(rm: RoleMap, to: list[str], groups: dict[str, list[str]]) -> set[str]:
    names: set[str] = set()
    for target in to:
        names.update(members(rm) if target == "all" else groups.get(target, [target]))
    return names


def source_networks(
    rm: RoleMap, source: str, environment: str, eps: dict[str, Endpoint], groups: dict[str, list[str]]
) -> list[IPv4Network]:
    """The addresses a policy source stands for in an environment."""
    if source == "vswitch":
        return [_vswitch(rm, environment)]
    if source == "admins":
        return admin_sources(rm, environment)
    names = groups.get(source, [source])
    missing = [n for n in names if n not in eps]
    if missing:
        raise FirewallPolicyError(
            f"firewall source {source!r}: {', '.join(missing)} has no address in environment {environment!r}"
        )
    return [IPv4Network(IPv4Address(eps[n].address)) for n in names]


def compile_host(
    rm: RoleMap,
    name: str,
    environment: str = PRODUCTION,
    *,
    eps: dict[str, Endpoint] | None = None,
    groups: dict[str, list[str]] | None = None,
) -> HostFirewall:
    """The firewall of one host or VM (pass `eps` and `groups` when calling in a loop)."""
    fw = rm.firewall
    if fw is None:
        raise FirewallPolicyError("the role map has no firewall section")
    if name not in members(rm):
        raise FirewallPolicyError(f"{name!r} is not a host or VM of the role map: it gets no firewall")
    eps = eps if eps is not None else endpoints(rm, environment)
    groups = groups if groups is not None else rm.groups()

    sets: dict[str, SourceSet] = {}
    allows: list[Allow] = []
    for rule in fw.rules:
        if name not in _targets(rm, rule.to, groups):
            continue
        # sorted the way nft lists them, so a rendering compares with the live table line for line
        ports = tuple(
            sorted({str(fw.ssh_port) if p == "ssh" else p for p in rule.ports}, key=lambda p: int(p.split("-")[0]))
        )
        # "any" takes every address: the rule's other sources add nothing
        rule_sources = [ANY] if ANY in rule.sources else list(dict.fromkeys(rule.sources))
        for source in rule_sources:
            if source == ANY:
                allows.append(Allow(rule.name, rule.proto, ports, None))
                continue
            nft_name = set_name(source)
            if nft_name not in sets:
                clash = next((s.source for s in sets.values() if s.name == nft_name), None)
                if clash is not None:  # pragma: no cover - names are unique in the role map
                    raise FirewallPolicyError(f"firewall sources {clash!r} and {source!r} share the set {nft_name}")
                networks = source_networks(rm, source, environment, eps, groups)
                sets[nft_name] = SourceSet(nft_name, source, _format(networks))
            allows.append(Allow(rule.name, rule.proto, ports, nft_name))

    endpoint = eps.get(name)
    if endpoint is None:
        raise FirewallPolicyError(f"{name} has no address in environment {environment!r}")
    return HostFirewall(
        name=name,
        environment=environment,
        ssh_port=fw.ssh_port,
        sets=tuple(sets.values()),
        allows=tuple(allows),
        closed_ports=tuple(sorted(set(fw.closed_ports))),
        log_drops_per_minute=fw.log_drops_per_minute,
        exposed=_exposed(rm, endpoint),
        admin_sources=_format(admin_sources(rm, environment)),
        rollback_after_s=fw.rollback_after_s,
    )


def compile_policy(rm: RoleMap, environment: str = PRODUCTION) -> dict[str, HostFirewall]:
    """Every host's and VM's firewall, in role-map order."""
    if rm.firewall is None:
        return {}
    eps = endpoints(rm, environment)
    groups = rm.groups()
    return {name: compile_host(rm, name, environment, eps=eps, groups=groups) for name in members(rm)}
