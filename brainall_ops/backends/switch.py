"""Planning a mode switch (or any convergence) of a running cluster without dropping a request.

Pure logic: `plan_switch(spec, live, target)` turns what the hosts report (`Live`) into an ordered
list of steps; `brainall_ops.backends.cluster` carries them out over SSH. The order is the point:

1. the new mode's instances are started and found ready (from the proxy host) first;
2. instances whose running configuration is stale (other workers, other app, other mode) are
   restarted one at a time: nginx stops routing to it (`down`, reload, old nginx workers gone),
   its connections drain, it restarts and is ready again before nginx routes to it; at every
   moment another healthy instance is routed (if none is, a standby is started first as cover);
3. nginx gets the new mode's routes;
4. what the mode no longer needs is drained the same way and stopped (uvicorn's graceful stop);
5. boot-time enablement follows the mode.

Consecutive route changes are merged into one reload, and a route table already in effect is
not reloaded again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from brainall_ops.backends.spec import ClusterSpec, Mode, Route
from brainall_ops.errors import BrainallError


@dataclass(frozen=True)
class InstanceLive:
    """One instance as its host reports it."""

    port: int
    active_state: str = "inactive"  # systemd ActiveState
    sub_state: str = "dead"
    enabled: bool = False
    healthy: bool = False
    digest: str | None = None  # the configuration digest it started with
    workers: int | None = None
    mode: str | None = None
    pid: int | None = None
    processes: int = 0
    connections: int = 0
    restarts: int = 0
    health_error: str | None = None

    @property
    def running(self) -> bool:
        return self.active_state == "active"


@dataclass(frozen=True)
class Live:
    """The cluster as its two hosts report it."""

    mode: Mode | None  # the mode file; None before the first switch
    digests: Mapping[Mode, str]  # the configuration digest an instance started now would have, per mode
    instances: Mapping[int, InstanceLive]
    routes: Mapping[int, Route] | None  # nginx's upstream; None when absent
    shape: Mapping[str, str] = field(default_factory=dict)  # the environment file's shape variables
    switching_until: float | None = None
    watchdog: str = "unknown"
    upstream_current: bool = True  # False: the file differs from its routes' rendering (settings changed)


# --------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class SetMode:
    mode: Mode

    def describe(self, spec: ClusterSpec) -> str:
        return f"mode file: OMNIMIND_VALIDATION_MODE={'true' if self.mode == 'validation' else 'false'}"


@dataclass(frozen=True)
class Start:
    port: int
    why: str = "the mode runs it"

    def describe(self, spec: ClusterSpec) -> str:
        return f"start {spec.instance(self.port).label} and wait until ready ({self.why})"


@dataclass(frozen=True)
class Restart:
    port: int
    why: str

    def describe(self, spec: ClusterSpec) -> str:
        return f"restart {spec.instance(self.port).label} and wait until ready ({self.why})"


@dataclass(frozen=True)
class Drain:
    port: int

    def describe(self, spec: ClusterSpec) -> str:
        return f"drain {spec.instance(self.port).label}: wait for its connections to finish"


@dataclass(frozen=True)
class Stop:
    port: int

    def describe(self, spec: ClusterSpec) -> str:
        return f"stop {spec.instance(self.port).label} (graceful)"


@dataclass(frozen=True)
class SetRoutes:
    routes: tuple[tuple[int, Route], ...]

    @property
    def table(self) -> dict[int, Route]:
        return dict(self.routes)

    def describe(self, spec: ClusterSpec) -> str:
        from brainall_ops.backends.nginx import describe_routes

        return f"nginx upstream {describe_routes(spec, self.table)}: nginx -t, reload, old workers done"


@dataclass(frozen=True)
class Enable:
    port: int
    enabled: bool

    def describe(self, spec: ClusterSpec) -> str:
        return f"{'enable' if self.enabled else 'disable'} {spec.instance(self.port).unit} at boot"


Step = SetMode | Start | Restart | Drain | Stop | SetRoutes | Enable


@dataclass
class SwitchPlan:
    target: Mode
    steps: list[Step]
    warnings: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.steps


class SwitchRefused(BrainallError):
    """The switch would drop requests (or cannot be done) and was not forced."""


def _routes_step(table: Mapping[int, Route], spec: ClusterSpec) -> SetRoutes:
    return SetRoutes(tuple((port, table[port]) for port in spec.ports))


def plan_switch(spec: ClusterSpec, live: Live, target: Mode, *, force: bool = False) -> SwitchPlan:
    """The steps that bring the live cluster to `target` without a moment where nginx has no
    healthy backend to route to. Refuses (SwitchRefused) when that cannot be guaranteed, unless
    `force`; the plan then carries a warning."""
    if target not in live.digests:
        raise BrainallError(f"the host reports no configuration digest for mode {target}")
    want = live.digests[target]
    running_set = [i.port for i in spec.running(target)]
    standby_set = [i.port for i in spec.standby(target)]
    final = spec.routes(target)
    plan = SwitchPlan(target, [])
    steps = plan.steps

    # the simulated cluster as the steps change it
    up = {p: live.instances[p].running if p in live.instances else False for p in spec.ports}
    healthy = {p: up[p] and live.instances[p].healthy for p in spec.ports}
    fresh = {p: up[p] and live.instances[p].digest == want for p in spec.ports}
    current: dict[int, Route] = dict(live.routes or {})

    if live.mode != target:
        steps.append(SetMode(target))

    # 1. new capacity first
    for p in running_set:
        if not up[p]:
            steps.append(Start(p))
            up[p] = healthy[p] = fresh[p] = True

    # 2. route the new capacity; what will be stopped keeps its route until it is drained
    working: dict[int, Route] = {}
    for p in spec.ports:
        if p in running_set:
            working[p] = final[p]
        elif up[p] and healthy[p] and current.get(p) == "normal":
            working[p] = "normal"
        else:
            working[p] = "backup"
    steps.append(_routes_step(working, spec))

    # 3. rolling restart of what runs with a stale configuration (or is unhealthy)
    for p in running_set:
        if fresh[p] and healthy[p]:
            continue
        why = "unhealthy" if not healthy[p] else "stale configuration"
        serving = [q for q in spec.ports if q != p and healthy[q] and working[q] != "down"]
        if not serving:
            cover = next((q for q in standby_set if not up[q]), None)
            if cover is not None:
                steps.append(Start(cover, why=f"cover while {spec.instance(p).label} restarts"))
                up[cover] = healthy[cover] = fresh[cover] = True
                working[cover] = "backup"
            else:
                message = (
                    f"restarting {spec.instance(p).label} leaves no other healthy backend: "
                    "requests fail until it is ready"
                )
                if not force:
                    raise SwitchRefused(f"{message} (use --force to do it anyway)")
                plan.warnings.append(message)
        if healthy[p] and working[p] != "down":
            steps.append(_routes_step({**working, p: "down"}, spec))
            steps.append(Drain(p))
        steps.append(Restart(p, why=why))
        healthy[p] = fresh[p] = True
        steps.append(_routes_step(working, spec))

    # 4. the new mode's routes, then drain and stop what it no longer runs
    to_stop = [q for q in standby_set if up[q]]
    if to_stop:
        serving = [q for q in running_set if healthy[q] and final[q] != "down"]
        if not serving:  # cannot happen after step 1 and 3, but never stop the last backend
            raise SwitchRefused("no instance of the new mode is healthy; nothing is stopped")
        steps.append(_routes_step({**final, **{q: "down" for q in to_stop}}, spec))
        steps.extend(Drain(q) for q in to_stop)
        steps.extend(Stop(q) for q in to_stop)
    steps.append(_routes_step(final, spec))

    # 5. boot follows the mode
    for p in running_set:
        if not (live.instances.get(p) and live.instances[p].enabled):
            steps.append(Enable(p, True))
    for q in standby_set:
        if live.instances.get(q) and live.instances[q].enabled:
            steps.append(Enable(q, False))

    # an upstream whose settings changed is rewritten even where its routes stay the same
    plan.steps = _merge_routes(steps, current if live.upstream_current else {})
    return plan


def _merge_routes(steps: list[Step], current: Mapping[int, Route]) -> list[Step]:
    """One reload for consecutive route changes (the last wins: everything between them is ready),
    none for a table already in effect."""
    merged: list[Step] = []
    for step in steps:
        if isinstance(step, SetRoutes) and merged and isinstance(merged[-1], SetRoutes):
            merged[-1] = step
        else:
            merged.append(step)
    out: list[Step] = []
    in_effect = dict(current)
    for step in merged:
        if isinstance(step, SetRoutes):
            if step.table == in_effect:
                continue
            in_effect = step.table
        out.append(step)
    return out
