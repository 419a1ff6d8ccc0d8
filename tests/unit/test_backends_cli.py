"""`brainall-ops backends` as an operator runs it: bad input and unreachable hosts are one line, exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from brainall_ops.rolemap import REPO_ROOT

CLI = Path(sys.executable).with_name("brainall-ops")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OMNIMIND_")}
    return subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60, env={**clean, **(env or {})}
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def unreachable_inventory(tmp_path: Path) -> Path:
    """The cluster's hosts on a closed loopback port: nothing answers."""
    path = tmp_path / "inventory.py"
    data = "{'ssh_hostname': '127.0.0.1', 'ssh_port': 1, 'ssh_user': 'root', 'brainall_address': '127.0.0.1'}"
    path.write_text(f"all = [('vm-brainall-api', {data}), ('vm-brainall-nginx', {data})]\n")
    return path


def test_a_mode_is_needed() -> None:
    assert "give a mode" in one_line_error(run("backends", "mode"))


def test_the_seeds_variable_picks_the_mode_and_is_checked() -> None:
    line = one_line_error(run("backends", "mode", env={"OMNIMIND_VALIDATION_MODE": "yes please"}))
    assert line == "error: OMNIMIND_VALIDATION_MODE='yes please': expected true or false"


def test_bad_seed_counts_are_refused_before_any_host_is_reached() -> None:
    line = one_line_error(run("backends", "mode", "validation", env={"OMNIMIND_BACKENDS": "7"}))
    assert line == "error: OMNIMIND_BACKENDS='7': the role map has only 3 backend instances"


def test_a_missing_inventory() -> None:
    assert one_line_error(run("backends", "status", "-i", "inventories/nope.py")) == (
        "error: inventory inventories/nope.py: no such file"
    )


def test_an_inventory_without_the_cluster_hosts(tmp_path: Path) -> None:
    path = tmp_path / "inv.py"
    path.write_text("all = [('elsewhere', {'ssh_hostname': '127.0.0.1'})]\n")
    line = one_line_error(run("backends", "status", "-i", str(path), "--rolemap", "inventories/brainall-v2.yaml"))
    assert "has no host 'vm-brainall-api'" in line


def test_unreachable_hosts_are_one_line(unreachable_inventory: Path) -> None:
    for args in (("status",), ("mode", "validation", "--dry")):
        result = run("backends", *args, "-i", str(unreachable_inventory), "--rolemap", "inventories/brainall-v2.yaml")
        line = one_line_error(result)
        assert line.startswith("error: vm-brainall-api: ssh to 127.0.0.1 failed:"), line


def test_the_offline_plan_shows_both_modes() -> None:
    result = run("plan", "--json")
    assert result.returncode in (0, 2), result.stderr
    changes = [c for c in json.loads(result.stdout)["changes"] if c["concern"] == "backends"]
    modes = changes[0]["detail"]["modes"]
    assert modes["production"] == {"running": [8000, 8080, 3001], "standby": [], "workers": 1, "min_healthy": 2}
    assert modes["validation"] == {"running": [8000, 8080], "standby": [3001], "workers": 2, "min_healthy": 1}
    assert any(":3001 backup" in c["summary"] for c in changes)
