"""Phase 4 plan: the backend cluster in dynamic mode behind nginx (offline: from the role map).

Kept light (no pyinfra, no jinja2): `brainall-ops plan` imports it at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainall_ops.backends.spec import MODES, ClusterSpec, cluster_spec
from brainall_ops.planning.changes import Change, Contribution
from brainall_ops.rolemap.models import RoleMap

if TYPE_CHECKING:
    from brainall_ops.planning.plan import PlanContext


def _mode_line(spec: ClusterSpec, mode: str) -> str:
    shape = spec.shape(mode)  # type: ignore[arg-type]
    running = ", ".join(i.label for i in spec.running(mode))  # type: ignore[arg-type]
    standby = ", ".join(f":{i.port}" for i in spec.standby(mode))  # type: ignore[arg-type]
    return (
        f"{mode}: {shape.backends} x {shape.workers} worker(s) on {running}"
        + (f"; standby {standby}" if standby else "")
        + f"; watchdog minimum {shape.min_healthy} healthy"
    )


def plan_changes(rm: RoleMap, context: PlanContext) -> Contribution:
    out = Contribution()
    b = rm.backends
    if b is None:
        return out
    spec = cluster_spec(b)
    out.changes.append(
        Change(
            "phase4",
            "backends",
            "create",
            b.host,
            f"brainall-backend@PORT units (uvicorn {b.app}), starting in {b.mode} mode; " + _mode_line(spec, b.mode),
            {
                "mode": b.mode,
                "modes": {
                    m: {
                        "running": [i.port for i in spec.running(m)],
                        "standby": [i.port for i in spec.standby(m)],
                        "workers": spec.shape(m).workers,
                        "min_healthy": spec.shape(m).min_healthy,
                    }
                    for m in MODES
                },
                "env_file": b.env_file,
                "mode_file": b.mode_file,
            },
        )
    )
    other = "validation" if b.mode == "production" else "production"
    out.changes.append(
        Change(
            "phase4",
            "backends",
            "create",
            b.host,
            f"watchdog every {b.watchdog.interval_s:g}s; `brainall-ops backends mode {other}` gives "
            + _mode_line(spec, other),
        )
    )
    routes = spec.routes(b.mode)
    out.changes.append(
        Change(
            "phase4",
            "backends",
            "create",
            b.proxy_host,
            f"nginx :{b.proxy.listen_port} upstream over {b.host}: "
            + ", ".join(f":{p}{' backup' if r == 'backup' else ''}" for p, r in routes.items())
            + f" (max_fails={b.proxy.max_fails} fail_timeout={b.proxy.fail_timeout_s}s,"
            " next upstream on error/timeout/502/503)",
        )
    )
    return out
