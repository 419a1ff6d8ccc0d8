"""Pure logic: the whole plan from the cluster as it is now: each pool's target pg_num, the
settings that get it there, the order the monitor accepts them in, and the gates.

Which pools: every pool Ceph names in POOL_TOO_MANY_PGS or POOL_TOO_FEW_PGS ("Pool X has 128
placement groups, should have 32"); TOO_MANY_PGS (the monitor's "too many PGs per OSD (301 > max
250)") names none: it is waited out while Ceph merges, and reported as what remains otherwise. A
pool no warning names is never touched, whatever the role map says about it.

What Ceph computes (read from its source, 16.2 / pacific; the facts, not the code):
- pg_autoscaler (src/pybind/mgr/pg_autoscaler/module.py): every pool in mode `warn` is flagged,
  "too few" when pg_num_final > pg_num_target, else "too many" (so also at equality: "has 32,
  should have 32"); in mode `on` it sets pg_num itself only when pg_num_final is more than 3x off
  pg_num_target; pg_num_final = max(pg_num_min or PG_NUM_MIN 32, nearest power of two of the
  ideal), the ideal from the pool's share of capacity (or its target_size_ratio, normalised).
- OSDMonitor::check_pg_num (src/mon/OSDMonitor.cc): `osd pool set P pg_num N` with N above
  pg_num_target is refused with ERANGE when the sum of every other pool's pg_num_target x size,
  plus N x P's size, exceeds mon_max_pg_per_osd x max(OSDs in, 3). A decrease is never checked.
  The sum counts targets, so even during a merge the shrinking pool counts at its target.

The target of a pool, first that applies:
1. `ceph.pools[].pg_num` in the role map (the operator's pin);
2. the pg_autoscaler's own `pg_num_final` from `ceph osd pool autoscale-status`;
3. the classic rule: OSDs x target PGs per OSD / replica size, times the pool's share of the data
   stored, rounded to the nearest power of two, and never below 32 (Ceph's PG_NUM_MIN).

The strategy (role map `ceph.strategy`, per pool `ceph.pools[].strategy`):
- `autoscale`: `pg_autoscale_mode on`. Beyond the 3x threshold that is all (the autoscaler sets
  pg_num at its next pass); within it the autoscaler would leave the pool where it is, so pg_num
  and pgp_num are pinned to Ceph's target first, then the mode goes on;
- `pin`: `pg_num` and `pgp_num` set to the target, then `pg_autoscale_mode` `off` or `on`
  (`pin_mode_after`). The mode change is not optional: a pool left in `warn` stays flagged.

The order: decreases (and mode-only changes), largest reduction first; then, once nothing is
merging, the increases, smallest first, each checked against the monitor's sum at its turn (after
the decreases): a plan with a step the monitor would refuse is refused as a whole, before
anything is sent. Merges are slow (measured on the test cluster: 128 -> 32 took 293 s, 16 -> 4
15 s, one or two merges at a time): the next step waits for them (`Decision.merges`), and a run
is done once no PG-count warning is left, whether or not a last merge is still running.

On top of Ceph's pacing this module refuses, rather than stages, a pinned shrink larger than
`max_shrink_factor` (4 by default: 128 -> 32 is allowed, 512 -> 32 is refused with the
intermediate value to pin).

Gates, checked before any change (all failing gates are reported together): the cluster is not
HEALTH_ERR; every PG is active+clean (while Ceph merges, PGs peer: the run waits instead); every
OSD is up and in; a mgr is active (the pg_autoscaler runs in it); and the end state does not grow
the PG replicas past mon_max_pg_per_osd x OSDs in (shrinking is always allowed, as in Ceph).

Stateless: decide() reads only the cluster, so a run killed part-way is continued by the next.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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
Phase = Literal["decrease", "mode", "increase"]
# Decreases (and mode-only changes, which move no PG) go first: they only lower the monitor's sum.
_PHASE_RANK = {"decrease": 0, "mode": 0, "increase": 1}


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
    reason: str  # the health line that names the pool
    pg_num_after: int  # the pg_num Ceph will converge to, for the mon_max_pg_per_osd sums
    phase: Phase = "mode"
    why: str = ""  # where the target comes from, and why pinned or left to the autoscaler
    autoscaler_sets_pg_num: bool = False  # mode on, more than 3x off: the pg_autoscaler sends pg_num
    size: int = 0
    order: int = 0  # 1-based position in the sequence
    projected: int = 0  # increases: the monitor's sum when this step is sent
    limit: int = 0  # ... and its maximum
    current: int = 0  # the pool's pg_num_target before the change

    @property
    def pg_num_before(self) -> int:
        if self.current:
            return self.current
        pg = next((s for s in self.settings if s.key == "pg_num"), None)
        return int(pg.old) if pg else self.pg_num_after

    def step_text(self) -> str:
        if self.phase == "decrease":
            return f"step {self.order}, a decrease (sent first)"
        if self.phase == "mode":
            return f"step {self.order}, the mode only"
        return (
            f"step {self.order}, an increase, sent once the merges are done "
            f"(the monitor's sum then {self.projected} of {self.limit})"
        )

    def describe(self) -> str:
        steps = ", ".join(f"{s.key} {s.old} -> {s.new}" for s in self.settings)
        text = f"pool {self.pool}: {steps} ({self.strategy}; target {self.target} from {self.target_source})"
        if self.autoscaler_sets_pg_num:
            text += f"; the pg_autoscaler then sets pg_num {self.pg_num_before} -> {self.target}"
        return text + (f"; {self.step_text()}" if self.order else "")


@dataclass(frozen=True)
class Decision:
    changes: tuple[PoolChange, ...] = ()  # in the order they are to be sent
    refusals: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    flagged: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    pgs_per_osd_now: float = 0.0
    pgs_per_osd_after: float = 0.0
    waits: tuple[str, ...] = ()  # what must happen before the next step (the autoscaler's pass, ...)
    merges: tuple[str, ...] = ()  # merges and splits under way, with progress; the next step waits
    remaining: tuple[str, ...] = ()  # PG-count warnings no step of this plan clears, and why
    pool_lines: tuple[str, ...] = ()  # one line per pool: current, target, reason, step
    unclean: str = ""  # the PG-state gate's text when it fails (transient once a fix is under way)
    pg_checks: tuple[str, ...] = ()  # the PG-count health checks raised now

    @property
    def refused(self) -> bool:
        return bool(self.refusals)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    @property
    def done(self) -> bool:
        """Nothing left to send or wait for, and no PG-count warning raised. Merges may still be
        under way: Ceph finishes them on its own, and nothing waits for them any more."""
        return not (self.changes or self.refusals or self.waits or self.remaining or self.pg_checks)

    def next_steps(self) -> tuple[PoolChange, ...]:
        """What may be sent now: every decrease (and mode-only change) first; the increases only
        once nothing is merging; nothing while Ceph is busy or a gate fails."""
        if self.refused or self.waits or self.merges:
            return ()
        first = tuple(c for c in self.changes if c.phase != "increase")
        return first or self.changes

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


def target_reason(snapshot: Snapshot, pool: Pool, target: int, source: str) -> str:
    """Why the target is what it is, in the pg_autoscaler's own terms (its `autoscale-status`)."""
    row = snapshot.autoscale_row(pool.name)
    if source != "the pg_autoscaler" or row is None:
        return f"{target} from {source}"
    if pool.target_size_ratio > 0:
        share = f"target_size_ratio {pool.target_size_ratio:g} (effective {row.effective_target_ratio:.2f})"
    else:
        share = f"{row.capacity_ratio:.1%} of raw capacity"
    text = f"Ceph's pg_num_final {row.pg_num_final}: {share}, ideal {row.pg_num_ideal}"
    floor = pool.pg_num_min if pool.pg_num_min is not None else PG_NUM_MIN
    if row.pg_num_final == floor and nearest_power_of_two(max(row.pg_num_ideal, 1)) < floor:
        what = "the pool's pg_num_min" if pool.pg_num_min is not None else "PG_NUM_MIN"
        text += f", raised to {what} {floor}"
    return text


def threshold_text(current: int, target: int) -> str:
    factor = max(current, target) / max(min(current, target), 1)
    if autoscaler_would_apply(current, target):
        return f"{factor:g}x off, beyond the autoscaler's {AUTOSCALE_THRESHOLD:g}x threshold"
    return f"{factor:g}x off, within the autoscaler's {AUTOSCALE_THRESHOLD:g}x threshold (mode on alone leaves it)"


def merge_progress(pool: Pool, start: int | None = None) -> str:
    """One pool's merge (or split) under way, and how far it is."""
    if pool.pg_num > pool.pg_num_target:
        verb, left = "merging", f"{pool.pg_num - pool.pg_num_target} merges left"
    elif pool.pg_num < pool.pg_num_target:
        verb, left = "splitting", f"{pool.pg_num_target - pool.pg_num} PGs to go"
    else:
        verb, left = "remapping", f"{abs(pool.pgp_num_target - pool.pgp_num)} placement changes to go"
    if start is not None and start != pool.pg_num_target:
        total = abs(start - pool.pg_num_target)
        done = abs(start - pool.pg_num)
        left += f", {done} of {total} done ({100 * done // total}%)"
    return (
        f"Ceph is {verb} pool {pool.name}: pg_num {pool.pg_num} -> {pool.pg_num_target} ({left}), "
        f"pgp_num {pool.pgp_num} -> {pool.pgp_num_target}"
    )


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


def monitor_sum(targets: Mapping[str, tuple[int, int]], pool: str, pg_num: int) -> int:
    """The PG replicas OSDMonitor::check_pg_num counts for `osd pool set POOL pg_num N`: every other
    pool's pg_num_target x size, plus N x this pool's size (`targets`: pool -> (pg_num_target, size)).
    It checks only increases (N above pg_num_target); a decrease is never refused for the limit."""
    return sum(t * size for name, (t, size) in targets.items() if name != pool) + pg_num * targets[pool][1]


def _pool_change(
    snapshot: Snapshot, policy: Policy, name: str, code: str, has: int, should: int
) -> tuple[PoolChange | None, str | None, str | None]:
    """(the change, or a refusal, or a note) for one pool a PG-count warning names."""
    pool = snapshot.pool(name)
    if pool is None:
        return None, None, f"pool {name} is named in {code} but no longer exists"
    strategy, mode_after, _ = policy.for_pool(name)
    target, source = pool_target(snapshot, pool, policy)
    reason = f"Pool {name} has {has} placement groups, should have {should}"
    current = pool.pg_num_target
    if not is_power_of_two(target):
        return None, f"pool {name}: target {target} (from {source}) is not a power of two", None
    if code == TOO_MANY_PGS and target > current and source != "the role map":
        return (
            None,
            f"pool {name}: Ceph says it has too many PGs ({has}, should have {should}) but the target "
            f"from {source} is {target}, more than its {current}; not growing it "
            "(set ceph.pools[].pg_num to the count you want)",
            None,
        )
    why = target_reason(snapshot, pool, target, source)
    autoscaler = False
    if strategy == "autoscale":
        # Mode on; the autoscaler moves pg_num itself only when its own target is more than 3x
        # off. Within the threshold it would leave the pool where it is: pin it first.
        autoscaler = source == "the pg_autoscaler" and autoscaler_would_apply(current, target)
        if autoscaler:
            settings = [Setting("pg_autoscale_mode", pool.autoscale_mode, "on")] if pool.autoscale_mode != "on" else []
            why += f"; {threshold_text(current, target)}: mode on, the autoscaler sets pg_num"
        else:
            settings = _pin_settings(pool, target, "on")
            if target != current:
                why += f"; {threshold_text(current, target)}: pinned, then mode on"
    else:
        factor = current / target
        if factor > policy.max_shrink_factor:
            step = nearest_power_of_two(current / policy.max_shrink_factor)
            return (
                None,
                f"pool {name}: {current} -> {target} PGs is a {factor:g}x shrink, more than "
                f"max_shrink_factor {policy.max_shrink_factor}; pin an intermediate count first "
                f"(ceph.pools[].pg_num: {step}) or raise ceph.max_shrink_factor",
                None,
            )
        settings = _pin_settings(pool, target, mode_after)
        why += f"; pinned, then mode {mode_after}"
    if not settings:
        return (
            None,
            None,
            f"pool {name} is already set as the role map says ({strategy}); "
            "the warning clears at the pg_autoscaler's next pass",
        )
    phase: Phase = "decrease" if target < current else "increase" if target > current else "mode"
    return (
        PoolChange(
            name,
            strategy,
            target,
            source,
            tuple(settings),
            reason,
            target,
            phase,
            why,
            autoscaler,
            pool.size,
            current=current,
        ),
        None,
        None,
    )


def decide(snapshot: Snapshot, policy: Policy) -> Decision:
    """The whole remaining plan, from the cluster as it is now: one change per pool that a
    PG-count warning names, in an order the monitor accepts, or the reasons not to make them.

    Pure and stateless: a run killed part-way is continued by deciding again from the cluster.
    """
    warned = snapshot.health.pool_warnings()
    flagged = {name: (has, should) for name, (_, has, should) in warned.items()}
    changes: list[PoolChange] = []
    refusals: list[str] = []
    notes: list[str] = []
    waits: list[str] = []
    remaining: list[str] = []
    lagging: list[str] = []

    for name, (code, has, should) in warned.items():
        change, refusal, note = _pool_change(snapshot, policy, name, code, has, should)
        if change is not None:
            changes.append(change)
        if refusal is not None:
            refusals.append(refusal)
        if note is not None:
            notes.append(note)
            if snapshot.pool(name) is not None:
                lagging.append(name)

    # The order: decreases and mode-only changes first, then increases (smallest first), each
    # checked against the sum the monitor computes at that moment.
    limit = snapshot.mon_pg_limit
    targets = {p.name: (p.pg_num_target, p.size) for p in snapshot.pools}
    # A pool in mode on more than 3x off (`would_adjust`) gets pg_num_final from the autoscaler at
    # its next pass: count it at that (the run waits for the pass before its next step).
    for row in snapshot.autoscale:
        if row.would_adjust and row.pool_name in targets and row.pg_num_final > 0:
            targets[row.pool_name] = (row.pg_num_final, targets[row.pool_name][1])
    ordered = sorted(changes, key=lambda c: (_PHASE_RANK[c.phase], (c.pg_num_after - c.pg_num_before) * c.size, c.pool))
    changes = []
    step_refusals: list[str] = []
    for order, change in enumerate(ordered, start=1):
        projected = 0
        if change.phase == "increase":
            projected = monitor_sum(targets, change.pool, change.pg_num_after)
            if projected > limit:
                step_refusals.append(
                    f"pool {change.pool}: pg_num {change.pg_num_before} -> {change.pg_num_after} (size {change.size}) "
                    f"would mean {projected} total PG replicas even after the decreases, more than "
                    f"mon_max_pg_per_osd {snapshot.mon_max_pg_per_osd} x {max(snapshot.osds_in, 3)} OSDs in "
                    f"({limit}); the monitor would answer ERANGE, so it is not sent"
                )
        targets[change.pool] = (change.pg_num_after, change.size)
        changes.append(replace(change, order=order, projected=projected, limit=limit))

    # What Ceph is still doing: the next step waits for it.
    busy = snapshot.changing
    merges = [merge_progress(pool) for pool in busy]
    for row in snapshot.autoscale:
        pool = snapshot.pool(row.pool_name)
        if row.would_adjust and pool is not None and not pool.changing:
            waits.append(
                f"the pg_autoscaler is to set pool {row.pool_name}'s pg_num {row.pg_num_target} -> "
                f"{row.pg_num_final} at its next pass"
            )
    unclean = _unclean_text(snapshot)
    if busy and unclean:
        merges.append(f"meanwhile {unclean}")
    if lagging and not changes:
        waits.append(f"Ceph's health still names {', '.join(lagging)}; it clears at the pg_autoscaler's next pass")

    per_osd = snapshot.health.pgs_per_osd_warning()
    # The end state as the monitor counts it: every pool's pg_num_target (a pool still merging
    # counts at its target already).
    replicas_after = sum(t * size for t, size in targets.values())
    per_osd_after = replicas_after / snapshot.osds_in if snapshot.osds_in else float("inf")
    if per_osd is not None:
        text = f"TOO_MANY_PGS (too many PGs per OSD ({per_osd[0]} > max {per_osd[1]}))"
        if busy:
            waits.append(f"{text} clears as Ceph finishes the merges")
        elif per_osd_after > snapshot.mon_max_pg_per_osd:
            remaining.append(
                f"{text}: {replicas_after} PG replicas on {snapshot.osds_in} OSDs in would still be "
                f"{per_osd_after:.0f} per OSD after this plan, more than mon_max_pg_per_osd "
                f"{snapshot.mon_max_pg_per_osd}; no PG-count warning names a pool to shrink: lower a pool's "
                "pg_num by hand, or add OSDs"
            )

    if changes:
        gate_reasons = gates(snapshot, replicas_after, skip_unclean=bool(busy))
        refusals.extend(gate_reasons)
        # the end state over the limit already says it for the whole plan; otherwise each
        # increase the monitor would refuse, in order
        if not any(r.startswith("the change would mean") for r in gate_reasons):
            refusals.extend(step_refusals)
    if changes and snapshot.pg_replicas >= replicas_after > snapshot.mon_max_pg_per_osd * snapshot.osds_in:
        notes.append(
            f"{replicas_after} PG replicas after the change are still more than mon_max_pg_per_osd "
            f"{snapshot.mon_max_pg_per_osd} x {snapshot.osds_in} OSDs in "
            f"({snapshot.mon_max_pg_per_osd * snapshot.osds_in}); fewer than now, so allowed"
        )
    return Decision(
        changes=tuple(changes),
        refusals=tuple(refusals),
        notes=tuple(notes),
        flagged=flagged,
        pgs_per_osd_now=snapshot.pgs_per_osd(),
        pgs_per_osd_after=per_osd_after,
        waits=tuple(waits),
        merges=tuple(merges),
        remaining=tuple(remaining),
        pool_lines=tuple(_pool_lines(snapshot, changes, warned, refusals, notes)),
        unclean=unclean if not busy else "",
        pg_checks=tuple(c.code for c in snapshot.health.pg_count_checks()),
    )


def _pool_lines(
    snapshot: Snapshot,
    changes: list[PoolChange],
    warned: Mapping[str, tuple[str, int, int]],
    refusals: list[str],
    notes: list[str],
) -> list[str]:
    """One line per pool: current, target, the reason, and the step (with its order)."""
    by_pool = {c.pool: c for c in changes}
    total = len(changes)
    lines = []
    for pool in snapshot.pools:
        now = f"pg_num {pool.pg_num}" + (f" (target {pool.pg_num_target})" if pool.changing else "")
        head = f"{pool.name}: {now}, size {pool.size}, mode {pool.autoscale_mode}"
        change = by_pool.get(pool.name)
        if change is not None:
            code = warned[pool.name][0]
            settings = ", ".join(f"{s.key} {s.old} -> {s.new}" for s in change.settings)
            lines.append(
                f"{head}; {code}; target {change.target} ({change.why}); "
                f"{change.step_text().replace(',', f' of {total},', 1)}: {settings}"
            )
        elif pool.name in warned:
            why = next((r for r in refusals + notes if f"pool {pool.name}" in r), "see above")
            lines.append(f"{head}; {warned[pool.name][0]}; {why}")
        elif pool.changing:
            lines.append(f"{head}; {merge_progress(pool)}")
        else:
            row = snapshot.autoscale_row(pool.name)
            final = f" (Ceph's pg_num_final {row.pg_num_final})" if row else ""
            lines.append(f"{head}; no PG-count warning names it{final}: left as it is")
    return lines


def _unclean_text(snapshot: Snapshot) -> str:
    unclean = snapshot.status.unclean_pgs()
    if not unclean:
        return ""
    states = ", ".join(f"{count} {state}" for state, count in sorted(unclean.items()))
    return f"{sum(unclean.values())} of {snapshot.status.num_pgs} PGs are not active+clean ({states})"


def gates(snapshot: Snapshot, replicas_after: int, skip_unclean: bool = False) -> list[str]:
    """Every reason the cluster is not in a state to take the PG change now.

    `skip_unclean`: Ceph is merging or splitting, so PGs peer now and then; the run waits for
    the merges (Decision.waits) instead of refusing on the PG states.
    """
    reasons = []
    if snapshot.health.status == "HEALTH_ERR":
        errors = [f"{c.code}: {c.summary}" for c in snapshot.health.checks if c.severity == "HEALTH_ERR"]
        reasons.append("the cluster is HEALTH_ERR (" + "; ".join(errors or ["no detail"]) + ")")
    unclean = _unclean_text(snapshot)
    if unclean and not skip_unclean:
        reasons.append(unclean)
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
    # The end state against the limit, before any command (each increase is also checked on its
    # own, in order, in decide()). Shrinking is always allowed, as in Ceph.
    limit = snapshot.mon_max_pg_per_osd * snapshot.osds_in
    if replicas_after > limit and replicas_after > snapshot.pg_replicas:
        reasons.append(
            f"the change would mean {replicas_after} PG replicas ({replicas_after / max(snapshot.osds_in, 1):.0f} "
            f"per OSD), more than mon_max_pg_per_osd {snapshot.mon_max_pg_per_osd} x {snapshot.osds_in} OSDs in "
            f"({limit})"
        )
    return reasons
