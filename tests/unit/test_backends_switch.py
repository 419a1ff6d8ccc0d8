"""Planning a mode switch: the order of the steps, and that no step leaves nginx without a healthy backend."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brainall_ops.backends.nginx import render_upstream
from brainall_ops.backends.spec import ClusterSpec, Mode, Route, cluster_spec
from brainall_ops.backends.switch import (
    Drain,
    Enable,
    InstanceLive,
    Live,
    Restart,
    SetMode,
    SetRoutes,
    Start,
    Step,
    Stop,
    SwitchRefused,
    plan_switch,
)
from brainall_ops.rolemap import load_rolemap

DIGESTS: dict[Mode, str] = {"production": "prod-digest", "validation": "val-digest"}


def spec_with(**environ: str) -> ClusterSpec:
    b = load_rolemap().backends
    assert b is not None
    return cluster_spec(b, environ)


SPEC = spec_with()


def converged(spec: ClusterSpec, mode: Mode) -> Live:
    running = {i.port for i in spec.running(mode)}
    return Live(
        mode=mode,
        digests=DIGESTS,
        instances={
            p: InstanceLive(p, "active", "running", True, True, DIGESTS[mode], spec.shape(mode).workers)
            if p in running
            else InstanceLive(p)
            for p in spec.ports
        },
        routes=spec.routes(mode),
    )


def kinds(steps: list[Step]) -> list[str]:
    out = []
    for step in steps:
        name = type(step).__name__
        port = getattr(step, "port", None)
        out.append(f"{name}:{port}" if port else name)
    return out


# --------------------------------------------------------------------------- a model of the cluster
@dataclass
class Model:
    """The cluster as the steps change it, checking at every step what a request would meet."""

    spec: ClusterSpec
    mode: Mode | None
    up: dict[int, bool]
    healthy: dict[int, bool]
    digest: dict[int, str | None]
    enabled: dict[int, bool]
    routes: dict[int, Route]
    drained: set[int] = field(default_factory=set)
    unsafe_moments: int = 0

    @classmethod
    def of(cls, spec: ClusterSpec, live: Live) -> Model:
        return cls(
            spec,
            live.mode,
            {p: live.instances[p].running for p in spec.ports},
            {p: live.instances[p].running and live.instances[p].healthy for p in spec.ports},
            {p: live.instances[p].digest if live.instances[p].running else None for p in spec.ports},
            {p: live.instances[p].enabled for p in spec.ports},
            dict(live.routes or {}),
        )

    def serving(self, without: int | None = None) -> list[int]:
        routed = ("normal", "backup")
        return [p for p in self.spec.ports if p != without and self.healthy[p] and self.routes.get(p) in routed]

    def apply(self, step: Step) -> None:
        if isinstance(step, SetMode):
            self.mode = step.mode
        elif isinstance(step, Start | Restart):
            assert self.mode is not None, "an instance started before the mode file is written"
            if isinstance(step, Restart):
                self._taken_away(step.port)
            self.up[step.port] = self.healthy[step.port] = True
            self.digest[step.port] = DIGESTS[self.mode]
            self.drained.discard(step.port)
        elif isinstance(step, Stop):
            self._taken_away(step.port)
            self.up[step.port] = self.healthy[step.port] = False
            self.digest[step.port] = None
        elif isinstance(step, Drain):
            assert self.routes.get(step.port) == "down", f"draining :{step.port} while nginx still routes to it"
            self.drained.add(step.port)
        elif isinstance(step, SetRoutes):
            render_upstream(self.spec, step.table, "10.0.0.1", "test")  # a table nginx accepts
            was_serving = bool(self.serving())
            self.routes = dict(step.table)
            if was_serving and not self.serving():
                self.unsafe_moments += 1  # nginx had a healthy backend and lost it
        elif isinstance(step, Enable):
            self.enabled[step.port] = step.enabled

    def _taken_away(self, port: int) -> None:
        """A restart or stop: a healthy instance goes only once nginx stopped routing to it and it drained."""
        if self.healthy[port] and self.routes.get(port) in ("normal", "backup"):
            raise AssertionError(f":{port} taken away while nginx routes to it")
        if self.healthy[port]:
            assert port in self.drained, f":{port} taken away without a drain"


def run_plan(spec: ClusterSpec, live: Live, target: Mode, force: bool = False) -> tuple[Model, list[Step]]:
    plan = plan_switch(spec, live, target, force=force)
    model = Model.of(spec, live)
    for step in plan.steps:
        model.apply(step)
    # the cluster is in the target mode
    assert model.mode == target
    for i in spec.running(target):
        assert model.up[i.port] and model.healthy[i.port] and model.digest[i.port] == DIGESTS[target], i
        assert model.enabled[i.port]
    for i in spec.standby(target):
        assert not model.up[i.port] and not model.enabled[i.port], i
    assert model.routes == spec.routes(target)
    return model, plan.steps


# --------------------------------------------------------------------------- the seed's switches
def test_production_to_validation_restarts_one_at_a_time_then_stops_the_fallback() -> None:
    model, steps = run_plan(SPEC, converged(SPEC, "production"), "validation")
    assert kinds(steps) == [
        "SetMode",
        "SetRoutes",  # 8000 down
        "Drain:8000",
        "Restart:8000",  # 2 workers now
        "SetRoutes",  # 8000 back, 8080 down
        "Drain:8080",
        "Restart:8080",
        "SetRoutes",  # 8080 back, 3001 down
        "Drain:3001",
        "Stop:3001",
        "SetRoutes",  # the validation routes: 3001 a (stopped) backup
        "Enable:3001",
    ]
    routes = [s.table for s in steps if isinstance(s, SetRoutes)]
    assert routes[0] == {8000: "down", 8080: "normal", 3001: "backup"}
    assert routes[1] == {8000: "normal", 8080: "down", 3001: "backup"}
    assert routes[2] == {8000: "normal", 8080: "normal", 3001: "down"}
    assert routes[3] == {8000: "normal", 8080: "normal", 3001: "backup"}
    assert model.unsafe_moments == 0


def test_validation_to_production_starts_the_fallback_first() -> None:
    model, steps = run_plan(SPEC, converged(SPEC, "validation"), "production")
    assert kinds(steps)[:2] == ["SetMode", "Start:3001"]
    assert kinds(steps).index("Start:3001") < kinds(steps).index("Restart:8000")
    assert "Stop:3001" not in kinds(steps)
    assert model.unsafe_moments == 0


def test_a_converged_cluster_needs_nothing() -> None:
    for mode in ("production", "validation"):
        assert plan_switch(SPEC, converged(SPEC, mode), mode).steps == []  # type: ignore[arg-type]


def test_a_fresh_install_starts_everything_then_routes() -> None:
    live = Live(None, DIGESTS, {p: InstanceLive(p) for p in SPEC.ports}, None)
    _, steps = run_plan(SPEC, live, "production")
    assert kinds(steps)[:4] == ["SetMode", "Start:8000", "Start:8080", "Start:3001"]
    assert [s for s in steps if isinstance(s, Restart | Stop | Drain)] == []


def test_a_stale_instance_after_a_deploy_is_restarted_drained() -> None:
    live = converged(SPEC, "production")
    stale = {**live.instances, 8080: replace(live.instances[8080], digest="old")}
    model, steps = run_plan(SPEC, replace(live, instances=stale), "production")
    assert kinds(steps) == ["SetRoutes", "Drain:8080", "Restart:8080", "SetRoutes"]
    assert model.unsafe_moments == 0


def test_changed_proxy_settings_rewrite_the_upstream() -> None:
    live = replace(converged(SPEC, "production"), upstream_current=False)
    _, steps = run_plan(SPEC, live, "production")
    assert kinds(steps) == ["SetRoutes"]


def test_the_watchdogs_standby_is_drained_back_to_standby() -> None:
    """Validation after the double failure: the watchdog started :3001; :8000 and :8080 were stopped."""
    live = converged(SPEC, "validation")
    instances = {
        8000: InstanceLive(8000, enabled=True),
        8080: InstanceLive(8080, enabled=True),
        3001: InstanceLive(3001, "active", "running", False, True, DIGESTS["validation"], 1),
    }
    model, steps = run_plan(SPEC, replace(live, instances=instances), "validation")
    assert kinds(steps) == ["Start:8000", "Start:8080", "SetRoutes", "Drain:3001", "Stop:3001", "SetRoutes"]
    assert model.unsafe_moments == 0


def test_a_single_backend_mode_restarts_behind_a_standby_cover() -> None:
    spec = spec_with(OMNIMIND_BACKENDS_VALIDATION="1")
    live = converged(spec, "validation")
    stale = {**live.instances, 8000: replace(live.instances[8000], digest="old")}
    model, steps = run_plan(spec, replace(live, instances=stale), "validation")
    assert kinds(steps)[:2] == ["Start:8080", "SetRoutes"]  # the cover (a backup) before 8000 goes down
    assert kinds(steps)[-2:] == ["Stop:8080", "SetRoutes"]
    assert model.unsafe_moments == 0


def test_no_cover_left_is_refused_unless_forced() -> None:
    spec = spec_with(OMNIMIND_BACKENDS="1")  # production: 8000 alone, 8080 and 3001 standby
    live = converged(spec, "production")
    instances = {
        8000: replace(live.instances[8000], digest="old"),
        8080: InstanceLive(8080, "failed", "failed"),
        3001: InstanceLive(3001, "failed", "failed"),
    }
    # both standbys are "failed", not running: the planner starts one as cover
    model, _ = run_plan(spec, replace(live, instances=instances), "production")
    assert model.unsafe_moments == 0
    # with every instance in the mode and the only one stale, nothing can cover it
    spec3 = spec_with(OMNIMIND_BACKENDS="3")
    live3 = converged(spec3, "production")
    sick = {
        8000: replace(live3.instances[8000], digest="old"),
        8080: replace(live3.instances[8080], healthy=False),
        3001: replace(live3.instances[3001], healthy=False),
    }
    with pytest.raises(SwitchRefused, match="--force"):
        plan_switch(spec3, replace(live3, instances=sick), "production")
    plan = plan_switch(spec3, replace(live3, instances=sick), "production", force=True)
    assert plan.warnings


# --------------------------------------------------------------------------- any state, any target
instance_states = st.sampled_from(["running-fresh", "running-stale", "running-unhealthy", "inactive", "failed"])


@st.composite
def lives(draw: st.DrawFn) -> tuple[ClusterSpec, Live, Mode]:
    prod_n = draw(st.integers(1, 3))
    val_n = draw(st.integers(1, 3))
    spec = spec_with(OMNIMIND_BACKENDS=str(prod_n), OMNIMIND_BACKENDS_VALIDATION=str(val_n))
    mode: Mode | None = draw(st.sampled_from([None, "production", "validation"]))
    instances = {}
    for port in spec.ports:
        kind = draw(instance_states)
        enabled = draw(st.booleans())
        if kind.startswith("running"):
            digest = DIGESTS[mode] if (kind == "running-fresh" and mode) else "old"
            instances[port] = InstanceLive(port, "active", "running", enabled, kind != "running-unhealthy", digest)
        else:
            instances[port] = InstanceLive(port, kind, "dead" if kind == "inactive" else "failed", enabled)
    routes = draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries({p: st.sampled_from(["normal", "backup", "down"]) for p in spec.ports}),
        )
    )
    target: Mode = draw(st.sampled_from(["production", "validation"]))
    return spec, Live(mode, DIGESTS, instances, routes), target


@settings(max_examples=300, deadline=None)
@given(lives())
def test_any_cluster_converges_without_a_moment_unserved(case: tuple[ClusterSpec, Live, Mode]) -> None:
    spec, live, target = case
    try:
        model, steps = run_plan(spec, live, target)
    except SwitchRefused:
        # refused only when an instance of the mode must restart and nothing else can serve
        plan = plan_switch(spec, live, target, force=True)
        assert plan.warnings and "no other healthy backend" in plan.warnings[0]
        run_plan(spec, live, target, force=True)
        return
    assert model.unsafe_moments == 0
    # new capacity comes before anything is taken away
    first_removal = next((i for i, s in enumerate(steps) if isinstance(s, Restart | Stop)), len(steps))
    mode_starts = [i for i, s in enumerate(steps) if isinstance(s, Start) and s.why == "the mode runs it"]
    assert all(i < first_removal for i in mode_starts)
    # and the plan is stable: once carried out, there is nothing left to do
    after = Live(
        target,
        DIGESTS,
        {
            p: InstanceLive(p, "active", "running", model.enabled[p], True, model.digest[p])
            if model.up[p]
            else InstanceLive(p, enabled=model.enabled[p])
            for p in spec.ports
        },
        model.routes,
    )
    assert plan_switch(spec, after, target).steps == []
