"""The CLI through its installed console script, as an operator runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from brainall_ops.rolemap import BUILTIN_ROLEMAP, REPO_ROOT

CLI = Path(sys.executable).with_name("brainall-ops")


def run(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    assert CLI.exists(), f"console script not installed next to {sys.executable}"
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_plan_json_has_placements_changes_and_detailed_exit_code() -> None:
    result = run("plan", "--json")
    assert result.returncode == 2, result.stderr  # changes to make
    plan = json.loads(result.stdout)
    placements = {p["vm"]: p for p in plan["placements"]}
    assert {vm: p["host"] for vm, p in placements.items()} == {
        "vm-brainall-api": "prox-106",
        "vm-brainall-workers": "prox-106",
        "vm-brainall-nginx": "prox-106",
        "vm-brainall-db": "prox-101",
    }
    api = placements["vm-brainall-api"]
    assert (api["vcpu"], api["memory_gb"], api["disk_gb"]) == (16, 32, 100)
    assert "0.844 ms" in api["reason"]
    creates = [c for c in plan["changes"] if c["concern"] == "proxmox" and c["action"] == "create"]
    assert len([c for c in creates if "vcpu" in c["detail"]]) == 4  # and the vzdump storage and job
    assert {c["concern"] for c in plan["changes"]} >= {
        "storage",
        "proxmox",
        "ceph",
        "firewall",
        "inference",
        "backends",
    }
    budget = {b["host"]: b for b in plan["budgets"]}["prox-106"]
    assert (budget["planned_gb"], budget["ram_free_gb"], budget["planned_pct_of_free"]) == (56, 118, 47.46)


def test_plan_human_output_shows_phases_and_budget() -> None:
    result = run("plan")
    assert result.returncode == 2, result.stderr
    out = result.stdout
    for text in (
        "Placement",
        "Proxmox budgets after the plan",
        "56 of 118 GB (47 %)",
        "Phase 2 infrastructure",
        "vm-brainall-db",
        "POOL_TOO_MANY_PGS",
        "bastion: disk 87 % used",
    ):
        assert text in out, text


def test_plan_with_nothing_to_change_exits_0(tmp_path: Path) -> None:
    # A fleet with no VMs to create, no storage, Ceph healthy and no policy: nothing to do.
    text = BUILTIN_ROLEMAP.read_text()
    keep = text[: text.index("\nstorage:\n")] + text[text.index("\nbase:\n") : text.index("\nproxmox:\n")]
    keep += (
        "\nceph:\n  monitor_host: prox-101\n  osd_hosts: [prox-101]\n  raw_tb: 1\n  used_gb: 1\n  health: HEALTH_OK\n"
    )
    fleet = tmp_path / "quiet.yaml"
    fleet.write_text(keep)
    result = run("plan", "--rolemap", str(fleet))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("args", [("plan",), ("plan", "--json"), ("validate",), ("inventory", "--check")])
def test_bad_role_map_is_one_line_per_problem_exit_1_no_traceback(tmp_path: Path, args: tuple[str, ...]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BUILTIN_ROLEMAP.read_text().replace("      cores: 24\n", "      cores: lots\n", 1))
    result = run(*args, "--rolemap", str(broken))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(
        "broken.yaml:31: hosts[0].hardware.cores: Input should be a valid integer, "
        "unable to parse string as an integer (got 'lots')"
    )


def test_missing_role_map_file(tmp_path: Path) -> None:
    result = run("plan", "--rolemap", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "nope.yaml" in result.stderr


def test_impossible_fleet_is_refused_with_numbers(tmp_path: Path) -> None:
    fleet = tmp_path / "big.yaml"
    fleet.write_text(BUILTIN_ROLEMAP.read_text().replace("    memory_gb: 32\n", "    memory_gb: 320\n", 1))
    result = run("plan", "--rolemap", str(fleet))
    assert result.returncode == 1
    # the refusal names the file, the line and the field it is about (issue 17)
    line = fleet.read_text().splitlines().index("    memory_gb: 320") + 1
    assert result.stderr.startswith(
        f"{fleet}:{line}: vms[0].memory_gb: vm-brainall-api fits on no Proxmox host: it needs 16 vCPU, 320 GB RAM"
    ), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_vram_that_does_not_fit_is_refused_at_plan_time(tmp_path: Path) -> None:
    text = BUILTIN_ROLEMAP.read_text()
    third = (
        "    - {name: qwen-72b, source: Qwen/Qwen2.5-72B-Instruct-AWQ, served_name: qwen-72b,\n"
        "       port: 8005, gpu_memory_gb: 40, max_model_len: 8192}\n"
    )
    marker = "  # Whisper large needs"
    fleet = tmp_path / "vram.yaml"
    fleet.write_text(text.replace(marker, third + marker, 1))
    result = run("plan", "--rolemap", str(fleet))
    assert result.returncode == 1
    assert "the models need 87 GB of GPU memory" in result.stdout
    assert "49 GB x 0.97 = 47.53 GB is usable" in result.stdout


def test_inventory_check_passes_on_the_committed_files() -> None:
    result = run("inventory", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_help_lists_commands_without_importing_them() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "plan" in result.stdout and "inventory" in result.stdout


def test_offline_plan_imports_no_pyinfra_gevent_or_proxmoxer() -> None:
    code = (
        "import sys\n"
        "from brainall_ops.cli import main\n"
        "try:\n    main(['plan', '--json'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pyinfra', 'gevent', 'proxmoxer', 'paramiko'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert "HEAVY []" in result.stderr, result.stderr[-2000:]
