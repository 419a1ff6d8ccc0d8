"""What the Ceph CLI tells us, as plain data: parsed from its `-f json` output, no I/O.

The parsers follow the field names of Ceph 16.2 (Pacific) as captured from a real cluster
(tests/unit/fixtures/ceph/). Two traps they take care of: `osd pool ls detail` names pgp_num
`pg_placement_num`, and `autoscale-status` reports PG_NUM as the pool's pg_num *target*.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from brainall_ops.errors import BrainallError

TOO_MANY_PGS = "POOL_TOO_MANY_PGS"
TOO_FEW_PGS = "POOL_TOO_FEW_PGS"
# The monitor's own check (PGMap), on PG replicas per OSD as they are now, not on targets; it
# names no pool: "too many PGs per OSD (301 > max 250)"
OSD_TOO_MANY_PGS = "TOO_MANY_PGS"
POOL_PG_CHECKS = (TOO_MANY_PGS, TOO_FEW_PGS)
PG_COUNT_CHECKS = (*POOL_PG_CHECKS, OSD_TOO_MANY_PGS)
# "Pool rbd has 128 placement groups, should have 32" (pg_autoscaler, every release since Nautilus)
_PER_OSD_MESSAGE = re.compile(r"too many PGs per OSD \((?P<now>\d+) > max (?P<max>\d+)\)")
_POOL_PG_MESSAGE = re.compile(r"^Pool (?P<pool>.+) has (?P<has>\d+) placement groups, should have (?P<should>\d+)$")
# Flags a PG may carry and still count as healthy: background scrubs and snapshot trimming.
HARMLESS_PG_FLAGS = frozenset({"active", "clean", "scrubbing", "deep", "snaptrim", "snaptrim_wait"})

# What a Snapshot is read from: name (Snapshot.from_json's keyword) -> ceph subcommand (`-f json`)
SNAPSHOT_COMMANDS: dict[str, tuple[str, ...]] = {
    "health_detail": ("health", "detail"),
    "autoscale_status": ("osd", "pool", "autoscale-status"),
    "pools_detail": ("osd", "pool", "ls", "detail"),
    "osd_df": ("osd", "df"),
    "status": ("status",),
    "df": ("df",),
    "mon_max_pg_per_osd": ("config", "get", "mon", "mon_max_pg_per_osd"),
}


class CephDataError(BrainallError):
    """The Ceph CLI answered with something this module cannot read."""


def _get(data: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return data[key]
    except (KeyError, TypeError):
        raise CephDataError(f"unexpected `ceph {what}` output: no {key!r}") from None


# --------------------------------------------------------------------------- health
@dataclass(frozen=True)
class HealthCheck:
    code: str
    severity: str
    summary: str
    details: tuple[str, ...]
    muted: bool = False


@dataclass(frozen=True)
class Health:
    status: str
    checks: tuple[HealthCheck, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Health:
        checks = []
        for code, check in (_get(data, "checks", "health detail") or {}).items():
            summary = check.get("summary", {})
            checks.append(
                HealthCheck(
                    code=code,
                    severity=check.get("severity", ""),
                    summary=summary.get("message", "") if isinstance(summary, dict) else str(summary),
                    details=tuple(d.get("message", "") for d in check.get("detail", [])),
                    muted=bool(check.get("muted", False)),
                )
            )
        return cls(status=_get(data, "status", "health detail"), checks=tuple(checks))

    def check(self, code: str) -> HealthCheck | None:
        return next((c for c in self.checks if c.code == code), None)

    def flagged_pools(self, code: str = TOO_MANY_PGS) -> dict[str, tuple[int, int]]:
        """Pool -> (has, should have) for every pool the check names."""
        check = self.check(code)
        out: dict[str, tuple[int, int]] = {}
        for line in check.details if check else ():
            match = _POOL_PG_MESSAGE.match(line.strip())
            if match:
                out[match["pool"]] = (int(match["has"]), int(match["should"]))
        return out

    def pool_warnings(self) -> dict[str, tuple[str, int, int]]:
        """Pool -> (check, has, should have) for every pool POOL_TOO_MANY_PGS or POOL_TOO_FEW_PGS names."""
        out: dict[str, tuple[str, int, int]] = {}
        for code in POOL_PG_CHECKS:
            for name, (has, should) in self.flagged_pools(code).items():
                out[name] = (code, has, should)
        return out

    def pgs_per_osd_warning(self) -> tuple[int, int] | None:
        """(PGs per OSD now, max) from TOO_MANY_PGS, or None when the monitor does not raise it."""
        check = self.check(OSD_TOO_MANY_PGS)
        if check is None:
            return None
        match = _PER_OSD_MESSAGE.search(check.summary)
        return (int(match["now"]), int(match["max"])) if match else (0, 0)

    def pg_count_checks(self) -> tuple[HealthCheck, ...]:
        return tuple(c for c in self.checks if c.code in PG_COUNT_CHECKS)

    def summary_line(self) -> str:
        if not self.checks:
            return self.status
        return f"{self.status} (" + "; ".join(f"{c.code}: {c.summary}" for c in self.checks) + ")"


# --------------------------------------------------------------------------- pools
@dataclass(frozen=True)
class Pool:
    """One pool, from `ceph osd pool ls detail`."""

    id: int
    name: str
    size: int
    min_size: int
    pg_num: int
    pgp_num: int
    pg_num_target: int
    pgp_num_target: int
    autoscale_mode: str
    pg_num_min: int | None = None
    bulk: bool = False
    target_size_ratio: float = 0.0

    @classmethod
    def from_json(cls, p: Mapping[str, Any]) -> Pool:
        what = "osd pool ls detail"
        options = p.get("options") or {}
        pg_num = int(_get(p, "pg_num", what))
        pgp_num = int(_get(p, "pg_placement_num", what))
        return cls(
            id=int(_get(p, "pool_id", what)),
            name=str(_get(p, "pool_name", what)),
            size=int(_get(p, "size", what)),
            min_size=int(_get(p, "min_size", what)),
            pg_num=pg_num,
            pgp_num=pgp_num,
            # Pre-Nautilus clusters have no targets: the current values are the targets.
            pg_num_target=int(p.get("pg_num_target", pg_num)),
            pgp_num_target=int(p.get("pg_placement_num_target", pgp_num)),
            autoscale_mode=str(p.get("pg_autoscale_mode", "off")),
            pg_num_min=int(options["pg_num_min"]) if "pg_num_min" in options else None,
            bulk="bulk" in str(p.get("flags_names", "")).split(","),
            target_size_ratio=float(options.get("target_size_ratio", 0.0)),
        )

    @property
    def changing(self) -> bool:
        """Ceph is still splitting or merging this pool's PGs towards its targets."""
        return self.pg_num != self.pg_num_target or self.pgp_num != self.pgp_num_target


@dataclass(frozen=True)
class AutoscaleRow:
    """One pool's line of `ceph osd pool autoscale-status` (the pg_autoscaler's own sums)."""

    pool_name: str
    pg_num_target: int
    pg_num_final: int
    autoscale_mode: str
    would_adjust: bool
    capacity_ratio: float
    logical_used: int
    pg_num_ideal: int = 0
    effective_target_ratio: float = 0.0
    bias: float = 1.0

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> AutoscaleRow:
        what = "osd pool autoscale-status"
        return cls(
            pool_name=str(_get(row, "pool_name", what)),
            pg_num_target=int(_get(row, "pg_num_target", what)),
            pg_num_final=int(_get(row, "pg_num_final", what)),
            autoscale_mode=str(row.get("pg_autoscale_mode", "")),
            would_adjust=bool(row.get("would_adjust", False)),
            capacity_ratio=float(row.get("capacity_ratio", 0.0)),
            logical_used=int(row.get("logical_used", 0)),
            pg_num_ideal=int(row.get("pg_num_ideal", 0)),
            effective_target_ratio=float(row.get("effective_target_ratio", 0.0)),
            bias=float(row.get("bias", 1.0)),
        )


# --------------------------------------------------------------------------- OSDs and PGs
@dataclass(frozen=True)
class Osd:
    """One OSD, from `ceph osd df`."""

    id: int
    name: str
    up: bool
    reweight: float
    pgs: int
    kb: int
    kb_used: int

    @property
    def is_in(self) -> bool:
        return self.reweight > 0

    @classmethod
    def from_json(cls, node: Mapping[str, Any]) -> Osd:
        what = "osd df"
        return cls(
            id=int(_get(node, "id", what)),
            name=str(node.get("name", f"osd.{node.get('id')}")),
            up=node.get("status", "up") == "up",
            reweight=float(node.get("reweight", 1.0)),
            pgs=int(node.get("pgs", 0)),
            kb=int(node.get("kb", 0)),
            kb_used=int(node.get("kb_used", 0)),
        )


@dataclass(frozen=True)
class ClusterStatus:
    """The parts of `ceph status` the gates need."""

    num_osds: int
    num_up_osds: int
    num_in_osds: int
    num_pgs: int
    pgs_by_state: tuple[tuple[str, int], ...]
    mgr_available: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClusterStatus:
        osdmap = _get(data, "osdmap", "status")
        osdmap = osdmap.get("osdmap", osdmap)  # older releases nest it twice
        pgmap = _get(data, "pgmap", "status")
        return cls(
            num_osds=int(_get(osdmap, "num_osds", "status")),
            num_up_osds=int(_get(osdmap, "num_up_osds", "status")),
            num_in_osds=int(_get(osdmap, "num_in_osds", "status")),
            num_pgs=int(pgmap.get("num_pgs", 0)),
            pgs_by_state=tuple((s["state_name"], int(s["count"])) for s in pgmap.get("pgs_by_state", [])),
            mgr_available=bool(data.get("mgrmap", {}).get("available", False)),
        )

    def unclean_pgs(self) -> dict[str, int]:
        """State -> count of PGs that are not active+clean (scrubbing and snaptrim are fine)."""
        out: dict[str, int] = {}
        for state, count in self.pgs_by_state:
            flags = set(state.split("+"))
            if not ({"active", "clean"} <= flags and flags <= HARMLESS_PG_FLAGS):
                out[state] = out.get(state, 0) + count
        counted = sum(count for _, count in self.pgs_by_state)
        if counted < self.num_pgs:  # PGs no OSD has reported on yet
            out["unknown"] = out.get("unknown", 0) + self.num_pgs - counted
        return out


# --------------------------------------------------------------------------- the whole picture
@dataclass(frozen=True)
class Snapshot:
    """Everything the decision needs, read from one cluster at one moment."""

    health: Health
    pools: tuple[Pool, ...]
    autoscale: tuple[AutoscaleRow, ...]
    osds: tuple[Osd, ...]
    status: ClusterStatus
    stored: Mapping[str, int]  # pool -> bytes stored (logical), from `ceph df`
    mon_max_pg_per_osd: int

    @classmethod
    def from_json(
        cls,
        *,
        health_detail: Mapping[str, Any],
        autoscale_status: Sequence[Mapping[str, Any]] | None,
        pools_detail: Sequence[Mapping[str, Any]],
        osd_df: Mapping[str, Any],
        status: Mapping[str, Any],
        df: Mapping[str, Any] | None,
        mon_max_pg_per_osd: int | str,
    ) -> Snapshot:
        stored: dict[str, int] = {}
        for p in (df or {}).get("pools", []):
            stats = p.get("stats", {})
            stored[str(p.get("name"))] = int(stats.get("stored", stats.get("bytes_used", 0)))
        try:
            limit = int(mon_max_pg_per_osd)
        except (TypeError, ValueError):
            raise CephDataError(f"unexpected mon_max_pg_per_osd value {mon_max_pg_per_osd!r}") from None
        return cls(
            health=Health.from_json(health_detail),
            pools=tuple(Pool.from_json(p) for p in pools_detail),
            autoscale=tuple(AutoscaleRow.from_json(r) for r in autoscale_status or []),
            osds=tuple(Osd.from_json(n) for n in _get(osd_df, "nodes", "osd df")),
            status=ClusterStatus.from_json(status),
            stored=stored,
            mon_max_pg_per_osd=limit,
        )

    def pool(self, name: str) -> Pool | None:
        return next((p for p in self.pools if p.name == name), None)

    def autoscale_row(self, name: str) -> AutoscaleRow | None:
        return next((r for r in self.autoscale if r.pool_name == name), None)

    @property
    def osds_in(self) -> int:
        return self.status.num_in_osds

    @property
    def pg_replicas(self) -> int:
        """PG replicas now (a pool that is merging still has its higher count)."""
        return sum(max(p.pg_num, p.pg_num_target) * p.size for p in self.pools)

    def pgs_per_osd(self) -> float:
        return self.pg_replicas / self.osds_in if self.osds_in else float("inf")

    @property
    def mon_pg_limit(self) -> int:
        """The most PG replicas the monitor lets pg_num grow to: mon_max_pg_per_osd x in OSDs, and
        never fewer than 3 OSDs (OSDMonitor::check_pg_num: "assume min cluster size 3")."""
        return self.mon_max_pg_per_osd * max(self.osds_in, 3)

    @property
    def changing(self) -> tuple[Pool, ...]:
        """Pools Ceph is still merging or splitting towards their targets."""
        return tuple(p for p in self.pools if p.changing)
