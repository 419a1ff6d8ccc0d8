"""The lab's Storage Box stand-in: one lab host made to behave like a Hetzner Storage Box.

- The box user (the role map's `storage.box.user`), chrooted to `/srv/storagebox/USER`, whose
  `home/` is what every protocol sees.
- OpenSSH: on the box port (23) SFTP, rsync, and a restricted login shell offering
  `install-ssh-key` and a few file commands, with the password or an installed key
  (`home/.ssh/authorized_keys`, as on the real box); SFTP only on any other port.
- Samba: the share `backup` over the same home, for the same user and password.

The password is the one the clients use (BRAINALL_STORAGEBOX_PASSWORD or _FILE). Lab only: the
deploy refuses to run in production.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import OperationError, deploy
from pyinfra.facts.files import FileContents
from pyinfra.operations import files, server, systemd

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.environment import PRODUCTION
from brainall_ops.shared.apt import apt_packages
from brainall_ops.shared.deploy_context import environment_for, rolemap_for
from brainall_ops.shared.secrets import STORAGEBOX_PASSWORD
from brainall_ops.storage.facts import SshdPorts
from brainall_ops.storage.logic import SCRIPT_DIR, box_endpoint
from brainall_ops.storage.operations import lab_chroot_populated, secret_file
from brainall_ops.storage.rendering import template_path

CHROOT_BASE = "/srv/storagebox"
SHELL = "/usr/local/bin/storagebox-shell"
SHARE = "backup"  # a Storage Box's main user has one SMB share, "backup", over its home
PASSWORD_FILE = "/etc/brainall/storagebox-lab/password"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/30-brainall-storagebox.conf"
STAGED_SSHD = "/etc/brainall/storagebox-lab/sshd.conf"
CHROOT_SCRIPT = f"{SCRIPT_DIR}/lab-chroot-populate"
# What the restricted shell offers (besides install-ssh-key), and every program it runs.
SHELL_COMMANDS = ("rsync", "install-ssh-key", "ls", "mkdir", "cat", "rm", "sha256sum", "df", "du")
CHROOT_PROGRAMS = (
    "/bin/sh",
    "/usr/lib/openssh/sftp-server",
    "/usr/bin/rsync",
    "/usr/bin/grep",
    "/usr/bin/chmod",
    "/usr/bin/touch",
    *(f"/usr/bin/{c}" for c in SHELL_COMMANDS if c not in ("rsync", "install-ssh-key")),
)


def chroot_of(user: str) -> str:
    return f"{CHROOT_BASE}/{user}"


@deploy("BrainAll lab Storage Box stand-in")
def lab_storage_box() -> None:
    try:
        _lab_storage_box()
    except BrainallError as exc:
        raise OperationError(f"{host.name}: {exc}") from None


def _lab_storage_box() -> None:
    rm = rolemap_for(host.data)
    environment = environment_for(host.data)
    if environment == PRODUCTION:
        raise BrainallError("the Storage Box stand-in is for test environments only (this inventory is production)")
    box = box_endpoint(rm, environment)
    password = STORAGEBOX_PASSWORD.read()
    if password is None:
        raise BrainallError(
            "the lab Storage Box needs the box password: set BRAINALL_STORAGEBOX_PASSWORD "
            "or BRAINALL_STORAGEBOX_PASSWORD_FILE"
        )
    user = box.user
    chroot = chroot_of(user)

    apt_packages(
        name="SSH, rsync and Samba for the box",
        packages=["openssh-server", "openssh-sftp-server", "rsync", "samba"],
        update=True,
        cache_time=6 * 3600,
        no_recommends=True,
    )

    # The chroot: root-owned down to home/ (sshd's rule), home/ the user's.
    files.directory(name="Chroot base", path=CHROOT_BASE, user="root", group="root", mode="0755")
    files.directory(name=f"Chroot of {user}", path=chroot, user="root", group="root", mode="0755")
    files.template(
        name="Restricted shell (host copy: sshd checks it exists)",
        src=template_path("lab-shell.sh.j2"),
        dest=SHELL,
        mode="0755",
        shell=SHELL,
        commands=SHELL_COMMANDS,
    )
    files.template(
        name="Restricted shell (chroot copy: the one that runs)",
        src=template_path("lab-shell.sh.j2"),
        dest=f"{chroot}{SHELL}",
        mode="0755",
        shell=SHELL,
        commands=SHELL_COMMANDS,
    )
    server.user(
        name=f"Box user {user}",
        user=user,
        home="/home",  # inside the chroot
        shell=SHELL,
        create_home=False,
        ensure_home=False,
    )
    files.directory(name=f"{user}'s home", path=f"{chroot}/home", user=user, group=user, mode="0755")
    files.directory(name=f"{user}'s .ssh", path=f"{chroot}/home/.ssh", user=user, group=user, mode="0700")
    files.template(
        name="Chroot populate script",
        src=template_path("lab-chroot.sh.j2"),
        dest=CHROOT_SCRIPT,
        mode="0700",
        chroot=chroot,
        programs=CHROOT_PROGRAMS,
        box_user=user,
    )
    lab_chroot_populated(name="Programs and libraries in the chroot", script=CHROOT_SCRIPT)

    # The password, as the box user's login password and its Samba password.
    files.directory(name="Lab box state", path="/etc/brainall/storagebox-lab", mode="0700")
    stored = secret_file(name="Box password (0600)", path=PASSWORD_FILE, content=password)
    server.shell(
        name=f"{user}'s SSH and Samba password",
        commands=[
            f"{{ printf '%s:' {user}; cat {PASSWORD_FILE}; }} | chpasswd && "
            f"{{ cat {PASSWORD_FILE}; cat {PASSWORD_FILE}; }} | smbpasswd -s -a {user} >/dev/null"
        ],
        _if=stored.did_change,
    )

    # sshd: the Match blocks, and the box port next to 22 unless the lab already listens there.
    listening = host.get_fact(SshdPorts)
    ours = host.get_fact(FileContents, path=SSHD_DROPIN) or []
    staged = files.template(
        name="sshd: the box user (staged)",
        src=template_path("lab-sshd.conf.j2"),
        dest=STAGED_SSHD,
        mode="0644",
        ports=sshd_ports(listening, ours, box.port),
        box_port=box.port,
        box_user=user,
        chroot=chroot,
    )
    server.shell(
        name="sshd: validate, install and reload (the previous config restored if sshd -t fails)",
        commands=[
            f"if [ -f {SSHD_DROPIN} ]; then cp -p {SSHD_DROPIN} {STAGED_SSHD}.previous; fi; "
            f"install -m 0644 {STAGED_SSHD} {SSHD_DROPIN} && "
            f"if sshd -t; then systemctl reload-or-restart ssh.service; else "
            f"if [ -f {STAGED_SSHD}.previous ]; then cp -p {STAGED_SSHD}.previous {SSHD_DROPIN}; "
            f"else rm -f {SSHD_DROPIN}; fi; echo 'sshd -t failed: previous sshd config restored' >&2; exit 1; fi"
        ],
        _if=staged.did_change,
    )

    samba = files.template(
        name=f"Samba: share {SHARE}",
        src=template_path("lab-smb.conf.j2"),
        dest="/etc/samba/smb.conf",
        mode="0644",
        share=SHARE,
        box_user=user,
        chroot=chroot,
        box_port=box.port,
    )
    systemd.service(name="nmbd off (no NetBIOS)", service="nmbd.service", running=False, enabled=False)
    systemd.service(name="smbd running", service="smbd.service", running=True, enabled=True)
    systemd.service(name="smbd reads its config", service="smbd.service", restarted=True, _if=samba.did_change)


def sshd_ports(listening: list[int], our_dropin: list[str], box_port: int) -> list[int]:
    """`Port` lines for our drop-in. None when sshd listens on the box port without us (the lab
    runtime can add it); else 22 and the box port, since naming any port drops the implicit 22."""
    ours_has_ports = any(line.strip().startswith("Port ") for line in our_dropin)
    if box_port in listening and not ours_has_ports:
        return []
    return sorted({22, box_port})
