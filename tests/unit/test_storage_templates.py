"""The storage templates as rendered for the built-in role map's lab: unit files say what the
issue asks, and every shell script is valid sh (checked by dash itself, `sh -n`)."""

from __future__ import annotations

import configparser
import shutil
import subprocess

import pytest

from brainall_ops.lab.storagebox import CHROOT_PROGRAMS, SHELL, SHELL_COMMANDS, sshd_ports
from brainall_ops.rolemap import load_rolemap
from brainall_ops.storage.logic import (
    BACKUP_LOG,
    backup_job,
    cifs_units,
    client_plan,
    sshfs_units,
)
from brainall_ops.storage.rendering import render

RM = load_rolemap()
GPU = client_plan(RM, "lab", "gpu")
PROX101 = client_plan(RM, "lab", "prox-101")
PROX106 = client_plan(RM, "lab", "prox-106")
assert GPU and PROX101 and PROX106


def unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None, comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def sh_syntax_ok(script: str) -> None:
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell, "no POSIX shell to check the scripts with"
    result = subprocess.run([shell, "-n"], input=script, capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr


def test_sshfs_mount_unit_has_a_timeout_and_waits_for_the_network() -> None:
    units = sshfs_units(GPU.sshfs[0], GPU.box)
    mount = unit(render("mount.j2", units=units))
    assert mount["Mount"]["What"] == "u503462@10.77.1.50:models"
    assert mount["Mount"]["Where"] == "/mnt/storagebox/models"
    assert mount["Mount"]["Type"] == "fuse.sshfs"
    assert mount["Mount"]["TimeoutSec"] == "30"
    assert "port=23" in mount["Mount"]["Options"].split(",")
    assert mount["Unit"]["After"] == "network-online.target"
    assert "Install" not in mount  # only the automount is enabled: boot never waits for the box


def test_automount_unit_is_wanted_by_remote_fs() -> None:
    units = cifs_units(PROX106.cifs[0], PROX106.box)
    automount = unit(render("automount.j2", units=units))
    assert automount["Automount"]["Where"] == "/mnt/storagebox/uploads"
    assert automount["Install"]["WantedBy"] == "remote-fs.target"


def test_cifs_mount_unit_names_the_credentials_file_only() -> None:
    units = cifs_units(PROX106.cifs[0], PROX106.box)
    text = render("mount.j2", units=units)
    mount = unit(text)
    assert mount["Mount"]["What"] == "//10.77.1.50/backup/uploads"
    assert mount["Mount"]["Type"] == "cifs"
    assert "credentials=/etc/brainall/storagebox/cifs-credentials" in mount["Mount"]["Options"]
    assert "password" not in text


def test_backup_units_and_script() -> None:
    job = backup_job(PROX101.backups[0], PROX101.box)
    service = unit(render("job.service.j2", job=job))
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"] == "/usr/local/lib/brainall-storage/backup-prox-101-configs"
    timer = unit(render("job.timer.j2", job=job))
    assert timer["Timer"]["OnCalendar"] == "*-*-* 03:15:00"
    assert timer["Timer"]["Persistent"] == "true"
    assert "RandomizedDelaySec" not in timer["Timer"]
    assert timer["Install"]["WantedBy"] == "timers.target"
    script = render("backup.sh.j2", job=job, log=BACKUP_LOG)
    sh_syntax_ok(script)
    assert "flock -n 9" in script and "exec 9>/run/lock/brainall-backup-prox-101-configs.lock" in script
    for source in job.sources:
        assert f'if [ -e {source} ]; then set -- "$@" {source};' in script
    assert job.rsync_command() in script


def test_randomized_delay_is_written_when_asked() -> None:
    backup = PROX101.backups[0].model_copy(update={"randomized_delay_s": 600})
    timer = unit(render("job.timer.j2", job=backup_job(backup, PROX101.box)))
    assert timer["Timer"]["RandomizedDelaySec"] == "600"


def test_ollama_move_script_verifies_before_it_removes() -> None:
    assert GPU.ollama is not None
    script = render("ollama-move.sh.j2", move=GPU.ollama)
    sh_syntax_ok(script)
    verify_at = script.index("\nverify\n")
    assert script.index("--checksum") < verify_at
    assert verify_at < script.index('mv "$src" "$aside"') < script.index('rm -rf "$aside"')
    assert "src=/usr/share/ollama/.ollama/models" in script
    assert "target=/mnt/storagebox/models/ollama" in script


def test_lab_box_scripts_and_configs() -> None:
    shell = render("lab-shell.sh.j2", shell=SHELL, commands=SHELL_COMMANDS)
    sh_syntax_ok(shell)
    assert "exec /usr/bin/rsync" in shell and "install-ssh-key)" in shell
    sh_syntax_ok(
        render("lab-chroot.sh.j2", chroot="/srv/storagebox/u503462", programs=CHROOT_PROGRAMS, box_user="u503462")
    )
    sshd = render(
        "lab-sshd.conf.j2", ports=[22, 23], box_port=23, box_user="u503462", chroot="/srv/storagebox/u503462"
    )
    assert "Port 22\nPort 23\n" in sshd
    assert "Match User u503462 LocalPort 23" in sshd and "ForceCommand internal-sftp -d /home" in sshd
    smb = render("lab-smb.conf.j2", share="backup", box_user="u503462", chroot="/srv/storagebox/u503462", box_port=23)
    assert "[backup]" in smb and "path = /srv/storagebox/u503462/home" in smb


@pytest.mark.parametrize(
    ("listening", "ours", "expected"),
    [
        ([22], [], [22, 23]),  # the lab sshd only on 22: we add 23 (and keep 22)
        ([22, 23], [], []),  # the lab runtime already opened 23: leave ports alone
        ([22, 23], ["Port 22", "Port 23", "Match User u"], [22, 23]),  # ours opened it: keep it
    ],
)
def test_lab_sshd_ports(listening: list[int], ours: list[str], expected: list[int]) -> None:
    assert sshd_ports(listening, ours, 23) == expected
