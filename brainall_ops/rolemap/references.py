"""Checks that need the whole role map: duplicates and references between sections."""

from __future__ import annotations

from collections.abc import Iterator

from brainall_ops.rolemap.models import RoleMap

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]

# Firewall sources that are not hosts or groups.
SPECIAL_SOURCES = {"any", "vswitch", "admins"}


def _known(names: set[str]) -> str:
    return ", ".join(sorted(names))


def _duplicates(items: list[tuple[Loc, object]], what: str) -> Iterator[Problem]:
    first: dict[object, Loc] = {}
    for loc, value in items:
        if value is None:
            continue
        if value in first:
            yield loc, f"duplicate {what} {str(value)!r} (first at {_fmt(first[value])})"
        else:
            first[value] = loc


def _fmt(loc: Loc) -> str:
    from brainall_ops.rolemap.loader import format_path

    return format_path(loc)


def check_references(rm: RoleMap) -> list[Problem]:
    problems: list[Problem] = []
    add = problems.extend

    site_names = {s.name for s in rm.sites}
    host_names = {h.name for h in rm.hosts}
    proxmox_names = {h.name for h in rm.proxmox_hosts}
    vm_names = {v.name for v in rm.vms}
    box_name = rm.storage.box.name if rm.storage else None
    all_names = host_names | vm_names | ({box_name} if box_name else set())
    groups = set(rm.groups())

    add(_duplicates([(("sites", i, "name"), s.name) for i, s in enumerate(rm.sites)], "site name"))
    add(
        _duplicates(
            [(("hosts", i, "name"), h.name) for i, h in enumerate(rm.hosts)]
            + [(("vms", i, "name"), v.name) for i, v in enumerate(rm.vms)]
            + ([(("storage", "box", "name"), box_name)] if box_name else []),
            "name",
        )
    )
    add(
        _duplicates(
            [(("hosts", i, "address"), h.address) for i, h in enumerate(rm.hosts)]
            + [(("vms", i, "address"), v.address) for i, v in enumerate(rm.vms)],
            "address",
        )
    )
    # VMIDs are unique across the cluster: the VMs already running and the ones to create.
    # (A host that is itself a VM, like the bastion, is listed under its node too.)
    vmids: list[tuple[Loc, object]] = [
        (("hosts", i, "proxmox", "existing_vms", j, "vmid"), existing.vmid)
        for i, h in enumerate(rm.hosts)
        if h.proxmox
        for j, existing in enumerate(h.proxmox.existing_vms)
    ]
    vmids += [(("vms", i, "vmid"), v.vmid) for i, v in enumerate(rm.vms)]
    add(_duplicates(vmids, "VMID"))
    add(
        _duplicates(
            [(("hosts", i, "proxmox", "node"), h.proxmox.node) for i, h in enumerate(rm.hosts) if h.proxmox],
            "Proxmox node name",
        )
    )

    for i, h in enumerate(rm.hosts):
        if h.site not in site_names:
            problems.append((("hosts", i, "site"), f"unknown site {h.site!r} (known: {_known(site_names)})"))
        if h.vm_of is not None and h.vm_of not in proxmox_names:
            problems.append((("hosts", i, "vm_of"), f"{h.vm_of!r} is not a Proxmox host"))
        if h.hardware.threads < h.hardware.cores:
            problems.append((("hosts", i, "hardware", "threads"), "fewer threads than cores"))
    if rm.storage and rm.storage.box.site not in site_names:
        problems.append((("storage", "box", "site"), f"unknown site {rm.storage.box.site!r}"))

    for i, vm in enumerate(rm.vms):
        if vm.host is not None and vm.host not in proxmox_names:
            problems.append(
                (
                    ("vms", i, "host"),
                    f"VM pinned to {vm.host!r}, which is not a Proxmox host (Proxmox hosts: {_known(proxmox_names)})",
                )
            )

    if rm.placement.reference_host not in host_names:
        problems.append((("placement", "reference_host"), f"unknown host {rm.placement.reference_host!r}"))
    if rm.vms and rm.proxmox is None:
        problems.append((("vms",), "VMs to create need a 'proxmox' section"))
    if rm.proxmox and rm.proxmox.api_host not in proxmox_names:
        problems.append((("proxmox", "api_host"), f"{rm.proxmox.api_host!r} is not a Proxmox host"))

    if rm.storage:
        for section in ("sshfs", "cifs", "backups"):
            for i, entry in enumerate(getattr(rm.storage, section)):
                if entry.host not in host_names | vm_names:
                    problems.append(((("storage", section, i, "host")), f"unknown host {entry.host!r}"))

    if rm.ceph:
        for key, names in (("monitor_host", [rm.ceph.monitor_host]), ("osd_hosts", rm.ceph.osd_hosts)):
            for j, name in enumerate(names):
                if name not in proxmox_names:
                    loc: Loc = ("ceph", key) if key == "monitor_host" else ("ceph", key, j)
                    problems.append((loc, f"{name!r} is not a Proxmox host"))
        add(_duplicates([(("ceph", "pools", i, "name"), p.name) for i, p in enumerate(rm.ceph.pools)], "pool"))

    if rm.inference:
        if rm.inference.host not in host_names:
            problems.append((("inference", "host"), f"unknown host {rm.inference.host!r}"))
        ports = [(("inference", "models", i, "port"), m.port) for i, m in enumerate(rm.inference.models)]
        for aux in ("whisper", "embeddings"):
            service = getattr(rm.inference, aux)
            if service:
                ports.append((("inference", aux, "port"), service.port))
        ports.append((("inference", "redis_port"), rm.inference.redis_port))
        add(_duplicates(ports, "port"))
        add(
            _duplicates(
                [(("inference", "models", i, "name"), m.name) for i, m in enumerate(rm.inference.models)],
                "model name",
            )
        )

    if rm.backends:
        b = rm.backends
        for key in ("host", "proxy_host"):
            if getattr(b, key) not in host_names | vm_names:
                problems.append((("backends", key), f"unknown host or VM {getattr(b, key)!r}"))
        add(_duplicates([(("backends", "instances", i, "port"), x.port) for i, x in enumerate(b.instances)], "port"))
        for mode in ("production", "validation"):
            if getattr(b, mode).backends > len(b.instances):
                problems.append(
                    ((("backends", mode, "backends")), f"more backends than instances ({len(b.instances)})")
                )

    if rm.firewall:
        targets = all_names | groups | {"all"}
        sources = all_names | groups | SPECIAL_SOURCES
        for i, rule in enumerate(rm.firewall.rules):
            for j, name in enumerate(rule.to):
                if name not in targets:
                    problems.append((("firewall", "rules", i, "to", j), f"unknown host or group {name!r}"))
            for j, name in enumerate(rule.sources):
                if name not in sources:
                    problems.append(
                        (
                            ("firewall", "rules", i, "sources", j),
                            f"unknown source {name!r} (use a host, a group, or one of {_known(SPECIAL_SOURCES)})",
                        )
                    )
            for j, port in enumerate(rule.ports):
                low, _, high = port.partition("-")
                if int(low) < 1 or int(high or low) > 65535 or int(high or low) < int(low):
                    problems.append((("firewall", "rules", i, "ports", j), f"invalid port range {port!r}"))
                elif rule.proto == "tcp" and any(
                    int(low) <= closed <= int(high or low) for closed in rm.firewall.closed_ports
                ):
                    problems.append((("firewall", "rules", i, "ports", j), f"opens a port the policy closes ({port})"))
        add(
            _duplicates(
                [(("firewall", "rules", i, "name"), r.name) for i, r in enumerate(rm.firewall.rules)], "rule name"
            )
        )

    for env_name, env in rm.environments.items():
        for name in env.hosts:
            if name not in all_names:
                problems.append((("environments", env_name, "hosts", name), f"unknown host or VM {name!r}"))
        addresses: list[tuple[Loc, object]] = []
        for name in sorted(all_names, key=str):
            override = env.hosts.get(name)
            if override and override.address is not None:
                addresses.append((("environments", env_name, "hosts", name, "address"), override.address))
        add(_duplicates(addresses, "address"))
        if env.network is not None:
            for name, override in env.hosts.items():
                if override.address is not None and override.address not in env.network:
                    problems.append(
                        (
                            ("environments", env_name, "hosts", name, "address"),
                            f"{override.address} is outside the environment's network {env.network}",
                        )
                    )
    return problems
