"""The API token secret, scrubbing, and where the client connects: pure logic and local files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from brainall_ops.errors import BrainallError
from brainall_ops.planning.fleet import place_rolemap
from brainall_ops.planning.plan import PlanContext
from brainall_ops.proxmox.client import ApiError, TaskFailed, connection_settings
from brainall_ops.proxmox.plan import plan_changes
from brainall_ops.rolemap.loader import REPO_ROOT, load_rolemap
from brainall_ops.shared.secrets import PROXMOX_TOKEN, Secret, SecretError, scrub

read_token_secret = PROXMOX_TOKEN.require

TOKEN = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"


def secret_file(path: Path, mode: int = 0o600, text: str = TOKEN + "\n") -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_secret_from_the_environment_or_a_file_not_both(tmp_path: Path) -> None:
    assert read_token_secret({"BRAINALL_PROXMOX_TOKEN_SECRET": TOKEN + " "}).reveal() == TOKEN
    env = {"BRAINALL_PROXMOX_TOKEN_SECRET": TOKEN, "BRAINALL_PROXMOX_TOKEN_FILE": "/nonexistent"}
    with pytest.raises(SecretError, match="set either BRAINALL_PROXMOX_TOKEN_SECRET or BRAINALL_PROXMOX_TOKEN_FILE"):
        read_token_secret(env)


def test_secret_file_readable_by_its_owner_only(tmp_path: Path) -> None:
    good = secret_file(tmp_path / "token")
    assert read_token_secret({"BRAINALL_PROXMOX_TOKEN_FILE": str(good)}).reveal() == TOKEN
    loose = secret_file(tmp_path / "loose", 0o640)
    with pytest.raises(SecretError, match=r"open to group or others \(mode 0640\); run: chmod 600 "):
        read_token_secret({"BRAINALL_PROXMOX_TOKEN_FILE": str(loose)})
    empty = secret_file(tmp_path / "empty", 0o600, "\n")
    with pytest.raises(SecretError, match="the secret is empty"):
        read_token_secret({"BRAINALL_PROXMOX_TOKEN_FILE": str(empty)})
    with pytest.raises(SecretError, match="No such file"):
        read_token_secret({"BRAINALL_PROXMOX_TOKEN_FILE": str(tmp_path / "missing")})
    with pytest.raises(SecretError, match="not a regular file"):
        read_token_secret({"BRAINALL_PROXMOX_TOKEN_FILE": str(tmp_path)})
    with pytest.raises(SecretError, match="set BRAINALL_PROXMOX_TOKEN_SECRET"):
        read_token_secret({})


def test_secret_file_inside_the_repository_is_refused(tmp_path: Path) -> None:
    inside = secret_file(tmp_path / "token")
    with pytest.raises(SecretError, match="inside the repository"):
        read_token_secret({"BRAINALL_PROXMOX_TOKEN_FILE": str(inside)}, repo_root=tmp_path)
    # a link from outside to a file inside is still inside
    link = tmp_path.parent / f"{tmp_path.name}-link"
    link.symlink_to(inside)
    try:
        with pytest.raises(SecretError, match="inside the repository"):
            read_token_secret({"BRAINALL_PROXMOX_TOKEN_FILE": str(link)}, repo_root=tmp_path)
    finally:
        link.unlink()
    assert REPO_ROOT.is_dir()


def test_secrets_never_show() -> None:
    secret = Secret(TOKEN)
    assert TOKEN not in repr(secret) and TOKEN not in str(secret) and TOKEN not in f"{secret}"
    header = f"headers={{'Authorization': 'PVEAPIToken=brainall-ops@pve!deploy={TOKEN}'}}"
    assert TOKEN not in scrub(header)  # even without knowing the secret
    assert scrub(f"bad token {TOKEN}", secret) == "bad token ********"


def test_lock_timeouts_are_recognised() -> None:
    lock = "can't lock file '/var/lock/qemu-server/lock-106.conf' - got timeout"
    assert ApiError(f"PUT x: HTTP 500: {lock}", 500, lock).is_lock_timeout
    assert TaskFailed("configure x", "UPID:n:1:2:3:qmconfig:106:u:", lock, []).is_lock_timeout
    assert not TaskFailed("start x", "UPID:n:1:2:3:qmstart:106:u:", "start failed", []).is_lock_timeout


def test_task_failures_carry_the_log_tail() -> None:
    failed = TaskFailed(
        "start vm-x",
        "UPID:n:1:2:3:qmstart:106:u:",
        "start failed: QEMU exited with code 1",
        ["generating cloud-init ISO", "kvm: cannot set up guest memory", "TASK ERROR: start failed"],
    )
    assert str(failed).splitlines() == [
        "start vm-x failed: start failed: QEMU exited with code 1 (task UPID:n:1:2:3:qmstart:106:u:)",
        "    | generating cloud-init ISO",
        "    | kvm: cannot set up guest memory",
    ]


def test_endpoint_from_the_rolemap_and_its_overrides(tmp_path: Path) -> None:
    rm = load_rolemap()
    production = connection_settings(rm, "production", {})
    assert production.url == "https://192.168.100.1:8006" and production.verify is True
    assert production.token_id == "brainall-ops@pve!deploy" and production.task_timeout_s == 600
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "proxmox").mkdir()
    (tmp_path / "proxmox" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    lab = connection_settings(rm, "lab", {"BRAINALL_LAB_DIR": str(tmp_path)})
    assert lab.url == "https://127.0.0.1:8006" and lab.verify == str(tmp_path / "proxmox" / "ca.pem")
    with pytest.raises(BrainallError, match="is the lab's Proxmox simulator running"):
        connection_settings(rm, "lab", {"BRAINALL_LAB_DIR": str(tmp_path / "nolab")})
    test = connection_settings(
        rm, "production", {"BRAINALL_PROXMOX_URL": "https://127.0.0.1:8443", "BRAINALL_PROXMOX_CA": str(ca)}
    )
    assert test.url == "https://127.0.0.1:8443" and test.verify == str(ca)
    assert repr(test) == "ConnectionSettings(https://127.0.0.1:8443, brainall-ops@pve!deploy)"
    for bad in ("http://127.0.0.1:8006", "https://127.0.0.1:8006/api2/json"):
        with pytest.raises(BrainallError, match="expected https://HOST"):
            connection_settings(rm, "production", {"BRAINALL_PROXMOX_URL": bad})
    with pytest.raises(BrainallError, match="no such file"):
        connection_settings(rm, "production", {"BRAINALL_PROXMOX_CA": str(tmp_path / "none.pem")})


def test_offline_plan_is_unchanged_by_live_support() -> None:
    rm = load_rolemap()
    out = plan_changes(rm, PlanContext(place_rolemap(rm)))
    assert [(c.action, c.target, c.detail["host"]) for c in out.changes] == [
        ("create", "vm-brainall-api", "prox-106"),
        ("create", "vm-brainall-workers", "prox-106"),
        ("create", "vm-brainall-nginx", "prox-106"),
        ("create", "vm-brainall-db", "prox-101"),
        ("create", "prox-101", "prox-101"),  # the vzdump storage and job, on proxmox.api_host
        ("create", "prox-101", "prox-101"),
    ]
    assert out.changes[0].summary == "on prox-106: 16 vCPU, 32 GB RAM, 100 GB disk, 192.168.100.61"
