"""Controller side of `brainall-ops ceph` and of the live plan: find the monitor host, connect
with pyinfra's API, read the cluster, run the fix.

Which host: by default the role map's `ceph.monitor_host`, with its connection data from the
generated site inventory (`inventories/<site>.py`, written by `brainall-ops inventory`): over SSH,
`ceph` with the host's own /etc/ceph/ceph.conf. `--inventory`/`--host` pick another, `--local`
runs `ceph` on this machine (pyinfra's `@local`), and `--ceph-conf` passes `ceph -c PATH` (the
test cluster).

The Proxmox VE API is an alternative way in (checked against the PVE 9.1 API schema): GET
/nodes/{node}/ceph/pool lists every pool with pg_num, pg_num_final (the autoscaler's), size,
pg_autoscale_mode and autoscale_status; GET /nodes/{node}/ceph/pool/{name}/status shows one pool
(with pgp_num); PUT /nodes/{node}/ceph/pool/{name} sets pg_num and pg_autoscale_mode; GET
/cluster/ceph/status gives health. It is not implemented here: it has no `osd df`, no
mon_max_pg_per_osd and no all-or-nothing undo, and its PUT needs a token with Sys.Modify on `/`,
where SSH to the node with the `ceph` CLI needs nothing new.

pyinfra is imported inside the functions that need it, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import os
import re
import runpy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainall_ops.ceph.model import Health, Snapshot
from brainall_ops.ceph.targets import Decision, Policy
from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.loader import REPO_ROOT, display_path
from brainall_ops.rolemap.models import RoleMap

if TYPE_CHECKING:
    from pyinfra.api import Host, State

LOCAL = "@local"
# Where tests may send traffic: loopback and the lab's network (see the project conventions).
TEST_NETWORKS = (IPv4Network("127.0.0.0/8"), IPv4Network("10.77.0.0/16"))
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Target:
    """The one host `ceph` commands run on, as a pyinfra inventory entry."""

    name: str
    data: dict[str, Any]
    where: str


def resolve_target(
    rm: RoleMap | None,
    *,
    inventory: Path | None = None,
    host_name: str | None = None,
    local: bool = False,
    ceph_conf: str | None = None,
) -> Target:
    if local:
        if ceph_conf and not Path(ceph_conf).is_file():
            raise BrainallError(f"{ceph_conf}: no such file (--ceph-conf)")
        data = {"ceph_conf": str(Path(ceph_conf).resolve())} if ceph_conf else {}
        where = f"this machine (ceph -c {data['ceph_conf']})" if ceph_conf else "this machine"
        return Target(LOCAL, data, where)
    if host_name is None:
        if rm is None or rm.ceph is None:
            raise BrainallError("the role map has no ceph section: give --host (and --inventory) or --local")
        host_name = rm.ceph.monitor_host
    if inventory is None:
        site = None
        if rm is not None:
            site = next((h.site for h in rm.hosts if h.name == host_name), None)
        if site is None:
            raise BrainallError(f"{host_name!r} is not a host of the role map: give --inventory")
        inventory = REPO_ROOT / "inventories" / f"{site}.py"
    hosts = load_inventory_hosts(inventory)
    if host_name not in hosts:
        known = ", ".join(sorted(hosts)) or "none"
        raise BrainallError(f"{display_path(inventory)}: no host {host_name!r} (hosts: {known})")
    data = dict(hosts[host_name])
    if ceph_conf:
        data["ceph_conf"] = ceph_conf
    address = str(data.get("ssh_hostname", host_name))
    refuse_production_from_tests(host_name, address)
    return Target(host_name, data, f"{host_name} ({address} over SSH)")


def load_inventory_hosts(path: Path) -> dict[str, dict[str, Any]]:
    """name -> host data of a pyinfra inventory file in the generated form (`all = [(name, data)]`)."""
    if not path.is_file():
        raise BrainallError(f"{display_path(path)}: no such inventory (run `brainall-ops inventory` first)")
    try:
        namespace = runpy.run_path(str(path))
    except Exception as exc:  # an inventory is Python: any error in it is the operator's to fix
        raise BrainallError(f"{display_path(path)}: cannot load the inventory: {exc}") from None
    hosts: dict[str, dict[str, Any]] = {}
    for entry in namespace.get("all", []):
        name, data = (entry, {}) if isinstance(entry, str) else entry
        hosts[str(name)] = dict(data)
    return hosts


def refuse_production_from_tests(name: str, address: str) -> None:
    """A test run must never reach the real fleet: only loopback and the lab network."""
    if "PYTEST_CURRENT_TEST" not in os.environ:
        return
    try:
        ip = IPv4Address(address)
    except ValueError:
        ip = None
    if ip is None or not any(ip in net for net in TEST_NETWORKS):
        raise BrainallError(f"refusing to reach {name} ({address}) from a test run: point tests at --local --ceph-conf")


# --------------------------------------------------------------------------- the pyinfra session
@dataclass
class FixOutcome:
    before: Snapshot
    decision: Decision
    will_change: bool
    dry: bool
    changed: bool = False
    health_after: Health | None = None
    elapsed_s: float = 0.0


class _LogCapture(logging.Handler):
    """Keeps pyinfra's error lines (for one-line errors) and passes our progress lines on."""

    def __init__(self, progress: Callable[[str], None] | None = None) -> None:
        super().__init__(level=logging.INFO)
        self.progress = progress
        self.ours: list[str] = []  # errors of brainall_ops.ceph (they say what went wrong)
        self.theirs: list[str] = []  # pyinfra's own (command output, "Error: executed 1 commands")

    def emit(self, record: logging.LogRecord) -> None:
        message = _ANSI.sub("", record.getMessage()).strip()
        if record.name.startswith("pyinfra.brainall"):
            if record.levelno >= logging.ERROR:
                self.ours.append(message)
            if self.progress:
                self.progress(message)
        elif record.levelno >= logging.ERROR and message:
            self.theirs.append(message)

    def reason(self) -> str:
        if self.ours:
            return self.ours[-1]
        # pyinfra logs a failed command's own output first, then its verdict: the output says more
        useful = [e for e in self.theirs if "Error" not in e.split("]", 1)[-1][:8]]
        return useful[-1] if useful else (self.theirs[-1] if self.theirs else "see the output above")


class CephSession:
    """One pyinfra State with the target as its only host; use as a context manager."""

    def __init__(self, target: Target, progress: Callable[[str], None] | None = None) -> None:
        self.target = target
        self.capture = _LogCapture(progress)
        self.state: State | None = None
        self.host: Host | None = None

    def __enter__(self) -> CephSession:
        from pyinfra.api import Config, Inventory, State
        from pyinfra.api.connect import connect_all
        from pyinfra.api.exceptions import PyinfraError
        from pyinfra.api.state import StateStage

        os.environ.setdefault("PYINFRA_PROGRESS", "off")
        logger = logging.getLogger("pyinfra")
        self._saved = (logger.level, logger.propagate)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(self.capture)
        # paramiko logs a failed handshake as a traceback from its own thread; pyinfra reports
        # the same failure in one line, which is the one the operator gets.
        self._paramiko = logging.getLogger("paramiko")
        self._paramiko_saved = self._paramiko.propagate
        self._quiet = logging.NullHandler()
        self._paramiko.addHandler(self._quiet)
        self._paramiko.propagate = False
        try:
            inventory = Inventory(([(self.target.name, self.target.data)], {}))
            self.state = State(inventory, Config(CONNECT_TIMEOUT=10))
            self.state.set_stage(StateStage.Connect)
            try:
                connect_all(self.state)
            except PyinfraError:
                raise BrainallError(f"cannot connect to {self.target.where}: {self.capture.reason()}") from None
            self.host = inventory.get_host(self.target.name)
            self.state.set_stage(StateStage.Prepare)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.state is not None and self.state.initialised:
            from pyinfra.api.connect import disconnect_all

            disconnect_all(self.state)
        logger = logging.getLogger("pyinfra")
        logger.removeHandler(self.capture)
        logger.setLevel(self._saved[0])
        logger.propagate = self._saved[1]
        self._paramiko.removeHandler(self._quiet)
        self._paramiko.propagate = self._paramiko_saved

    def read(self) -> Snapshot:
        from pyinfra.api.exceptions import PyinfraError

        from brainall_ops.ceph.facts import CephUnreadable, ceph_conf_of, read_snapshot

        assert self.host is not None
        try:
            return read_snapshot(self.host, ceph_conf_of(self.host))
        except CephUnreadable as exc:
            raise BrainallError(f"cannot read the Ceph cluster on {self.target.where}: {exc.detail}") from None
        except PyinfraError as exc:
            raise BrainallError(
                f"cannot read the Ceph cluster on {self.target.where}: {_reason(exc, self.capture)}"
            ) from None

    def prepare_fix(
        self, policy: Policy, *, dry: bool, wait_timeout_s: int, poll_interval_s: float = 2.0
    ) -> FixOutcome:
        """pyinfra's prepare stage, as `pyinfra --dry` runs it: read, gate, decide; change nothing."""
        from pyinfra.api.deploy import add_deploy
        from pyinfra.api.exceptions import PyinfraError

        from brainall_ops.ceph.deploy import placement_groups
        from brainall_ops.ceph.facts import CephUnreadable

        assert self.state is not None and self.host is not None
        self._start = time.monotonic()
        seen: list[tuple[Snapshot, Decision]] = []
        try:
            add_deploy(
                self.state,
                placement_groups,
                policy=policy,
                wait_timeout_s=wait_timeout_s,
                poll_interval_s=poll_interval_s,
                report=lambda snapshot, decision: seen.append((snapshot, decision)),
            )
        except CephUnreadable as exc:
            raise BrainallError(f"cannot read the Ceph cluster on {self.target.where}: {exc.detail}") from None
        except PyinfraError as exc:
            if seen and seen[-1][1].refused:
                raise BrainallError(f"{self.target.where}: {seen[-1][1].refusal_message()}") from None
            raise BrainallError(f"{self.target.where}: {_reason(exc, self.capture)}") from None
        if not seen:
            raise BrainallError(f"cannot read the Ceph cluster on {self.target.where}: {self.capture.reason()}")
        will_change = self.state.get_meta_for_host(self.host).ops_change > 0
        return FixOutcome(seen[0][0], seen[0][1], will_change, dry, elapsed_s=time.monotonic() - self._start)

    def run_fix(self, outcome: FixOutcome) -> FixOutcome:
        """pyinfra's execute stage: the operation reads and gates again, changes, waits, verifies."""
        from pyinfra.api.exceptions import PyinfraError
        from pyinfra.api.operations import run_ops
        from pyinfra.api.state import StateStage

        from brainall_ops.ceph.facts import CephHealthDetail, ceph_conf_of

        assert self.state is not None and self.host is not None
        if outcome.dry or not outcome.will_change:
            return outcome
        self.state.set_stage(StateStage.Execute)
        try:
            run_ops(self.state)
        except PyinfraError as exc:
            raise BrainallError(f"the fix failed on {self.target.where}: {_reason(exc, self.capture)}") from None
        results = self.state.get_results_for_host(self.host)
        if results.error_ops:
            raise BrainallError(f"the fix failed on {self.target.where}: {self.capture.reason()}")
        outcome.changed = any(op.operation_meta.did_change() for op in self.state.ops[self.host].values())
        health = self.host.get_fact(CephHealthDetail, ceph_conf=ceph_conf_of(self.host))
        outcome.health_after = Health.from_json(health) if health else None
        outcome.elapsed_s = time.monotonic() - self._start
        return outcome


def _reason(exc: Exception, capture: _LogCapture) -> str:
    text = str(exc).strip()
    if not text or text in ("No hosts remaining!",) or text.startswith("Over "):
        return capture.reason()
    return text


@contextmanager
def session(target: Target, progress: Callable[[str], None] | None = None) -> Iterator[CephSession]:
    with CephSession(target, progress) as s:
        yield s
