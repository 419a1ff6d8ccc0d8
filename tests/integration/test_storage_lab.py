"""Phase 1's Storage Box clients against real servers in the lab, with the real pyinfra CLI.

The lab's `storagebox` host plays the box (deploys/lab_storagebox.py): OpenSSH serving SFTP,
rsync and `install-ssh-key` on port 23 to the chrooted box user, and Samba serving the share
`backup` over the same home, for the same user and password. Then phase 1 (deploys/phase1.py)
runs on gpu, prox-101 and prox-106, and the tests look through the real mounts and services:

- gpu: a file written on the SSHFS automount is on the box, and the other way round; the
  Ollama models are on the box, verified, and the local directory is a link to the SSHFS copy;
- prox-106: CIFS through the kernel when the kernel has cifs. This machine's kernel has none
  (and a container cannot load modules), so then the test says so and checks the generated
  units with `systemd-analyze verify` plus a real smbclient session (SMB3, encrypted) with the
  very credentials file the mount unit names;
- prox-101: the backup timer's service run once puts the files on the box, with one log line;
  a run that finds the lock taken is skipped, not overlapped;
- a second phase 1 run changes nothing; an unreachable box fails with its address and port;
- nothing any run printed contains the password, nor do the hosts' journals.

Wall time: about 3-5 minutes on a warm apt proxy (apt installs of samba, sshfs, cifs-utils,
smbclient dominate; the deploys themselves take under a minute each).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from brainall_ops.lab.storagebox import chroot_of
from brainall_ops.rolemap import load_rolemap
from brainall_ops.rolemap.loader import BUILTIN_ROLEMAP, REPO_ROOT
from brainall_ops.storage.logic import (
    BACKUP_LOG,
    CIFS_CREDENTIALS,
    KEY_PATH,
    KNOWN_HOSTS,
    MOUNT_SUPPORT_COMMAND,
    MountMode,
    MountUnits,
    backup_job,
    box_endpoint,
    cifs_units,
    client_plan,
    parse_mount_support,
    sshfs_units,
)
from tests.integration.lab_fixture import Lab, lab  # noqa: F401

pytestmark = pytest.mark.lab

PYINFRA = Path(sys.executable).with_name("pyinfra")
INVENTORY = "inventories/lab.py"
CLIENTS = ("gpu", "prox-101", "prox-106")
RM = load_rolemap()
BOX = box_endpoint(RM, "lab")
HOME = f"{chroot_of(BOX.user)}/home"  # the box user's files, as the box host sees them
GPU = client_plan(RM, "lab", "gpu")
PROX101 = client_plan(RM, "lab", "prox-101")
PROX106 = client_plan(RM, "lab", "prox-106")
assert GPU and GPU.ollama and PROX101 and PROX106
SSHFS = sshfs_units(GPU.sshfs[0], BOX)
CIFS = cifs_units(PROX106.cifs[0], BOX)
BACKUP = backup_job(PROX101.backups[0], BOX)
OLLAMA = GPU.ollama
TOKEN = secrets.token_hex(6)  # names this session's test files

BOX_SSH = " ".join(
    f"-o {k}={v}"
    for k, v in [
        ("Port", BOX.port),
        ("IdentityFile", KEY_PATH),
        ("IdentitiesOnly", "yes"),
        ("UserKnownHostsFile", KNOWN_HOSTS),
        ("StrictHostKeyChecking", "yes"),
        ("BatchMode", "yes"),
    ]
)

# Everything every pyinfra run printed, for the password check at the end.
PRINTED: list[str] = []


# --------------------------------------------------------------------------- helpers
def sh(testbed: Lab, name: str, command: str) -> str:
    """Run on a lab host; fail loudly (with its output) unless it exits 0."""
    result = testbed.host(name).run(command)
    assert result.rc == 0, f"{name}: {command!r} exited {result.rc}: {result.stdout}{result.stderr}"
    return str(result.stdout)


def pyinfra(
    testbed: Lab, env: dict[str, str], deploy: str, *limits: str, data: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """The real CLI, as verbose as it gets (every command, every output, pyinfra's debug log)."""
    args = [str(PYINFRA), "-y", "-vvv", "--debug", INVENTORY, deploy]
    for limit in limits:
        args += ["--limit", limit]
    for item in data:
        args += ["--data", item]
    result = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    PRINTED.extend([result.stdout, result.stderr])
    tail = (result.stdout + result.stderr)[-5000:]
    print(f"$ {' '.join(args[1:])}\n--- exit {result.returncode}; last output:\n{tail}")
    return result


def grand_total(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "Grand total" in line]
    assert lines, "pyinfra printed no results table"
    hosts, success, error, no_change = lines[-1].split("Grand total", 1)[1].split()
    return {"hosts": hosts, "success": success, "error": error, "no_change": no_change}


def changed_ops(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The operation status lines that report a change ("[host] Success")."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    return [line for line in text.splitlines() if re.search(r"\] Success\b", line)]


def host_mode(testbed: Lab, name: str) -> MountMode:
    """The mode the deploy gives this host's mounts, read from the host as the deploy reads it."""
    return parse_mount_support(sh(testbed, name, MOUNT_SUPPORT_COMMAND).splitlines()).mode


def proved(name: str, mode: MountMode, what: str) -> None:
    """Say which path a test proved (shown in the run's summary even when output is captured)."""
    note = f"{name}: proved the {mode} path: {what}"
    print(note)
    warnings.warn(note, stacklevel=2)


def assert_units_enabled(testbed: Lab, name: str, units: MountUnits, *, mounted: bool) -> None:
    """The unit remote-fs.target pulls in for the host's mode is enabled and running; without
    autofs no automount unit is left behind, and the remount timer runs."""
    host = testbed.host(name)
    if units.mode == "automount":
        assert host.service(units.automount_unit).is_enabled
        assert host.run(f"systemctl is-active {units.automount_unit}").stdout.strip() == "active"
        return
    assert host.run(f"systemctl is-enabled {units.mount_unit}").stdout.strip() == "enabled"
    state = host.run(f"systemctl is-active {units.mount_unit}").stdout.strip()
    assert state == ("active" if mounted else "inactive"), state
    assert not host.file(f"/etc/systemd/system/{units.automount_unit}").exists
    assert host.run("systemctl is-active brainall-storage-remount.timer").stdout.strip() == "active"


def digest_of(testbed: Lab, name: str, path: str) -> str:
    return sh(testbed, name, f"sha256sum {shlex.quote(path)}").split()[0]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def password() -> Iterator[Path]:
    """A fresh password in a 0600 file outside the repo, as an operator would keep it."""
    directory = Path(tempfile.mkdtemp(prefix="brainall-storagebox-test-"))
    path = directory / "password"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"Sbx-{secrets.token_urlsafe(18)}\n")
    yield path
    shutil.rmtree(directory)


@pytest.fixture(scope="module")
def env(lab: Lab, password: Path) -> dict[str, str]:  # noqa: F811
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BRAINALL_STORAGEBOX_PASSWORD")}
    return {**environ, "BRAINALL_LAB_DIR": str(lab.state_dir), "BRAINALL_STORAGEBOX_PASSWORD_FILE": str(password)}


@pytest.fixture(scope="module")
def seeded(lab: Lab) -> Iterator[dict[str, str]]:  # noqa: F811
    """What the deploy finds on the clients: Ollama models on gpu (a few MB of blobs and a
    manifest) and the backup's sources on prox-101. Returns file -> sha256 of the models."""
    src = shlex.quote(OLLAMA.source)
    sh(lab, "gpu", f"if [ -L {src} ]; then rm -f {src}; fi; rm -rf {src}.before-storagebox {src}")
    sh(
        lab,
        "gpu",
        f"mkdir -p {src}/blobs {src}/manifests/registry.ollama.ai/library/tiny-{TOKEN} && "
        f"head -c 3000000 /dev/urandom > {src}/blobs/sha256-{TOKEN}a && "
        f"head -c 1048577 /dev/urandom > {src}/blobs/sha256-{TOKEN}b && "
        f'echo \'{{"model": "tiny-{TOKEN}"}}\' > {src}/manifests/registry.ollama.ai/library/tiny-{TOKEN}/latest',
    )
    listing = sh(lab, "gpu", f"cd {src} && find . -type f -print0 | sort -z | xargs -0 sha256sum")
    models = {name: digest for digest, name in (line.split(None, 1) for line in listing.splitlines())}
    # A running Ollama (a runtime unit, gone at the next boot, unless a real one is installed):
    # the move stops it for the switch and starts it again.
    sh(
        lab,
        "gpu",
        f"systemctl cat {OLLAMA.service}.service >/dev/null 2>&1 || "
        f"printf '[Service]\\nExecStart=/bin/sleep infinity\\n' > /run/systemd/system/{OLLAMA.service}.service; "
        f"systemctl daemon-reload && systemctl start {OLLAMA.service}.service",
    )
    models["ollama-started"] = sh(
        lab, "gpu", f"systemctl show -p ActiveEnterTimestampMonotonic --value {OLLAMA.service}"
    )
    # The backup's sources: a lab host has no Proxmox, so a missing one is made for the test
    # (with a marker file) and removed again at the end.
    made = [source for source in BACKUP.sources if lab.host("prox-101").run(f"test -e {shlex.quote(source)}").rc != 0]
    for source in made:
        sh(lab, "prox-101", f"mkdir -p {shlex.quote(source)} && echo lab > {shlex.quote(source)}/brainall-lab-stand-in")
    test_file = f"/root/backup/brainall-test-{TOKEN}.txt"
    sh(lab, "prox-101", f"mkdir -p /root/backup && echo {TOKEN} > {test_file}")
    yield models
    sh(lab, "prox-101", f"rm -f {test_file}")
    for source in made:
        sh(lab, "prox-101", f"rm -f {shlex.quote(source)}/brainall-lab-stand-in && rmdir {shlex.quote(source)}")


@pytest.fixture(scope="module")
def box_ready(lab: Lab, env: dict[str, str]) -> subprocess.CompletedProcess[str]:  # noqa: F811
    # Port 22: the box port 23 exists once this deploy ran (unless the lab runtime opened it).
    return pyinfra(lab, env, "deploys/lab_storagebox.py", "storagebox", data=("ssh_port=22",))


@pytest.fixture(scope="module")
def phase1(
    lab: Lab,  # noqa: F811
    env: dict[str, str],
    box_ready: subprocess.CompletedProcess[str],
    seeded: dict[str, str],
) -> subprocess.CompletedProcess[str]:
    assert box_ready.returncode == 0, "the lab Storage Box deploy failed (see its output above)"
    return pyinfra(lab, env, "deploys/phase1.py", *CLIENTS)


# --------------------------------------------------------------------------- the box
def test_lab_box_serves_ssh_on_both_ports_and_samba(lab: Lab, env: dict[str, str], box_ready) -> None:  # noqa: F811
    assert box_ready.returncode == 0
    box = lab.host("storagebox")
    assert box.socket(f"tcp://0.0.0.0:{BOX.port}").is_listening
    assert box.socket("tcp://0.0.0.0:22").is_listening
    assert box.socket("tcp://0.0.0.0:445").is_listening
    assert box.service("smbd").is_running
    chroot = box.file(chroot_of(BOX.user))
    assert (chroot.user, chroot.mode) == ("root", 0o755)
    assert box.file(HOME).user == BOX.user
    # sshd's effective settings for the box user on each port
    on_box_port = sh(lab, "storagebox", f"sshd -T -C user={BOX.user},host=x,addr=10.77.1.1,lport={BOX.port}")
    assert f"chrootdirectory {chroot_of(BOX.user)}" in on_box_port.splitlines()
    assert "forcecommand none" in on_box_port.splitlines()
    on_22 = sh(lab, "storagebox", f"sshd -T -C user={BOX.user},host=x,addr=10.77.1.1,lport=22")
    assert "forcecommand internal-sftp -d /home" in on_22.splitlines()
    again = pyinfra(lab, env, "deploys/lab_storagebox.py", "storagebox", data=("ssh_port=22",))
    assert again.returncode == 0
    assert grand_total(again)["success"] == "-", changed_ops(again)


# --------------------------------------------------------------------------- phase 1
def test_phase1_first_run_succeeds(phase1: subprocess.CompletedProcess[str]) -> None:
    assert phase1.returncode == 0
    assert grand_total(phase1)["error"] == "-"


@pytest.mark.parametrize("name", CLIENTS)
def test_each_client_has_its_own_key_installed_and_the_box_key_pinned(lab: Lab, phase1, name: str) -> None:  # noqa: F811
    host = lab.host(name)
    key = host.file(KEY_PATH)
    assert (key.user, key.mode) == ("root", 0o600)
    assert host.file(f"{KEY_PATH}.pub").content_string.startswith("ssh-ed25519 ")
    assert host.file(os.path.dirname(KEY_PATH)).mode == 0o700
    public = host.file(f"{KEY_PATH}.pub").content_string.strip()
    authorized = lab.host("storagebox").file(f"{HOME}/.ssh/authorized_keys").content_string.splitlines()
    assert public in authorized
    pinned = sh(lab, name, f"ssh-keygen -F {shlex.quote(BOX.known_hosts_name)} -f {KNOWN_HOSTS}")
    box_keys = sh(lab, "storagebox", "cat /etc/ssh/ssh_host_*_key.pub")
    assert any(
        line.split()[1:3] == k.split()[0:2]
        for line in pinned.splitlines()
        if not line.startswith("#")
        for k in box_keys.splitlines()
    )
    # A key login that could prompt would hang here; BatchMode makes it fail instead, and it works.
    sh(lab, name, f"timeout 60 ssh -F /dev/null {BOX_SSH} {BOX.login} ls >/dev/null")


def test_sshfs_write_on_gpu_read_on_the_box_and_back(lab: Lab, phase1) -> None:  # noqa: F811
    units = SSHFS.in_mode(host_mode(lab, "gpu"))
    assert_units_enabled(lab, "gpu", units, mounted=True)
    name = f"brainall-test-{TOKEN}.txt"
    sh(lab, "gpu", f"echo 'from gpu {TOKEN}' > {SSHFS.where}/{name}")  # automount: the first access mounts it
    if units.mode == "automount":
        # the autofs trigger, and over it the SSHFS mount
        assert "autofs" in sh(lab, "gpu", f"findmnt -n -t autofs -o FSTYPE {SSHFS.where}")
    source, options = sh(lab, "gpu", f"findmnt -n -t fuse.sshfs -o SOURCE,OPTIONS {SSHFS.where}").split()
    proved("gpu", units.mode, "SSHFS mounted, written on gpu and read on the box, and back")
    assert source == SSHFS.what
    assert "allow_other" in options.split(",")
    assert lab.host("storagebox").file(f"{HOME}/models/{name}").content_string == f"from gpu {TOKEN}\n"
    back = f"{HOME}/models/back-{name}"
    sh(lab, "storagebox", f"echo 'from the box {TOKEN}' > {back} && chown {BOX.user}: {back}")
    assert sh(lab, "gpu", f"cat {SSHFS.where}/back-{name}") == f"from the box {TOKEN}\n"
    # allow_other: another local user reads it too
    assert sh(lab, "gpu", f"setpriv --reuid=65534 --regid=65534 --clear-groups cat {SSHFS.where}/back-{name}") == (
        f"from the box {TOKEN}\n"
    )


def test_cifs_on_prox106(lab: Lab, phase1, password: Path) -> None:  # noqa: F811
    host = lab.host("prox-106")
    credentials = host.file(CIFS_CREDENTIALS)
    assert (credentials.user, credentials.group, credentials.mode) == ("root", "root", 0o600)
    expected = f"username={BOX.user}\npassword={password.read_text().rstrip(chr(10))}\n"
    assert digest_of(lab, "prox-106", CIFS_CREDENTIALS) == hashlib.sha256(expected.encode()).hexdigest()
    support = parse_mount_support(sh(lab, "prox-106", MOUNT_SUPPORT_COMMAND).splitlines())
    units = CIFS.in_mode(support.mode)
    kernel_has_cifs = "cifs" in support.filesystems
    assert_units_enabled(lab, "prox-106", units, mounted=kernel_has_cifs)
    proved("prox-106", units.mode, "CIFS units enabled as the mode wants")
    name = f"brainall-test-{TOKEN}.txt"
    if kernel_has_cifs:
        print("prox-106: the kernel offers cifs: testing through the real CIFS mount")
        sh(lab, "prox-106", f"echo 'from prox-106 {TOKEN}' > {CIFS.where}/{name}")
        assert sh(lab, "prox-106", f"findmnt -n -t cifs -o SOURCE {CIFS.where}").strip() == CIFS.what
    else:
        note = (
            "prox-106: this kernel has no cifs module (/proc/filesystems lists none, and a container "
            "cannot load one): checking the generated units with systemd-analyze verify and the share "
            "with a real smbclient session using the same credentials file"
        )
        print(note)
        warnings.warn(note, stacklevel=1)  # shown in the run's summary even when output is captured
        unit_files = f"/etc/systemd/system/{CIFS.mount_unit}" + (
            f" /etc/systemd/system/{CIFS.automount_unit}" if units.mode == "automount" else ""
        )
        verify = host.run(f"systemd-analyze verify {unit_files}")
        assert verify.rc == 0, verify.stdout + verify.stderr
        assert CIFS.mount_unit not in verify.stderr, verify.stderr
        sh(
            lab,
            "prox-106",
            "command -v smbclient >/dev/null || DEBIAN_FRONTEND=noninteractive timeout 600 "
            "apt-get install -y -q --no-install-recommends smbclient >/dev/null",
        )
        share = f"//{BOX.address}/{PROX106.cifs[0].share}"
        sh(lab, "prox-106", f"echo 'from prox-106 {TOKEN}' > /tmp/{name}")
        session = sh(
            lab,
            "prox-106",
            f"smbclient {share} -A {CIFS_CREDENTIALS} -m SMB3 --client-protection=encrypt "
            f"-c 'cd {PROX106.cifs[0].subdir}; put /tmp/{name} {name}; ls {name}' 2>&1",
        )
        assert name in session
    assert lab.host("storagebox").file(f"{HOME}/uploads/{name}").content_string == f"from prox-106 {TOKEN}\n"


def test_mounts_never_hold_up_boot(lab: Lab, phase1) -> None:  # noqa: F811
    for name, units in (("gpu", SSHFS), ("prox-106", CIFS)):
        host = lab.host(name)
        units = units.in_mode(host_mode(lab, name))
        # as the unit says (systemctl show reports the kernel's options while it is mounted)
        unit_file = sh(lab, name, f"systemctl cat {units.mount_unit}")
        options = next(line for line in unit_file.splitlines() if line.startswith("Options=")).split("=", 1)[1]
        options = options.split(",")
        if units.mode == "automount":
            # only the automount is enabled (pulled in by remote-fs.target); the mount itself
            # waits for nobody at boot
            assert host.run(f"systemctl is-enabled {units.mount_unit}").stdout.strip() == "static"
            assert "remote-fs.target" in sh(lab, name, f"systemctl show -p WantedBy --value {units.automount_unit}")
        else:
            # no autofs: the mount itself is wanted (never required) by remote-fs.target, nofail
            assert host.run(f"systemctl is-enabled {units.mount_unit}").stdout.strip() == "enabled"
            assert "remote-fs.target" in sh(lab, name, f"systemctl show -p WantedBy --value {units.mount_unit}")
            assert "remote-fs.target" not in sh(lab, name, f"systemctl show -p RequiredBy --value {units.mount_unit}")
            assert "nofail" in options
        # either way it gives up after its TimeoutSec when the box does not answer
        assert sh(lab, name, f"systemctl show -p TimeoutUSec --value {units.mount_unit}").strip() == (
            f"{units.timeout_s}s"
        )
        assert "_netdev" in options
        proved(name, units.mode, "nothing waits for the box at boot beyond the mount's TimeoutSec")


def test_automount_units_verified_where_the_host_has_no_autofs(lab: Lab, phase1) -> None:  # noqa: F811
    """Where a host lacks autofs, the automount path is checked as far as it can be: the units it
    would get, rendered by the same templates, pass `systemd-analyze verify` on that host."""
    from brainall_ops.storage.rendering import render

    checked = []
    for name, units in (("gpu", SSHFS), ("prox-106", CIFS)):
        if host_mode(lab, name) == "automount":
            continue  # this host runs the automount path for real (the tests above)
        directory = f"/tmp/brainall-automount-check-{TOKEN}"
        sh(lab, name, f"rm -rf {directory} && mkdir -p {directory}")
        for unit_name, template in ((units.mount_unit, "mount.j2"), (units.automount_unit, "automount.j2")):
            text = render(template, units=units.in_mode("automount"))
            sh(lab, name, f"printf %s {shlex.quote(text)} > {directory}/{shlex.quote(unit_name)}")
        verify = lab.host(name).run(
            f"systemd-analyze verify {directory}/{shlex.quote(units.mount_unit)} "
            f"{directory}/{shlex.quote(units.automount_unit)}"
        )
        assert verify.rc == 0, verify.stdout + verify.stderr
        assert units.automount_unit not in verify.stderr, verify.stderr
        sh(lab, name, f"rm -rf {directory}")
        checked.append(name)
        proved(name, "automount", "its units pass systemd-analyze verify (this host has no autofs to run them)")
    if len(checked) < 2:
        assert host_mode(lab, "gpu") == "automount" or host_mode(lab, "prox-106") == "automount"


def test_backup_service_puts_the_files_on_the_box_with_one_log_line(lab: Lab, phase1) -> None:  # noqa: F811
    host = lab.host("prox-101")
    assert host.service(f"{BACKUP.unit}.timer").is_enabled
    assert host.run(f"systemctl is-active {BACKUP.unit}.timer").stdout.strip() == "active"
    before = host.run(f"wc -l < {BACKUP_LOG}").stdout.strip() if host.file(BACKUP_LOG).exists else "0"
    run = host.run(f"systemctl start {BACKUP.unit}.service")
    log = host.file(BACKUP_LOG).content_string.splitlines()
    assert run.rc == 0, f"{run.stderr}\n{log[-3:]}"
    new = log[int(before) :]
    assert len(new) == 1 and f"brainall-backup {BACKUP.name}: ok: 3 source(s) to {BACKUP.where}" in new[0], new
    copied = f"{HOME}/{PROX101.backups[0].destination}/root/backup/brainall-test-{TOKEN}.txt"
    assert lab.host("storagebox").file(copied).content_string == f"{TOKEN}\n"
    journal = sh(lab, "prox-101", f"journalctl -u {BACKUP.unit}.service -o cat --no-pager")
    assert new[0] in journal


def test_a_second_backup_run_waits_for_nobody_and_overlaps_nothing(lab: Lab, phase1) -> None:  # noqa: F811
    host = lab.host("prox-101")
    before = len(host.file(BACKUP_LOG).content_string.splitlines())
    # Hold the run lock as a first run would, and start the service meanwhile.
    run = host.run(f"flock -n {BACKUP.lock} systemctl start {BACKUP.unit}.service")
    assert run.rc == 0, run.stderr
    new = host.file(BACKUP_LOG).content_string.splitlines()[before:]
    assert len(new) == 1 and f"brainall-backup {BACKUP.name}: skipped: an earlier run still holds" in new[0], new


def test_ollama_models_are_on_the_box_verified_and_linked(lab: Lab, phase1, seeded: dict[str, str]) -> None:  # noqa: F811
    gpu = lab.host("gpu")
    link = gpu.file(OLLAMA.source)
    assert link.is_symlink and link.linked_to == OLLAMA.target
    assert not gpu.file(f"{OLLAMA.source}.before-storagebox").exists
    remote_dir = f"{HOME}/{OLLAMA.remote.split(':', 1)[1]}"
    on_box = sh(lab, "storagebox", f"cd {remote_dir} && find . -type f -print0 | sort -z | xargs -0 sha256sum")
    box_digests = {name: digest for digest, name in (line.split(None, 1) for line in on_box.splitlines())}
    files = {k: v for k, v in seeded.items() if k.startswith("./")}
    assert {k: v for k, v in box_digests.items() if k in files} == files
    # Ollama was stopped for the switch and runs again
    assert gpu.run(f"systemctl is-active {OLLAMA.service}").stdout.strip() == "active"
    started = sh(lab, "gpu", f"systemctl show -p ActiveEnterTimestampMonotonic --value {OLLAMA.service}")
    assert started != seeded["ollama-started"]
    through_link = sh(lab, "gpu", f"cd {OLLAMA.source}/ && find . -type f -print0 | sort -z | xargs -0 sha256sum")
    assert {name: digest for digest, name in (line.split(None, 1) for line in through_link.splitlines())} == box_digests


def test_phase1_again_changes_nothing(lab: Lab, env: dict[str, str], phase1) -> None:  # noqa: F811
    again = pyinfra(lab, env, "deploys/phase1.py", *CLIENTS)
    assert again.returncode == 0
    assert grand_total(again)["success"] == "-", changed_ops(again)
    assert changed_ops(again) == []


def test_unreachable_box_names_its_address_and_port(lab: Lab, env: dict[str, str], phase1, tmp_path: Path) -> None:  # noqa: F811
    closed_port = 2323
    text = BUILTIN_ROLEMAP.read_text()
    lab_line = f"storagebox: {{address: {BOX.address}, ssh_port: {BOX.port}}}"
    assert lab_line in text
    rolemap = tmp_path / "unreachable-box.yaml"
    rolemap.write_text(text.replace(lab_line, f"storagebox: {{address: {BOX.address}, ssh_port: {closed_port}}}"))
    result = pyinfra(lab, env, "deploys/phase1.py", "prox-101", data=(f"brainall_rolemap={rolemap}",))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"Storage Box {BOX.address}:{closed_port} unreachable from prox-101: Connection refused" in output
    assert "Traceback" not in output


BOX_BACK_WITHIN_S = 150  # the remount timer runs every 30 s; a mount attempt is bounded by TimeoutSec


def _wait_until(condition, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(2)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")


def test_without_autofs_sshfs_comes_back_by_itself_after_the_box_restarts(
    lab: Lab,  # noqa: F811
    env: dict[str, str],
    phase1,
) -> None:
    """The no-automount path end to end on gpu: on a kernel with autofs the lab denies gpu the
    device for this test (and gives it back after), so the path runs on every kernel."""
    from brainall_ops.lab import start_host, stop_host

    withheld = host_mode(lab, "gpu") == "automount"
    if withheld:
        stop_host(lab.state_dir, "gpu")
        start_host(lab.state_dir, "gpu", withhold=frozenset({"autofs"}))
        lab._testinfra_hosts.pop("gpu", None)
    try:
        assert host_mode(lab, "gpu") == "mount"
        first = pyinfra(lab, env, "deploys/phase1.py", "gpu")
        assert first.returncode == 0
        units = SSHFS.in_mode("mount")
        assert_units_enabled(lab, "gpu", units, mounted=True)
        name = f"brainall-restart-{TOKEN}.txt"
        sh(lab, "gpu", f"echo 'before {TOKEN}' > {SSHFS.where}/{name}")
        assert lab.host("storagebox").file(f"{HOME}/models/{name}").content_string == f"before {TOKEN}\n"

        stop_host(lab.state_dir, "storagebox")
        start_host(lab.state_dir, "storagebox")
        lab._testinfra_hosts.pop("storagebox", None)
        after = f"{HOME}/models/after-{name}"
        sh(lab, "storagebox", f"echo 'after {TOKEN}' > {after} && chown {BOX.user}: {after}")

        def reads_through_the_mount() -> bool:
            result = lab.host("gpu").run(f"timeout 15 cat {SSHFS.where}/after-{name}")
            return result.rc == 0 and result.stdout == f"after {TOKEN}\n"

        took = _wait_until(reads_through_the_mount, BOX_BACK_WITHIN_S, "the SSHFS mount back after the box restart")
        print(f"gpu: the mount answered again {took:.0f} s after the box was back")
        assert sh(lab, "gpu", f"findmnt -n -t fuse.sshfs -o SOURCE {SSHFS.where}").strip() == SSHFS.what
        again = pyinfra(lab, env, "deploys/phase1.py", "gpu")
        assert again.returncode == 0
        assert grand_total(again)["success"] == "-", changed_ops(again)
        proved("gpu", "mount", f"box stopped and started: the mount came back by itself in {took:.0f} s")
    finally:
        if withheld:  # the automount path again, as the rest of the session expects
            stop_host(lab.state_dir, "gpu")
            start_host(lab.state_dir, "gpu", withhold=frozenset())
            lab._testinfra_hosts.pop("gpu", None)
            restored = pyinfra(lab, env, "deploys/phase1.py", "gpu")
            assert restored.returncode == 0
            assert host_mode(lab, "gpu") == "automount"
            assert not lab.host("gpu").file("/etc/systemd/system/brainall-storage-remount.timer").exists


def test_the_password_is_never_printed_nor_logged(lab: Lab, password: Path, phase1) -> None:  # noqa: F811
    secret = password.read_text().rstrip("\n")
    assert len(PRINTED) >= 6, "expected the output of every deploy run"
    for index, text in enumerate(PRINTED):
        assert secret not in text, f"pyinfra output #{index} contains the Storage Box password"
    # Where it may rest in clear: the CIFS credentials on prox-106 and the stand-in box's own copy.
    allowed = {"prox-106": [CIFS_CREDENTIALS], "storagebox": ["/etc/brainall/storagebox-lab/password"]}
    for name in (*CLIENTS, "storagebox"):
        journal = lab.host(name).run("journalctl --no-pager -o cat -n 50000").stdout
        assert journal, f"{name}: empty journal"
        assert secret not in journal, f"{name}: the journal contains the Storage Box password"
        assert secret not in sh(lab, name, "ps -eo args")
        # grep reads the password on stdin: it never appears in a command line on the host
        found = subprocess.run(
            [
                "ssh",
                "-F",
                str(lab.ssh_config),
                name,
                "grep -rlsF -f /dev/stdin /etc /root /tmp /var/tmp /run /var/log /usr/local /srv || true",
            ],
            input=secret + "\n",
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.split()
        assert sorted(found) == sorted(allowed.get(name, [])), f"{name}: files holding the password: {found}"
        for path in found:
            info = lab.host(name).file(path)
            assert (info.user, info.mode) == ("root", 0o600), path
