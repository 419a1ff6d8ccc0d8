"""pyinfra facts: the Ceph CLI's JSON, read on a monitor host.

In production the monitor host (role map `ceph.monitor_host`, a Proxmox node) is reached over
SSH and `ceph` uses /etc/ceph/ceph.conf. A host whose data sets `ceph_conf` gets `ceph -c
<ceph_conf>` instead: that is how the tests point `@local` at their private cluster.

Every call is bounded: `--connect-timeout` for an unreachable monitor and `timeout(1)` for the
rest (a mgr command waits for a mgr forever otherwise).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from typing import Any

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError, OperationError
from pyinfra.api.host import Host

from brainall_ops.ceph.model import SNAPSHOT_COMMANDS, CephDataError, Snapshot

CONNECT_TIMEOUT_S = 20
COMMAND_TIMEOUT_S = 60


class CephUnreadable(OperationError):
    """The cluster could not be read (no ceph CLI, no answer, or output we cannot parse)."""

    def __init__(self, host_name: str, detail: str) -> None:
        super().__init__(f"could not read the Ceph cluster on {host_name}: {detail}")
        self.detail = detail


def ceph_cli(args: Sequence[str], ceph_conf: str | None = None) -> str:
    """A shell command line running the ceph CLI with `args`, bounded in time."""
    parts = ["timeout", str(COMMAND_TIMEOUT_S), "ceph"]
    if ceph_conf:
        parts += ["-c", ceph_conf]
    parts += ["--connect-timeout", str(CONNECT_TIMEOUT_S), *args]
    return " ".join(shlex.quote(p) for p in parts)


def ceph_conf_of(host: Host) -> str | None:
    """The ceph.conf a host's data names (tests, rehearsals), or None for the host's default."""
    value = host.data.get("ceph_conf")
    return str(value) if value else None


class _CephJson(FactBase[Any]):
    """Base: one ceph subcommand, `-f json`, parsed."""

    abstract = True
    subcommand: tuple[str, ...] = ()

    def requires_command(self, ceph_conf: str | None = None) -> str:
        return "ceph"

    def command(self, ceph_conf: str | None = None) -> str:
        return ceph_cli([*self.subcommand, "-f", "json"], ceph_conf)

    def process(self, output: list[str]) -> Any:
        try:
            return json.loads("\n".join(output))
        except ValueError as exc:
            raise FactProcessError(f"`ceph {' '.join(self.subcommand)}` did not return JSON: {exc}") from None


class CephHealthDetail(_CephJson):
    """`ceph health detail -f json`: status and every health check with its detail lines."""

    subcommand = ("health", "detail")


class CephAutoscaleStatus(_CephJson):
    """`ceph osd pool autoscale-status -f json`: the pg_autoscaler's view, `pg_num_final` per pool."""

    subcommand = ("osd", "pool", "autoscale-status")


class CephPools(_CephJson):
    """`ceph osd pool ls detail -f json`: every pool's size, pg_num(_target), pgp_num and mode."""

    subcommand = ("osd", "pool", "ls", "detail")


class CephOsdDf(_CephJson):
    """`ceph osd df -f json`: every OSD's status (up/down), weight (in/out), PGs and capacity."""

    subcommand = ("osd", "df")


class CephStatus(_CephJson):
    """`ceph status -f json`: OSD counts, PGs by state, whether a mgr is active."""

    subcommand = ("status",)


class CephDf(_CephJson):
    """`ceph df -f json`: bytes stored per pool (the classic rule's shares)."""

    subcommand = ("df",)


class CephConfigValue(FactBase[Any]):
    """`ceph config get WHO OPTION -f json`: one option's effective value (e.g. mon_max_pg_per_osd)."""

    def requires_command(self, who: str, option: str, ceph_conf: str | None = None) -> str:
        return "ceph"

    def command(self, who: str, option: str, ceph_conf: str | None = None) -> str:
        return ceph_cli(["config", "get", who, option, "-f", "json"], ceph_conf)

    def process(self, output: list[str]) -> Any:
        try:
            return json.loads("\n".join(output))
        except ValueError as exc:
            raise FactProcessError(f"`ceph config get` did not return JSON: {exc}") from None


_MARK = "@@brainall-ceph"


class CephCluster(FactBase[dict[str, Any]]):
    """Every command of SNAPSHOT_COMMANDS at once, run concurrently in one shell on the host.

    One round trip instead of seven, and one moment in time for all of them. Returns name ->
    parsed JSON, or name -> CephCommandFailed(exit status, last stderr line).
    """

    def requires_command(self, ceph_conf: str | None = None) -> str:
        return "ceph"

    def command(self, ceph_conf: str | None = None) -> str:
        jobs = [
            f'( {ceph_cli([*args, "-f", "json"], ceph_conf)} >"$d/{name}" 2>"$d/{name}.err"; '
            f'echo $? >"$d/{name}.rc" ) &'
            for name, args in SNAPSHOT_COMMANDS.items()
        ]
        report = (
            f"for n in {' '.join(SNAPSHOT_COMMANDS)}; do "
            f'echo "{_MARK} $n $(cat "$d/$n.rc")"; cat "$d/$n"; echo; '
            f'echo "{_MARK}-stderr $(tail -n 1 "$d/$n.err")"; done'
        )
        return "d=$(mktemp -d) || exit 1; " + " ".join(jobs) + " wait; " + report + '; rm -rf "$d"'

    def process(self, output: list[str]) -> dict[str, Any]:
        sections: dict[str, tuple[int, list[str], str]] = {}
        name, rc, body = None, 0, []
        for line in output:
            if line.startswith(f"{_MARK}-stderr"):
                if name is not None:
                    sections[name] = (rc, body, line[len(_MARK) + 8 :].strip())
                name, body = None, []
            elif line.startswith(_MARK + " "):
                _, name, rc_text = [*line.split(), "", "", "1"][:3]
                rc = int(rc_text) if rc_text.isdigit() else 1
                body = []
            elif name is not None:
                body.append(line)
        out: dict[str, Any] = {}
        for key in SNAPSHOT_COMMANDS:
            if key not in sections:
                out[key] = CephCommandFailed(key, -1, "no output")
                continue
            rc, lines, err = sections[key]
            text = "\n".join(lines).strip()
            if rc != 0:
                out[key] = CephCommandFailed(key, rc, err)
                continue
            try:
                out[key] = json.loads(text) if text else None
            except ValueError:
                out[key] = CephCommandFailed(key, rc, f"not JSON: {text[:80]!r}")
        return out


class CephCommandFailed:
    def __init__(self, name: str, rc: int, stderr: str) -> None:
        self.name, self.rc, self.stderr = name, rc, stderr

    def __str__(self) -> str:
        what = " ".join(SNAPSHOT_COMMANDS.get(self.name, (self.name,)))
        reason = "timed out" if self.rc == 124 else (self.stderr or f"exit status {self.rc}")
        return f"`ceph {what}` failed: {reason}"


def read_snapshot(host: Host, ceph_conf: str | None = None) -> Snapshot:
    """Read everything the decision needs from `host` (one round trip) and put it together."""
    facts = host.get_fact(CephCluster, ceph_conf=ceph_conf)
    if facts is None:
        raise CephUnreadable(host.name, "no answer (is the ceph CLI installed?)")
    failed = [str(v) for v in facts.values() if isinstance(v, CephCommandFailed)]
    if failed:
        raise CephUnreadable(host.name, failed[0])
    missing = [name for name, value in facts.items() if value is None and name != "autoscale_status"]
    if missing:
        raise CephUnreadable(host.name, f"no answer for {', '.join(missing)}")
    try:
        return Snapshot.from_json(**facts)
    except CephDataError as exc:
        raise CephUnreadable(host.name, str(exc)) from None
