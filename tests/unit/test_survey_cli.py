"""`brainall-ops roles` and `survey`'s refusals, through the installed console script (no host is contacted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from brainall_ops.rolemap import BUILTIN_ROLEMAP, REPO_ROOT

CLI = Path(sys.executable).with_name("brainall-ops")
SEED = Path(__file__).parent / "fixtures" / "survey" / "seed-measurements.yaml"


def run(*args: str, stdin: str | None = None, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    assert CLI.exists(), f"console script not installed next to {sys.executable}"
    return subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, cwd=cwd, timeout=60, input=stdin, check=False
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_roles_on_the_seed_prints_the_seeds_table_reasons_and_warnings() -> None:
    result = run("roles", "--measurements", str(SEED))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    rows = {
        cells[0]: cells[1]
        for line in out.splitlines()
        if line.startswith("│")
        for cells in [[cell.strip() for cell in line.strip("│").split("│")]]
    }
    assert rows == {
        "gpu": "AI inference (inference)",
        "prox-101": "data & mail (data)",
        "prox-106": "application server (application)",
        "prox-102": "backups & batch only (backup)",
        "bastion": "dev sandbox (bastion)",
        "storagebox": "central storage (storage)",
        # the plan on this proposal: VM -> host
        "vm-brainall-api": "prox-106",
        "vm-brainall-workers": "prox-106",
        "vm-brainall-nginx": "prox-106",
        "vm-brainall-db": "prox-101",
    }
    assert "differs" not in out
    assert "! bastion: disk nearly full: 6.7 GB free of 50 GB (13 %) on /" in out
    assert "[placement]" in out and "[role map]" in out and "[measured]" in out


def test_roles_write_with_the_seeds_numbers_has_nothing_to_write(tmp_path: Path) -> None:
    copy = tmp_path / "fleet.yaml"
    copy.write_text(BUILTIN_ROLEMAP.read_text())
    result = run("roles", "-m", str(SEED), "--rolemap", str(copy), "--write")
    assert result.returncode == 0, result.stderr
    assert "already hold these numbers; nothing to write" in result.stdout
    assert copy.read_text() == BUILTIN_ROLEMAP.read_text()


def test_roles_write_shows_the_diff_asks_and_writes_only_when_told(tmp_path: Path) -> None:
    data = yaml.safe_load(SEED.read_text())
    data["hosts"]["bastion"]["disk"]["free_gb"] = 5.2
    measurements = tmp_path / "m.yaml"
    measurements.write_text(yaml.safe_dump(data))
    copy = tmp_path / "fleet.yaml"
    copy.write_text(BUILTIN_ROLEMAP.read_text())

    declined = run("roles", "-m", str(measurements), "--rolemap", str(copy), "--write", stdin="n\n")
    assert declined.returncode == 1 and declined.stderr.strip() == "aborted"
    assert "-      disk_free_gb: 6.7\n+      disk_free_gb: 5.2\n" in declined.stdout
    assert copy.read_text() == BUILTIN_ROLEMAP.read_text()

    accepted = run("roles", "-m", str(measurements), "--rolemap", str(copy), "--write", "--yes")
    assert accepted.returncode == 0, accepted.stderr
    assert "-      disk_free_gb: 6.7\n+      disk_free_gb: 5.2\n" in accepted.stdout
    assert copy.read_text() == BUILTIN_ROLEMAP.read_text().replace("disk_free_gb: 6.7", "disk_free_gb: 5.2")


def test_roles_write_refuses_lab_numbers_for_the_production_map(tmp_path: Path) -> None:
    data = yaml.safe_load(SEED.read_text())
    data["environment"] = "lab"
    data["hosts"]["bastion"]["disk"]["free_gb"] = 5.2
    measurements = tmp_path / "m.yaml"
    measurements.write_text(yaml.safe_dump(data))
    copy = tmp_path / "fleet.yaml"
    copy.write_text(BUILTIN_ROLEMAP.read_text())
    line = one_error_line(run("roles", "-m", str(measurements), "--rolemap", str(copy), "--write", "--yes"))
    assert line.startswith(f"error: {measurements} was measured in the 'lab' environment")
    assert copy.read_text() == BUILTIN_ROLEMAP.read_text()


def test_roles_with_a_bad_measurements_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text(SEED.read_text().replace("threads: 48}", "threads: many}"))
    line = one_error_line(run("roles", "-m", str(bad)))
    assert line.startswith(f"error: {bad}:") and "hosts.gpu.cpu.threads" in line


def test_survey_never_writes_over_the_role_map_and_checks_its_inputs_first() -> None:
    line = one_error_line(run("survey", "-i", "inventories/lab.py", "--out", "inventories/brainall-v2.yaml", "--force"))
    assert line == "error: --out inventories/brainall-v2.yaml is the role map: measurements go to their own file"
    line = one_error_line(run("survey", "-i", "inventories/nope.py"))
    assert line == "error: inventory inventories/nope.py: no such file"
    line = one_error_line(run("survey", "-i", "inventories/lab.py", "--storagebox", "10.77.1.50"))
    assert "expected ADDRESS:PORT" in line
    existing = one_error_line(run("survey", "-i", "inventories/lab.py", "--out", "README.md"))
    assert existing == "error: README.md exists: choose another --out, or --force to replace it"


FLEETS = Path(__file__).parent / "fixtures" / "survey" / "fleets"


def test_roles_write_on_a_standard_proxmox_layout_keeps_the_map_valid(tmp_path: Path) -> None:
    copy = tmp_path / "fleet.yaml"
    copy.write_text((FLEETS / "rolemap-fleet-a.yaml").read_text())
    result = run("roles", "-m", str(FLEETS / "fleet-a-small-root-lvm.yaml"), "--rolemap", str(copy), "--write", "-y")
    assert result.returncode == 0, result.stderr
    assert "disk_free_gb: 1632" in copy.read_text() and "disk_free_gb: 3.2" not in copy.read_text()
    valid = run("validate", "--rolemap", str(copy))
    assert valid.returncode == 0 and valid.stdout.strip().endswith("ok (7 hosts, 4 VMs)"), valid.stderr
    # numbers the VMs do not fit: one line, and the file untouched
    data = yaml.safe_load((FLEETS / "fleet-a-small-root-lvm.yaml").read_text())
    for host in ("pve-a1", "pve-a2", "pve-a3"):
        data["hosts"][host]["memory"]["available_gb"] = 20
    tight = tmp_path / "tight.yaml"
    tight.write_text(yaml.safe_dump(data))
    before = copy.read_text()
    line = one_error_line(run("roles", "-m", str(tight), "--rolemap", str(copy), "--write", "-y"))
    assert "with these measured: values the role map would fail validate" in line and "nothing written" in line
    assert copy.read_text() == before
