"""Phase 1 base system as a pyinfra deploy: names, admins, packages, time, sshd."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files, server, systemd

from brainall_ops.base.logic import admin_accounts, hosts_entries
from brainall_ops.base.operations import apt_update
from brainall_ops.deploy_context import environment_for, rolemap_for
from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.loader import REPO_ROOT

TEMPLATES = REPO_ROOT / "templates" / "base"
STAGING = "/etc/brainall"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-brainall.conf"
SUDOERS = "/etc/sudoers.d/brainall-admins"


def _template(name: str) -> str:
    return str(TEMPLATES / name)


@deploy("BrainAll base system")
def base_system() -> None:
    rm = rolemap_for(host.data)
    environment = environment_for(host.data)
    name = host.data.brainall_name

    server.hostname(name="Hostname from the role map", hostname=name)
    # One managed block, not one operation per name: a 10-host fleet would otherwise cost ten
    # operations per host on every run.
    files.block(
        name="/etc/hosts: the fleet's vSwitch names",
        path="/etc/hosts",
        content="\n".join(f"{address} {member}" for address, member in hosts_entries(rm, environment)),
        marker="# {mark} brainall-ops fleet names",
    )

    apt_update(name="apt lists (bounded)", cache_time=6 * 3600)
    apt.packages(name="Base packages", packages=rm.base.packages, no_recommends=True)
    server.timezone(name=f"Timezone {rm.base.timezone}", timezone=rm.base.timezone)

    timesync = files.template(
        name="systemd-timesyncd servers",
        src=_template("timesyncd.conf.j2"),
        dest="/etc/systemd/timesyncd.conf.d/brainall.conf",
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

    try:
        admins = admin_accounts(rm, environment)
    except BrainallError as exc:
        raise DeployError(str(exc)) from None
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
        _if=staged_sudoers.did_change,
    )

    ssh_port = rm.firewall.ssh_port if rm.firewall else 22
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
        _if=staged_sshd.did_change,
    )
