"""Read each host's live `table inet brainall` for `brainall-ops plan --live` (read-only: nft list)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from brainall_ops.firewall.remote import LIVE_SCRIPT, parse_state
from brainall_ops.firewall.sshpath import SshPath, SshTarget, run_ssh
from brainall_ops.rolemap.environment import endpoints
from brainall_ops.rolemap.models import RoleMap

LAB = "lab"
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class LiveTable:
    listing: str | None  # `nft -s list table inet brainall`; None: the host has no such table
    state: dict[str, str] = field(default_factory=dict)  # remote.STATE_SCRIPT's lines
    error: str | None = None  # could not be read: why


def ssh_targets(rm: RoleMap, environment: str, names: list[str]) -> dict[str, SshTarget]:
    """How the controller reaches each of `names` over SSH in `environment` (the lab's own key)."""
    eps = endpoints(rm, environment)
    if environment == LAB:
        from brainall_ops.shared.deploy_context import lab_dir

        state = lab_dir()
        return {
            n: SshTarget(
                n,
                str(eps[n].address),
                eps[n].ssh_port,
                "root",
                str(state / "id_ed25519"),
                str(state / "known_hosts"),
                "yes",
            )
            for n in names
        }
    return {n: SshTarget(n, str(eps[n].address), eps[n].ssh_port, eps[n].ssh_user) for n in names}


def parse_live(output: str) -> LiveTable:
    listing, marker, state = output.partition("#state\n")
    if not marker:
        return LiveTable(None, {}, "unexpected answer (no state section)")
    table = None if listing.strip() == "#absent" else listing
    return LiveTable(table, parse_state(state.splitlines()))


def read_live(rm: RoleMap, environment: str, names: list[str]) -> dict[str, LiveTable]:
    """Every host at once; a host that cannot be read says why instead of failing the plan."""
    targets = ssh_targets(rm, environment, names)

    def read(name: str) -> LiveTable:
        result = run_ssh(SshPath(targets[name]), LIVE_SCRIPT, CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
        if not result.ok:
            return LiveTable(None, {}, result.error)
        return parse_live(result.output)

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(names)))) as pool:
        return dict(zip(names, pool.map(read, names), strict=True))
