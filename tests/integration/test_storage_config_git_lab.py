"""Configs to Git in the lab, with the real pyinfra CLI: phase 1 on prox-101 puts etckeeper and
the `brainall-config-git` timer there; one run of the service commits /etc, bundles it and copies
the bundle to the lab Storage Box. The test fetches that bundle to the controller, clones it and
looks in the latest commit: a file written for the test and /etc/hostname are there, the
secrets (the box key, a Redis password file, /etc/shadow) are in no commit at all. A run that
finds the lock taken logs "skipped"; a second phase 1 run changes nothing.

Uses the Storage Box fixtures of test_storage_lab (the lab box deployed with a fresh password).
"""

from __future__ import annotations

import base64
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

import pytest

from brainall_ops.data.logic import REDIS_AUTH
from brainall_ops.storage.config_git import LOG, UNIT, config_git_job_for
from brainall_ops.storage.logic import KEY_PATH
from tests.integration.lab_fixture import Lab, lab  # noqa: F401
from tests.integration.test_storage_lab import (  # noqa: F401
    BOX,
    HOME,
    RM,
    TOKEN,
    box_ready,
    changed_ops,
    env,
    grand_total,
    password,
    pyinfra,
    sh,
)

pytestmark = pytest.mark.lab

HOST = "prox-101"
JOB = config_git_job_for(RM, "lab", HOST)
assert JOB is not None
MARKER = f"/etc/brainall-config-git-test-{TOKEN}.conf"
BUNDLE_ON_BOX = f"{HOME}/{JOB.remote.split(':', 1)[1]}"


@pytest.fixture(scope="module")
def deployed(lab: Lab, env: dict[str, str], box_ready: subprocess.CompletedProcess[str]):  # noqa: F811
    assert box_ready.returncode == 0, "the lab Storage Box deploy failed (see its output above)"
    # A secret of the kind the toolkit writes (data's Redis password file), there before etckeeper's
    # first commit or not: it must stay out either way.
    sh(lab, HOST, f"mkdir -p /etc/redis && umask 077 && echo 'requirepass secret-{TOKEN}' > {REDIS_AUTH}")
    result = pyinfra(lab, env, "deploys/phase1.py", HOST)
    yield result
    sh(lab, HOST, f"rm -f {MARKER} {REDIS_AUTH}")


def _journal(lab: Lab) -> list[str]:  # noqa: F811
    text = sh(lab, HOST, f"journalctl -u {UNIT}.service -o cat --no-pager")
    return [line for line in text.splitlines() if f"{UNIT} {HOST}:" in line]


def test_deploy_installs_etckeeper_and_the_timer(lab: Lab, deployed) -> None:  # noqa: F811
    assert deployed.returncode == 0
    assert grand_total(deployed)["error"] == "-"
    host = lab.host(HOST)
    assert host.package("etckeeper").is_installed and host.package("git").is_installed
    assert host.file("/etc/.git").is_directory
    assert host.service(f"{UNIT}.timer").is_enabled
    assert host.run(f"systemctl is-active {UNIT}.timer").stdout.strip() == "active"
    ignore = host.file("/etc/.gitignore").content_string
    assert "/brainall/storagebox/\n" in ignore and "/pve/\n" in ignore and "/ssh/ssh_host_*_key\n" in ignore
    assert "managed by etckeeper" in ignore  # etckeeper's own section kept beside ours


def test_one_run_pushes_a_bundle_without_secrets(lab: Lab, deployed) -> None:  # noqa: F811
    sh(lab, HOST, f"echo 'marker {TOKEN}' > {MARKER}")
    before = len(_journal(lab))
    sh(lab, HOST, f"systemctl start {UNIT}.service")
    lines = _journal(lab)[before:]
    assert len(lines) == 1, lines
    match = re.search(rf"ok: {HOST} ([0-9a-f]{{12}}) -> {re.escape(JOB.where)} \((\d+) bytes, \d+s\)", lines[0])
    assert match, lines[0]
    head = sh(lab, HOST, "git -C /etc rev-parse HEAD").strip()
    assert head.startswith(match.group(1))
    assert lines[0] in lab.host(HOST).file(LOG).content_string

    # the bundle, fetched from the box to this machine
    data = base64.b64decode(sh(lab, "storagebox", f"base64 -w0 {shlex.quote(BUNDLE_ON_BOX)}"))
    assert len(data) == int(match.group(2))
    with tempfile.TemporaryDirectory(prefix="brainall-config-git-") as tmp:
        bundle = Path(tmp) / f"{HOST}.bundle"
        bundle.write_bytes(data)
        clone = Path(tmp) / "etc"
        subprocess.run(["git", "clone", "-q", str(bundle), str(clone)], check=True, timeout=120)

        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(clone), *args], check=True, capture_output=True, text=True).stdout

        assert git("rev-parse", "HEAD").strip() == head
        assert git("show", "HEAD:hostname") == f"{HOST}\n"
        assert git("show", f"HEAD:{MARKER.removeprefix('/etc/')}") == f"marker {TOKEN}\n"
        ever = set(git("log", "--all", "--format=", "--name-only").split())
        for secret in (KEY_PATH, REDIS_AUTH, "/etc/shadow", "/etc/gshadow"):
            assert secret.removeprefix("/etc/") not in ever, secret
        assert not [p for p in ever if p.startswith(("brainall/storagebox/", "pve/", "ssl/private/"))]
        assert not [p for p in ever if re.fullmatch(r"ssh/ssh_host_\w+_key", p)]
        assert f"secret-{TOKEN}" not in git("log", "--all", "-p", "--format=")


def test_a_run_that_finds_the_lock_taken_is_skipped(lab: Lab, deployed) -> None:  # noqa: F811
    before = len(_journal(lab))
    sh(lab, HOST, f"flock {JOB.lock} systemctl start {UNIT}.service")
    lines = _journal(lab)[before:]
    assert len(lines) == 1 and "skipped: an earlier run still holds" in lines[0], lines


def test_second_phase1_run_changes_nothing(lab: Lab, env: dict[str, str], deployed) -> None:  # noqa: F811
    again = pyinfra(lab, env, "deploys/phase1.py", HOST)
    assert again.returncode == 0
    assert grand_total(again)["success"] == "-", changed_ops(again)
