"""Pure logic: each flagged pool's target pg_num, the settings that get it there, and the gates.

Which pools: only those Ceph itself names in POOL_TOO_MANY_PGS ("Pool X has 128 placement groups,
should have 32"). A pool that is fine is never touched, whatever the role map says about it.

The target of a pool, first that applies:
1. `ceph.pools[].pg_num` in the role map (the operator's pin; the only target that may be more
   than the pool has, since Ceph itself says it has too many);
2. the pg_autoscaler's own `pg_num_final` from `ceph osd pool autoscale-status`;
3. the classic rule: OSDs x target PGs per OSD / replica size, times the pool's share of the data
   stored, rounded to the nearest power of two, and never below 32 (Ceph's PG_NUM_MIN).

The strategy (role map `ceph.strategy`, per pool `ceph.pools[].strategy`):
- `autoscale`: `pg_autoscale_mode on`; the autoscaler then sets the target itself (it acts when a
  pool is off by more than 3x) and clears the warning at its next pass;
- `pin`: `pg_num` and `pgp_num` set to the target, then `pg_autoscale_mode` `off` or `on`
  (`pin_mode_after`). The mode change is not optional: on 16.2.15 a pool left in `warn` is flagged
  whenever its pg_num is at or above the recommendation ("has 32, should have 32"), so a pin alone
  never clears the warning.

Shrinking: lowering pg_num only sets pg_num_target; Ceph then merges PGs one at a time and lowers
pgp_num in steps bounded by target_max_misplaced_ratio. Measured on the test cluster (bluestore,
3 OSDs): 128 -> 32 took 293 s, pg_num down one or two merges at a time (~3 s each), pgp_num down
2-5 at a time, never more than 3 of ~120 PGs peering at once, all others active+clean, and
PG_AVAILABILITY only flickering for a second now and then. That *is* the
stepping, done by Ceph at the pace the cluster can absorb. On top of it this module refuses, rather
than stages, a single jump larger than `max_shrink_factor` (4 by default: 128 -> 32 is allowed,
512 -> 32 is refused with the intermediate value to pin), and refuses a new pg_num change while
any pool is still splitting or merging. A run therefore either applies a whole, bounded change or
nothing; there is no half-way state to resume.

Gates, checked before any change (all failing gates are reported together): the cluster is not
HEALTH_ERR; every PG is active+clean; every OSD is up and in; a mgr is active (the pg_autoscaler,
which clears the warning, runs in it); and the change does not grow the PG replicas past
mon_max_pg_per_osd x OSDs in (Ceph's own check, made here for the whole change at once, so a
multi-pool change cannot fail half-way on ERANGE; shrinking is always allowed, as in Ceph).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from brainall_ops.ceph.model import TOO_MANY_PGS, Pool, Snapshot

if TYPE_CHECKING:
    from brainall_ops.rolemap.models import Ceph

Strategy = Literal["autoscale", "pin"]
ModeAfter = Literal["off", "on"]

PG_NUM_MIN = 32  # the pg_autoscaler's floor (and Ceph's default pg_num for a new pool)
AUTOSCALE_THRESHOLD = 3.0  # the pg_autoscaler changes a pool in mode 'on' only when off by more than 3x


# --------------------------------------------------------------------------- arithmetic
def nearest_power_of_two(n: float) -> int:
    """The power of two nearest to n (ties go up), as Ceph's pg_autoscaler rounds; at least 1."""
    if n <= 1:
        return 1
    upper = 1 << math.ceil(math.log2(n))
    lower = upper >> 1
    return lower if (upper - n) > (n - lower) else upper


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def classic_targets(
    osds: int,
    target_pgs_per_osd: int,
    pools: Mapping[str, tuple[int, int]],
    min_pg_num: int = PG_NUM_MIN,
) -> dict[str, int]:
    """The classic rule for each pool: `pools` maps name -> (replica size, bytes stored).

    The cluster's PG budget (OSDs x target PGs per OSD) is split by each pool's share of the data
    stored (evenly when nothing is stored yet), divided by the pool's replica size, and rounded to
    the nearest power of two, at least `min_pg_num`.
    """
    if osds < 1:
        raise ValueError("the classic rule needs at least one OSD")
    total = sum(stored for _, stored in pools.values())
    out = {}
    for name, (size, stored) in pools.items():
        share = stored / total if total > 0 else 1 / len(pools)
        out[name] = max(min_pg_num, nearest_power_of_two(osds * target_pgs_per_osd * share / size))
    return out


def autoscaler_estimate(
    osds: int,
    target_pgs_per_osd: int,
    capacity_bytes: float,
    stored_bytes: float,
    size: int,
    min_pg_num: int = PG_NUM_MIN,
) -> int:
    """What the pg_autoscaler will recommend for one pool (its first pass, no target ratios).

    It sizes by the pool's share of raw *capacity* (stored x size / raw), not of the data, so a
    cluster that is mostly empty gets few PGs; used for the offline plan, where no
    `autoscale-status` can be read.
    """
    ratio = stored_bytes * size / capacity_bytes if capacity_bytes > 0 else 0.0
    return max(min_pg_num, nearest_power_of_two(ratio * osds * target_pgs_per_osd / size))


def autoscaler_would_apply(current: int, final: int, threshold: float = AUTOSCALE_THRESHOLD) -> bool:
    return final > current * threshold or final < current / threshold


# --------------------------------------------------------------------------- policy
@dataclass(frozen=True)
class PoolPolicy:
    strategy: Strategy | None = None
    pin_mode_after: ModeAfter | None = None
    pg_num: int | None = None


@dataclass(frozen=True)
class Policy:
    """How to fix flagged pools; built from the role map's `ceph:` section."""

    strategy: Strategy = "autoscale"
    pin_mode_after: ModeAfter = "off"
    target_pgs_per_osd: int = 100
    max_shrink_factor: int = 4
    min_pg_num: int = PG_NUM_MIN
    pools: tuple[tuple[str, PoolPolicy], ...] = ()

    @classmethod
    def from_rolemap(cls, ceph: Ceph | None) -> Policy:
        if ceph is None:
            return cls()
        return cls(
            strategy=ceph.strategy,
            pin_mode_after=ceph.pin_mode_after,
            target_pgs_per_osd=ceph.target_pgs_per_osd,
            max_shrink_factor=ceph.max_shrink_factor,
            pools=tuple(
                (p.name, PoolPolicy(strategy=p.strategy, pin_mode_after=p.pin_mode_after, pg_num=p.pg_num))
                for p in ceph.pools
            ),
        )

    def for_pool(self, name: str) -> tuple[Strategy, ModeAfter, int | None]:
        override = dict(self.pools).get(name, PoolPolicy())
        return (
            override.strategy or self.strategy,
            override.pin_mode_after or self.pin_mode_after,
            override.pg_num,
        )


# --------------------------------------------------------------------------- the decision
@dataclass(frozen=True)
class Setting:
    """One `ceph osd pool set POOL KEY VALUE`, with the value it replaces (for rollback)."""

    key: Literal["pg_autoscale_mode", "pg_num", "pgp_num"]
    old: str
    new: str


@dataclass(frozen=True)
class PoolChange:
    pool: str
    strategy: Strategy
    target: int
    target_source: str
    settings: tuple[Setting, ...]
    reason: str
    pg_num_after: int  # the pg_num Ceph will converge to, for the mon_max_pg_per_osd gate

    def describe(self) -> str:
        steps = ", ".join(f"{s.key} {s.old} -> {s.new}" for s in self.settings)
        return f"pool {self.pool}: {steps} ({self.strategy}; target {self.target} from {self.target_source})"


@dataclass(frozen=True)
class Decision:
    changes: tuple[PoolChange, ...] = ()
    refusals: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    flagged: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    pgs_per_osd_now: float = 0.0
    pgs_per_osd_after: float = 0.0

    @property
    def refused(self) -> bool:
        return bool(self.refusals)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def refusal_message(self) -> str:
        return "refused: " + "; ".join(self.refusals)


def pool_target(snapshot: Snapshot, pool: Pool, policy: Policy) -> tuple[int, str]:
    """(target pg_num, where it comes from) for one pool."""
    _, _, pinned = policy.for_pool(pool.name)
    if pinned is not None:
        return pinned, "the role map"
    row = snapshot.autoscale_row(pool.name)
    if row is not None and row.pg_num_final > 0:
        return row.pg_num_final, "the pg_autoscaler"
    osds = snapshot.osds_in or len(snapshot.osds)
    stored = {p.name: (p.size, snapshot.stored.get(p.name, 0)) for p in snapshot.pools}
    floor = pool.pg_num_min if pool.pg_num_min is not None else policy.min_pg_num
    return classic_targets(osds, policy.target_pgs_per_osd, stored, floor)[pool.name], "the classic rule"


def _pin_settings(pool: Pool, target: int, mode_after: ModeAfter) -> list[Setting]:
    pgs = []
    if pool.pg_num_target != target:
        pgs.append(Setting("pg_num", str(pool.pg_num_target), str(target)))
    if pool.pgp_num_target != target:
        pgs.append(Setting("pgp_num", str(pool.pgp_num_target), str(target)))
    mode = [Setting("pg_autoscale_mode", pool.autoscale_mode, mode_after)] if pool.autoscale_mode != mode_after else []
    # Mode off first, so the autoscaler cannot act between our commands; mode on last, so it
    # starts from the pinned count.
    return mode + pgs if mode_after == "off" else pgs + mode


def decide(snapshot: Snapshot, policy: Policy) -> Decision:
    """The changes that fix POOL_TOO_MANY_PGS, or the reasons not to make them."""
    flagged = snapshot.health.flagged_pools(TOO_MANY_PGS)
    changes: list[PoolChange] = []
    refusals: list[str] = []
    notes: list[str] = []
    after: dict[str, int] = {}

    for name, (has, should) in flagged.items():
        pool = snapshot.pool(name)
        if pool is None:
            notes.append(f"pool {name} is named in {TOO_MANY_PGS} but no longer exists")
            continue
        strategy, mode_after, _ = policy.for_pool(name)
        target, source = pool_target(snapshot, pool, policy)
        reason = f"Pool {name} has {has} placement groups, should have {should}"
        if strategy == "autoscale":
            settings = [Setting("pg_autoscale_mode", pool.autoscale_mode, "on")] if pool.autoscale_mode != "on" else []
            applies = autoscaler_would_apply(pool.pg_num_target, target)
            after[name] = target if applies else pool.pg_num_target
        else:
            if not is_power_of_two(target):
                refusals.append(f"pool {name}: target {target} (from {source}) is not a power of two")
                continue
            if target > pool.pg_num_target and source != "the role map":
                refusals.append(
                    f"pool {name}: Ceph says it has too many PGs ({has}, should have {should}) but the target "
                    f"from {source} is {target}, more than its {pool.pg_num_target}; not growing it "
                    "(set ceph.pools[].pg_num to the count you want)"
                )
                continue
            factor = pool.pg_num_target / target
            if factor > policy.max_shrink_factor:
                step = nearest_power_of_two(pool.pg_num_target / policy.max_shrink_factor)
                refusals.append(
                    f"pool {name}: {pool.pg_num_target} -> {target} PGs is a {factor:g}x shrink, more than "
                    f"max_shrink_factor {policy.max_shrink_factor}; pin an intermediate count first "
                    f"(ceph.pools[].pg_num: {step}) or raise ceph.max_shrink_factor"
                )
                continue
            settings = _pin_settings(pool, target, mode_after)
            after[name] = target
            busy = [p for p in snapshot.pools if p.changing]
            if any(s.key in ("pg_num", "pgp_num") for s in settings) and busy:
                refusals.append(
                    "Ceph is still changing the PGs of "
                    + ", ".join(f"pool {p.name} (pg_num {p.pg_num} -> {p.pg_num_target})" for p in busy)
                    + f"; not changing pool {name}'s pg_num until it has finished"
                )
                continue
        if not settings:
            notes.append(
                f"pool {name} is already set as the role map says ({strategy}); "
                "the warning clears at the pg_autoscaler's next pass"
            )
            continue
        changes.append(PoolChange(name, strategy, target, source, tuple(settings), reason, after[name]))

    now = snapshot.pgs_per_osd()
    replicas_after = sum(
        (after[p.name] if p.name in after else max(p.pg_num, p.pg_num_target)) * p.size for p in snapshot.pools
    )
    per_osd_after = replicas_after / snapshot.osds_in if snapshot.osds_in else float("inf")
    if changes:
        refusals.extend(gates(snapshot, replicas_after))
    limit = snapshot.mon_max_pg_per_osd * snapshot.osds_in
    if changes and snapshot.pg_replicas >= replicas_after > limit:
        notes.append(
            f"{replicas_after} PG replicas after the change are still more than mon_max_pg_per_osd "
            f"{snapshot.mon_max_pg_per_osd} x {snapshot.osds_in} OSDs in ({limit}); fewer than now, so allowed"
        )
    for pool in snapshot.pools:
        if pool.changing and pool.name not in {c.pool for c in changes}:
            notes.append(
                f"pool {pool.name}: Ceph is changing its PGs: pg_num {pool.pg_num} -> {pool.pg_num_target}, "
                f"pgp_num {pool.pgp_num} -> {pool.pgp_num_target}"
            )
    return Decision(
        changes=tuple(changes),
        refusals=tuple(refusals),
        notes=tuple(notes),
        flagged=flagged,
        pgs_per_osd_now=now,
        pgs_per_osd_after=per_osd_after,
    )


def gates(snapshot: Snapshot, replicas_after: int) -> list[str]:
    """Every reason the cluster is not in a state to take the PG change now."""
    reasons = []
    if snapshot.health.status == "HEALTH_ERR":
        errors = [f"{c.code}: {c.summary}" for c in snapshot.health.checks if c.severity == "HEALTH_ERR"]
        reasons.append("the cluster is HEALTH_ERR (" + "; ".join(errors or ["no detail"]) + ")")
    unclean = snapshot.status.unclean_pgs()
    if unclean:
        states = ", ".join(f"{count} {state}" for state, count in sorted(unclean.items()))
        reasons.append(f"{sum(unclean.values())} of {snapshot.status.num_pgs} PGs are not active+clean ({states})")
    down = [o.name for o in snapshot.osds if not o.up]
    out = [o.name for o in snapshot.osds if o.up and not o.is_in]
    if down:
        reasons.append(f"{', '.join(down)} {'is' if len(down) == 1 else 'are'} down")
    elif snapshot.status.num_up_osds < snapshot.status.num_osds:
        reasons.append(f"only {snapshot.status.num_up_osds} of {snapshot.status.num_osds} OSDs are up")
    if out:
        reasons.append(f"{', '.join(out)} {'is' if len(out) == 1 else 'are'} out")
    if not snapshot.status.mgr_available:
        reasons.append("no mgr is active (the pg_autoscaler, which clears the warning, runs in it)")
    # Ceph's own rule (OSDMonitor::check_pg_num), for the whole change before any command: PG
    # replicas may not grow past mon_max_pg_per_osd x OSDs in. Shrinking is always allowed.
    limit = snapshot.mon_max_pg_per_osd * snapshot.osds_in
    if replicas_after > limit and replicas_after > snapshot.pg_replicas:
        reasons.append(
            f"the change would mean {replicas_after} PG replicas ({replicas_after / max(snapshot.osds_in, 1):.0f} "
            f"per OSD), more than mon_max_pg_per_osd {snapshot.mon_max_pg_per_osd} x {snapshot.osds_in} OSDs in "
            f"({limit})"
        )
    return reasons
