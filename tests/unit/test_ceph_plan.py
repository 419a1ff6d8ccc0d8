"""The Ceph part of `brainall-ops plan`, the command lines the facts and the fix run, and the
guard that keeps test runs off the real fleet. No cluster needed here (see tests/integration)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from brainall_ops.ceph.facts import CephCluster, CephCommandFailed, ceph_cli
from brainall_ops.ceph.model import SNAPSHOT_COMMANDS
from brainall_ops.ceph.operations import apply_command
from brainall_ops.ceph.plan import plan_changes
from brainall_ops.ceph.run import resolve_target
from brainall_ops.ceph.targets import Policy, decide
from brainall_ops.errors import BrainallError
from brainall_ops.planning.fleet import place_rolemap
from brainall_ops.planning.plan import PlanContext
from brainall_ops.rolemap.loader import load_rolemap
from tests.unit.fixtures.ceph import raw, snapshot


# --------------------------------------------------------------------------- the plan
def _context(live: bool = False, **options: str) -> PlanContext:
    rm = load_rolemap()
    return PlanContext(placement=place_rolemap(rm), live=live, options=dict(options))


def test_offline_plan_shows_the_recorded_warning_and_the_strategy() -> None:
    out = plan_changes(load_rolemap(), _context())
    (change,) = out.changes
    assert (change.phase, change.concern, change.action, change.target) == ("phase2", "ceph", "update", "prox-101")
    assert change.summary.startswith("POOL_TOO_MANY_PGS (HEALTH_WARN, 3 OSDs): set pg_autoscale_mode on")
    assert change.detail == {"strategy": "autoscale", "osds": 3}
    assert not out.warnings and not out.refusals


def test_live_plan_in_a_test_run_never_reaches_the_fleet(tmp_path: Path) -> None:
    inventory = tmp_path / "hel1.py"
    inventory.write_text("all = [('prox-101', {'ssh_hostname': '192.168.100.1', 'ssh_user': 'root'})]\n")
    out = plan_changes(load_rolemap(), _context(live=True, ceph_inventory=str(inventory)))
    assert out.warnings == [
        "ceph: not read live (refusing to reach prox-101 (192.168.100.1) from a test run: point tests at "
        "--local --ceph-conf); showing the recorded health"
    ]
    assert [c.action for c in out.changes] == ["update"]  # the offline change, as without --live


def test_live_plan_with_a_missing_conf_falls_back_with_the_reason(tmp_path: Path) -> None:
    out = plan_changes(load_rolemap(), _context(live=True, ceph_conf=str(tmp_path / "nope.conf")))
    assert out.warnings == [
        f"ceph: not read live ({tmp_path}/nope.conf: no such file (--ceph-conf)); showing the recorded health"
    ]


def test_plan_module_stays_light_at_import() -> None:
    heavy = "('pyinfra', 'gevent', 'paramiko')"
    code = f"import sys, brainall_ops.ceph.plan; print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_production_targets_come_from_the_site_inventory_and_are_refused_in_tests(tmp_path: Path) -> None:
    inventory = tmp_path / "site.py"
    inventory.write_text(
        "all = [('prox-101', {'ssh_hostname': '10.77.1.1'}), ('prox-106', {'ssh_hostname': '192.168.100.6'})]\n"
    )
    rm = load_rolemap()
    lab = resolve_target(rm, inventory=inventory)  # the lab network is allowed
    assert (lab.name, lab.data["ssh_hostname"]) == ("prox-101", "10.77.1.1")
    with pytest.raises(BrainallError, match=r"refusing to reach prox-106 \(192.168.100.6\) from a test run"):
        resolve_target(rm, inventory=inventory, host_name="prox-106")
    with pytest.raises(BrainallError, match=r"site.py: no host 'gpu' \(hosts: prox-101, prox-106\)"):
        resolve_target(rm, inventory=inventory, host_name="gpu")
    with pytest.raises(BrainallError, match=r"no such inventory \(run `brainall-ops inventory` first\)"):
        resolve_target(rm, inventory=tmp_path / "missing.py")


# --------------------------------------------------------------------------- command lines
def test_ceph_cli_is_bounded_and_quoted() -> None:
    assert ceph_cli(["health"]) == "timeout 60 ceph --connect-timeout 20 health"
    assert ceph_cli(["osd", "pool", "set", "a b", "pg_num", "32"], "/x y/ceph.conf") == (
        "timeout 60 ceph -c '/x y/ceph.conf' --connect-timeout 20 osd pool set 'a b' pg_num 32"
    )


def test_the_whole_picture_is_read_in_one_command() -> None:
    command = CephCluster().command(ceph_conf="/c/ceph.conf")
    for args in SNAPSHOT_COMMANDS.values():
        assert ceph_cli([*args, "-f", "json"], "/c/ceph.conf") in command
    assert command.count(" & ") + command.count(") &") >= len(SNAPSHOT_COMMANDS)  # concurrently


def test_the_whole_picture_output_is_split_back() -> None:
    data = raw("warn128")
    lines: list[str] = []
    for name in SNAPSHOT_COMMANDS:
        if name == "df":
            lines += [f"@@brainall-ceph {name} 124", "", "@@brainall-ceph-stderr "]
        else:
            lines += [f"@@brainall-ceph {name} 0", *json.dumps(data[name], indent=1).splitlines()]
            lines += ["", "@@brainall-ceph-stderr "]
    out = CephCluster().process(lines)
    assert out["health_detail"] == data["health_detail"] and out["mon_max_pg_per_osd"] == 250
    assert isinstance(out["df"], CephCommandFailed)
    assert str(out["df"]) == "`ceph df` failed: timed out"


def test_a_failed_command_reports_its_stderr() -> None:
    lines = [
        "@@brainall-ceph status 1",
        "",
        "@@brainall-ceph-stderr [errno 13] RADOS permission denied (error connecting)",
    ]
    out = CephCluster().process(lines)
    assert str(out["status"]) == "`ceph status` failed: [errno 13] RADOS permission denied (error connecting)"
    assert str(out["health_detail"]) == "`ceph health detail` failed: no output"


def test_apply_is_all_or_nothing_with_undo_in_reverse() -> None:
    changes = decide(snapshot("warn128"), Policy(strategy="pin", pin_mode_after="off")).changes
    command = apply_command(changes, "/c/ceph.conf")
    apply, undo = command.split(" ) || { ")
    sets = [part.split("osd pool set ")[1] for part in apply.split(" && ")]
    assert sets == ["rbd pg_autoscale_mode off", "rbd pg_num 32", "rbd pgp_num 32"]
    undos = [part.split("osd pool set ")[1] for part in undo.split("; ") if "osd pool set" in part]
    assert undos == ["rbd pgp_num 128", "rbd pg_num 128", "rbd pg_autoscale_mode warn"]
    assert command.endswith("exit 1; }")


# --------------------------------------------------------------------------- what the operator reads
def test_status_and_fix_output_for_the_real_warning(capsys: pytest.CaptureFixture[str]) -> None:
    from brainall_ops.ceph.cli import render_decision, render_snapshot

    snap = snapshot("warn128")
    render_snapshot("prox-101 (10.77.1.1 over SSH)", snap)
    render_decision(decide(snap, Policy(strategy="pin")), Policy(strategy="pin"), dry=True)
    out = capsys.readouterr().out
    for text in (
        "Ceph on prox-101 (10.77.1.1 over SSH): HEALTH_WARN",
        "  POOL_TOO_MANY_PGS (HEALTH_WARN): 1 pools have too many placement groups",
        "    Pool rbd has 128 placement groups, should have 32",
        "OSDs: 3 up, 3 in, of 3; PGs: 129, all active+clean; mgr active",
        "PGs per OSD: 129 (mon_max_pg_per_osd 250)",
        "Fix (strategy pin, then pg_autoscale_mode off):",
        "  ~ would set pool rbd: pg_autoscale_mode warn -> off, pg_num 128 -> 32, pgp_num 128 -> 32",
        "  PGs per OSD: 129 now, 33 after",
    ):
        assert text in out, text
    table = [line.split() for line in out.splitlines() if line.startswith(("pool ", "rbd ", "device_health_metrics "))]
    assert table == [
        ["pool", "size", "pg_num", "pgp_num", "target", "mode", "autoscaler"],
        ["device_health_metrics", "3", "1", "1", "1", "on", "1"],
        ["rbd", "3", "128", "128", "128", "warn", "32"],
    ]


def test_refusal_output(capsys: pytest.CaptureFixture[str]) -> None:
    from brainall_ops.ceph.cli import render_decision

    render_decision(decide(snapshot("osd_down"), Policy()), Policy(), dry=True)
    assert "  ! refused: osd.2 is down" in capsys.readouterr().out
