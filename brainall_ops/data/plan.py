"""Phase 5 plan: PostgreSQL and Redis on the data host, backups, the bastion clean-up, monitoring.

Pure logic from the role map (no pyinfra import): `brainall-ops plan` starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainall_ops.errors import BrainallError
from brainall_ops.planning.changes import Change, Contribution
from brainall_ops.rolemap.models import RoleMap

if TYPE_CHECKING:
    from brainall_ops.planning.plan import PlanContext


def plan_changes(rm: RoleMap, context: PlanContext) -> Contribution:
    out = Contribution()
    if rm.data is not None:
        _data(rm, out)
    if rm.monitoring is not None:
        _monitoring(rm, out)
    return out


def _data(rm: RoleMap, out: Contribution) -> None:
    from brainall_ops.data.logic import data_spec

    assert rm.data is not None
    data = rm.data
    try:
        spec = data_spec(rm)
    except BrainallError as exc:
        out.refusals.append(f"phase 5 data: {exc}")
        return
    mem = spec.memory
    add = out.changes.append
    add(Change("phase5", "data", "create", spec.host,
               f"PostgreSQL {spec.pg_version} on {spec.address}:{spec.pg_port} only; shared_buffers "
               f"{mem.shared_buffers_mb} MB, effective_cache_size {mem.effective_cache_size_mb} MB "
               f"(of {mem.memory_mb} MB)",
               {"listen": f"{spec.address}:{spec.pg_port}", "shared_buffers_mb": mem.shared_buffers_mb,
                "effective_cache_size_mb": mem.effective_cache_size_mb, "work_mem_mb": mem.work_mem_mb}))
    add(Change("phase5", "data", "create", spec.host,
               f"database {spec.database}, role {spec.role} (password from BRAINALL_DB_APP_PASSWORD); pg_hba: "
               f"{', '.join(r.address for r in spec.hba)} scram-sha-256, everyone else rejected",
               {"clients": list(spec.clients)}))
    add(Change("phase5", "data", "create", spec.host,
               f"Redis on {spec.address}:{spec.redis_port} only, password (BRAINALL_REDIS_PASSWORD), protected-mode, "
               f"maxmemory {mem.redis_maxmemory_mb} MB {spec.redis_policy}",
               {"maxmemory_mb": mem.redis_maxmemory_mb}))
    box = rm.storage.box if rm.storage else None
    where = f"{box.user}@{box.hostname}:{box.ssh_port}/{data.dump.destination}" if box else data.dump.destination
    add(Change("phase5", "data", "create", spec.host,
               f"pg_dump -Fc of {spec.database} ({data.dump.on_calendar}) -> {where}, {data.dump.keep} kept; "
               "verify with `brainall-ops backup verify`",
               {"on_calendar": data.dump.on_calendar, "keep": data.dump.keep}))
    for client in spec.clients:
        add(Change("phase5", "data", "create", client, "postgresql-client and redis-tools"))
    if data.cleanup is not None:
        c = data.cleanup
        add(Change("phase5", "data", "create", c.host,
                   f"clean-up timer ({c.on_calendar}): journal to {c.journal_max_mb} MB, rotated logs older than "
                   f"{c.log_max_age_days} d, unused Docker images older than {c.docker_image_age_h} h; "
                   "containers and volumes untouched"))


def _monitoring(rm: RoleMap, out: Contribution) -> None:
    from brainall_ops.monitoring import GRAFANA_ADMIN_PASSWORD_ENV, monitoring_spec

    try:
        spec = monitoring_spec(rm)
    except BrainallError as exc:
        out.refusals.append(f"phase 5 monitoring: {exc}")
        return
    for target in spec.targets:
        out.changes.append(Change("phase5", "monitoring", "create", target.name,
                                  f"prometheus-node-exporter on {target.address}:{spec.node_exporter_port}"))
    out.changes.append(Change(
        "phase5", "monitoring", "create", spec.prometheus_host,
        f"Prometheus on {spec.prometheus_address}:{spec.prometheus_port} scraping {len(spec.targets)} exporters; "
        f"alerts: CPU > {spec.cpu_alert_pct:g} %, RAM > {spec.ram_alert_pct:g} %, disk > {spec.disk_alert_pct:g} %",
        {"targets": [t.name for t in spec.targets]}))
    if spec.install_grafana:
        out.changes.append(Change(
            "phase5", "monitoring", "create", spec.prometheus_host,
            f"Grafana from {spec.grafana_apt_repo} on {spec.prometheus_address}:{spec.grafana_port} with the "
            f"Prometheus datasource and the fleet dashboard; admin password from {GRAFANA_ADMIN_PASSWORD_ENV}",
            {"repository": spec.grafana_apt_repo, "key": spec.grafana_apt_key_url}))
    else:
        out.warnings.append(
            f"monitoring: Grafana is not installed here (no reachable apt repository); its provisioning is "
            f"written on {spec.prometheus_host}"
        )
