"""`brainall-ops ceph` and the Ceph deploy against a real Ceph 16.2 cluster on 127.0.0.1.

The session's cluster (tests/integration/ceph_fixture.py) is shared, so each test leaves it as it
found it: HEALTH_OK, every PG active+clean, its own pools deleted. Tests never wait for a long PG
merge to finish (128 -> 32 takes about 5 minutes); they assert on pg_num_target/pgp_num_target,
which change at once, and on the health check, which the pg_autoscaler clears within one pass
(every 5 s on this cluster). The multi-pool layout (issue 18) is sized so that its one merge,
16 -> 4, takes about 15 s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from brainall_ops.ceph.model import Health
from brainall_ops.ceph.operations import apply_command, wait_until_cleared
from brainall_ops.ceph.plan import plan_changes
from brainall_ops.ceph.run import resolve_target, session
from brainall_ops.ceph.targets import PoolChange, Setting, monitor_sum
from brainall_ops.lab.ceph_cluster import TestCluster
from brainall_ops.planning.fleet import place_rolemap
from brainall_ops.planning.plan import PlanContext
from brainall_ops.rolemap.loader import BUILTIN_ROLEMAP, REPO_ROOT, load_rolemap
from tests.integration.ceph_fixture import ceph_cluster  # noqa: F401  (the session fixture)

BIN = Path(sys.executable).parent
CLI = BIN / "brainall-ops"
PYINFRA = BIN / "pyinfra"


@pytest.fixture(scope="session")
def cluster(ceph_cluster: TestCluster) -> TestCluster:  # noqa: F811  (the imported session fixture)
    return ceph_cluster


# --------------------------------------------------------------------------- helpers
def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    assert Path(cmd[0]).exists(), f"{cmd[0]} is not installed next to {sys.executable}"
    return subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout, env={**os.environ, **(env or {})}
    )


def ceph_cmd(cluster: TestCluster, *args: str, rolemap: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [str(CLI), "ceph", *args, "--local", "--ceph-conf", str(cluster.conf)]
    if rolemap is not None:
        cmd += ["--rolemap", str(rolemap)]
    return run(cmd)


def ceph_json(cluster: TestCluster, *args: str, rolemap: Path | None = None, rc: int = 0) -> dict[str, Any]:
    result = ceph_cmd(cluster, *args, "--json", rolemap=rolemap)
    assert result.returncode == rc, result.stdout + result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def rolemap_with(tmp_path: Path, strategy: str, pin_mode_after: str = "off", pools: str = "") -> Path:
    """The built-in role map with another Ceph strategy, a short wait and optional pool overrides."""
    text = BUILTIN_ROLEMAP.read_text()
    for pattern, new in (
        (r"^  strategy: .*$", f"  strategy: {strategy}"),
        (r"^  pin_mode_after: .*$", f'  pin_mode_after: "{pin_mode_after}"'),
        (r"^  wait_timeout_s: .*$", "  wait_timeout_s: 120\n" + pools.rstrip("\n")),
    ):
        text, count = re.subn(pattern, new, text, count=1, flags=re.MULTILINE)
        assert count == 1, pattern
    path = tmp_path / f"fleet-{strategy}-{pin_mode_after}.yaml"
    path.write_text(text)
    return path


def pool(cluster: TestCluster, name: str) -> dict[str, Any]:
    pools = {p["pool_name"]: p for p in cluster.ceph_json("osd", "pool", "ls", "detail")}
    return pools[name]


def settings(cluster: TestCluster, name: str) -> tuple[int, int, str]:
    p = pool(cluster, name)
    return p["pg_num_target"], p["pg_placement_num_target"], p["pg_autoscale_mode"]


def flagged(cluster: TestCluster) -> dict[str, tuple[int, int]]:
    return Health.from_json(cluster.health()).flagged_pools()


def wait_clean(cluster: TestCluster) -> None:
    cluster.wait_for(
        lambda: cluster._osds_up_in() and cluster.all_pgs_active_clean(), "all OSDs up and PGs active+clean", None, 180
    )


@contextmanager
def warn_pools(cluster: TestCluster, pools: dict[str, int]) -> Iterator[None]:
    """Pools raising the fleet's warning (mode warn, pg_num at or above what the autoscaler wants),
    created together and removed after."""
    try:
        for name, pg_num in pools.items():
            cluster.ceph("osd", "pool", "create", name, str(pg_num), str(pg_num), "replicated", "--autoscale-mode=warn")
            cluster.ceph("osd", "pool", "application", "enable", name, "rbd")
        wait_clean(cluster)
        cluster.wait_for(
            lambda: set(pools) <= set(flagged(cluster)), f"POOL_TOO_MANY_PGS naming {list(pools)}", None, 90
        )
        yield
    finally:
        for name in pools:
            cluster.ceph("osd", "pool", "rm", name, name, "--yes-i-really-really-mean-it", check=False)
        cluster.wait_for(lambda: not set(pools) & set(flagged(cluster)), f"the check to forget {list(pools)}", None, 90)
        wait_clean(cluster)


# --------------------------------------------------------------------------- the strategies
def test_autoscale_strategy_reproduce_dry_fix_and_second_run(cluster: TestCluster, tmp_path: Path) -> None:
    with warn_pools(cluster, {"fleet128": 128}):
        # the fleet's warning, exactly
        status = ceph_json(cluster, "status")
        check = status["health"]["checks"]["POOL_TOO_MANY_PGS"]
        assert check["summary"] == "1 pools have too many placement groups"
        assert check["detail"] == ["Pool fleet128 has 128 placement groups, should have 32"]
        assert status["fix"]["changes"] == [
            {
                "pool": "fleet128",
                "strategy": "autoscale",
                "target": 32,
                "target_source": "the pg_autoscaler",
                "reason": "Pool fleet128 has 128 placement groups, should have 32",
                "settings": [{"key": "pg_autoscale_mode", "old": "warn", "new": "on"}],
            }
        ]

        # --dry: exit 2, and the pool is exactly as it was (same map epoch of its last change)
        before = pool(cluster, "fleet128")
        dry = ceph_cmd(cluster, "fix", "--dry")
        assert dry.returncode == 2, dry.stdout + dry.stderr
        assert "would set pool fleet128: pg_autoscale_mode warn -> on" in dry.stdout
        assert pool(cluster, "fleet128") == before
        assert "fleet128" in flagged(cluster)

        # the fix: mode on, the warning gone (the fix waited for it), the autoscaler takes over
        fixed = ceph_json(cluster, "fix")
        assert fixed["changed"] is True and fixed["health_after"] == "HEALTH_OK"
        assert "POOL_TOO_MANY_PGS" not in cluster.health()["checks"]
        assert settings(cluster, "fleet128")[2] == "on"
        # 128 is more than 3x the 32 it wants, so the autoscaler sets the target itself
        cluster.wait_for(lambda: settings(cluster, "fleet128")[:2] == (32, 32), "the autoscaler's targets", None, 60)

        # second run: nothing to change; --dry agrees
        again = ceph_json(cluster, "fix")
        assert (again["changed"], again["fix"]["changes"], again["fix"]["flagged"]) == (False, [], {})
        assert settings(cluster, "fleet128") == (32, 32, "on")


def test_pin_strategy_sets_pg_num_then_the_mode_off_or_on(cluster: TestCluster, tmp_path: Path) -> None:
    """Three pools flagged at once, pinned by the role map: mode off after, mode on after, and a pool
    already at its target (the 16.2.15 quirk: "has 32 placement groups, should have 32")."""
    overrides = "  pools:\n    - {name: pin-off, strategy: pin, pin_mode_after: 'off'}\n"
    overrides += "    - {name: pin-on, strategy: pin, pin_mode_after: 'on'}\n"
    overrides += "    - {name: at-target, strategy: pin, pin_mode_after: 'off'}\n"
    fleet = rolemap_with(tmp_path, "autoscale", pools=overrides)
    with warn_pools(cluster, {"pin-off": 64, "pin-on": 64, "at-target": 32}):
        assert settings(cluster, "pin-off") == settings(cluster, "pin-on") == (64, 64, "warn")
        # A pool whose pg_num is already what the autoscaler wants stays flagged while the mode is
        # warn: a pin alone never clears the warning on this release; the mode change does.
        assert flagged(cluster)["at-target"] == (32, 32)

        fixed = ceph_json(cluster, "fix", rolemap=fleet)
        assert fixed["changed"] is True
        keys = {c["pool"]: [s["key"] for s in c["settings"]] for c in fixed["fix"]["changes"]}
        assert keys == {
            "pin-off": ["pg_autoscale_mode", "pg_num", "pgp_num"],  # the autoscaler off before the pin
            "pin-on": ["pg_num", "pgp_num", "pg_autoscale_mode"],  # the autoscaler on after it
            "at-target": ["pg_autoscale_mode"],
        }
        # pg_num_target and pgp_num_target change at once; Ceph merges 64 -> 32 in the background
        assert settings(cluster, "pin-off") == (32, 32, "off")
        assert settings(cluster, "pin-on") == (32, 32, "on")
        assert settings(cluster, "at-target") == (32, 32, "off")
        assert "POOL_TOO_MANY_PGS" not in cluster.health()["checks"]

        again = ceph_json(cluster, "fix", rolemap=fleet)
        assert (again["changed"], again["fix"]["changes"]) == (False, [])
        after = {name: settings(cluster, name) for name in ("pin-off", "pin-on", "at-target")}
        assert after == {"pin-off": (32, 32, "off"), "pin-on": (32, 32, "on"), "at-target": (32, 32, "off")}


# --------------------------------------------------------------------------- the gates
def assert_refused(
    cluster: TestCluster, name: str, reason: str, rolemap: Path | None = None, dry_too: bool = False
) -> None:
    before = pool(cluster, name)
    for args in (("fix", "--dry"), ("fix",)) if dry_too else (("fix",),):
        line = one_line_error(ceph_cmd(cluster, *args, rolemap=rolemap))
        assert "refused: " in line and reason in line, line
    assert pool(cluster, name) == before  # not a single setting changed
    assert name in flagged(cluster)


@pytest.fixture(scope="class")
def gated(cluster: TestCluster) -> Iterator[str]:
    """A flagged pool the gate tests try (and must fail) to fix; removed after the class."""
    with warn_pools(cluster, {"gated": 64}):
        yield "gated"


class TestWithAFlaggedPool:
    """The gates, the rollback, the live plan and the pyinfra deploy, on one flagged pool ("gated")."""

    def test_gate_health_err(self, cluster: TestCluster, gated: str) -> None:
        cluster.ceph("osd", "set-full-ratio", "0.5")  # full below backfillfull: OSD_OUT_OF_ORDER_FULL, HEALTH_ERR
        try:
            cluster.wait_for(lambda: cluster.health()["status"] == "HEALTH_ERR", "HEALTH_ERR", None, 60)
            assert_refused(
                cluster,
                gated,
                "the cluster is HEALTH_ERR (OSD_OUT_OF_ORDER_FULL: full ratio(s) out of order)",
                dry_too=True,
            )
        finally:
            cluster.ceph("osd", "set-full-ratio", "0.95")
            cluster.wait_for(lambda: cluster.health()["status"] != "HEALTH_ERR", "no HEALTH_ERR", None, 60)

    def test_gate_pgs_not_active_clean(self, cluster: TestCluster, gated: str) -> None:
        # four replicas wanted, three OSDs: the pool's PG stays active+undersized
        cluster.ceph("osd", "pool", "create", "four", "1", "1", "replicated", "--autoscale-mode=off")
        try:
            cluster.ceph("osd", "pool", "set", "four", "size", "4")
            cluster.ceph("osd", "pool", "application", "enable", "four", "rbd")
            cluster.wait_for(lambda: not cluster.all_pgs_active_clean(), "an undersized PG", None, 60)
            assert_refused(cluster, gated, "PGs are not active+clean (1 active+undersized)")
        finally:
            cluster.ceph("osd", "pool", "rm", "four", "four", "--yes-i-really-really-mean-it")
            wait_clean(cluster)

    def test_gate_osd_down(self, cluster: TestCluster, gated: str) -> None:
        cluster.stop_osd(2)
        try:
            cluster.wait_for(lambda: cluster.ceph_json("osd", "stat")["num_up_osds"] == 2, "osd.2 down", None, 60)
            assert_refused(cluster, gated, "osd.2 is down")
        finally:
            cluster.start_osd(2)
            wait_clean(cluster)

    def test_gate_mon_max_pg_per_osd(self, cluster: TestCluster, gated: str, tmp_path: Path) -> None:
        # The operator pins 256 PGs: (256 + 1) x 3 = 771 PG replicas > 250 x 3 OSDs = 750.
        fleet = rolemap_with(tmp_path, "pin", pools=f"  pools:\n    - {{name: {gated}, pg_num: 256}}\n")
        assert_refused(
            cluster,
            gated,
            "the change would mean 771 PG replicas (257 per OSD), more than mon_max_pg_per_osd 250 x 3 OSDs in (750)",
            fleet,
        )
        # ...which is exactly what Ceph itself refuses
        refused = cluster.ceph("osd", "pool", "set", gated, "pg_num", "256", check=False)
        assert refused.returncode != 0 and "ERANGE" in refused.stderr and "exceeds max 750" in refused.stderr

    def test_failed_setting_is_rolled_back(self, cluster: TestCluster, gated: str) -> None:
        """The apply command on the real cluster: the mode goes off, pg_num 4096 fails (ERANGE), the mode comes back."""
        change = PoolChange(
            gated,
            "pin",
            4096,
            "test",
            (Setting("pg_autoscale_mode", "warn", "off"), Setting("pg_num", "64", "4096")),
            "",
            4096,
        )
        result = subprocess.run(
            ["sh", "-c", apply_command([change], str(cluster.conf))], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 1
        assert "ERANGE" in result.stderr and "the settings made were put back" in result.stderr
        assert settings(cluster, gated) == (64, 64, "warn")
        # mode was off for a moment: an autoscaler pass may have unflagged the pool; it comes back
        cluster.wait_for(lambda: gated in flagged(cluster), f"{gated} flagged again", None, 60)

    def test_waiting_for_the_warning_times_out_plainly(self, cluster: TestCluster, gated: str) -> None:
        """The wait step on the real cluster, for a pool nothing was changed on: it never clears."""
        progress: list[str] = []
        target = resolve_target(None, local=True, ceph_conf=str(cluster.conf))
        with session(target, progress=progress.append) as reader:
            assert reader.host is not None
            nothing = PoolChange(gated, "autoscale", 32, "test", (), "", 32)
            cleared = wait_until_cleared(reader.state, reader.host, [nothing], str(cluster.conf), 2, 0.5)
        assert cleared is False
        assert re.fullmatch(rf"\[@local\] waiting for POOL_TOO_MANY_PGS to clear for {gated}: \d+ of 2 s", progress[0])
        assert progress[-1] == (
            f"[@local] POOL_TOO_MANY_PGS still names {gated} after 2 s (health HEALTH_WARN); the settings are in place"
        )

    def test_plan_live_reads_the_cluster(self, cluster: TestCluster, gated: str) -> None:
        rm = load_rolemap()
        context = PlanContext(placement=place_rolemap(rm), live=True, options={"ceph_conf": str(cluster.conf)})
        out = plan_changes(rm, context)
        assert not out.warnings and not out.refusals
        # 64 -> 32 is within the autoscaler's 3x threshold: mode on alone would leave it at 64, so
        # the fix pins pg_num first (issue 18)
        settings = {"pg_num": ["64", "32"], "pgp_num": ["64", "32"], "pg_autoscale_mode": ["warn", "on"]}
        assert [(c.action, c.detail["pool"], c.detail["settings"], c.detail["source"]) for c in out.changes] == [
            ("update", gated, settings, "live")
        ]
        assert out.changes[0].summary.startswith(
            f"pool {gated}: pg_num 64 -> 32, pgp_num 64 -> 32, pg_autoscale_mode warn -> on (autoscale; target 32"
        )
        assert (
            out.changes[0].detail["order"] == 1
            and "within the autoscaler's 3x threshold" in (out.changes[0].detail["why"])
        )

    def test_pyinfra_deploy_fixes_and_then_changes_nothing(
        self, cluster: TestCluster, gated: str, tmp_path: Path
    ) -> None:
        """deploys/ceph.py through pyinfra's own CLI, on @local pointed at the test cluster."""
        fleet = rolemap_with(tmp_path, "pin", "off")
        cmd = [str(PYINFRA), "-y", "@local", "deploys/ceph.py", "--data", f"ceph_conf={cluster.conf}"]
        cmd += ["--data", "ceph_monitor=1", "--data", f"brainall_rolemap={fleet}"]
        first = run(cmd)
        assert first.returncode == 0, first.stdout + first.stderr
        assert settings(cluster, gated) == (32, 32, "off")
        assert gated not in flagged(cluster)
        second = run(cmd)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "No changes" in second.stdout + second.stderr
        assert settings(cluster, gated) == (32, 32, "off")


# --------------------------------------------------------------------------- both warnings, in order
# mon_max_pg_per_osd 50 x 3 OSDs = 150 PG replicas; mon_target_pg_per_osd 20 (the autoscaler's budget).
LAYOUT_CONFIG = {"mon_target_pg_per_osd": "20", "mon_max_pg_per_osd": "50"}
# name, size, pg_num, mode, options. In Ceph's order (pool ids) the increases come first:
# 103 now, a-ratio 8 -> 16 makes 127, then b-fewmin 16 -> 32 would mean 159 > 150 (ERANGE).
LAYOUT = (
    ("a-ratio", 3, 8, "warn", {"pg_num_min": "4", "target_size_ratio": "1"}),  # too few: should have 16
    ("b-fewmin", 2, 16, "warn", {}),  # under PG_NUM_MIN: too few, should have 32
    ("c-toomany", 2, 16, "warn", {"pg_num_min": "4"}),  # too many: should have 4
    ("d-on", 3, 4, "on", {"pg_num_min": "4"}),  # fine, mode on
)
LAYOUT_WARNINGS = {
    "POOL_TOO_FEW_PGS": [
        "Pool a-ratio has 8 placement groups, should have 16",
        "Pool b-fewmin has 16 placement groups, should have 32",
    ],
    "POOL_TOO_MANY_PGS": ["Pool c-toomany has 16 placement groups, should have 4"],
}


def pg_checks(cluster: TestCluster) -> dict[str, list[str]]:
    checks = cluster.health()["checks"]
    return {
        code: [d["message"] for d in check["detail"]] or [check["summary"]["message"]]
        for code, check in checks.items()
        if code in ("POOL_TOO_MANY_PGS", "POOL_TOO_FEW_PGS", "TOO_MANY_PGS")
    }


@contextmanager
def both_warnings(cluster: TestCluster, tmp_path: Path, toomany_pgs: int = 16) -> Iterator[None]:
    """The layout above, with data written, until Ceph raises both pool warnings; removed after.
    `toomany_pgs`: c-toomany's pg_num (a longer merge to interrupt)."""
    names = [name for name, *_ in LAYOUT]
    warnings = {
        **LAYOUT_WARNINGS,
        "POOL_TOO_MANY_PGS": [f"Pool c-toomany has {toomany_pgs} placement groups, should have 4"],
    }
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(1024 * 1024))
    try:
        for option, value in LAYOUT_CONFIG.items():
            cluster.ceph("config", "set", "global", option, value)
        for name, size, pg_num, mode, options in LAYOUT:
            pg_num = toomany_pgs if name == "c-toomany" else pg_num
            cluster.ceph(
                "osd", "pool", "create", name, str(pg_num), str(pg_num), "replicated",
                "--size", str(size), f"--autoscale-mode={mode}",
            )  # fmt: skip
            for key, value in options.items():
                cluster.ceph("osd", "pool", "set", name, key, value)
            cluster.ceph("osd", "pool", "application", "enable", name, "rbd")
            for i in range(3):
                subprocess.run(
                    ["rados", "-c", str(cluster.conf), "-p", name, "put", f"obj{i}", str(blob)], check=True, timeout=60
                )
        wait_clean(cluster)
        cluster.wait_for(lambda: pg_checks(cluster) == warnings, "both pool warnings", None, 90)
        yield
    finally:
        for name in names:
            cluster.ceph("osd", "pool", "rm", name, name, "--yes-i-really-really-mean-it", check=False)
        for option in LAYOUT_CONFIG:
            cluster.ceph("config", "rm", "global", option, check=False)
        cluster.wait_for(lambda: not pg_checks(cluster), "no PG-count warning", None, 90)
        wait_clean(cluster)


def all_pools(cluster: TestCluster) -> dict[str, tuple[int, int, int, str]]:
    return {
        p["pool_name"]: (p["pg_num_target"], p["pg_placement_num_target"], p["size"], p["pg_autoscale_mode"])
        for p in cluster.ceph_json("osd", "pool", "ls", "detail")
    }


def test_both_warnings_to_health_ok_in_an_order_the_monitor_accepts(cluster: TestCluster, tmp_path: Path) -> None:
    fleet = rolemap_with(tmp_path, "autoscale")
    with both_warnings(cluster, tmp_path):
        status = ceph_json(cluster, "status", rolemap=fleet)
        assert {code: check["detail"] for code, check in status["health"]["checks"].items()} == LAYOUT_WARNINGS
        steps = [(s["order"], s["pool"], s["phase"], s["pg_num"], s["monitor_sum"]) for s in status["fix"]["steps"]]
        assert steps == [
            (1, "c-toomany", "decrease", [16, 4], None),
            (2, "a-ratio", "increase", [8, 16], 103),
            (3, "b-fewmin", "increase", [16, 32], 135),
        ]
        # Increase first (Ceph's order) would be refused by the monitor: the same sum, live.
        pools = all_pools(cluster)
        targets = {name: (t, size) for name, (t, _, size, _) in pools.items()}
        assert sum(t * size for t, size in targets.values()) == 103
        assert monitor_sum({**targets, "a-ratio": (16, 3)}, "b-fewmin", 32) == 159
        # (what the monitor answers to a sum over its max, on this layout, without changing anything)
        over = cluster.ceph("osd", "pool", "set", "b-fewmin", "pg_num", "64", check=False)
        assert "would mean 199 total pgs, which exceeds max 150" in over.stderr
        assert monitor_sum(targets, "b-fewmin", 64) == 199

        # `ceph status` explains each pool in one line
        text = ceph_cmd(cluster, "status", rolemap=fleet)
        assert text.returncode == 0, text.stderr
        lines = [line for line in text.stdout.splitlines() if line.startswith("  | ")]
        assert [line.split(":")[0][4:] for line in lines] == ["device_health_metrics", *[n for n, *_ in LAYOUT]]
        assert "step 1 of 3, a decrease (sent first): pg_autoscale_mode warn -> on" in lines[3]
        assert "within the autoscaler's 3x threshold" in lines[1] and "target_size_ratio 1" in lines[1]
        assert "raised to PG_NUM_MIN 32" in lines[2]

        # --dry changes nothing
        dry = ceph_cmd(cluster, "fix", "--dry", rolemap=fleet)
        assert dry.returncode == 2, dry.stdout + dry.stderr
        assert all_pools(cluster) == pools and pg_checks(cluster) == LAYOUT_WARNINGS

        # the fix: decrease, its merge, then the increases; never ERANGE
        fixed = ceph_cmd(cluster, "fix", rolemap=fleet)
        out = fixed.stdout + fixed.stderr
        assert fixed.returncode == 0, out
        assert "ERANGE" not in out
        order = [line for line in fixed.stderr.splitlines() if line.startswith("[@local] set pool ")]
        assert [line.split()[3].rstrip(":") for line in order] == ["c-toomany", "a-ratio", "b-fewmin"]
        merging = fixed.stderr.index("Ceph is merging pool c-toomany")
        assert fixed.stderr.index("set pool c-toomany") < merging < fixed.stderr.index("set pool a-ratio")
        assert "[@local] no PG-count warning left after" in fixed.stderr
        assert not pg_checks(cluster)
        assert all_pools(cluster) == {
            "device_health_metrics": pools["device_health_metrics"],
            "a-ratio": (16, 16, 3, "on"),
            "b-fewmin": (32, 32, 2, "on"),
            "c-toomany": (4, 4, 2, "on"),
            "d-on": (4, 4, 3, "on"),
        }
        cluster.wait_for(cluster.health_ok, "HEALTH_OK after the splits", None, 90, detail=cluster._health_summary)

        # second run: nothing to change; --dry agrees and changes nothing
        after = all_pools(cluster)
        again = ceph_json(cluster, "fix", rolemap=fleet)
        assert (again["changed"], again["fix"]["changes"], again["fix"]["flagged"]) == (False, [], {})
        assert ceph_cmd(cluster, "fix", "--dry", rolemap=fleet).returncode == 0
        assert all_pools(cluster) == after and cluster.health_ok()


def test_a_fix_killed_during_the_merges_is_finished_by_the_next_run(cluster: TestCluster, tmp_path: Path) -> None:
    fleet = rolemap_with(tmp_path, "autoscale")
    # c-toomany 32 -> 4: 28 merges (about 30 s), long enough to be killed in and looked at; 8x off, so
    # the autoscaler sets its pg_num (and no max_shrink_factor applies)
    with both_warnings(cluster, tmp_path, toomany_pgs=32):
        cmd = [str(CLI), "ceph", "fix", "--local", "--ceph-conf", str(cluster.conf), "--rolemap", str(fleet)]
        first = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:

            def merging() -> bool:
                p = pool(cluster, "c-toomany")
                return bool(p["pg_num_target"] == 4 and p["pg_num"] > 4)

            cluster.wait_for(merging, "the merge of c-toomany to start", None, 60, interval_s=0.3)
        finally:
            first.kill()  # SIGKILL: no clean-up of any kind
            killed_output = first.communicate(timeout=30)
        # killed while it waited for the merge, before the increases
        assert settings(cluster, "c-toomany") == (4, 4, "on")
        assert settings(cluster, "a-ratio") == (8, 8, "warn") and settings(cluster, "b-fewmin") == (16, 16, "warn")

        # what a run now sees: the merge under way, how far, and the increases after it
        status = ceph_json(cluster, "status", rolemap=fleet)
        merges = status["fix"]["merges"]
        assert any(m.startswith("Ceph is merging pool c-toomany: pg_num ") for m in merges), (merges, killed_output)
        assert [(s["pool"], s["phase"]) for s in status["fix"]["steps"]] == [
            ("a-ratio", "increase"),
            ("b-fewmin", "increase"),
        ]

        second = ceph_cmd(cluster, "fix", rolemap=fleet)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "ERANGE" not in second.stdout + second.stderr
        assert re.search(r"waiting \(\d+ of 120 s\): Ceph is merging pool c-toomany: pg_num \d+ -> 4", second.stderr)
        assert not pg_checks(cluster)
        assert settings(cluster, "a-ratio") == (16, 16, "on") and settings(cluster, "b-fewmin") == (32, 32, "on")
        assert settings(cluster, "c-toomany") == (4, 4, "on")
        cluster.wait_for(cluster.health_ok, "HEALTH_OK", None, 90, detail=cluster._health_summary)
        third = ceph_json(cluster, "fix", rolemap=fleet)
        assert (third["changed"], third["fix"]["changes"]) == (False, [])


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_are_one_line(cluster: TestCluster, tmp_path: Path) -> None:
    missing = run([str(CLI), "ceph", "status", "--local", "--ceph-conf", str(tmp_path / "nope.conf")])
    assert one_line_error(missing) == f"error: {tmp_path}/nope.conf: no such file (--ceph-conf)"

    no_mon = tmp_path / "nomon.conf"
    no_mon.write_text(f"[global]\n    fsid = 0\n[client]\n    keyring = {tmp_path}/none\n")
    unreachable = one_line_error(run([str(CLI), "ceph", "fix", "--local", "--ceph-conf", str(no_mon)]))
    assert unreachable == (
        f"error: cannot read the Ceph cluster on this machine (ceph -c {no_mon}): `ceph health detail` failed: "
        "[errno 2] RADOS object not found (error connecting to the cluster)"
    )

    # a "monitor host" whose SSH port answers with no SSH (loopback only): one line, no paramiko traceback
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        hangs_up = threading.Thread(target=lambda: listener.accept()[0].close(), daemon=True)
        hangs_up.start()
        inventory = tmp_path / "site.py"
        inventory.write_text(f"all = [('mon', {{'ssh_hostname': '127.0.0.1', 'ssh_port': {port}}})]\n")
        no_ssh = one_line_error(run([str(CLI), "ceph", "status", "--inventory", str(inventory), "--host", "mon"]))
    # (the hang-up reads as "Error reading SSH protocol banner" or "Connection reset by peer")
    assert no_ssh.startswith("error: cannot connect to mon (127.0.0.1 over SSH): [mon] ")

    broken = tmp_path / "broken.yaml"
    text, count = re.subn(
        r"^  strategy: .*$", "  strategy: sometimes", BUILTIN_ROLEMAP.read_text(), count=1, flags=re.M
    )
    assert count == 1
    broken.write_text(text)
    result = ceph_cmd(cluster, "fix", rolemap=broken)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    number = text.splitlines().index("  strategy: sometimes") + 1
    assert line.endswith(f"broken.yaml:{number}: ceph.strategy: Input should be 'autoscale' or 'pin' (got 'sometimes')")


# --------------------------------------------------------------------------- the fixture itself (last)
def test_cluster_comes_up_over_the_leftovers_of_a_killed_run(cluster: TestCluster) -> None:
    """A killed run leaves daemons and pid files; the next up() stops exactly those and starts afresh."""
    old_daemons = cluster.own_daemons()
    assert len(old_daemons) == 5  # mon, mgr, 3 OSDs
    old_fsid = cluster.ceph_json("fsid")["fsid"]
    # Decoys that must survive: a stale pid file pointing at an unrelated process, and a process
    # that names our ceph.conf but is not a Ceph daemon.
    stale = subprocess.Popen(["sleep", "300"])
    impostor = subprocess.Popen(["sh", "-c", "sleep 300", "ceph-osd", "-c", str(cluster.conf)])
    try:
        (cluster.run_dir / "osd.7.pid").write_text(f"{stale.pid}\n")
        (cluster.run_dir / "mon.a.pid").write_text(f"{stale.pid}\n")  # overwrite a real one: stale now
        fresh = TestCluster(cluster.directory)
        fresh.up()
        assert not set(old_daemons) & set(fresh.own_daemons())
        assert len(fresh.own_daemons()) == 5
        assert fresh.ceph_json("fsid")["fsid"] != old_fsid
        assert fresh.health_ok()
        assert stale.poll() is None and impostor.poll() is None
    finally:
        for proc in (stale, impostor):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
