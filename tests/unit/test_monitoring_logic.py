"""Monitoring's rendered files: scrape targets from the role map, alert rules, Grafana provisioning."""

from __future__ import annotations

import json

import pytest
import yaml

from brainall_ops.errors import BrainallError
from brainall_ops.monitoring.logic import (
    GRAFANA_ADMIN_ENV,
    PANELS,
    alert_rules,
    exporter_defaults,
    grafana_admin_env,
    grafana_dashboard,
    grafana_dashboards_provider,
    grafana_datasource,
    grafana_keyring,
    grafana_service_dropin,
    monitoring_spec,
    prometheus_config,
    prometheus_defaults,
)
from brainall_ops.rolemap import load_rolemap

RM = load_rolemap()
LAB = monitoring_spec(RM, "lab")


def test_every_host_and_vm_is_a_target_and_not_the_storage_box() -> None:
    names = [t.name for t in LAB.targets]
    assert names == [h.name for h in RM.hosts] + [v.name for v in RM.vms]
    assert "storagebox" not in names
    config = yaml.safe_load(prometheus_config(LAB))
    node = next(job for job in config["scrape_configs"] if job["job_name"] == "node")
    scraped = [c["targets"][0] for c in node["static_configs"]]
    assert scraped == [f"{t.address}:9100" for t in LAB.targets]
    assert all(addr.startswith("10.77.1.") for addr in scraped)
    assert config["rule_files"] == ["/etc/prometheus/brainall-alerts.yml"]


def test_listeners_are_the_vswitch_addresses() -> None:
    assert 'ARGS="--web.listen-address=10.77.1.71:9100' in exporter_defaults(LAB, "10.77.1.71")
    assert "--web.listen-address=10.77.1.1:9090" in prometheus_defaults(LAB)
    production = monitoring_spec(RM)
    assert "--web.listen-address=192.168.100.1:9090" in prometheus_defaults(production)


def test_alert_rules_cover_cpu_ram_disk_with_the_role_map_thresholds() -> None:
    rules = yaml.safe_load(alert_rules(LAB))["groups"][0]["rules"]
    by_name = {r["alert"]: r for r in rules}
    assert set(by_name) == {"ExporterDown", "HighCPU", "HighMemory", "DiskAlmostFull"}
    assert by_name["HighCPU"]["expr"].endswith("> 90.0")
    assert by_name["HighMemory"]["expr"].endswith("> 90.0")
    assert by_name["DiskAlmostFull"]["expr"].endswith("> 85.0")
    assert all(r["for"] == "5m" for r in rules)


def test_grafana_provisioning_points_at_prometheus_and_has_one_fleet_dashboard() -> None:
    source = yaml.safe_load(grafana_datasource(LAB))["datasources"][0]
    assert source["url"] == "http://10.77.1.1:9090" and source["type"] == "prometheus"
    provider = yaml.safe_load(grafana_dashboards_provider())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads(grafana_dashboard(LAB))
    assert dashboard["uid"] == "brainall-fleet"
    exprs = [p["targets"][0]["expr"] for p in dashboard["panels"]]
    assert exprs == [expr for _, expr, _ in PANELS]
    assert all(p["datasource"]["uid"] == source["uid"] for p in dashboard["panels"])


def test_grafana_is_installed_from_its_repository_in_production_only() -> None:
    production = monitoring_spec(RM)
    assert production.install_grafana and not LAB.install_grafana
    assert production.grafana_keyring == "/usr/share/keyrings/grafana.asc"
    dropin = grafana_service_dropin(production).splitlines()
    assert "[Service]" in dropin
    assert "Environment=GF_SERVER_HTTP_ADDR=192.168.100.1" in dropin
    assert "Environment=GF_SERVER_HTTP_PORT=3000" in dropin
    assert "Environment=GF_ANALYTICS_REPORTING_ENABLED=false" in dropin
    assert f"EnvironmentFile={GRAFANA_ADMIN_ENV}" in dropin
    assert grafana_admin_env("a-long-password-1") == "GF_SECURITY_ADMIN_PASSWORD=a-long-password-1\n"


def test_a_grafana_repository_without_its_key_is_refused() -> None:
    assert grafana_keyring("deb [arch=amd64 signed-by=/etc/apt/keyrings/g.gpg] https://x stable main") == (
        "/etc/apt/keyrings/g.gpg"
    )
    for line in ("deb https://apt.grafana.com stable main", "deb [signed-by=grafana.asc] https://x stable main"):
        with pytest.raises(BrainallError, match="grafana_apt_repo"):
            grafana_keyring(line)
    unsigned = RM.model_copy(
        update={"monitoring": RM.monitoring.model_copy(update={"grafana_apt_repo": "deb https://x stable main"})}
    )
    with pytest.raises(BrainallError, match=r"must name its key with \[signed-by=PATH\]"):
        monitoring_spec(unsigned)
    without = RM.model_copy(update={"monitoring": RM.monitoring.model_copy(update={"grafana_apt_repo": None})})
    assert not monitoring_spec(without).install_grafana
