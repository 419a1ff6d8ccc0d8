"""Storage Box clients as pure logic: endpoints per environment, unit names, mount options,
probe parsing, what each host gets, and the role map checks of the storage section."""

from __future__ import annotations

import re
import shlex

import pytest

from brainall_ops.errors import BrainallError, RoleMapError
from brainall_ops.rolemap import BUILTIN_ROLEMAP, load_rolemap, parse_rolemap
from brainall_ops.storage.logic import (
    CIFS_CREDENTIALS,
    KEY_PATH,
    KNOWN_HOSTS,
    BoxEndpoint,
    backup_job,
    box_endpoint,
    cifs_credentials,
    cifs_units,
    client_hosts,
    client_plan,
    parse_listing,
    parse_port_check,
    parse_probe,
    ssh_command,
    sshfs_units,
    unit_name_for_path,
)

RM = load_rolemap()
TEXT = BUILTIN_ROLEMAP.read_text()
LAB_BOX = BoxEndpoint(address="10.77.1.50", port=23, user="u503462")


def options_of(text: str) -> dict[str, str]:
    return dict(part.partition("=")[::2] for part in text.split(","))


# --------------------------------------------------------------------------- endpoints
def test_production_uses_the_box_name_and_port_23() -> None:
    box = box_endpoint(RM, "production")
    assert (box.address, box.port, box.user) == ("u503462.your-storagebox.de", 23, "u503462")
    assert box.known_hosts_name == "[u503462.your-storagebox.de]:23"


def test_lab_uses_the_lab_address_never_the_production_name() -> None:
    box = box_endpoint(RM, "lab")
    assert box == LAB_BOX
    assert box.where == "10.77.1.50:23"
    assert box.remote("models") == "u503462@10.77.1.50:models"


def test_a_test_environment_without_a_box_address_is_refused() -> None:
    text = TEXT.replace("      storagebox: {address: 10.77.1.50, ssh_port: 23}\n", "")
    rm = parse_rolemap(text, "fleet.yaml")
    with pytest.raises(BrainallError, match=r"environment 'lab' gives the Storage Box no address.*refusing"):
        box_endpoint(rm, "lab")
    assert client_hosts(rm) == ["gpu", "prox-101", "prox-106"]
    with pytest.raises(BrainallError, match="refusing to use the production box"):
        client_plan(rm, "lab", "gpu")


def test_port_22_is_known_by_plain_name() -> None:
    assert BoxEndpoint("box.example", 22, "u").known_hosts_name == "box.example"


# --------------------------------------------------------------------------- systemd unit names
@pytest.mark.parametrize(
    ("path", "unit"),
    [
        ("/mnt/storagebox/models", "mnt-storagebox-models.mount"),
        ("/mnt/storagebox/models/", "mnt-storagebox-models.mount"),
        ("//mnt//x", "mnt-x.mount"),
        ("/mnt/a-b", r"mnt-a\x2db.mount"),
        ("/mnt/.hidden/x.y", "mnt-.hidden-x.y.mount"),
        ("/.top", r"\x2etop.mount"),
        ("/mnt/a b", r"mnt-a\x20b.mount"),
        ("/mnt/ü", r"mnt-\xc3\xbc.mount"),
        ("/", "-.mount"),
    ],
)
def test_unit_names_escape_like_systemd_escape(path: str, unit: str) -> None:
    assert unit_name_for_path(path, "mount") == unit


# --------------------------------------------------------------------------- mounts
def test_sshfs_units_have_port_key_pinned_host_reconnect_keepalive_and_a_timeout() -> None:
    units = sshfs_units(RM.storage.sshfs[0], LAB_BOX)  # type: ignore[union-attr]
    assert units.what == "u503462@10.77.1.50:models"
    assert units.where == "/mnt/storagebox/models"
    assert units.fs_type == "fuse.sshfs"
    assert (units.mount_unit, units.automount_unit) == (
        "mnt-storagebox-models.mount",
        "mnt-storagebox-models.automount",
    )
    opts = options_of(units.options)
    assert opts["port"] == "23"
    assert opts["IdentityFile"] == KEY_PATH
    assert opts["UserKnownHostsFile"] == KNOWN_HOSTS
    assert opts["StrictHostKeyChecking"] == "yes"
    assert opts["BatchMode"] == "yes"
    assert (opts["ServerAliveInterval"], opts["ServerAliveCountMax"]) == ("15", "3")
    assert {"_netdev", "reconnect", "allow_other", "idmap"} <= set(opts)
    assert "Port" not in opts  # sshfs's own port= says it once
    assert units.timeout_s == 30


def test_sshfs_without_allow_other_leaves_it_out() -> None:
    mount = RM.storage.sshfs[0].model_copy(update={"allow_other": False})  # type: ignore[union-attr]
    assert "allow_other" not in options_of(sshfs_units(mount, LAB_BOX).options)


def test_cifs_units_have_credentials_version_ids_modes_charset_and_netdev() -> None:
    units = cifs_units(RM.storage.cifs[0], LAB_BOX)  # type: ignore[union-attr]
    assert units.what == "//10.77.1.50/backup/uploads"
    assert units.fs_type == "cifs"
    opts = options_of(units.options)
    assert opts["credentials"] == CIFS_CREDENTIALS
    assert opts["vers"] == "3.0"
    assert (opts["uid"], opts["gid"], opts["file_mode"], opts["dir_mode"]) == ("0", "0", "0660", "0770")
    assert opts["iocharset"] == "utf8"
    assert {"_netdev", "seal"} <= set(opts)
    assert "password" not in units.options and "username" not in units.options


def test_cifs_share_without_subdir() -> None:
    mount = RM.storage.cifs[0].model_copy(update={"subdir": ""})  # type: ignore[union-attr]
    assert cifs_units(mount, LAB_BOX).what == "//10.77.1.50/backup"


def test_cifs_credentials_file_format() -> None:
    assert cifs_credentials("u1", "p w=1") == "username=u1\npassword=p w=1\n"


# --------------------------------------------------------------------------- probes
@pytest.mark.parametrize(
    ("lines", "state", "detail"),
    [
        (["rc=0"], "ok", ""),
        (["no-key"], "no-key", ""),
        (["rc=255", "u503462@10.77.1.50: Permission denied (publickey,password)."], "denied", None),
        (["rc=255", "Host key verification failed.", "Connection closed"], "host-key", None),
        (
            ["rc=255", "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@", "..."],
            "host-key",
            None,
        ),
        (["rc=255", "ssh: connect to host 10.77.1.50 port 24: Connection refused"], "unreachable", None),
        (["rc=255", "ssh: Could not resolve hostname nowhere: Name or service not known"], "unreachable", None),
        (["rc=1", "something odd"], "error", "something odd"),
        ([], "error", "the probe printed nothing"),
        (["garbage"], "error", "unexpected probe output: garbage"),
    ],
)
def test_login_probe_is_read(lines: list[str], state: str, detail: str | None) -> None:
    probe = parse_probe(lines)
    assert probe.state == state
    if detail is not None:
        assert probe.detail == detail


def test_port_check_names_the_reason() -> None:
    assert parse_port_check(["open"]).state == "ok"
    refused = parse_port_check(
        ["closed", "check: connect: Connection refused", "check: line 1: /dev/tcp/10.77.1.50/24: Connection refused"]
    )
    assert (refused.state, refused.detail) == ("unreachable", "Connection refused")
    timeout = parse_port_check(["closed", "connection timed out after 10s"])
    assert timeout.detail == "connection timed out after 10s"
    name = parse_port_check(["closed", "check: line 1: nowhere: Name or service not known"])
    assert name.detail == "Name or service not known"


def test_rsync_listing_sums_regular_files_only() -> None:
    lines = [
        "drwxr-xr-x           4096 2025/11/22 10:00:00 .",
        "-rw-r--r--        1048576 2025/11/22 10:00:00 blobs/sha256-aa",
        "-rw-r--r--      1,000,000 2025/11/22 10:00:00 blobs/sha256 with space",
        "lrwxrwxrwx             10 2025/11/22 10:00:00 link",
    ]
    assert parse_listing(lines) == (2, 2048576)


# --------------------------------------------------------------------------- per host
def test_each_client_host_gets_what_the_role_map_names() -> None:
    assert client_hosts(RM) == ["gpu", "prox-101", "prox-106"]
    gpu = client_plan(RM, "lab", "gpu")
    assert gpu is not None and [m.mount_point for m in gpu.sshfs] == ["/mnt/storagebox/models"]
    assert not gpu.cifs and not gpu.backups
    assert gpu.ollama is not None
    assert gpu.ollama.source == "/usr/share/ollama/.ollama/models"
    assert gpu.ollama.target == "/mnt/storagebox/models/ollama"
    assert gpu.ollama.remote == "u503462@10.77.1.50:models/ollama"
    assert gpu.ollama.service == "ollama"
    assert "sshfs" in gpu.packages and "rsync" in gpu.packages and "cifs-utils" not in gpu.packages
    assert gpu.remote_dirs == ["models"]

    prox106 = client_plan(RM, "lab", "prox-106")
    assert prox106 is not None and prox106.cifs and prox106.ollama is None
    assert "cifs-utils" in prox106.packages and "sshfs" not in prox106.packages
    assert prox106.remote_dirs == ["uploads"]

    prox101 = client_plan(RM, "lab", "prox-101")
    assert prox101 is not None and [b.name for b in prox101.backups] == ["prox-101-configs"]
    assert prox101.remote_dirs == ["backups", "backups/prox-101"]

    assert client_plan(RM, "lab", "prox-102") is None
    assert client_plan(RM, "lab", "bastion") is None


def test_backup_job_runs_rsync_over_ssh_port_23_with_the_host_key() -> None:
    job = backup_job(RM.storage.backups[0], LAB_BOX)  # type: ignore[union-attr]
    assert job.unit == "brainall-backup-prox-101-configs"
    assert job.lock == "/run/lock/brainall-backup-prox-101-configs.lock"
    assert job.where == "10.77.1.50:23/backups/prox-101"
    words = shlex.split(job.rsync_command().replace('"$@"', "SOURCES"))
    assert words[0] == "rsync" and "--relative" in words
    ssh = words[words.index("-e") + 1]
    assert ssh.startswith("ssh ") and "-o Port=23" in ssh and f"-o IdentityFile={KEY_PATH}" in ssh
    assert "-o BatchMode=yes" in ssh and "-o StrictHostKeyChecking=yes" in ssh
    assert words[-2:] == ["SOURCES", "u503462@10.77.1.50:backups/prox-101/"]
    assert ssh_command(LAB_BOX) == ssh


# --------------------------------------------------------------------------- role map checks
def problems_of(text: str) -> list[str]:
    with pytest.raises(RoleMapError) as info:
        parse_rolemap(text, "fleet.yaml")
    return info.value.problems


def line_of(text: str, needle: str) -> int:
    return next(i + 1 for i, line in enumerate(text.splitlines()) if needle in line)


def test_ollama_copy_outside_every_sshfs_mount_is_refused_with_its_line() -> None:
    text = TEXT.replace("remote_path: models/ollama}", "remote_path: llm/ollama}")
    [problem] = problems_of(text)
    line = line_of(text, "ollama: {host: gpu")
    assert problem.startswith(f"fleet.yaml:{line}: storage.ollama.remote_path: 'llm/ollama' is under no SSHFS mount")


def test_nested_and_duplicate_mount_points_are_refused() -> None:
    text = TEXT.replace("mount_point: /mnt/storagebox/uploads", "mount_point: /mnt/storagebox/models/uploads")
    text = text.replace("host: prox-106, share: backup", "host: gpu, share: backup")
    problems = problems_of(text)
    assert any(re.search(r"storage\.cifs\[0\]\.mount_point: .* are nested", p) for p in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ("remote_path: models, mount_point", "remote_path: ../models, mount_point", "storage.sshfs[0].remote_path"),
        ("remote_path: models, mount_point", "remote_path: /models, mount_point", "storage.sshfs[0].remote_path"),
        ("mount_point: /mnt/storagebox/models", "mount_point: mnt/models", "storage.sshfs[0].mount_point"),
        ("destination: backups/prox-101", "destination: 'backups/a b'", "storage.backups[0].destination"),
        ("sources: [/etc/pve,", "sources: [/etc/../pve,", "storage.backups[0].sources[0]"),
        ('file_mode: "0660"', 'file_mode: "660"', "storage.cifs[0].file_mode"),
    ],
)
def test_unsafe_paths_and_modes_are_refused(old: str, new: str, fragment: str) -> None:
    assert old in TEXT
    problems = problems_of(TEXT.replace(old, new, 1))
    assert any(fragment in p for p in problems), problems
