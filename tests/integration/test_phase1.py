"""Phase 1 (preparation) on the lab, with the real pyinfra CLI, asserted with pytest-testinfra."""

from __future__ import annotations

import subprocess

import pytest

from brainall_ops.lab import start_host, stop_host
from tests.integration.lab_fixture import Lab
from tests.integration.pyinfra_run import LAB_INVENTORY, PyinfraRun, run_pyinfra

# A lab-only Storage Box password: the storage part of phase 1 needs one, and no output may show it.
PASSWORD = "lab-Phase1-Pa55word-7d41"
ENV = {"BRAINALL_STORAGEBOX_PASSWORD": PASSWORD}
BARE_METAL = ["gpu", "prox-101", "prox-106", "prox-102", "bastion"]


@pytest.fixture(scope="module")
def phase1_runs(lab: Lab) -> tuple[PyinfraRun, PyinfraRun]:
    # the lab's storagebox host plays the Storage Box (sshd on 23, Samba) with this password
    box = run_pyinfra(LAB_INVENTORY, "deploys/lab_storagebox.py", "--limit", "storagebox", env=ENV)
    assert box.returncode == 0, box.output[-3000:]
    first = run_pyinfra(LAB_INVENTORY, "deploys/phase1.py", env=ENV)
    second = run_pyinfra(LAB_INVENTORY, "deploys/phase1.py", env=ENV)
    return first, second


def test_first_run_succeeds_everywhere(phase1_runs: tuple[PyinfraRun, PyinfraRun]) -> None:
    first, _ = phase1_runs
    assert first.returncode == 0, first.output[-4000:]
    assert first.error == 0 and first.operations > 0
    assert first.changed > 0  # the hosts started pristine


def test_second_run_reports_zero_changes(phase1_runs: tuple[PyinfraRun, PyinfraRun]) -> None:
    _, second = phase1_runs
    assert second.returncode == 0, second.output[-4000:]
    assert (second.changed, second.error) == (0, 0), second.output[-4000:]
    assert second.no_change == second.operations > 0


def test_no_output_shows_the_storage_box_password(phase1_runs: tuple[PyinfraRun, PyinfraRun]) -> None:
    for run in phase1_runs:
        assert PASSWORD not in run.output


@pytest.mark.parametrize("name", BARE_METAL)
def test_base_system_state(lab: Lab, phase1_runs: tuple[PyinfraRun, PyinfraRun], name: str) -> None:
    host = lab.host(name)
    assert host.check_output("hostname") == name
    for package in ("ca-certificates", "curl", "rsync", "jq", "htop", "systemd-timesyncd"):
        assert host.package(package).is_installed, package
    hosts_file = host.file("/etc/hosts").content_string
    assert "# BEGIN brainall-ops fleet names" in hosts_file
    assert f"{lab.address('vm-brainall-db')} vm-brainall-db" in hosts_file
    assert host.check_output("timedatectl show -p Timezone --value") == "Europe/Helsinki"
    assert host.file("/etc/systemd/timesyncd.conf.d/brainall.conf").contains("NTP=ntp1.hetzner.de")
    assert host.service("systemd-timesyncd").is_enabled

    ops = host.user("ops")
    assert ops.exists and ops.shell == "/bin/bash"
    lab_key = (lab.state_dir / "id_ed25519.pub").read_text().split()[1]
    assert host.file("/home/ops/.ssh/authorized_keys").contains(lab_key)
    sudoers = host.file("/etc/sudoers.d/brainall-admins")
    assert sudoers.mode == 0o440 and sudoers.contains("^ops ALL=")

    sshd = host.check_output("sshd -T")
    for setting in ("passwordauthentication no", "permitrootlogin without-password",
                    "kbdinteractiveauthentication no", "port 22"):
        assert setting in sshd.splitlines(), setting
    assert host.service("ssh").is_running


def _ssh(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(lab.ssh_config), *args], capture_output=True, text=True, timeout=30
    )


def test_admin_logs_in_with_the_key_and_has_sudo(lab: Lab, phase1_runs: tuple[PyinfraRun, PyinfraRun]) -> None:
    result = _ssh(lab, "-l", "ops", "prox-106", "sudo -n id -un")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "root"


def test_password_login_is_refused(lab: Lab, phase1_runs: tuple[PyinfraRun, PyinfraRun]) -> None:
    result = _ssh(
        lab, "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive",
        "-o", "BatchMode=yes", "-l", "ops", "gpu", "true",
    )
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr


def test_a_stopped_host_is_reported_by_name_and_the_others_complete(
    lab: Lab, phase1_runs: tuple[PyinfraRun, PyinfraRun]
) -> None:
    stop_host(lab.state_dir, "prox-102")
    try:
        run = run_pyinfra(LAB_INVENTORY, "deploys/base.py", "--limit", "proxmox", env=ENV)
    finally:
        start_host(lab.state_dir, "prox-102")
    assert run.returncode != 0
    assert "[prox-102]" in run.output and "Could not connect" in run.output, run.output[-3000:]
    # prox-101 and prox-106 still ran every operation (nothing to change after phase 1)
    assert run.no_change > 0 and run.error == 0, run.output[-3000:]
