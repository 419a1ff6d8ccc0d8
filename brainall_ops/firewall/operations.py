"""pyinfra operations of the firewall. Each reads a fact and yields commands only on drift."""

from __future__ import annotations

from collections.abc import Generator
from io import StringIO

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand, operation
from pyinfra.api.host import Host
from pyinfra.api.state import State

from brainall_ops.firewall import remote
from brainall_ops.firewall.facts import FirewallTable, PveHostFirewall
from brainall_ops.firewall.record import read_record, write_record
from brainall_ops.firewall.render import digest
from brainall_ops.firewall.sshpath import SshPath, run_ssh


def confirm_timeouts(rollback_after_s: int, paths: int) -> tuple[int, float]:
    """(ssh ConnectTimeout, limit per connection): every path is tried well before the timer fires."""
    per_path = max(4.0, (rollback_after_s * 0.6) / max(paths, 1))
    return max(2, int(per_path / 2)), per_path


def _confirm_reachable(state: State, host: Host, paths: tuple[SshPath, ...], rollback_after_s: int) -> bool:
    """Controller side: a fresh SSH connection along each path must log in and answer."""
    connect_timeout, limit = confirm_timeouts(rollback_after_s, len(paths))
    for path in paths:
        result = run_ssh(path, "echo brainall-firewall-confirm", connect_timeout, limit)
        if not result.ok or "brainall-firewall-confirm" not in result.output:
            host.log_styled(
                f"firewall not confirmed: a fresh SSH connection {path.describe()} failed ({result.error}); "
                f"the host restores its previous ruleset by itself within {rollback_after_s} s",
                fg="red",
                log_func=logger.error,
            )
            return False
        host.log_styled(f"firewall: fresh SSH connection {path.describe()} works", log_func=logger.info)
    return True


def _record(state: State, host: Host, environment: str, name: str, text: str) -> bool:
    write_record(environment, name, text)
    return True


@operation()
def ruleset(
    text: str,
    environment: str,
    member: str,
    rollback_after_s: int,
    confirm_paths: tuple[SshPath, ...],
) -> Generator[StringCommand | FileUploadCommand | FunctionCommand, None, None]:
    """Make `text` the host's `table inet brainall`, commit-confirmed (see firewall/remote.py).

    No change when the host runs exactly this ruleset, confirmed and unedited since. Then the
    controller's record of it (what the offline plan diffs against) is brought up to date.
    """
    table = host.get_fact(FirewallTable)
    if table is None or not table.runs(digest(text)):
        yield StringCommand(f"install -d -m 0700 {remote.REMOTE_DIR}")
        yield FileUploadCommand(StringIO(text), remote.STAGED)
        yield StringCommand(remote.validate_staged())
        yield StringCommand(remote.arm_rollback(rollback_after_s))
        yield StringCommand(remote.apply_staged())
        yield FunctionCommand(_confirm_reachable, (confirm_paths, rollback_after_s), {})
        yield StringCommand(remote.confirm())
    if read_record(environment, member) != text:
        yield FunctionCommand(_record, (environment, member, text), {})


@operation()
def pve_host_firewall_off(node: str) -> Generator[str, None, None]:
    """On a Proxmox node, the node's own traffic is filtered by `table inet brainall` alone:
    pve-firewall's host rules are turned off through the Proxmox API (VM firewalls untouched)."""
    if host.get_fact(PveHostFirewall, node=node):
        yield f"pvesh set /nodes/{node}/firewall/options --enable 0"
