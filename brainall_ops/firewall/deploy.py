"""Phase 2 firewall as a pyinfra deploy: nftables `table inet brainall`, commit-confirmed, plus
fail2ban on SSH where it faces the internet, and Proxmox's host firewall handed over to it.

Proxmox: pve-firewall's rules for the node itself are turned off through the Proxmox API
(`pvesh set /nodes/NODE/firewall/options --enable 0`) once this ruleset is confirmed, so the
node's own traffic has one policy, this one; the cluster and VM firewalls are left as they are
(our table has no forward chain: bridged and routed VM traffic is not ours to filter).
"""

from __future__ import annotations

from io import StringIO

import click
from pyinfra import host, logger, state
from pyinfra.api import DeployError, State, deploy
from pyinfra.api.exceptions import NoHostError
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.api.state import BaseStateCallback
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import files, systemd

from brainall_ops.errors import BrainallError
from brainall_ops.firewall.facts import SshdPorts
from brainall_ops.firewall.operations import pve_host_firewall_off, ruleset
from brainall_ops.firewall.policy import HostFirewall, compile_host, members
from brainall_ops.firewall.render import (
    FAIL2BAN_JAIL,
    UNIT,
    UNIT_PATH,
    render_fail2ban,
    render_ruleset,
    render_unit,
)
from brainall_ops.firewall.sshpath import SshPath, SshTarget
from brainall_ops.rolemap.environment import endpoints
from brainall_ops.rolemap.models import RoleMap
from brainall_ops.shared.apt import apt_packages
from brainall_ops.shared.deploy_context import environment_for, rolemap_for

APT_TIMEOUT_S = 600  # apt through the lab proxy has been seen to hang: never wait forever
APT_RETRIES, APT_RETRY_DELAY_S = 6, 10


def _target(name: str, data: object, fallback: SshTarget | None = None) -> SshTarget:
    """How pyinfra reaches a host (its inventory data), for a fresh connection the same way."""

    def value(key: str, default: object = None) -> object:
        got = getattr(data, key, None)
        return default if got is None else got

    base = fallback or SshTarget(name, name)
    return SshTarget(
        name=name,
        hostname=str(value("ssh_hostname", base.hostname)),
        port=int(str(value("ssh_port", base.port))),
        user=value("ssh_user", base.user),  # type: ignore[arg-type]
        key=value("ssh_key", base.key),  # type: ignore[arg-type]
        known_hosts=value("ssh_known_hosts_file", base.known_hosts),  # type: ignore[arg-type]
        # pyinfra's own default: trust a host seen for the first time, refuse a changed key
        strict_host_key_checking=value("ssh_strict_host_key_checking", "accept-new"),  # type: ignore[arg-type]
    )


def confirm_paths(rm: RoleMap, fw: HostFirewall, environment: str) -> tuple[SshPath, ...]:
    """The connections that must work before a new ruleset is confirmed: the deploy's own
    (so the next deploy can connect) and the production path through `firewall.ssh_via`."""
    direct = _target(fw.name, host.data)
    paths = [SshPath(direct)]
    via = rm.firewall.ssh_via if rm.firewall else None
    if via and via != fw.name:
        try:
            jump_data: object | None = host.inventory.get_host(via).data
        except NoHostError:  # not in this inventory (a site inventory without the bastion)
            jump_data = None
        endpoint = endpoints(rm, environment)[via]
        # Same credentials as the deploy's own connection, at the jump host's address.
        from_rolemap = SshTarget(
            via,
            str(endpoint.address),
            endpoint.ssh_port,
            direct.user if jump_data is None else endpoint.ssh_user,
            direct.key,
            direct.known_hosts,
            direct.strict_host_key_checking,
        )
        jump = _target(via, jump_data, from_rolemap) if jump_data is not None else from_rolemap
        paths.append(SshPath(direct, via=jump))
    return tuple(paths)


class UnfilteredHostReport(BaseStateCallback):
    """At the end of a run, one plain line for each host the policy covers whose ruleset was not
    confirmed because the run failed on it: an error early in a long output is easy to miss, and
    such a host keeps whatever filtering it had before (none, on a new host)."""

    def __init__(self) -> None:
        self.rulesets: dict[str, OperationMeta | None] = {}  # host -> its ruleset operation

    def expect(self, name: str, meta: OperationMeta | None) -> None:
        self.rulesets[name] = meta

    def host_disconnect(self, state: State, host: Host) -> None:  # type: ignore[override]
        if host.name not in self.rulesets or host not in state.failed_hosts:
            return
        meta = self.rulesets[host.name]
        if meta is not None and meta.is_complete() and meta.did_succeed():
            return  # filtered as the policy says; something after the ruleset failed
        click.echo(
            f"firewall: {host.name}: the policy was NOT applied: the run failed on this host before its "
            "ruleset was confirmed (its error is above); it keeps the ruleset it had, and a host that had "
            "none is UNFILTERED. Fix the error and run the firewall deploy again.",
            err=True,
        )


def _unfiltered_report() -> UnfilteredHostReport:
    """One report per pyinfra run (state), registered the first time any host declares the deploy."""
    for handler in state.callback_handlers:
        if isinstance(handler, UnfilteredHostReport):
            return handler
    report = UnfilteredHostReport()
    state.add_callback_handler(report)
    return report


@deploy("BrainAll firewall")
def firewall() -> None:
    report = _unfiltered_report()
    try:
        rm = rolemap_for(host.data)
        environment = environment_for(host.data)
        name = host.data.brainall_name
        if rm.firewall is None or name not in members(rm):
            return  # no policy, or the Storage Box (its provider runs its firewall)
        report.expect(host.name, None)  # covered by the policy: reported unless its ruleset is confirmed
        fw = compile_host(rm, name, environment)
        text = render_ruleset(fw)
        paths = confirm_paths(rm, fw, environment)
    except BrainallError as exc:
        raise DeployError(str(exc)) from None

    packages = ["nftables", *(["fail2ban", "python3-systemd"] if fw.exposed else [])]
    installed = host.get_fact(DebPackages) or {}
    apt_packages(
        name="nftables" + (", fail2ban (SSH faces the internet)" if fw.exposed else ""),
        packages=packages,
        # refresh the lists only to install something: no apt-get update on a host that has it all
        update=any(p not in installed for p in packages),
        cache_time=6 * 3600,
        no_recommends=True,
        _timeout=APT_TIMEOUT_S,
        # another apt run holding the lock (a deploy beside this one) is waited out, within bounds
        _retries=APT_RETRIES,
        _retry_delay=APT_RETRY_DELAY_S,
    )
    # Checked before anything runs, on every host: a ruleset whose SSH port sshd does not listen
    # on would shut every admin out (phase 1 moves sshd to firewall.ssh_port first).
    sshd_ports = host.get_fact(SshdPorts)
    if fw.ssh_port not in sshd_ports:
        raise DeployError(
            f"{name}: sshd listens on {sshd_ports or 'no port'} but the firewall's SSH port is {fw.ssh_port}; "
            "deploy the base system (phase 1) first, so sshd follows firewall.ssh_port. Nothing was changed."
        )
    if sshd_ports != [fw.ssh_port]:
        others = ", ".join(str(p) for p in sshd_ports if p != fw.ssh_port)
        logger.warning(f"{name}: sshd also listens on {others}: the firewall drops those (one SSH port)")

    unit = files.put(
        name="Boot unit: load the confirmed ruleset", src=StringIO(render_unit()), dest=UNIT_PATH, mode="0644"
    )
    systemd.daemon_reload(name="systemd sees the boot unit", _if=unit.did_change)
    systemd.service(name="Boot unit enabled", service=UNIT, running=None, enabled=True)

    report.expect(
        host.name,
        ruleset(
            name=f"nftables table inet brainall ({len(fw.allows)} allow rules), commit confirmed",
            text=text,
            environment=environment,
            member=name,
            rollback_after_s=fw.rollback_after_s,
            confirm_paths=paths,
        ),
    )

    proxmox_host = next((h for h in rm.hosts if h.name == name and h.proxmox is not None), None)
    if proxmox_host is not None and proxmox_host.proxmox is not None:
        pve_host_firewall_off(
            name="pve-firewall: node rules off (this table filters the node)", node=proxmox_host.proxmox.node
        )

    if fw.exposed:
        jail = files.put(name="fail2ban: SSH jail", src=StringIO(render_fail2ban(fw)), dest=FAIL2BAN_JAIL, mode="0644")
        systemd.service(name="fail2ban running", service="fail2ban.service", running=True, enabled=True)
        # Restarted, not reloaded: a reload goes through fail2ban-client, which fails while a server
        # just started (by apt, or by the operation above) has not opened its socket yet (seen in CI).
        systemd.service(
            name="fail2ban restarted for its jail", service="fail2ban.service", restarted=True, _if=jail.did_change
        )
