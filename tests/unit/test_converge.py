"""The convergence gate's probe and digests (brainall_ops/converge.py), run for real with sh."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from brainall_ops.shared.converge import ConvergedState, Probe, digest


def live(probe: Probe) -> str:
    script = probe.script()
    return subprocess.run(["sh", "-c", f"( {script} ) | sha256sum"], capture_output=True, text=True, check=True).stdout


def test_the_probe_sees_content_mode_and_absence(tmp_path: Path) -> None:
    managed = tmp_path / "managed.conf"
    managed.write_text("a = 1\n")
    os.chmod(managed, 0o644)
    probe = Probe(files=(str(managed), str(tmp_path / "missing")), commands=("echo fixed",))
    output = subprocess.run(["sh", "-c", probe.script()], capture_output=True, text=True, check=True).stdout
    assert f"{managed} regular file 644 " in output
    assert f"{tmp_path / 'missing'} absent" in output and "fixed" in output

    before = live(probe)
    assert live(probe) == before  # nothing changed, same digest
    managed.write_text("a = 2\n")
    edited = live(probe)
    assert edited != before
    os.chmod(managed, 0o600)
    assert live(probe) != edited
    managed.unlink()
    assert live(probe) not in (before, edited)


def test_the_probe_reports_missing_packages_users_and_units_as_state() -> None:
    probe = Probe(packages=("no-such-package-brainall",), users=("no-such-user-brainall",))
    result = subprocess.run(["sh", "-c", probe.script()], capture_output=True, text=True)
    # the messages (stderr folded into the output) are part of the state, and the script goes on
    assert "no-such-package-brainall" in result.stdout
    assert "no-such-user-brainall" in result.stdout


def test_an_empty_probe_is_a_valid_script() -> None:
    assert subprocess.run(["sh", "-c", Probe().script()]).returncode == 0


def test_digests_are_stable_and_order_free_for_mappings() -> None:
    assert digest({"b": [1, 2], "a": "x"}) == digest({"a": "x", "b": (1, 2)})
    assert digest({"a": "x"}) != digest({"a": "y"})
    assert len(digest(None)) == 64


def test_the_fact_reads_the_live_digest_and_the_record() -> None:
    fact = ConvergedState()
    assert fact.process(["abc", "def abc"]) == ("abc", "def abc")
    assert fact.process(["abc"]) == ("abc", "")
    command = fact.command(record="/var/lib/x/base", script="echo hi")
    assert command.endswith("cat /var/lib/x/base 2>/dev/null || true")
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout.splitlines()
    assert len(out) == 1 and len(out[0]) == 64  # no record yet: just the live digest
