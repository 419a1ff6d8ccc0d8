"""A real, tiny Ceph cluster on this machine, for the integration tests and for rehearsals.

Ceph's own daemons from Debian's packages (ceph-mon, ceph-mgr, ceph-osd; Pacific 16.2): one
monitor, one manager and three OSDs, every socket bound to 127.0.0.1, bluestore on sparse files
(or memstore), `osd crush chooseleaf type = 0` so three replicas fit on one machine. Everything
(config, keyrings, data, logs, pid files, admin sockets) lives in one directory. No systemd, no
containers, no block devices.

Bringing it up is safe over the leftovers of a killed run: daemons still running from an earlier
cluster in the same directory are stopped first, and only processes that are Ceph daemons *and*
name this cluster's ceph.conf on their command line are ever signalled (a stale pid file pointing
at an unrelated process is ignored). A lock file keeps two processes from running a cluster on
the same monitor ports at once.

    python -m brainall_ops.lab.ceph_cluster up [--dir DIR]     # prints the ceph.conf path
    python -m brainall_ops.lab.ceph_cluster down [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from brainall_ops.errors import BrainallError

DEFAULT_DIR = Path(os.environ.get("BRAINALL_CEPH_TEST_DIR", "/var/tmp/brainall-ops-ceph-test"))
BINARIES = ("ceph", "ceph-mon", "ceph-mgr", "ceph-osd", "ceph-authtool", "monmaptool")
DAEMONS = ("ceph-mon", "ceph-mgr", "ceph-osd")
MARKER = ".brainall-ops-ceph-testcluster"
GIB = 1024**3

# Locks held by this process, by lock path: a second TestCluster on the same ports in the same
# process (the leftover test) takes the cluster over instead of failing on its own lock.
_HELD_LOCKS: dict[str, int] = {}


class TestClusterError(BrainallError):
    """The test cluster could not be brought up or down; the message says why."""


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


@dataclass
class TestCluster:
    """One private Ceph cluster in `directory` (see the module docstring)."""

    __test__ = False  # not a pytest test class, despite the name

    directory: Path = DEFAULT_DIR
    num_osds: int = 3
    objectstore: Literal["bluestore", "memstore"] = "bluestore"
    osd_bytes: int = 0  # 0: 4 GiB sparse file (bluestore), 1 GiB of RAM (memstore)
    autoscale_interval_s: int = 5  # Ceph's default pass is every 60 s
    mon_ports: tuple[int, int] = (3300, 6789)  # msgr2, msgr1
    timings: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ paths
    @property
    def conf(self) -> Path:
        return self.directory / "ceph.conf"

    @property
    def run_dir(self) -> Path:
        return self.directory / "run"

    @property
    def log_dir(self) -> Path:
        return self.directory / "log"

    @property
    def lock_path(self) -> Path:
        return Path(f"/tmp/brainall-ops-ceph-testcluster-{self.mon_ports[0]}.lock")

    # ------------------------------------------------------------- commands
    def ceph(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the ceph CLI against this cluster."""
        cmd = ["ceph", "-c", str(self.conf), "--connect-timeout", "15", *args]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TestClusterError(f"`{' '.join(cmd)}` did not answer within {timeout:g} s") from None
        if check and result.returncode != 0:
            raise TestClusterError(f"`{' '.join(cmd)}` failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def ceph_json(self, *args: str, timeout: float = 60) -> Any:
        return json.loads(self.ceph(*args, "-f", "json", timeout=timeout).stdout)

    # ----------------------------------------------------------------- up
    def up(self, timeout_s: float = 240) -> None:
        """Create and start a fresh cluster, stopping any leftovers first; returns at HEALTH_OK."""
        missing = missing_binaries()
        if missing:
            raise TestClusterError(
                f"missing {', '.join(missing)}: apt-get install ceph-mon ceph-mgr ceph-osd ceph-common"
            )
        start = time.monotonic()
        self._lock()
        self._stop_daemons()
        self._wipe()
        self._check_ports_free()
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / MARKER).write_text("a brainall-ops Ceph test cluster; removed by `down`\n")
        for sub in ("run", "log", "crash"):
            (self.directory / sub).mkdir()
        fsid = str(uuid.uuid4())
        self.conf.write_text(self._render_conf(fsid))

        self._start_mon(fsid)
        self.timings["mon"] = time.monotonic() - start
        # The autoscaler's pass interval must be set before the mgr loads the module; --force
        # because no mgr has registered the option with the monitor yet.
        self.ceph("config", "set", "mgr", "mgr/pg_autoscaler/sleep_interval", str(self.autoscale_interval_s), "--force")
        self._start_mgr()
        self._start_osds()
        self.wait_for(lambda: self.ceph_json("mgr", "stat")["available"], "the mgr to be available", start, timeout_s)
        self.timings["mgr"] = time.monotonic() - start
        self.wait_for(self._osds_up_in, f"{self.num_osds} OSDs up and in", start, timeout_s)
        self.timings["osds"] = time.monotonic() - start
        self.wait_for(self.all_pgs_active_clean, "all PGs active+clean", start, timeout_s)
        self.wait_for(self.health_ok, "HEALTH_OK", start, timeout_s, detail=self._health_summary)
        self.timings["health_ok"] = time.monotonic() - start

    def _render_conf(self, fsid: str) -> str:
        d = self.directory
        v2, v1 = self.mon_ports
        store_bytes = self.osd_bytes or (4 * GIB if self.objectstore == "bluestore" else GIB)
        return f"""# brainall-ops Ceph test cluster (brainall_ops/lab/ceph_cluster.py); everything under {d}
[global]
    fsid = {fsid}
    mon host = [v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]
    public addr = 127.0.0.1
    cluster addr = 127.0.0.1
    ms bind ipv4 = true
    ms bind ipv6 = false
    auth cluster required = cephx
    auth service required = cephx
    auth client required = cephx
    auth allow insecure global id reclaim = false
    run dir = {d}/run
    crash dir = {d}/crash
    pid file = {d}/run/$name.pid
    admin socket = {d}/run/$name.asok
    log file = {d}/log/$name.log
    # three replicas on one machine: spread them over OSDs, not hosts
    osd crush chooseleaf type = 0
    osd pool default size = 3
    osd pool default min size = 2
    mon allow pool delete = true
    # the host's free disk (not ours to manage) must not raise MON_DISK_LOW/CRIT
    mon data avail warn = 2
    mon data avail crit = 1

[client]
    keyring = {d}/keyring
    log file = /dev/null

[mon]
    mon data = {d}/mon.$id
    mon cluster log file = {d}/log/cluster.log
    # the default also loads 'restful', which would listen on every address
    mgr initial modules = iostat
    # quicker map updates (PG merges are paced by them); no effect on health codes or targets
    paxos propose interval = 0.2
    paxos min wait = 0.01

[mgr]
    mgr data = {d}/mgr.$id
    mgr tick period = 1
    mgr stats period = 1

[osd]
    osd data = {d}/osd$id
    osd objectstore = {self.objectstore}
    memstore device bytes = {store_bytes}
    bluestore block create = true
    bluestore block size = {store_bytes}
    bluestore fsck on mount = false
    # the smallest target Ceph accepts (896 MiB); each OSD uses far less here
    osd memory target = 939524096
"""

    def _start_mon(self, fsid: str) -> None:
        d = self.directory
        keyring, monmap = d / "keyring", d / "monmap"
        self._run(
            ["ceph-authtool", "--create-keyring", "--gen-key", "--name=mon.", str(keyring), "--cap", "mon", "allow *"]
        )
        caps = [item for daemon in ("mon", "osd", "mgr", "mds") for item in ("--cap", daemon, "allow *")]
        self._run(["ceph-authtool", "--gen-key", "--name=client.admin", str(keyring), *caps])
        v2, v1 = self.mon_ports
        addrs = f"[v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]"
        self._run(["monmaptool", "--create", "--clobber", "--fsid", fsid, "--addv", "a", addrs, str(monmap)])
        (d / "mon.a").mkdir()
        self._run(["ceph-mon", "-c", str(self.conf), "--mkfs", "-i", "a", f"--monmap={monmap}", f"--keyring={keyring}"])
        self._daemon(["ceph-mon", "-c", str(self.conf), "-i", "a"], "mon.a")
        self.wait_for(lambda: self.ceph("health", check=False, timeout=20).returncode == 0, "the mon", None, 60)

    def _start_mgr(self) -> None:
        (self.directory / "mgr.x").mkdir()
        keyring = self.directory / "mgr.x" / "keyring"
        self.ceph(
            "auth", "get-or-create", "mgr.x", "mon", "allow profile mgr", "osd", "allow *", "mds", "allow *",
            "-o", str(keyring),
        )  # fmt: skip
        self._daemon(["ceph-mgr", "-c", str(self.conf), "-i", "x"], "mgr.x")

    def _start_osds(self) -> None:
        # Register all OSDs, then mkfs them in parallel (bluestore mkfs is most of the start-up).
        mkfs: list[tuple[int, subprocess.Popen[bytes]]] = []
        for osd_id in range(self.num_osds):
            osd_uuid = str(uuid.uuid4())
            secret = self._run(["ceph-authtool", "--gen-print-key"]).strip()
            data = self.directory / f"osd{osd_id}"
            data.mkdir()
            request = json.dumps({"cephx_secret": secret})
            got = subprocess.run(
                ["ceph", "-c", str(self.conf), "osd", "new", osd_uuid, "-i", "-"],
                input=request, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            if got.returncode != 0 or got.stdout.strip() != str(osd_id):
                raise TestClusterError(
                    f"ceph osd new for osd.{osd_id} failed: {got.stdout.strip()} {got.stderr.strip()}"
                )
            (data / "keyring").write_text(f"[osd.{osd_id}]\n\tkey = {secret}\n")
            log = (self.log_dir / f"osd.{osd_id}.mkfs.out").open("wb")
            cmd = ["ceph-osd", "-c", str(self.conf), "-i", str(osd_id), "--mkfs", "--osd-uuid", osd_uuid]
            mkfs.append((osd_id, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
        for osd_id, proc in mkfs:
            if proc.wait(timeout=120) != 0:
                raise TestClusterError(
                    f"ceph-osd --mkfs for osd.{osd_id} failed: see {self.log_dir}/osd.{osd_id}.mkfs.out"
                )
        for osd_id in range(self.num_osds):
            self.start_osd(osd_id)

    def start_osd(self, osd_id: int) -> None:
        self._daemon(["ceph-osd", "-c", str(self.conf), "-i", str(osd_id)], f"osd.{osd_id}")

    def stop_osd(self, osd_id: int, timeout_s: float = 30) -> None:
        """Stop one OSD the way an operator's `systemctl stop` would (SIGTERM: it tells the mon)."""
        pid = self._pid_of(f"osd.{osd_id}")
        if pid is None:
            raise TestClusterError(f"osd.{osd_id} is not running")
        os.kill(pid, signal.SIGTERM)
        self.wait_for(lambda: not _alive(pid), f"osd.{osd_id} (pid {pid}) to exit", None, timeout_s)

    def _daemon(self, cmd: list[str], name: str) -> None:
        # Ceph daemons fork into the background by themselves and write their pid file.
        with (self.log_dir / f"{name}.stderr").open("ab") as err:
            result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err, timeout=60)
        if result.returncode != 0:
            raise TestClusterError(f"{cmd[0]} {name} did not start: see {self.log_dir}/{name}.stderr")

    def _run(self, cmd: list[str]) -> str:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise TestClusterError(f"`{' '.join(cmd)}` failed: {(result.stderr or result.stdout).strip()}")
        return result.stdout

    # -------------------------------------------------------------- health
    def _osds_up_in(self) -> bool:
        stat = self.ceph_json("osd", "stat")
        n = self.num_osds
        return bool(stat["num_osds"] == n and stat["num_up_osds"] == n and stat["num_in_osds"] == n)

    def all_pgs_active_clean(self) -> bool:
        pgmap = self.ceph_json("status")["pgmap"]
        clean = sum(s["count"] for s in pgmap.get("pgs_by_state", []) if s["state_name"] == "active+clean")
        return bool(pgmap["num_pgs"] > 0 and clean == pgmap["num_pgs"])

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.ceph_json("health", "detail")
        return result

    def health_ok(self) -> bool:
        return self.health()["status"] == "HEALTH_OK"

    def _health_summary(self) -> str:
        try:
            checks = self.health()["checks"]
        except (TestClusterError, ValueError, KeyError):
            return "health unreadable"
        return "; ".join(f"{k}: {v['summary']['message']}" for k, v in checks.items()) or "no checks"

    def wait_for(
        self,
        predicate: Callable[[], Any],
        what: str,
        start: float | None,
        timeout_s: float,
        detail: Callable[[], str] | None = None,
        interval_s: float = 1.0,
    ) -> None:
        """Poll `predicate` until it is true; bounded by `timeout_s` from `start` (or from now)."""
        deadline = (start if start is not None else time.monotonic()) + timeout_s
        last_error = ""
        while True:
            try:
                if predicate():
                    return
            except (TestClusterError, ValueError, KeyError) as exc:
                last_error = f" (last error: {exc})"
            if time.monotonic() >= deadline:
                more = f": {detail()}" if detail else last_error
                raise TestClusterError(f"timed out after {timeout_s:g} s waiting for {what}{more}")
            time.sleep(interval_s)

    def capture(self, out: Path) -> None:
        """Save the JSON a Snapshot is read from (fixtures for the unit tests), one file per command."""
        from brainall_ops.ceph.model import SNAPSHOT_COMMANDS

        out.mkdir(parents=True, exist_ok=True)
        for name, args in SNAPSHOT_COMMANDS.items():
            data = self.ceph_json(*args)
            (out / f"{name}.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    # ---------------------------------------------------------------- down
    def down(self) -> None:
        """Stop this cluster's daemons and remove its directory."""
        self._stop_daemons()
        self._wipe()
        self._unlock()

    # ------------------------------------------------------- process hygiene
    def own_daemons(self) -> dict[int, str]:
        """pid -> daemon name of every running Ceph daemon whose command line names our ceph.conf."""
        found: dict[int, str] = {}
        for pid, argv in _processes():
            if Path(argv[0]).name in DAEMONS and _names_conf(argv, self.conf):
                found[pid] = " ".join(argv[:1] + argv[-2:])
        return found

    def _pid_of(self, name: str) -> int | None:
        pidfile = self.run_dir / f"{name}.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid in self.own_daemons() else None

    def _stop_daemons(self, timeout_s: float = 20) -> None:
        # Pid files can be stale (pointing at someone else's process) or missing (a half-written
        # run): the process table, filtered on our ceph.conf, is the only reliable list.
        pids = self.own_daemons()
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in pids:
            if _alive(pid) and pid in self.own_daemons():
                _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [pid for pid in pids if _alive(pid)]
        if left:
            raise TestClusterError(f"Ceph daemons {left} of {self.directory} did not exit")

    def _wipe(self) -> None:
        if not self.directory.exists():
            return
        if any(self.directory.iterdir()) and not (self.directory / MARKER).exists():
            raise TestClusterError(
                f"{self.directory} is not empty and is not a test cluster directory; not removing it"
            )
        shutil.rmtree(self.directory)

    def _check_ports_free(self) -> None:
        for port in self.mon_ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    raise TestClusterError(
                        f"127.0.0.1:{port} is in use by another process (another Ceph monitor? see `ss -ltnp`)"
                    ) from None

    def _lock(self) -> None:
        key = str(self.lock_path)
        if key in _HELD_LOCKS:
            return
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise TestClusterError(
                f"another Ceph test cluster holds {key} ({holder}); only one can use ports {self.mon_ports}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, dir {self.directory}".encode(), 0)
        _HELD_LOCKS[key] = fd

    def _unlock(self) -> None:
        fd = _HELD_LOCKS.pop(str(self.lock_path), None)
        if fd is not None:
            os.close(fd)


def _processes() -> Iterator[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        if argv:  # zombies have an empty command line
            yield int(entry.name), argv


def _names_conf(argv: list[str], conf: Path) -> bool:
    target = str(conf)
    for i, arg in enumerate(argv):
        if arg in ("-c", "--conf") and i + 1 < len(argv) and argv[i + 1] == target:
            return True
        if arg in (f"--conf={target}", f"-c{target}"):
            return True
    return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brainall_ops.lab.ceph_cluster", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--objectstore", choices=["bluestore", "memstore"], default="bluestore")
    args = parser.parse_args(argv)
    cluster = TestCluster(args.dir, objectstore=args.objectstore)
    try:
        if args.action == "up":
            cluster.up()
            steps = ", ".join(f"{k} {v:.1f} s" for k, v in cluster.timings.items())
            print(f"up ({steps}); use: ceph -c {cluster.conf} -s")
        elif args.action == "down":
            cluster.down()
            print(f"down; removed {args.dir}")
        else:
            print(cluster.ceph("-s").stdout, end="")
    except BrainallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
