"""Monitoring as pure logic: the exporters to install and scrape, the Prometheus host, and the
rendered Prometheus, alert-rule and Grafana provisioning files."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.environment import PRODUCTION, endpoints
from brainall_ops.rolemap.models import RoleMap
from brainall_ops.shared.secrets import GRAFANA_ADMIN_PASSWORD

EXPORTER_DEFAULTS = "/etc/default/prometheus-node-exporter"
PROMETHEUS_DEFAULTS = "/etc/default/prometheus"
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
ALERT_RULES = "/etc/prometheus/brainall-alerts.yml"
GRAFANA_DATASOURCE = "/etc/grafana/provisioning/datasources/brainall.yaml"
GRAFANA_DASHBOARDS = "/etc/grafana/provisioning/dashboards/brainall.yaml"
GRAFANA_DASHBOARD_JSON = "/var/lib/grafana/dashboards/brainall-fleet.json"
GRAFANA_SERVICE = "grafana-server.service"
GRAFANA_DROPIN = "/etc/systemd/system/grafana-server.service.d/brainall.conf"
GRAFANA_ADMIN_ENV = "/etc/brainall/grafana/admin.env"  # 0600: the admin password, for Grafana's first start
GRAFANA_ADMIN_PASSWORD_ENV = GRAFANA_ADMIN_PASSWORD.variable
_SIGNED_BY = re.compile(r"\[[^\]]*\bsigned-by=([^\s\]]+)[^\]]*\]")


@dataclass(frozen=True)
class Target:
    name: str
    address: str
    kind: str  # host, vm


@dataclass(frozen=True)
class MonitoringSpec:
    prometheus_host: str
    prometheus_address: str
    prometheus_port: int
    node_exporter_port: int
    scrape_interval_s: int
    retention_days: int
    cpu_alert_pct: float
    ram_alert_pct: float
    disk_alert_pct: float
    alert_for_m: int
    grafana_port: int
    grafana_apt_repo: str | None
    grafana_apt_key_url: str
    install_grafana: bool  # here: a repository is set and this environment can reach it
    targets: tuple[Target, ...]

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.prometheus_address}:{self.prometheus_port}"

    @property
    def grafana_keyring(self) -> str:
        """Where the repository's `signed-by=` wants the key (apt reads an armoured `.asc` as is)."""
        return grafana_keyring(self.grafana_apt_repo or "")


def grafana_keyring(repo: str) -> str:
    match = _SIGNED_BY.search(repo)
    if match is None:
        raise BrainallError(f"monitoring.grafana_apt_repo must name its key with [signed-by=PATH]: {repo!r}")
    path = match.group(1)
    if not path.startswith("/") or not path.endswith((".asc", ".gpg")):
        raise BrainallError(f"monitoring.grafana_apt_repo: signed-by= must be an absolute .asc or .gpg path: {path!r}")
    return path


def monitoring_spec(rm: RoleMap, environment: str = PRODUCTION) -> MonitoringSpec:
    """Every host and VM of the role map (not the Storage Box: it runs no exporter)."""
    if rm.monitoring is None:
        raise BrainallError("the role map has no monitoring section")
    mon = rm.monitoring
    where = endpoints(rm, environment)
    targets = tuple(
        Target(name=e.name, address=str(e.address), kind=e.kind) for e in where.values() if e.kind in ("host", "vm")
    )
    env = rm.environments.get(environment)
    install_grafana = env.install_grafana if env is not None else True
    if mon.grafana_apt_repo:
        grafana_keyring(mon.grafana_apt_repo)  # refused here, at plan time, not half-way through a deploy
    if mon.prometheus_host not in where or where[mon.prometheus_host].kind == "storage_box":
        raise BrainallError(f"monitoring.prometheus_host {mon.prometheus_host!r} is not a host of the role map")
    return MonitoringSpec(
        prometheus_host=mon.prometheus_host,
        prometheus_address=str(where[mon.prometheus_host].address),
        prometheus_port=mon.prometheus_port,
        node_exporter_port=mon.node_exporter_port,
        scrape_interval_s=mon.scrape_interval_s,
        retention_days=mon.retention_days,
        cpu_alert_pct=mon.cpu_alert_pct,
        ram_alert_pct=mon.ram_alert_pct,
        disk_alert_pct=mon.disk_alert_pct,
        alert_for_m=mon.alert_for_m,
        grafana_port=mon.grafana_port,
        grafana_apt_repo=mon.grafana_apt_repo,
        grafana_apt_key_url=mon.grafana_apt_key_url,
        install_grafana=bool(mon.grafana_apt_repo) and install_grafana,
        targets=targets,
    )


# --------------------------------------------------------------------------- PromQL
def cpu_used_expr() -> str:
    return '100 * (1 - avg by (instance, host) (rate(node_cpu_seconds_total{mode="idle"}[5m])))'


def ram_used_expr() -> str:
    return "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)"


def disk_used_expr() -> str:
    fs = 'fstype!~"tmpfs|squashfs|fuse.*|nsfs|ramfs"'
    return f"100 * (1 - node_filesystem_avail_bytes{{{fs}}} / node_filesystem_size_bytes{{{fs}}})"


# Panels of the fleet dashboard: title, PromQL, unit.
PANELS: tuple[tuple[str, str, str], ...] = (
    ("CPU used", cpu_used_expr(), "percent"),
    ("RAM used", ram_used_expr(), "percent"),
    ("Disk used", disk_used_expr(), "percent"),
    ("Load (1 min)", "node_load1", "short"),
    ("Network received", 'rate(node_network_receive_bytes_total{device!="lo"}[5m])', "Bps"),
    ("Exporters up", 'up{job="node"}', "short"),
)


# --------------------------------------------------------------------------- rendering
def render(name: str, **context: Any) -> str:
    from brainall_ops.shared.templating import environment

    return environment("monitoring").get_template(name).render(**context)


# The exporter's default list of pseudo filesystems, less `overlay`: a container's root (the lab's
# hosts) is an overlay and must be measured; Docker's own overlays are under /var/lib/docker, which
# the exporter's mount-point exclusion already skips.
FS_TYPES_EXCLUDE = (
    "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|proc|"
    "procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$"
)


def exporter_defaults(spec: MonitoringSpec, address: str) -> str:
    return render("node-exporter.defaults.j2", address=address, port=spec.node_exporter_port,
                  fs_types_exclude=FS_TYPES_EXCLUDE)


def prometheus_defaults(spec: MonitoringSpec) -> str:
    return render("prometheus.defaults.j2", spec=spec)


def prometheus_config(spec: MonitoringSpec) -> str:
    return render("prometheus.yml.j2", spec=spec, rules=ALERT_RULES)


def alert_rules(spec: MonitoringSpec) -> str:
    return render("alerts.yml.j2", spec=spec, cpu=cpu_used_expr(), ram=ram_used_expr(), disk=disk_used_expr())


def grafana_datasource(spec: MonitoringSpec) -> str:
    return render("grafana-datasource.yaml.j2", spec=spec)


def grafana_service_dropin(spec: MonitoringSpec) -> str:
    return render("grafana-server.conf.j2", spec=spec, admin_env=GRAFANA_ADMIN_ENV)


def grafana_admin_env(password: str) -> str:
    """systemd's EnvironmentFile line; the password is one word (shared.secrets.one_word)."""
    return f"GF_SECURITY_ADMIN_PASSWORD={password}\n"


def grafana_dashboards_provider() -> str:
    return render("grafana-dashboards.yaml.j2", path=GRAFANA_DASHBOARD_JSON.rsplit("/", 1)[0])


def grafana_dashboard(spec: MonitoringSpec) -> str:
    """The fleet dashboard: one time series panel per PANELS entry, over every exporter."""
    panels = []
    for index, (title, expr, unit) in enumerate(PANELS):
        panels.append({
            "id": index + 1,
            "type": "timeseries",
            "title": title,
            "datasource": {"type": "prometheus", "uid": "brainall-prometheus"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": "A", "expr": expr, "legendFormat": "{{instance}}",
                         "datasource": {"type": "prometheus", "uid": "brainall-prometheus"}}],
        })
    dashboard = {
        "uid": "brainall-fleet",
        "title": "BrainAll fleet",
        "tags": ["brainall"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": f"{max(spec.scrape_interval_s, 5)}s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": panels,
    }
    return json.dumps(dashboard, indent=2) + "\n"
