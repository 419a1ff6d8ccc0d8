"""Run the survey: pyinfra's API, every host in parallel, one probe at a time per host.

Bounds, from the inside out:
- each probe's command is cut on the host by `timeout` at its bound (facts.py);
- pyinfra's own `_timeout` stops reading its output at the bound plus a grace period;
- a gevent.Timeout one second later also cuts what pyinfra does not bound (opening an SSH
  channel to a host that stopped answering waits up to an hour in paramiko).
A host whose probe is cut at the SSH level, or whose connection drops, has stopped answering:
its remaining probes are not run (reported as such), its connection is closed, and every other
host carries on. A host that cannot be reached at all is reported, not fatal.

gevent must patch the standard library before paramiko is imported (as pyinfra's own CLI does),
so `run_survey` patches it first; import this module only in a process that may be patched
(the `survey` command), never in the test process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from brainall_ops.errors import BrainallError
from brainall_ops.survey import measurements as m
from brainall_ops.survey.parse import Outcome
from brainall_ops.survey.selection import FleetSelection, select

CONNECT = "connect"


class SurveyError(BrainallError):
    pass


@dataclass(frozen=True)
class Event:
    """Progress: a host's probe started (running) or ended (ok, absent, timeout, error, skipped)."""

    host: str
    probe: str  # "connect" or one of facts.PROBES
    state: str
    detail: str = ""
    seconds: float | None = None


Emit = Callable[[Event], None]


@dataclass
class _HostRun:
    name: str
    answered: bool = False
    reason: str = ""
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    stopped_at: str | None = None  # the probe during which the host stopped answering


def _patch_gevent() -> None:
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()


def load_inventories(paths: Sequence[Path]) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, list[str]]]:
    """Hosts (name, data) and groups of one or more pyinfra inventory files, merged."""
    from pyinfra.api import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    hosts: list[tuple[str, dict[str, Any]]] = []
    groups: dict[str, list[str]] = {}
    seen: dict[str, Path] = {}
    for path in paths:
        # make_inventory treats a name that is not a file as a host to resolve: refuse that here.
        if not path.is_file():
            raise SurveyError(f"inventory {path}: no such file")
        try:
            # an inventory file is executed as Python, in a pyinfra state (as pyinfra's CLI does)
            with ctx_state.use(State(check_for_changes=False)):
                inventory = make_inventory(str(path))
        except Exception as exc:  # whatever the file raises, the operator gets one line naming it
            raise SurveyError(f"inventory {path}: {type(exc).__name__}: {exc}") from None
        for host in inventory:
            if host.name in seen:
                raise SurveyError(f"host {host.name} is in both {seen[host.name]} and {path}")
            seen[host.name] = path
            hosts.append((host.name, host.data.dict()))
        for group, members in inventory.groups.items():
            if group != "all":
                groups.setdefault(group, []).extend(h.name for h in members)
    return hosts, groups


def _probe_calls(
    selection: FleetSelection, name: str, bounds: m.Bounds, disk_dir: str, latency_method: str
) -> dict[str, Any]:
    """probe -> (fact class, its arguments, its bound) or a reason it is not run here."""
    from brainall_ops.survey import facts

    probe_s = bounds.probe_s
    peers = [selection.addresses[n] for n in selection.names if n != name]
    calls: dict[str, Any] = {
        "system": (facts.System, {"bound_s": probe_s}, probe_s),
        "cpu": (facts.CPU, {"bound_s": probe_s}, probe_s),
        "memory": (facts.Memory, {"bound_s": probe_s}, probe_s),
        "disk": (facts.DiskSpace, {"bound_s": probe_s, "path": "/"}, probe_s),
        "gpu": (facts.GPU, {"bound_s": probe_s}, probe_s),
        "proxmox": (facts.Proxmox, {"bound_s": probe_s}, probe_s),
        "vm_storage": (facts.VMStorage, {"bound_s": probe_s}, probe_s),
        "identity": (facts.Identity, {"bound_s": probe_s}, probe_s),
        "ceph": (facts.Ceph, {"bound_s": probe_s}, probe_s),
    }
    box = selection.storagebox
    if box is None:
        calls["storagebox"] = "no Storage Box address (none in the inventory or the role map)"
    else:
        tries, connect_s = 3, 5
        bound = connect_s + 3
        calls["storagebox"] = (
            facts.StorageBoxReach,
            {"bound_s": bound, "address": box.address, "port": box.port, "tries": tries, "connect_s": connect_s},
            bound,
        )
    if peers:
        # all targets at once; ping: -w (count x 0.2 s + 2), TCP: count x 1.2 s + 2, per target.
        bound = int(bounds.ping_count * 1.2 + 6)
        calls["latency"] = (
            facts.Latency,
            {"bound_s": bound, "targets": peers, "count": bounds.ping_count, "port": 22, "method": latency_method},
            bound,
        )
    else:
        calls["latency"] = "no other host to measure against"
    if bounds.disk_test_mb:
        calls["disk_speed"] = (
            facts.DiskSpeed,
            {"bound_s": bounds.disk_s, "directory": disk_dir, "size_mb": bounds.disk_test_mb},
            bounds.disk_s,
        )
    else:
        calls["disk_speed"] = "disabled (--disk-test-mb 0)"
    return calls


def _client_active(host: Any) -> bool:
    client = getattr(host.connector, "client", None)
    transport = client.get_transport() if client is not None else None
    return bool(transport is not None and transport.is_active())


def _close(host: Any) -> None:
    import gevent

    client = getattr(host.connector, "client", None)
    if client is None:
        return
    try:
        with gevent.Timeout(5):
            client.close()
    except (gevent.Timeout, OSError, EOFError):
        pass  # the connection is being dropped anyway
    host.connected = False


def _survey_host(
    state: Any,
    host: Any,
    selection: FleetSelection,
    bounds: m.Bounds,
    disk_dir: str,
    latency_method: str,
    emit: Emit,
) -> _HostRun:
    import gevent
    from pyinfra.api.exceptions import ConnectError
    from pyinfra.api.facts import get_fact

    from brainall_ops.survey.facts import PROBES

    run = _HostRun(host.name)
    emit(Event(host.name, CONNECT, "running"))
    started = time.monotonic()
    connect_bound = bounds.connect_s + bounds.grace_s
    try:
        with gevent.Timeout(connect_bound):
            host.connect(reason="survey", show_errors=False, raise_exceptions=True)
        run.answered = True
    except gevent.Timeout:
        run.reason = f"no SSH answer within {connect_bound} s"
    except ConnectError as exc:
        run.reason = str(exc.args[0] if exc.args else exc)
    except (OSError, EOFError) as exc:
        run.reason = f"could not connect: {exc}"
    run.seconds[CONNECT] = round(time.monotonic() - started, 2)
    emit(Event(host.name, CONNECT, "ok" if run.answered else "error", run.reason, run.seconds[CONNECT]))
    if not run.answered:
        _close(host)
        return run

    calls = _probe_calls(selection, host.name, bounds, disk_dir, latency_method)
    for probe in PROBES:
        call = calls[probe]
        if run.stopped_at is not None:
            outcome = Outcome("error", reason=f"not run: the host stopped answering during {run.stopped_at}")
        elif isinstance(call, str):
            outcome = Outcome("skipped", reason=call)
        else:
            fact, kwargs, bound = call
            emit(Event(host.name, probe, "running"))
            outcome, seconds, stopped = _run_probe(state, host, fact, kwargs, bound, bounds.grace_s, get_fact)
            run.seconds[probe] = seconds
            if stopped:
                run.stopped_at = probe
                _close(host)
        run.outcomes[probe] = outcome
        emit(Event(host.name, probe, outcome.status, outcome.reason, run.seconds.get(probe)))
    return run


def _run_probe(
    state: Any, host: Any, fact: Any, kwargs: dict[str, Any], bound: int, grace: int, get_fact: Any
) -> tuple[Outcome, float, bool]:
    """The probe's outcome, its duration, and whether the host stopped answering during it."""
    import gevent

    ssh_bound = bound + grace
    started = time.monotonic()
    result: Any = None
    cut = False
    try:
        with gevent.Timeout(ssh_bound + 1):
            result = get_fact(
                state,
                host,
                fact,
                kwargs={**kwargs, "_timeout": ssh_bound, "_ignore_errors": True},
                apply_failed_hosts=False,
            )
    except gevent.Timeout:
        cut = True
    except (OSError, EOFError) as exc:
        return Outcome("error", reason=f"SSH connection lost: {exc}"), round(time.monotonic() - started, 2), True
    except Exception as exc:  # a fault in one probe is that probe's error, never the whole survey's
        reason = f"probe failed: {type(exc).__name__}: {exc}"
        return Outcome("error", reason=reason), round(time.monotonic() - started, 2), not _client_active(host)
    seconds = round(time.monotonic() - started, 2)
    if isinstance(result, Outcome):
        return result, seconds, False
    # No output at all: pyinfra's read timeout or ours cut it, or the connection went away.
    if cut or seconds >= ssh_bound - 0.5:
        return Outcome("timeout", reason=f"no answer within {ssh_bound} s: cut at the survey's bound"), seconds, True
    if not _client_active(host):
        return Outcome("error", reason="SSH connection lost"), seconds, True
    return Outcome("error", reason="the probe's command failed without output"), seconds, False


def run_survey(
    inventories: Sequence[Path],
    *,
    limit: Sequence[str] = (),
    bounds: m.Bounds | None = None,
    disk_dir: str = "/var/tmp",
    latency_method: str = "auto",
    storagebox: m.Target | None = None,
    emit: Emit | None = None,
    tick: Callable[[], None] | None = None,
    on_selection: Callable[[FleetSelection], None] | None = None,
) -> m.Survey:
    """Measure every selected host of `inventories`; never raises for a host that fails."""
    _patch_gevent()
    import gevent
    from pyinfra.api import Config, Inventory, State

    bounds = bounds or m.Bounds()
    emit = emit or (lambda event: None)
    hosts, groups = load_inventories(inventories)
    selection = select(hosts, groups, limit=limit, storagebox=storagebox)
    if on_selection is not None:
        on_selection(selection)

    # pyinfra reports through logging; the survey reports every failure itself, in its own words.
    pyinfra_logger = logging.getLogger("pyinfra")
    previous_level, previous_propagate = pyinfra_logger.level, pyinfra_logger.propagate
    pyinfra_logger.setLevel(logging.CRITICAL + 1)
    pyinfra_logger.propagate = False

    chosen = [(name, data) for name, data in hosts if name in selection.names]
    inventory = Inventory(([(name, dict(data)) for name, data in chosen], {}))
    state = State(inventory, Config(CONNECT_TIMEOUT=bounds.connect_s, PARALLEL=max(1, len(chosen))))
    started = time.monotonic()
    greenlets = {
        host.name: gevent.spawn(_survey_host, state, host, selection, bounds, disk_dir, latency_method, emit)
        for host in inventory
    }
    try:
        while not all(g.ready() for g in greenlets.values()):
            gevent.joinall(list(greenlets.values()), timeout=0.2)
            if tick is not None:
                tick()
        runs = {name: g.get() for name, g in greenlets.items()}
    finally:
        for host in inventory:
            _close(host)
        pyinfra_logger.setLevel(previous_level)
        pyinfra_logger.propagate = previous_propagate
    return assemble(selection, runs, bounds, [str(p) for p in inventories], round(time.monotonic() - started, 1))


# --------------------------------------------------------------------------- results to the file's model
_SECTION_MODELS: dict[str, Any] = {
    "system": m.System,
    "cpu": m.CPU,
    "memory": m.Memory,
    "disk": m.DiskSpace,
    "disk_speed": m.DiskSpeed,
    "proxmox": m.Proxmox,
    "vm_storage": m.VMStorage,
    "identity": m.Identity,
    "ceph": m.Ceph,
    "storagebox": m.Reachability,
}


def assemble(
    selection: FleetSelection,
    runs: Mapping[str, _HostRun],
    bounds: m.Bounds,
    inventories: list[str],
    seconds: float,
) -> m.Survey:
    by_address = {address: name for name, address in selection.addresses.items()}
    hosts: dict[str, m.HostMeasurements] = {}
    matrix: dict[str, dict[str, m.LatencySample]] = {}
    for name in selection.names:
        run = runs[name]
        sections: dict[str, Any] = {}
        absent: dict[str, str] = {}
        errors: dict[str, str] = {}
        for probe, outcome in run.outcomes.items():
            if outcome.status == "absent":
                absent[probe] = outcome.reason
            elif outcome.status in ("timeout", "error"):
                errors[probe] = outcome.reason
            elif outcome.status == "skipped":
                continue
            else:
                try:
                    if probe == "gpu":
                        sections["gpu"] = [m.GPUCard.model_validate(card) for card in outcome.value["cards"]]
                    elif probe == "latency":
                        matrix[name] = {
                            by_address.get(address, address): m.LatencySample.model_validate(sample)
                            for address, sample in outcome.value["targets"].items()
                        }
                    else:
                        sections[probe] = _SECTION_MODELS[probe].model_validate(outcome.value)
                except ValidationError as exc:
                    first = exc.errors(include_url=False)[0]
                    errors[probe] = f"unexpected values: {'.'.join(map(str, first['loc']))}: {first['msg']}"
        hosts[name] = m.HostMeasurements(
            address=selection.addresses[name],
            answered=run.answered,
            reason=run.reason,
            absent=absent,
            errors=errors,
            probe_seconds=run.seconds,
            **sections,
        )
    return m.Survey(
        measured_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        inventory=inventories,
        rolemap=selection.rolemap,
        environment=selection.environment,
        reference_host=selection.reference_host,
        bounds=bounds,
        storagebox=selection.storagebox,
        hosts=hosts,
        latency=matrix,
        seconds=seconds,
    )
