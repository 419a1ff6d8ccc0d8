"""Phase 1 base system as a pyinfra deploy: names, admins, packages, time, sshd.

Behind a convergence gate (brainall_ops/converge.py): a no-op re-run reads one fact per host
instead of the 28 its operations read, and any drift declares them all again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Command
from pyinfra.operations import files, server, systemd

from brainall_ops.base.logic import AdminAccount, admin_accounts, hosts_entries
from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.models import RoleMap
from brainall_ops.shared import converge
from brainall_ops.shared.apt import apt_packages, apt_update
from brainall_ops.shared.converge import Gate, Probe, source_digest
from brainall_ops.shared.deploy_context import environment_for, rolemap_for
from brainall_ops.shared.templating import template_dir

TEMPLATES = template_dir("base")
STAGING = "/etc/brainall"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-brainall.conf"
SUDOERS = "/etc/sudoers.d/brainall-admins"
TIMESYNCD_DROPIN = "/etc/systemd/timesyncd.conf.d/brainall.conf"
# The code and templates the operations come from: a new release declares them again once.
SOURCES = (*Path(__file__).parent.glob("*.py"), *TEMPLATES.glob("*.j2"), Path(converge.__file__))


def _template(name: str) -> str:
    return str(TEMPLATES / name)


def base_probe(rm: RoleMap, admins: list[AdminAccount]) -> Probe:
    """Everything the base operations manage on a host."""
    homes = [path for a in admins for path in (f"/home/{a.name}", f"/home/{a.name}/.ssh")]
    keys = [f"/home/{a.name}/.ssh/authorized_keys" for a in admins]
    return Probe(
        files=(
            "/etc/hostname",
            "/etc/hosts",
            "/etc/timezone",
            TIMESYNCD_DROPIN,
            STAGING,
            f"{STAGING}/sudoers",
            SUDOERS,
            f"{STAGING}/sshd.conf",
            SSHD_DROPIN,
            *homes,
            *keys,
        ),
        packages=tuple(rm.base.packages),
        users=tuple(a.name for a in admins),
        units=("systemd-timesyncd.service", "ssh.service"),
        commands=("hostname", "readlink /etc/localtime"),
    )


@deploy("BrainAll base system")
def base_system() -> None:
    rm = rolemap_for(host.data)
    environment = environment_for(host.data)
    name = host.data.brainall_name
    try:
        admins = admin_accounts(rm, environment)
    except BrainallError as exc:
        raise DeployError(str(exc)) from None
    ssh_port = rm.firewall.ssh_port if rm.firewall else 22
    hosts_block = "\n".join(f"{address} {member}" for address, member in hosts_entries(rm, environment))

    desired = {
        "hostname": name,
        "hosts": hosts_block,
        "packages": rm.base.packages,
        "timezone": rm.base.timezone,
        "ntp": rm.base.ntp_servers,
        "admins": [(a.name, a.keys, a.sudo) for a in admins],
        "ssh_port": ssh_port,
        "sources": source_digest(SOURCES),
    }
    gate = Gate("base", desired, base_probe(rm, admins))
    if gate.open:
        _base_operations(rm, name, admins, ssh_port, hosts_block)
    gate.close()


def _changed_or_differs(staged: OperationMeta, staged_path: str, installed: str, mode: str) -> Callable[[], bool]:
    """Install when the staged file changed, or when the installed copy is not the staged one
    (edited, removed, another mode): the gate opened because of it, and must not record it."""
    check = f'[ "$(stat -c %a {installed} 2>/dev/null)" = {mode} ] && cmp -s {staged_path} {installed} && echo same'
    differs = host.get_fact(Command, f"{check} || echo differs") != "same"
    return lambda: differs or staged.did_change()


def _base_operations(rm: RoleMap, name: str, admins: list[AdminAccount], ssh_port: int, hosts_block: str) -> None:
    server.hostname(name="Hostname from the role map", hostname=name)
    # One managed block, not one operation per name: a 10-host fleet would otherwise cost ten
    # operations per host on every run.
    files.block(
        name="/etc/hosts: the fleet's vSwitch names",
        path="/etc/hosts",
        content=hosts_block,
        marker="# {mark} brainall-ops fleet names",
    )

    apt_update(name="apt lists (bounded)", cache_time=6 * 3600)
    apt_packages(name="Base packages", packages=rm.base.packages, no_recommends=True)
    server.timezone(name=f"Timezone {rm.base.timezone}", timezone=rm.base.timezone)

    timesync = files.template(
        name="systemd-timesyncd servers",
        src=_template("timesyncd.conf.j2"),
        dest=TIMESYNCD_DROPIN,
        create_remote_dir=True,
        ntp_servers=rm.base.ntp_servers,
    )
    # A container cannot set the clock: timesyncd's own ConditionVirtualization=!container keeps it
    # stopped there, so only ask for it running on real hosts and VMs.
    in_container = host.get_fact(Command, "systemd-detect-virt --container || true") not in ("", "none")
    systemd.service(
        name="systemd-timesyncd enabled",
        service="systemd-timesyncd.service",
        enabled=True,
        running=None if in_container else True,
    )
    if not in_container:
        systemd.service(
            name="systemd-timesyncd picks up its servers",
            service="systemd-timesyncd.service",
            restarted=True,
            _if=timesync.did_change,
        )

    for admin in admins:
        server.user(
            name=f"Admin {admin.name}",
            user=admin.name,
            shell="/bin/bash",
            home=f"/home/{admin.name}",
            public_keys=list(admin.keys),
            delete_keys=True,
        )

    files.directory(name="Staging directory", path=STAGING, mode="0700")
    # sudoers and sshd drop-ins are staged, validated, and only then installed: a broken file
    # in place would lock every admin out.
    staged_sudoers = files.template(
        name="sudoers for the admins (staged)",
        src=_template("sudoers.j2"),
        dest=f"{STAGING}/sudoers",
        mode="0440",
        admins=admins,
    )
    server.shell(
        name="Validate and install sudoers",
        commands=[f"visudo -cqf {STAGING}/sudoers && install -m 0440 {STAGING}/sudoers {SUDOERS}"],
        _if=_changed_or_differs(staged_sudoers, f"{STAGING}/sudoers", SUDOERS, "440"),
    )

    staged_sshd = files.template(
        name="sshd hardening (staged)",
        src=_template("sshd.conf.j2"),
        dest=f"{STAGING}/sshd.conf",
        mode="0644",
        ssh_port=ssh_port,
    )
    server.shell(
        name="Validate, install and reload sshd (rolled back if sshd -t fails)",
        commands=[
            f"if [ -f {SSHD_DROPIN} ]; then cp -p {SSHD_DROPIN} {STAGING}/sshd.conf.previous; fi; "
            f"install -m 0644 {STAGING}/sshd.conf {SSHD_DROPIN} && "
            f"if sshd -t; then systemctl reload ssh.service; else "
            f"if [ -f {STAGING}/sshd.conf.previous ]; then cp -p {STAGING}/sshd.conf.previous {SSHD_DROPIN}; "
            f"else rm -f {SSHD_DROPIN}; fi; echo 'sshd -t failed: previous sshd config restored' >&2; exit 1; fi"
        ],
        _if=_changed_or_differs(staged_sshd, f"{STAGING}/sshd.conf", SSHD_DROPIN, "644"),
    )
