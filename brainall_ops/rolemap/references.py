"""Checks that need the whole role map: duplicates and references between sections."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, ip_network

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
    if rm.proxmox:
        known_environments = {"production", *rm.environments}
        for env_name in rm.proxmox.environments:
            if env_name not in known_environments:
                problems.append(
                    (
                        ("proxmox", "environments", env_name),
                        f"unknown environment {env_name!r} (known: {_known(known_environments)})",
                    )
                )

    if rm.storage:
        for section in ("sshfs", "cifs", "backups"):
            for i, entry in enumerate(getattr(rm.storage, section)):
                if entry.host not in host_names | vm_names:
                    problems.append(((("storage", section, i, "host")), f"unknown host {entry.host!r}"))
        add(_storage_problems(rm))

    if rm.ceph:
        for key, names in (("monitor_host", [rm.ceph.monitor_host]), ("osd_hosts", rm.ceph.osd_hosts)):
            for j, name in enumerate(names):
                if name not in proxmox_names:
                    loc: Loc = ("ceph", key) if key == "monitor_host" else ("ceph", key, j)
                    problems.append((loc, f"{name!r} is not a Proxmox host"))
        add(_duplicates([(("ceph", "pools", i, "name"), p.name) for i, p in enumerate(rm.ceph.pools)], "pool"))
        for i, pool in enumerate(rm.ceph.pools):
            if pool.pg_num is not None and pool.pg_num & (pool.pg_num - 1):
                problems.append((("ceph", "pools", i, "pg_num"), f"{pool.pg_num} is not a power of two"))

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
        # Models and the aux services share /etc/vllm/NAME.env and the models dir: names are unique across both.
        service_names: list[tuple[Loc, object]] = [
            (("inference", "models", i, "name"), m.name) for i, m in enumerate(rm.inference.models)
        ]
        served: list[tuple[Loc, object]] = [
            (("inference", "models", i, "served_name"), m.served_name) for i, m in enumerate(rm.inference.models)
        ]
        for aux in ("whisper", "embeddings"):
            service = getattr(rm.inference, aux)
            if service is None:
                continue
            service_names.append((("inference", aux, "name"), service.name))
            served.append((("inference", aux, "served_name"), service.served_name or service.name))
            if service.device == "cpu" and rm.inference.cpu_runtime is None:
                problems.append(
                    (
                        ("inference", aux, "device"),
                        "device cpu needs inference.cpu_runtime (the CUDA build of vLLM does not run without a GPU)",
                    )
                )
            if service.device == "cpu" and service.gpu_memory_gb:
                problems.append((("inference", aux, "gpu_memory_gb"), "a service on the CPU takes no GPU memory"))
        add(_duplicates(service_names, "model or service name"))
        add(_duplicates(served, "served name"))
        gpu = next((h.hardware.gpu for h in rm.hosts if h.name == rm.inference.host), None)
        if rm.inference.host in host_names and gpu is None:
            problems.append((("inference", "host"), f"{rm.inference.host!r} has no hardware.gpu"))

    if rm.backends:
        b = rm.backends
        for key in ("host", "proxy_host"):
            if getattr(b, key) not in host_names | vm_names:
                problems.append((("backends", key), f"unknown host or VM {getattr(b, key)!r}"))
        add(_duplicates([(("backends", "instances", i, "port"), x.port) for i, x in enumerate(b.instances)], "port"))
        for mode in ("production", "validation"):
            shape = getattr(b, mode)
            if shape.backends > len(b.instances):
                problems.append(
                    ((("backends", mode, "backends")), f"more backends than instances ({len(b.instances)})")
                )
            elif all(x.role == "fallback" for x in b.instances[: shape.backends]):
                # nginx needs a non-backup server in the upstream; fallbacks are `backup`
                problems.append(((("backends", mode, "backends")), "runs only fallback instances (nginx backups)"))
            if shape.min_healthy > len(b.instances):
                problems.append(((("backends", mode, "min_healthy")), f"more than the instances ({len(b.instances)})"))
        if b.host == b.proxy_host and b.proxy.listen_port in {x.port for x in b.instances}:
            problems.append((("backends", "proxy", "listen_port"), "is also a backend port on the same host"))

    if rm.firewall:
        add(_firewall_problems(rm, box_name))
    add(_physical_problems(rm))
    add(_subnet_problems(rm))
    add(_anti_affinity_problems(rm))

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


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _storage_problems(rm: RoleMap) -> Iterator[Problem]:
    """Storage clients: one thing per mount point, unique backup names, the Ollama copy under a mount."""
    storage = rm.storage
    assert storage is not None
    points: list[tuple[Loc, tuple[str, str]]] = [
        (("storage", kind, i, "mount_point"), (m.host, m.mount_point))
        for kind in ("sshfs", "cifs")
        for i, m in enumerate(getattr(storage, kind))
    ]
    yield from _duplicates(list(points), "host and mount point")
    for i, (loc, (host, point)) in enumerate(points):
        for _, (other_host, other) in points[:i]:
            if host == other_host and point != other and (_under(point, other) or _under(other, point)):
                yield loc, f"{point} and {other} on {host} are nested: mount them side by side"
    backups = [(("storage", "backups", i, "name"), b.name) for i, b in enumerate(storage.backups)]
    yield from _duplicates(backups, "backup name")
    if storage.config_git is not None and storage.config_git.hosts is not None:
        # The bundle goes up with the host's own box key: only a host that gets one can push.
        keyed = {m.host for m in [*storage.sshfs, *storage.cifs, *storage.backups]}
        keyed |= {storage.ollama.host} if storage.ollama else set()
        keyed |= {rm.data.host} if rm.data else set()
        for i, name in enumerate(storage.config_git.hosts):
            if name not in keyed:
                yield (
                    ("storage", "config_git", "hosts", i),
                    (f"{name!r} has no Storage Box key (hosts with one: {_known(keyed)})"),
                )
        yield from _duplicates(
            [(("storage", "config_git", "hosts", i), h) for i, h in enumerate(storage.config_git.hosts)], "host"
        )
    ollama = storage.ollama
    if ollama is None:
        return
    here: Loc = ("storage", "ollama")
    if not any(m.host == ollama.host and _under(ollama.remote_path, m.remote_path) for m in storage.sshfs):
        yield (
            (*here, "remote_path"),
            (
                f"{ollama.remote_path!r} is under no SSHFS mount of {ollama.host!r}: "
                "the models would be out of reach after the move"
            ),
        )
    if ollama.source is None and rm.inference is None:
        yield (*here, "source"), "no source given and no inference section to take ollama_models_dir from"
    if rm.inference is not None and ollama.host != rm.inference.host:
        yield (*here, "host"), f"Ollama runs on the inference host {rm.inference.host!r}, not {ollama.host!r}"


def _port_range(port: str) -> tuple[int, int]:
    low, _, high = port.partition("-")
    return int(low), int(high or low)


def _firewall_problems(rm: RoleMap, box_name: str | None) -> Iterator[Problem]:
    """The firewall policy: names, ports, SSH kept open everywhere, addresses inside the vSwitch."""
    from brainall_ops.rolemap.environment import PRODUCTION, endpoints

    fw = rm.firewall
    assert fw is not None
    members = [h.name for h in rm.hosts] + [v.name for v in rm.vms]
    groups = rm.groups()
    targets = {*members, *groups, "all"}
    sources = {*members, *groups, *SPECIAL_SOURCES}
    ssh_open: set[str] = set()
    for i, rule in enumerate(fw.rules):
        here: Loc = ("firewall", "rules", i)
        for j, name in enumerate(rule.to):
            if box_name is not None and name == box_name:
                yield (*here, "to", j), f"{name!r} is the Storage Box: its provider runs its firewall, not this policy"
            elif name not in targets:
                yield (*here, "to", j), f"unknown host or group {name!r}"
        for j, name in enumerate(rule.sources):
            if box_name is not None and name == box_name:
                yield (*here, "sources", j), f"{name!r} is the Storage Box: it has no fixed address to allow"
            elif name not in sources:
                yield (
                    (*here, "sources", j),
                    f"unknown source {name!r} (use a host, a group, or one of {_known(SPECIAL_SOURCES)})",
                )
        for j, port in enumerate(rule.ports):
            if port == "ssh":
                if rule.proto != "tcp":
                    yield (*here, "ports", j), "'ssh' is a tcp port: this rule is udp"
                continue
            low, high = _port_range(port)
            if low < 1 or high > 65535 or high < low:
                yield (*here, "ports", j), f"invalid port range {port!r}"
            elif rule.proto == "tcp" and low <= fw.ssh_port <= high:
                yield (*here, "ports", j), f"opens the SSH port {fw.ssh_port}: write 'ssh' (follows firewall.ssh_port)"
            elif any(low <= closed <= high for closed in fw.closed_ports):
                yield (*here, "ports", j), f"opens a port the policy closes ({port})"
        if rule.proto == "tcp" and "ssh" in rule.ports:
            for name in rule.to:
                ssh_open.update(members if name == "all" else groups.get(name, [name]))
    yield from _duplicates([(("firewall", "rules", i, "name"), r.name) for i, r in enumerate(fw.rules)], "rule name")
    for name in members:
        if name not in ssh_open:
            yield (
                ("firewall", "rules"),
                f"no rule opens SSH ({fw.ssh_port}/tcp) on {name}: nothing could reach it to deploy again",
            )
    for i, closed in enumerate(fw.closed_ports):
        if closed == fw.ssh_port:
            yield ("firewall", "closed_ports", i), f"closes the SSH port {closed}"
    if fw.ssh_via is not None and fw.ssh_via not in members:
        yield ("firewall", "ssh_via"), f"unknown host or VM {fw.ssh_via!r}"

    # The "vswitch" source must hold the fleet in every environment: a lab without its own
    # vswitch would otherwise render production addresses into lab rulesets.
    for env_name in [PRODUCTION, *(e for e in rm.environments if e != PRODUCTION)]:
        env = rm.environments.get(env_name)
        vswitch = env.vswitch if env is not None and env.vswitch is not None else fw.vswitch
        where: Loc = ("environments", env_name, "vswitch") if env and env.vswitch else ("firewall", "vswitch")
        network = env.network if env is not None else None
        for ep in endpoints(rm, env_name).values():
            if network is not None and ep.address not in network:
                continue  # reported once, as outside the environment's network
            if ep.name in members and ep.address not in vswitch:
                yield where, f"{ep.name} ({env_name}) has address {ep.address}, outside the vSwitch {vswitch}"
        if env is None:
            continue
        if env.vswitch is not None and env.network is not None and not env.vswitch.subnet_of(env.network):
            yield ("environments", env_name, "vswitch"), f"{env.vswitch} is outside the network {env.network}"
        if env.outside is not None:
            if env.network is not None and not env.outside.subnet_of(env.network):
                yield ("environments", env_name, "outside"), f"{env.outside} is outside the network {env.network}"
            if env.outside.overlaps(vswitch):
                yield ("environments", env_name, "outside"), f"{env.outside} overlaps the vSwitch {vswitch}"
            admins = env.firewall_admin_sources if env.firewall_admin_sources is not None else fw.admin_sources
            for admin in admins:
                if admin.overlaps(env.outside):
                    yield (
                        ("environments", env_name, "outside"),
                        f"{env.outside} overlaps the admin source {admin}: the outside must not be trusted",
                    )


def _gb(value: float) -> str:
    return f"{value:g} GB"


# Measured used + free may exceed the total by rounding (`free -g`, df): by this much at most.
def _rounding(total: float) -> float:
    return max(1.0, total * 0.02)


def _physical_problems(rm: RoleMap) -> Iterator[Problem]:
    """What is free cannot exceed what there is: RAM, disk, the Storage Box, Ceph."""
    for i, h in enumerate(rm.hosts):
        here: Loc = ("hosts", i, "measured")
        hw, m = h.hardware, h.measured
        for kind, total, free, used in (
            ("RAM", hw.ram_gb, m.ram_free_gb, m.ram_used_gb),
            ("disk", hw.disk_gb, m.disk_free_gb, m.disk_used_gb),
        ):
            key = "ram" if kind == "RAM" else "disk"
            if free > total:
                yield (
                    (*here, f"{key}_free_gb"),
                    (f"{_gb(free)} {kind} free is more than the host's {_gb(total)} (hardware.{key}_gb)"),
                )
            elif used is not None and used > total:
                yield (
                    (*here, f"{key}_used_gb"),
                    (f"{_gb(used)} {kind} used is more than the host's {_gb(total)} (hardware.{key}_gb)"),
                )
            elif used is not None and used + free > total + _rounding(total):
                yield (
                    (*here, f"{key}_used_gb"),
                    (
                        f"{_gb(used)} used + {_gb(free)} free {kind} is more than the host's {_gb(total)} "
                        f"(hardware.{key}_gb)"
                    ),
                )
        if h.proxmox is not None:
            known = sum(vm.memory_gb or 0 for vm in h.proxmox.existing_vms)
            if known > hw.ram_gb:
                yield (
                    ("hosts", i, "proxmox", "existing_vms"),
                    (f"the existing VMs' memory ({_gb(known)}) is more than the host's {_gb(hw.ram_gb)}"),
                )
    if rm.storage is not None:
        box = rm.storage.box
        if box.used_gb > box.capacity_tb * 1000:
            yield ("storage", "box", "used_gb"), f"{_gb(box.used_gb)} used is more than the {box.capacity_tb:g} TB box"
    if rm.ceph is not None:
        if rm.ceph.used_gb > rm.ceph.raw_tb * 1000:
            yield ("ceph", "used_gb"), f"{_gb(rm.ceph.used_gb)} used is more than the raw {rm.ceph.raw_tb:g} TB"
        if rm.ceph.stored_gb is not None and rm.ceph.stored_gb > rm.ceph.raw_tb * 1000:
            yield ("ceph", "stored_gb"), f"{_gb(rm.ceph.stored_gb)} stored is more than the raw {rm.ceph.raw_tb:g} TB"


def _edge_of(address: IPv4Address, network: IPv4Network) -> str | None:
    """'network' or 'broadcast' when `address` is one of the two unusable addresses of `network`."""
    if network.prefixlen > 30:  # /31 and /32 have no network or broadcast address to avoid
        return None
    if address == network.network_address:
        return "network"
    if address == network.broadcast_address:
        return "broadcast"
    return None


def _subnet_problems(rm: RoleMap) -> Iterator[Problem]:
    """Every address usable as a host address on its subnet: not the subnet's network or
    broadcast address, and a VM's inside the subnet of the gateway cloud-init gives it."""
    from brainall_ops.rolemap.environment import PRODUCTION

    fw_vswitch = rm.firewall.vswitch if rm.firewall else None
    for env_name in [PRODUCTION, *(e for e in rm.environments if e != PRODUCTION)]:
        env = rm.environments.get(env_name)
        overrides = env.hosts if env is not None else {}
        subnets: list[tuple[str, IPv4Network]] = []
        if env is not None and env.vswitch is not None:
            subnets.append(("the vSwitch", env.vswitch))
        elif fw_vswitch is not None:
            subnets.append(("the vSwitch", fw_vswitch))
        if env is not None and env.network is not None:
            subnets.append(("the environment's network", env.network))
        gateway, prefix = None, None
        if rm.proxmox is not None:
            gateway, prefix = rm.proxmox.gateway, rm.proxmox.prefix_length
            penv = rm.proxmox.environments.get(env_name)
            if penv is not None:
                gateway = penv.gateway or gateway
                prefix = penv.prefix_length or prefix
        vm_subnet = ip_network(f"{gateway}/{prefix}", strict=False) if gateway is not None and prefix else None

        members: list[tuple[Loc, str, IPv4Address, bool]] = []
        for i, h in enumerate(rm.hosts):
            o = overrides.get(h.name)
            if o is not None and o.address is not None:
                members.append((("environments", env_name, "hosts", h.name, "address"), h.name, o.address, False))
            elif env_name == PRODUCTION or o is None:
                members.append((("hosts", i, "address"), h.name, h.address, False))
        for i, vm in enumerate(rm.vms):
            o = overrides.get(vm.name)
            if o is not None and o.address is not None:
                members.append((("environments", env_name, "hosts", vm.name, "address"), vm.name, o.address, True))
            elif env_name == PRODUCTION:
                members.append((("vms", i, "address"), vm.name, vm.address, True))
        seen: set[Loc] = set()
        for loc, name, address, is_vm in members:
            if loc in seen:
                continue
            seen.add(loc)
            for label, subnet in subnets:
                edge = _edge_of(address, subnet)
                if edge:
                    yield loc, f"{address} is the {edge} address of {label} {subnet}, not one a host can have"
                    break
            else:
                if is_vm and vm_subnet is not None:
                    if address not in vm_subnet:
                        yield (
                            loc,
                            (
                                f"{name} ({env_name}) gets {address}/{prefix} from cloud-init, outside the gateway "
                                f"{gateway}'s subnet {vm_subnet}"
                            ),
                        )
                    elif _edge_of(address, vm_subnet):
                        yield loc, f"{address} is the {_edge_of(address, vm_subnet)} address of {vm_subnet}"
                    elif address == gateway:
                        yield loc, f"{address} is the gateway's address ({env_name})"
    if rm.proxmox is not None and rm.proxmox.gateway is not None:
        subnet = ip_network(f"{rm.proxmox.gateway}/{rm.proxmox.prefix_length}", strict=False)
        edge = _edge_of(rm.proxmox.gateway, subnet)
        if edge:
            yield ("proxmox", "gateway"), f"{rm.proxmox.gateway} is the {edge} address of {subnet}"


def _anti_affinity_problems(rm: RoleMap) -> Iterator[Problem]:
    """Anti-affinity rules name VMs (or groups of VMs) and can hold with the pins as written."""
    vm_names = {vm.name for vm in rm.vms}
    vm_groups: dict[str, list[str]] = {}
    for vm in rm.vms:
        for group in vm.groups:
            vm_groups.setdefault(group, []).append(vm.name)
    pins = {vm.name: vm.host for vm in rm.vms if vm.host is not None}
    yield from _duplicates(
        [(("placement", "anti_affinity", i, "name"), r.name) for i, r in enumerate(rm.placement.anti_affinity)],
        "rule name",
    )
    for i, rule in enumerate(rm.placement.anti_affinity):
        here: Loc = ("placement", "anti_affinity", i)
        sides: list[list[str]] = []
        for key in ("vms", "apart_from"):
            members: list[str] = []
            for j, name in enumerate(getattr(rule, key)):
                if name in vm_names:
                    members.append(name)
                elif name in vm_groups:
                    members.extend(vm_groups[name])
                else:
                    yield (
                        (*here, key, j),
                        (
                            f"{name!r} is no VM to create and no group of VMs"
                            + (f" (VMs: {_known(vm_names)})" if len(vm_names) <= 20 else "")
                        ),
                    )
            sides.append(list(dict.fromkeys(members)))
        vms, apart = sides
        if (
            not rule.apart_from
            and len(vms) < 2
            and len(rule.vms) == len([n for n in rule.vms if n in vm_names or n in vm_groups])
        ):
            yield (*here, "vms"), "names a single VM: with no apart_from, a rule keeps at least two VMs apart"
        both = set(vms) & set(apart)
        if both:
            yield (*here, "apart_from"), f"{', '.join(sorted(both))} cannot be kept apart from itself"
        pairs = (
            [(a, b) for a in vms for b in apart]
            if rule.apart_from
            else [(a, b) for k, a in enumerate(vms) for b in vms[k + 1 :]]
        )
        for a, b in pairs:
            if a in pins and pins[a] == pins.get(b):
                yield here, f"{a} and {b} are both pinned to {pins[a]}, which this rule forbids"
