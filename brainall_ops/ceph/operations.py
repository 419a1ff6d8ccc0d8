"""pyinfra operations: from any placement-group warning to no PG-count warning, in an order the
monitor accepts.

`placement_groups` reads the cluster (facts), decides (`targets.decide`, pure: the whole plan
from the cluster as it is), and yields a command only when there is something left to do.
pyinfra runs the generator at prepare (to show the plan, and for `--dry`) and the command at
execution, where `fix_in_order` works through the plan, deciding again from a fresh reading
before every step:

1. the decreases (and mode-only changes) at once: they only lower the monitor's sum;
2. wait while Ceph merges (progress lines: merges left, how far, since when);
3. the increases, smallest first, each checked just before it is sent against the sum
   OSDMonitor::check_pg_num computes (every other pool's pg_num_target x size, plus the new
   pg_num x size, against mon_max_pg_per_osd x max(in OSDs, 3)): a step it would refuse with
   ERANGE is never sent;
4. wait until no PG-count warning (POOL_TOO_MANY_PGS, POOL_TOO_FEW_PGS, TOO_MANY_PGS) is left.

Each pool's settings are one shell command (`&&`-chained; on a failure the ones already made
are put back). Nothing is remembered between runs: a run killed or failed part-way is continued
by the next, which decides from the cluster's state (e.g. it finds the merges under way and
waits for them before the increases).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Generator, Sequence

from pyinfra import host
from pyinfra.api import FunctionCommand, State, operation
from pyinfra.api.exceptions import OperationError
from pyinfra.api.host import Host

from brainall_ops.ceph.facts import CephHealthDetail, CephPools, ceph_cli, ceph_conf_of, read_snapshot
from brainall_ops.ceph.model import TOO_MANY_PGS, Health, Pool, Snapshot
from brainall_ops.ceph.targets import Decision, Policy, PoolChange, decide, merge_progress, monitor_sum

# A child of pyinfra's logger, so `pyinfra` shows it; `brainall-ops ceph fix` prints it too.
PROGRESS = logging.getLogger("pyinfra.brainall.ceph")
PROGRESS_EVERY_S = 10.0


class CephRefused(OperationError):
    """A safety gate failed (or the change is out of bounds); nothing was changed."""


@operation()
def placement_groups(
    policy: Policy | None = None,
    wait_timeout_s: int = 900,
    poll_interval_s: float = 2.0,
    report: Callable[[Snapshot, Decision], None] | None = None,
) -> Generator:
    """
    Clear every PG-count warning (POOL_TOO_MANY_PGS, POOL_TOO_FEW_PGS, TOO_MANY_PGS) for every pool
    named, as the policy says (autoscale or pin), in an order the monitor accepts.

    + policy: strategy, pin_mode_after, target PGs per OSD, max shrink factor, per-pool overrides
    + wait_timeout_s: how long the whole sequence (merges included) may wait for Ceph
    + poll_interval_s: how often to read the cluster while waiting
    + report: called with the cluster as read and the decision, each time the operation decides

    Refuses (raises CephRefused, changes nothing) when the cluster is HEALTH_ERR, a PG is not
    active+clean (unless Ceph is merging: then it waits), an OSD is down or out, no mgr is
    active, or a step would exceed mon_max_pg_per_osd. Pools no warning names are never touched.
    """
    policy = policy or Policy()
    conf = ceph_conf_of(host)
    snapshot = read_snapshot(host, conf)
    decision = decide(snapshot, policy)
    if report is not None:
        report(snapshot, decision)
    for note in decision.notes:
        host.noop(note)
    if decision.refused:
        raise CephRefused(f"{host.name}: {decision.refusal_message()}")
    if decision.done:
        host.noop("no PG-count warning" if not decision.flagged else "nothing to change")
        return
    if decision.remaining and not decision.changes and not decision.waits and not decision.merges:
        raise CephRefused(f"{host.name}: nothing this fix can change clears it: {'; '.join(decision.remaining)}")
    yield FunctionCommand(fix_in_order, (policy, conf, wait_timeout_s, poll_interval_s), {})


def fix_in_order(
    state: State,
    host: Host,
    policy: Policy,
    ceph_conf: str | None,
    timeout_s: float,
    poll_interval_s: float,
) -> bool:
    """Work through the plan, deciding again from a fresh reading before every step (see the
    module docstring); False, with the reason as the last error line, when it cannot finish."""
    import gevent

    start = time.monotonic()
    first_seen: dict[str, int] = {}  # pool -> pg_num when first seen merging: how far it is
    sent = 0
    last_report = -PROGRESS_EVERY_S
    last_kind: tuple[str, ...] = ()
    while True:
        elapsed = time.monotonic() - start
        snapshot = read_snapshot(host, ceph_conf)
        decision = decide(snapshot, policy)
        for pool in snapshot.changing:
            first_seen.setdefault(pool.name, pool.pg_num)
        if decision.done:
            tail = [merge_progress(p, first_seen.get(p.name)) for p in snapshot.changing]
            PROGRESS.info(
                f"[{host.name}] no PG-count warning left after {elapsed:.0f} s ({sent} pool(s) changed)"
                + (f"; {'; '.join(tail)}" if tail else "")
            )
            return True
        # Once the fix is under way, PGs that peer for a moment are waited out, not refused.
        transient = sent > 0 and decision.refusals == (decision.unclean,)
        if decision.refused and not transient:
            PROGRESS.error(f"[{host.name}] refused after {sent} pool(s) changed: {'; '.join(decision.refusals)}")
            return False
        steps = () if transient else decision.next_steps()
        for change in steps:
            problem = _send(host, change, ceph_conf, snapshot)
            if problem:
                PROGRESS.error(f"[{host.name}] {problem}")
                return False
            PROGRESS.info(f"[{host.name}] set {change.describe()}")
            sent += 1
        if steps:
            continue
        if decision.remaining and not decision.waits and not decision.merges:
            PROGRESS.error(f"[{host.name}] what remains: {'; '.join(decision.remaining)}")
            return False
        waits = [_with_progress(w, snapshot, first_seen) for w in (*decision.merges, *decision.waits)]
        waits = waits or list(decision.refusals) or ["the pg_autoscaler's next pass"]
        pending = [c.pool for c in decision.changes]
        if elapsed >= timeout_s:
            PROGRESS.error(
                f"[{host.name}] still waiting after {timeout_s:g} s: {'; '.join(waits)}"
                + (f"; not yet sent: {', '.join(pending)}" if pending else "")
                + "; run the fix again to continue from here"
            )
            return False
        # a line every PROGRESS_EVERY_S, and one whenever what it waits for changes (a merge starts)
        kind = tuple(re.sub(r"\d+", "#", w) for w in waits)
        if elapsed - last_report >= PROGRESS_EVERY_S or kind != last_kind:
            PROGRESS.info(
                f"[{host.name}] waiting ({elapsed:.0f} of {timeout_s:g} s): {'; '.join(waits)}"
                + (f"; then {', '.join(pending)}" if pending else "")
            )
            last_report, last_kind = elapsed, kind
        gevent.sleep(poll_interval_s)


def _with_progress(wait: str, snapshot: Snapshot, first_seen: dict[str, int]) -> str:
    """A merge's wait line, with how far it has come since this run first saw it."""
    for pool in snapshot.changing:
        if wait == merge_progress(pool):
            return merge_progress(pool, first_seen.get(pool.name))
    return wait


def _send(host: Host, change: PoolChange, ceph_conf: str | None, snapshot: Snapshot) -> str | None:
    """Send one pool's settings; an increase only after checking the monitor's own sum on the pools
    as they are this moment. The reason it was not sent or failed, or None."""
    from pyinfra.api import StringCommand

    if change.phase == "increase":
        pools = [Pool.from_json(p) for p in host.get_fact(CephPools, ceph_conf=ceph_conf) or []]
        targets = {p.name: (p.pg_num_target, p.size) for p in pools}
        if change.pool not in targets:
            return f"pool {change.pool} is gone; not sending its settings"
        projected = monitor_sum(targets, change.pool, change.pg_num_after)
        if projected > snapshot.mon_pg_limit:
            return (
                f"not sending pool {change.pool}'s pg_num {change.pg_num_after}: it would mean {projected} total "
                f"PG replicas, more than the monitor's max {snapshot.mon_pg_limit} (mon_max_pg_per_osd "
                f"{snapshot.mon_max_pg_per_osd} x {max(snapshot.osds_in, 3)} OSDs in); it would answer ERANGE"
            )
    ok, output = host.run_shell_command(StringCommand(apply_command([change], ceph_conf)))
    if not ok:
        lines = [line for line in output.stderr_lines if line.strip()] or ["no output"]
        return f"setting pool {change.pool} failed: {' / '.join(lines[-2:])}"
    return None


def apply_command(changes: Sequence[PoolChange], ceph_conf: str | None) -> str:
    """All settings of all pools, all or nothing: on a failure, undo in reverse order and fail."""
    apply = [
        ceph_cli(["osd", "pool", "set", change.pool, s.key, s.new], ceph_conf)
        for change in changes
        for s in change.settings
    ]
    # Setting a value that was never changed back to itself is a no-op, so the undo list need
    # not know which command failed.
    undo = [
        ceph_cli(["osd", "pool", "set", change.pool, s.key, s.old], ceph_conf)
        for change in reversed(changes)
        for s in reversed(change.settings)
    ]
    return (
        "( "
        + " && ".join(apply)
        + " ) || { "
        + "; ".join(undo)
        + "; echo 'ceph: a setting failed; the settings made were put back' >&2; exit 1; }"
    )


def _current(pool: Pool, key: str) -> str:
    if key == "pg_num":
        return str(pool.pg_num_target)
    if key == "pgp_num":
        return str(pool.pgp_num_target)
    return pool.autoscale_mode


def _drift(changes: Sequence[PoolChange], pools: dict[str, Pool]) -> list[str]:
    """The settings that do not read back as set."""
    return [
        f"{c.pool} {s.key} is {_current(pools[c.pool], s.key) if c.pool in pools else '(pool gone)'}, set {s.new}"
        for c in changes
        for s in c.settings
        if c.pool not in pools or _current(pools[c.pool], s.key) != s.new
    ]


def wait_until_cleared(
    state: State,
    host: Host,
    changes: Sequence[PoolChange],
    ceph_conf: str | None,
    timeout_s: float,
    poll_interval_s: float,
) -> bool:
    """Verify the settings read back, then poll until Ceph no longer names the changed pools in
    POOL_TOO_MANY_PGS (progress every PROGRESS_EVERY_S, with the merges), and verify again."""
    import gevent

    def read_pools() -> dict[str, Pool]:
        return {p.name: p for p in map(Pool.from_json, host.get_fact(CephPools, ceph_conf=ceph_conf) or [])}

    def merging(pools: dict[str, Pool]) -> str:
        busy = [f"{n} pg_num {pools[n].pg_num} -> {pools[n].pg_num_target}" for n in names if pools[n].changing]
        return f" ({', '.join(busy)})" if busy else ""

    names = sorted({c.pool for c in changes})
    start = time.monotonic()
    pools = read_pools()
    drifted = _drift(changes, pools)
    if drifted:
        PROGRESS.error(f"[{host.name}] settings did not hold: {'; '.join(drifted)}")
        return False
    last_report = -PROGRESS_EVERY_S
    while True:
        elapsed = time.monotonic() - start
        health = Health.from_json(host.get_fact(CephHealthDetail, ceph_conf=ceph_conf) or {"status": "?", "checks": {}})
        still = [n for n in names if n in health.flagged_pools(TOO_MANY_PGS)]
        if not still:
            pools = read_pools()
            drifted = _drift(changes, pools)
            if drifted:  # e.g. the autoscaler, now on, overrode a pin it disagrees with by > 3x
                PROGRESS.error(f"[{host.name}] {TOO_MANY_PGS} cleared but settings changed: {'; '.join(drifted)}")
                return False
            tail = f"; Ceph merges on in the background{merging(pools)}" if merging(pools) else ""
            PROGRESS.info(f"[{host.name}] {TOO_MANY_PGS} cleared for {', '.join(names)} after {elapsed:.0f} s{tail}")
            return True
        if elapsed >= timeout_s:
            PROGRESS.error(
                f"[{host.name}] {TOO_MANY_PGS} still names {', '.join(still)} after {timeout_s:g} s "
                f"(health {health.status}); the settings are in place"
            )
            return False
        if elapsed - last_report >= PROGRESS_EVERY_S:
            pools = pools if last_report < 0 else read_pools()
            PROGRESS.info(
                f"[{host.name}] waiting for {TOO_MANY_PGS} to clear for {', '.join(still)}{merging(pools)}: "
                f"{elapsed:.0f} of {timeout_s:g} s"
            )
            last_report = elapsed
        gevent.sleep(poll_interval_s)
