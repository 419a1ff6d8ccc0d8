"""The Ceph deploy: clear every PG-count warning on the monitor host, as the role map says.

    pyinfra inventories/hel1.py deploys/ceph.py            # production: runs on prox-101 only
    pyinfra @local deploys/ceph.py --data ceph_conf=/path/ceph.conf --data ceph_monitor=1

The commands run on one monitor host: the role map's `ceph.monitor_host` (matched against the
inventory name or `brainall_name`), or any host whose data sets `ceph_monitor`. Every other host
gets no operation, so running the deploy against a whole site inventory is safe.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError

from brainall_ops.ceph import operations
from brainall_ops.ceph.model import Snapshot
from brainall_ops.ceph.targets import Decision, Policy
from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.models import RoleMap


@deploy("Ceph placement groups")
def placement_groups(
    policy: Policy | None = None,
    wait_timeout_s: int = 900,
    poll_interval_s: float = 2.0,
    report: Callable[[Snapshot, Decision], None] | None = None,
) -> None:
    operations.placement_groups(
        name="Clear the PG-count warnings (POOL_TOO_MANY_PGS, POOL_TOO_FEW_PGS, TOO_MANY_PGS)",
        policy=policy or Policy(),
        wait_timeout_s=wait_timeout_s,
        poll_interval_s=poll_interval_s,
        report=report,
    )


def is_monitor_host(rm: RoleMap) -> bool:
    if rm.ceph is None:
        return False
    flag = host.data.get("ceph_monitor")
    if flag is not None and str(flag).strip().lower() not in ("", "0", "false", "no", "off"):
        return True  # `--data ceph_monitor=1` arrives as the string "1"
    return rm.ceph.monitor_host in {host.name, host.data.get("brainall_name")}


def ceph_from_rolemap() -> None:
    """What deploys/ceph.py runs for each host: the fix on the monitor host, nothing elsewhere."""
    from brainall_ops.rolemap.loader import REPO_ROOT, load_rolemap

    rolemap = host.data.get("brainall_rolemap")
    path = None
    if rolemap:
        path = Path(str(rolemap))
        path = path if path.is_absolute() else REPO_ROOT / path
    try:
        rm = load_rolemap(path)
    except BrainallError as exc:  # pyinfra shows a DeployError as one line, anything else as a traceback
        raise DeployError(str(exc)) from None
    if rm.ceph is None or not is_monitor_host(rm):
        return
    placement_groups(policy=Policy.from_rolemap(rm.ceph), wait_timeout_s=rm.ceph.wait_timeout_s)
