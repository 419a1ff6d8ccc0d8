"""`brainall-ops ceph` and the Ceph deploy against a real Ceph 16.2 cluster on 127.0.0.1.

The session's cluster (tests/integration/ceph_fixture.py) is shared, so each test leaves it as it
found it: HEALTH_OK, every PG active+clean, its own pools deleted. Tests never wait for PG merges
to finish (128 -> 32 takes about 5 minutes); they assert on pg_num_target/pgp_num_target, which
change at once, and on the health check, which the pg_autoscaler clears within one pass (every
5 s on this cluster).
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
from brainall_ops.ceph.targets import PoolChange, Setting
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
        assert [(c.action, c.detail["pool"], c.detail["settings"], c.detail["source"]) for c in out.changes] == [
            ("update", gated, {"pg_autoscale_mode": ["warn", "on"]}, "live")
        ]
        assert out.changes[0].summary.startswith(f"pool {gated}: pg_autoscale_mode warn -> on (autoscale; target 32")

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
