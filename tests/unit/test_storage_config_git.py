"""Configs to Git (storage.config_git) as pure logic and rendered files: which hosts push, what is
kept out of git, the role-map section's checks, the plan's changes and the rendered files
(git on this machine answers what is kept out, as the script asks it). The script's run is the
lab test's (tests/integration/test_storage_config_git_lab.py); here its syntax and pieces."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from brainall_ops.data.logic import REDIS_AUTH
from brainall_ops.errors import RoleMapError
from brainall_ops.inference.logic import REDIS_AUTH_CONF
from brainall_ops.lab import storagebox as lab_box
from brainall_ops.planning.plan import build_plan
from brainall_ops.rolemap import load_rolemap
from brainall_ops.rolemap.loader import BUILTIN_ROLEMAP, parse_rolemap
from brainall_ops.storage.config_git import (
    BUILTIN_EXCLUDES,
    UNIT,
    config_git_hosts,
    config_git_job_for,
    remote_dirs,
)
from brainall_ops.storage.logic import CIFS_CREDENTIALS, CLIENT_DIR, KEY_PATH
from brainall_ops.storage.rendering import render

RM = load_rolemap()
TEXT = BUILTIN_ROLEMAP.read_text(encoding="utf-8")


def _with_section(section: str) -> str:
    old = "  config_git: {destination: configs, on_calendar: \"*-*-* 04:30:00\", randomized_delay_s: 900}\n"
    assert old in TEXT
    return TEXT.replace(old, section)


def test_default_hosts_are_every_host_and_vm_with_a_box_key() -> None:
    # storage clients (gpu: sshfs + ollama, prox-106: cifs, prox-101: backups) and the data VM
    assert config_git_hosts(RM) == ["gpu", "prox-101", "prox-106", "vm-brainall-db"]


def test_no_section_no_hosts_and_an_explicit_list_wins() -> None:
    assert config_git_hosts(parse_rolemap(_with_section(""), "x.yaml")) == []
    rm = parse_rolemap(_with_section("  config_git: {hosts: [prox-101]}\n"), "x.yaml")
    assert config_git_hosts(rm) == ["prox-101"]
    assert config_git_job_for(rm, "lab", "gpu") is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("  config_git: {hosts: [bastion]}\n", "'bastion' has no Storage Box key"),
        ("  config_git: {hosts: [gpu, gpu]}\n", "duplicate host 'gpu'"),
        ("  config_git: {exclude: ['!shadow']}\n", "config_git.exclude"),
        ("  config_git: {exclude: ['../x']}\n", "config_git.exclude"),
        ("  config_git: {bogus: 1}\n", "config_git.bogus"),
    ],
)
def test_section_is_checked(section: str, message: str) -> None:
    with pytest.raises(RoleMapError) as info:
        parse_rolemap(_with_section(section), "x.yaml")
    assert message in str(info.value)


def test_job_for_a_lab_host() -> None:
    job = config_git_job_for(RM, "lab", "prox-101")
    assert job is not None
    assert job.unit == UNIT == "brainall-config-git"
    assert job.lock == "/run/lock/brainall-config-git.lock"
    assert job.remote.endswith(":configs/prox-101.bundle")
    assert "10.77.1.50" in job.remote and job.where == "10.77.1.50:23/configs/prox-101.bundle"
    assert f"IdentityFile={KEY_PATH}" in job.ssh and "StrictHostKeyChecking=yes" in job.ssh
    assert config_git_job_for(RM, "lab", "bastion") is None
    assert remote_dirs(RM) == ["configs"]


def _kept_out(paths: list[str], patterns: tuple[str, ...], tmp: Path) -> set[str]:
    """git's own answer, as the script asks it (an empty scratch repository, core.excludesFile)."""
    git = shutil.which("git")
    if git is None:
        pytest.fail("git is needed (apt-get install git)")
    subprocess.run([git, "init", "-q", str(tmp / "scratch")], check=True)
    (tmp / "exclude").write_text("".join(f"{p}\n" for p in patterns))
    result = subprocess.run(
        [git, "-C", str(tmp / "scratch"), "-c", f"core.excludesFile={tmp / 'exclude'}", "check-ignore", "--no-index",
         "--stdin"],
        input="".join(f"{p}\n" for p in paths), capture_output=True, text=True,
    )
    assert result.returncode in (0, 1), result.stderr
    return set(result.stdout.split())


def test_secrets_and_pve_are_kept_out_and_ordinary_configs_are_not(tmp_path: Path) -> None:
    def rel(path: str) -> str:
        return path.removeprefix("/etc/")

    secrets = [
        rel(KEY_PATH),
        rel(CIFS_CREDENTIALS),
        rel(f"{CLIENT_DIR}/known_hosts"),
        rel(REDIS_AUTH),
        rel(REDIS_AUTH_CONF),
        rel(lab_box.PASSWORD_FILE),
        "pve/priv/authkey.key",
        "pve/storage.cfg",
        "shadow",
        "gshadow-",
        "ssh/ssh_host_ed25519_key",
        "ssl/private/ssl-cert-snakeoil.key",
    ]
    kept = ["hostname", "hosts", "ssh/sshd_config", "ssh/ssh_host_ed25519_key.pub", "redis/redis.conf",
            "network/interfaces", "brainall/backends-mode.env", "default/shadow", "systemd/system/x.timer"]
    out = _kept_out(secrets + kept, BUILTIN_EXCLUDES, tmp_path)
    assert out == set(secrets)


def test_role_map_excludes_are_added_after_the_builtin_ones() -> None:
    rm = parse_rolemap(_with_section("  config_git: {exclude: [/wireguard/, /pve/]}\n"), "x.yaml")
    job = config_git_job_for(rm, "lab", "gpu")
    assert job is not None
    assert job.excludes == (*BUILTIN_EXCLUDES, "/wireguard/")
    assert job.gitignore_block().splitlines() == list(job.excludes)


def _unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None, comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_service_timer_and_script() -> None:
    job = config_git_job_for(RM, "lab", "gpu")
    assert job is not None
    service = _unit(render("job.service.j2", job=job))
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"] == job.script == "/usr/local/lib/brainall-storage/config-git"
    timer = _unit(render("job.timer.j2", job=job))
    assert timer["Timer"]["OnCalendar"] == "*-*-* 04:30:00"
    assert timer["Timer"]["RandomizedDelaySec"] == "900"
    assert timer["Install"]["WantedBy"] == "timers.target"

    script = render("config-git.sh.j2", job=job, log="/var/log/brainall-config-git.log")
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell
    check = subprocess.run([shell, "-n"], input=script, capture_output=True, text=True, timeout=10)
    assert check.returncode == 0, check.stderr
    assert script.startswith("#!/bin/sh\n")
    assert "exec 9>/run/lock/brainall-config-git.lock\nif ! flock -n 9; then" in script
    assert 'say "skipped: ' in script and "exit 0" in script
    assert "brainall-config-git gpu: $*" in script  # every line names the host
    assert script.count('say "ok: ') == 1
    # the patterns the history check uses are exactly the .gitignore block's
    patterns = script.split("<<'PATTERNS'\n", 1)[1].split("PATTERNS\n", 1)[0]
    assert patterns == job.gitignore_block() + "\n"
    assert "bundle create -q \"$bundle\" --all" in script
    assert "-o IdentityFile=/etc/brainall/storagebox/id_ed25519" in script


def test_plan_shows_config_git_per_host_in_its_phase() -> None:
    plan = build_plan(RM, "brainall-v2.yaml")
    changes = [c for c in plan.changes if c.concern == "storage" and c.summary.startswith("configs to Git")]
    assert [(c.phase, c.target) for c in changes] == [
        ("phase1", "gpu"), ("phase1", "prox-101"), ("phase1", "prox-106"), ("phase5", "vm-brainall-db")
    ]
    assert changes[0].detail["destination"] == "configs/gpu.bundle"
