"""pyinfra operations: fix the pools Ceph flags with too many placement groups.

`placement_groups` reads the cluster (facts), decides (`targets.decide`, pure), and yields
commands only when a flagged pool needs a setting changed. pyinfra runs the generator twice, at
prepare (to show the change, and for `--dry`) and again at execution, so the gates are checked
against the cluster as it is at the moment of the change.

The change itself is one shell command: every `ceph osd pool set` of every pool chained with
`&&`, and on the first failure the settings already made are put back, in reverse order. Then a
controller-side step polls the health until Ceph no longer names the pools, with progress lines
and a timeout, and verifies that the settings held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Sequence

from pyinfra import host
from pyinfra.api import FunctionCommand, State, operation
from pyinfra.api.exceptions import OperationError
from pyinfra.api.host import Host

from brainall_ops.ceph.facts import CephHealthDetail, CephPools, ceph_cli, ceph_conf_of, read_snapshot
from brainall_ops.ceph.model import TOO_MANY_PGS, Health, Pool, Snapshot
from brainall_ops.ceph.targets import Decision, Policy, PoolChange, decide

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
    Fix every pool Ceph names in POOL_TOO_MANY_PGS, as the policy says (autoscale or pin).

    + policy: strategy, pin_mode_after, target PGs per OSD, max shrink factor, per-pool overrides
    + wait_timeout_s: how long to wait for the warning to clear after the change
    + poll_interval_s: how often to read the health while waiting
    + report: called with the cluster as read and the decision, each time the operation decides

    Refuses (raises CephRefused, changes nothing) when the cluster is HEALTH_ERR, a PG is not
    active+clean, an OSD is down or out, no mgr is active, or the result would exceed
    mon_max_pg_per_osd. Pools that are fine are never touched.
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
    if not decision.has_changes:
        host.noop(f"no pool is flagged {TOO_MANY_PGS}" if not decision.flagged else "nothing to change")
        return
    yield apply_command(decision.changes, conf)
    yield FunctionCommand(wait_until_cleared, (decision.changes, conf, wait_timeout_s, poll_interval_s), {})


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
