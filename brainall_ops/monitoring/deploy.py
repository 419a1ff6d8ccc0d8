"""Phase 5, monitoring as a pyinfra deploy: Debian's prometheus-node-exporter on every host and
VM (its vSwitch address only), Debian's prometheus on the Prometheus host with the fleet's alert
rules (each file checked with promtool before it is put in place), and Grafana next to it with
its provisioning (the Prometheus datasource and the fleet dashboard). Grafana is not in Debian:
it comes from Grafana's apt repository (monitoring.grafana_apt_repo, its key pinned to that line
by signed-by=), where the environment can reach it (the lab cannot: `install_grafana: false`
there, and only the provisioning is written). Its admin password comes from
BRAINALL_GRAFANA_ADMIN_PASSWORD(_FILE) and lands in a 0600 file.
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import OperationError, deploy
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from brainall_ops.errors import BrainallError
from brainall_ops.monitoring.logic import (
    ALERT_RULES,
    EXPORTER_DEFAULTS,
    GRAFANA_ADMIN_ENV,
    GRAFANA_DASHBOARD_JSON,
    GRAFANA_DASHBOARDS,
    GRAFANA_DATASOURCE,
    GRAFANA_DROPIN,
    GRAFANA_SERVICE,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DEFAULTS,
    MonitoringSpec,
    alert_rules,
    exporter_defaults,
    grafana_admin_env,
    grafana_dashboard,
    grafana_dashboards_provider,
    grafana_datasource,
    grafana_service_dropin,
    monitoring_spec,
    prometheus_config,
    prometheus_defaults,
)
from brainall_ops.shared.apt import apt_packages, apt_update
from brainall_ops.shared.deploy_context import environment_for, rolemap_for
from brainall_ops.shared.secrets import GRAFANA_ADMIN_PASSWORD, Secret
from brainall_ops.storage import secret_file

STAGING = "/etc/brainall/monitoring"


@deploy("BrainAll monitoring (phase 5)")
def monitoring() -> None:
    try:
        _monitoring()
    except BrainallError as exc:
        raise OperationError(f"{host.name}: {exc}") from None


def _monitoring() -> None:
    rm = rolemap_for(host.data)
    if rm.monitoring is None:
        return
    spec = monitoring_spec(rm, environment_for(host.data))
    name = host.data.brainall_name
    target = spec.target(name)
    if target is None:
        return
    packages = apt_packages(
        name="prometheus-node-exporter",
        packages=["prometheus-node-exporter"],
        update=True,
        cache_time=6 * 3600,
        no_recommends=True,
    )
    defaults = files.put(
        name=f"node exporter on the vSwitch address only (port {spec.node_exporter_port})",
        src=StringIO(exporter_defaults(spec, target.address)),
        dest=EXPORTER_DEFAULTS,
        mode="0644",
    )
    systemd.service(
        name="node exporter restarted for its settings",
        service="prometheus-node-exporter.service",
        restarted=True,
        _if=any_changed(packages, defaults),
    )
    systemd.service(name="node exporter running", service="prometheus-node-exporter.service",
                    running=True, enabled=True)
    if name == spec.prometheus_host:
        _prometheus(spec)


def _staged(name: str, content: str, dest: str, check: str) -> object:
    """A config file written to the staging directory, checked there with promtool, and only
    then copied into place: a file promtool rejects never reaches Prometheus."""
    staged = f"{STAGING}/{dest.rsplit('/', 1)[1]}"
    put = files.put(name=f"{name} (staged)", src=StringIO(content), dest=staged, mode="0644",
                    create_remote_dir=True)
    server.shell(
        name=f"{name}: promtool check, then {dest}",
        # A rejected file is removed from staging, so the next run uploads and checks it again.
        commands=[f"if promtool {check} {shlex.quote(staged)} >/dev/null; then install -m 0644 {shlex.quote(staged)} "
                  f"{shlex.quote(dest)}; else rm -f {shlex.quote(staged)}; exit 1; fi"],
        _if=put.did_change,
    )
    return put


def _prometheus(spec: MonitoringSpec) -> None:
    apt_packages(name="Prometheus (Debian)", packages=["prometheus"], update=True, cache_time=6 * 3600,
                 no_recommends=True)
    rules = _staged("Alert rules (CPU, RAM, disk)", alert_rules(spec), ALERT_RULES, "check rules")
    # promtool check config also reads the rule files it names: the rules are in place first.
    config = _staged("Prometheus scrape config", prometheus_config(spec), PROMETHEUS_CONFIG, "check config")
    defaults = files.put(
        name=f"Prometheus on {spec.prometheus_address}:{spec.prometheus_port} only",
        src=StringIO(prometheus_defaults(spec)),
        dest=PROMETHEUS_DEFAULTS,
        mode="0644",
    )
    systemd.service(name="Prometheus restarted for its settings", service="prometheus.service", restarted=True,
                    _if=any_changed(rules, config, defaults))
    systemd.service(name="Prometheus running", service="prometheus.service", running=True, enabled=True)
    _grafana(spec)


def _grafana(spec: MonitoringSpec) -> None:
    # Read first: a missing password stops the deploy before anything of Grafana's is written.
    password = GRAFANA_ADMIN_PASSWORD.require(what="Grafana's admin account") if spec.install_grafana else None
    provisioning = [
        files.put(name="Grafana datasource (Prometheus)", src=StringIO(grafana_datasource(spec)),
                  dest=GRAFANA_DATASOURCE, mode="0644", create_remote_dir=True),
        files.put(name="Grafana dashboard provider", src=StringIO(grafana_dashboards_provider()),
                  dest=GRAFANA_DASHBOARDS, mode="0644", create_remote_dir=True),
        files.put(name="Grafana fleet dashboard", src=StringIO(grafana_dashboard(spec)),
                  dest=GRAFANA_DASHBOARD_JSON, mode="0644", create_remote_dir=True),
    ]
    if password is None:
        return
    key = files.download(name="Grafana's apt signing key", src=spec.grafana_apt_key_url, dest=spec.grafana_keyring,
                         mode="0644")
    repo = apt.repo(name="Grafana's apt repository", src=spec.grafana_apt_repo, filename="grafana")
    apt_update(name="apt lists with Grafana's repository (bounded)", _if=any_changed(key, repo))
    installed = apt_packages(name="Grafana (apt.grafana.com)", packages=["grafana"], no_recommends=True)
    admin = secret_file(name=f"Grafana admin password {GRAFANA_ADMIN_ENV} (0600)", path=GRAFANA_ADMIN_ENV,
                        content=Secret(grafana_admin_env(password.reveal())))
    dropin = files.put(name=f"Grafana on {spec.prometheus_address}:{spec.grafana_port} only",
                       src=StringIO(grafana_service_dropin(spec)), dest=GRAFANA_DROPIN, mode="0644",
                       create_remote_dir=True)
    systemd.daemon_reload(name="systemd reads Grafana's drop-in", _if=dropin.did_change)
    systemd.service(name="Grafana restarted for its settings", service=GRAFANA_SERVICE, restarted=True,
                    _if=any_changed(installed, admin, dropin, *provisioning))
    systemd.service(name="Grafana running", service=GRAFANA_SERVICE, running=True, enabled=True)
