"""Which inventory hosts the survey measures, at which addresses, and where the Storage Box is.

Pure (no pyinfra): the inventory's hosts arrive as (name, data) pairs. By default the survey
measures the role map's hosts: not the Storage Box (a restricted shell, not a place to run
probes: it is a target), and not the VMs the plan has yet to create. `--limit` picks hosts or
groups instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.environment import PRODUCTION
from brainall_ops.rolemap.loader import REPO_ROOT, load_rolemap
from brainall_ops.rolemap.models import RoleMap
from brainall_ops.survey.measurements import Target

STORAGE_BOX_KIND = "storage_box"


class SelectionError(BrainallError):
    pass


@dataclass(frozen=True)
class FleetSelection:
    names: tuple[str, ...]
    addresses: dict[str, str]  # the address peers measure latency to (the vSwitch address)
    storagebox: Target | None
    rolemap: str | None
    environment: str | None
    reference_host: str | None
    left_out: dict[str, str] = field(default_factory=dict)  # inventory host -> why it is not surveyed


def rolemap_of(hosts: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[str | None, RoleMap | None]:
    """The role map the (generated) inventory names, loaded; (None, None) for a hand-written one."""
    named = {str(data["brainall_rolemap"]) for _, data in hosts if data.get("brainall_rolemap")}
    if not named:
        return None, None
    if len(named) > 1:
        raise SelectionError(f"the inventories name different role maps: {', '.join(sorted(named))}")
    rel = named.pop()
    path = Path(rel) if Path(rel).is_absolute() else REPO_ROOT / rel
    return rel, load_rolemap(path)


def parse_target(text: str, name: str = "storagebox") -> Target:
    """`ADDRESS:PORT` (the --storagebox option)."""
    address, sep, port = text.rpartition(":")
    if not sep or not address or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SelectionError(f"--storagebox {text!r}: expected ADDRESS:PORT, e.g. 10.77.1.50:23")
    return Target(name=name, address=address, port=int(port))


def select(
    hosts: Sequence[tuple[str, Mapping[str, Any]]],
    groups: Mapping[str, Sequence[str]],
    *,
    limit: Sequence[str] = (),
    storagebox: Target | None = None,
) -> FleetSelection:
    rel, rm = rolemap_of(hosts)
    environments = {
        str(data.get("brainall_environment") or PRODUCTION) for _, data in hosts if data.get("brainall_rolemap")
    }
    environment = environments.pop() if len(environments) == 1 else None
    by_name = {name: data for name, data in hosts}
    planned_vms = {vm.name for vm in rm.vms} if rm else set()
    boxes = [name for name, data in hosts if data.get("brainall_kind") == STORAGE_BOX_KIND]

    left_out: dict[str, str] = {}
    if limit:
        chosen: list[str] = []
        for item in limit:
            members = [item] if item in by_name else list(groups.get(item, []))
            if not members:
                known = ", ".join(sorted({*by_name, *groups}))
                raise SelectionError(f"--limit {item}: no such host or group (known: {known})")
            chosen.extend(n for n in members if n not in chosen)
        names = [n for n in by_name if n in chosen]
        left_out = {n: "not in --limit" for n in by_name if n not in chosen}
    else:
        names = []
        for name in by_name:
            if name in boxes:
                left_out[name] = "the Storage Box: probed as a target, not surveyed"
            elif name in planned_vms:
                left_out[name] = "a VM the plan has yet to create (use --limit to survey it)"
            else:
                names.append(name)
    if not names:
        raise SelectionError("no host to survey in the inventory")

    addresses = {
        name: str(by_name[name].get("brainall_address") or by_name[name].get("ssh_hostname") or name) for name in names
    }
    target = storagebox
    if target is None and boxes:
        data = by_name[boxes[0]]
        port = int(data.get("ssh_port") or (rm.storage.box.ssh_port if rm and rm.storage else 23))
        target = Target(name=boxes[0], address=str(data.get("brainall_address") or data.get("ssh_hostname")), port=port)
    if target is None and rm is not None and rm.storage is not None and environment == PRODUCTION:
        # Production inventories do not list the Storage Box: it is addressed by its DNS name.
        box = rm.storage.box
        target = Target(name=box.name, address=box.hostname, port=box.ssh_port)
    reference = rm.placement.reference_host if rm and rm.placement.reference_host in names else None
    return FleetSelection(tuple(names), addresses, target, rel, environment, reference, left_out)
