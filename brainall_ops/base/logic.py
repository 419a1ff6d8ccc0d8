"""Phase 1 base system: who may log in, with which keys, and what every host resolves by name."""

from __future__ import annotations

from dataclasses import dataclass

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.environment import endpoints
from brainall_ops.rolemap.models import RoleMap
from brainall_ops.shared.deploy_context import expand_path


@dataclass(frozen=True)
class AdminAccount:
    name: str
    keys: tuple[str, ...]
    sudo: bool


def admin_accounts(rm: RoleMap, environment: str) -> list[AdminAccount]:
    """Admins with their public keys read on the controller. A missing key file is an error:
    an admin without a key would be locked out once password logins are off."""
    override = rm.environments[environment].admin_ssh_key_files if environment in rm.environments else None
    accounts = []
    for admin in rm.base.admins:
        keys = list(admin.ssh_keys)
        for template in override if override is not None else admin.ssh_key_files:
            path = expand_path(template)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise BrainallError(f"admin {admin.name}: cannot read SSH public key {path}: {exc.strerror}") from None
            keys.extend(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
        if not keys:
            raise BrainallError(f"admin {admin.name}: no SSH public key (ssh_keys or ssh_key_files in the role map)")
        accounts.append(AdminAccount(admin.name, tuple(keys), admin.sudo))
    return accounts


def hosts_entries(rm: RoleMap, environment: str) -> list[tuple[str, str]]:
    """(address, name) for every fleet member on the vSwitch of this environment, in role-map order."""
    from brainall_ops.planning.fleet import place_rolemap

    vm_hosts = {p.vm: p.host for p in place_rolemap(rm).placements}
    return [(str(ep.address), ep.name) for ep in endpoints(rm, environment, vm_hosts).values()]
