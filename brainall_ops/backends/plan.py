"""Phase 4 plan: the backend cluster in dynamic mode behind nginx."""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainall_ops.planning.changes import Change, Contribution
from brainall_ops.rolemap.models import RoleMap

if TYPE_CHECKING:
    from brainall_ops.planning.plan import PlanContext


def plan_changes(rm: RoleMap, context: PlanContext) -> Contribution:
    out = Contribution()
    b = rm.backends
    if b is None:
        return out
    mode = b.production if b.mode == "production" else b.validation
    running = b.instances[: mode.backends]
    standby = b.instances[mode.backends :]
    out.changes.append(
        Change(
            "phase4",
            "backends",
            "create",
            b.host,
            f"{b.mode} mode: {mode.backends} x {mode.workers} worker(s) on "
            + ", ".join(f":{i.port} ({i.role})" for i in running)
            + (f"; standby {', '.join(f':{i.port}' for i in standby)}" if standby else ""),
            {"mode": b.mode, "backends": mode.backends, "workers": mode.workers},
        )
    )
    out.changes.append(
        Change(
            "phase4",
            "backends",
            "create",
            b.proxy_host,
            f"nginx upstream over {b.host}: "
            + ", ".join(f":{i.port}{' backup' if i.role == 'fallback' else ''}" for i in b.instances),
        )
    )
    return out
