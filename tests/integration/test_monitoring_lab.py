"""Phase 5's monitoring on the lab with the real pyinfra CLI: Debian's node exporter on every
host and VM (bound to its vSwitch address), Debian's Prometheus on prox-101 scraping them all,
with alert rules promtool accepts; Grafana's provisioning rendered, its datasource URL and every
dashboard panel's PromQL run against the lab Prometheus (Grafana itself is not in Debian).

Prometheus is queried from prox-101 itself (curl to its vSwitch address), so a firewall another
test may have on the lab does not stand between this machine and it.
Wall time: about 2 minutes on a fresh lab (apt installs), 1 minute when installed.
"""

from __future__ import annotations

import json
import shlex
import time
import urllib.parse

import pytest
import yaml

from brainall_ops.monitoring.logic import (
    ALERT_RULES,
    GRAFANA_DASHBOARD_JSON,
    GRAFANA_DATASOURCE,
    PROMETHEUS_CONFIG,
    monitoring_spec,
)
from brainall_ops.rolemap import load_rolemap
from tests.integration.lab_fixture import Lab, lab  # noqa: F401
from tests.integration.pyinfra_run import PyinfraRun, run_pyinfra

pytestmark = pytest.mark.lab

SPEC = monitoring_spec(load_rolemap(), "lab")
PROM = SPEC.prometheus_host
SCRAPE_WAIT_S = 90  # a bound on how long to wait for every target's first scrape (not a timing assertion)


def sh(testbed: Lab, name: str, command: str) -> str:
    result = testbed.host(name).run(command)
    assert result.rc == 0, f"{name}: {command!r} exited {result.rc}: {result.stdout}{result.stderr}"
    return str(result.stdout)


def api(testbed: Lab, path: str) -> dict:
    # python3 rather than curl: the Prometheus host need not have curl (phase 1 may not have run yet)
    fetch = (
        "import sys, urllib.request; "
        "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"
    )
    out = sh(testbed, PROM, f"python3 -c {shlex.quote(fetch)} {shlex.quote(SPEC.prometheus_url + path)}")
    return json.loads(out)


@pytest.fixture(scope="module")
def deployed(lab: Lab) -> PyinfraRun:  # noqa: F811
    run = run_pyinfra("inventories/lab.py", "deploys/monitoring.py", timeout=900)
    print(run.output[-4000:])
    return run


def test_deploy_succeeds_and_a_second_run_changes_nothing(deployed: PyinfraRun) -> None:
    assert deployed.returncode == 0 and deployed.error == 0, deployed.output[-3000:]
    second = run_pyinfra("inventories/lab.py", "deploys/monitoring.py", timeout=900)
    assert second.returncode == 0
    assert second.changed == 0, second.output[-3000:]


def test_exporters_listen_on_the_vswitch_address_only(lab: Lab, deployed: PyinfraRun) -> None:  # noqa: F811
    for target in SPEC.targets:
        listening = {str(s) for s in lab.host(target.name).socket.get_listening_sockets()}
        assert f"tcp://{target.address}:{SPEC.node_exporter_port}" in listening, target.name
        assert f"tcp://0.0.0.0:{SPEC.node_exporter_port}" not in listening
        assert f"tcp://:::{SPEC.node_exporter_port}" not in listening
    listening = {str(s) for s in lab.host(PROM).socket.get_listening_sockets()}
    assert f"tcp://{SPEC.prometheus_address}:{SPEC.prometheus_port}" in listening
    assert f"tcp://:::{SPEC.prometheus_port}" not in listening


def test_promtool_accepts_the_config_and_the_rules(lab: Lab, deployed: PyinfraRun) -> None:  # noqa: F811
    assert "SUCCESS" in sh(lab, PROM, f"promtool check rules {ALERT_RULES} 2>&1")
    assert "SUCCESS" in sh(lab, PROM, f"promtool check config {PROMETHEUS_CONFIG} 2>&1")
    rules = api(lab, "/api/v1/rules")["data"]["groups"][0]["rules"]
    assert {r["name"] for r in rules} == {"ExporterDown", "HighCPU", "HighMemory", "DiskAlmostFull"}


def test_prometheus_scrapes_every_exporter_and_all_are_up(lab: Lab, deployed: PyinfraRun) -> None:  # noqa: F811
    wanted = {f"{t.address}:{SPEC.node_exporter_port}" for t in SPEC.targets}
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while True:
        active = api(lab, "/api/v1/targets")["data"]["activeTargets"]
        health = {t["labels"]["instance"]: (t["health"], t["lastError"]) for t in active
                  if t["labels"]["job"] == "node"}
        if (set(health) == wanted and all(h == "up" for h, _ in health.values())) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert set(health) == wanted
    assert {k: v for k, v in health.items() if v[0] != "up"} == {}


def test_grafana_provisioning_matches_the_lab_prometheus(lab: Lab, deployed: PyinfraRun) -> None:  # noqa: F811
    source = yaml.safe_load(sh(lab, PROM, f"cat {GRAFANA_DATASOURCE}"))["datasources"][0]
    assert source["url"] == SPEC.prometheus_url
    assert api(lab, "/api/v1/status/buildinfo")["status"] == "success"  # the datasource URL answers
    dashboard = json.loads(sh(lab, PROM, f"cat {GRAFANA_DASHBOARD_JSON}"))
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        expr = panel["targets"][0]["expr"]
        # rate() over a fresh Prometheus needs two scrapes first: wait, bounded, for the first series
        deadline = time.monotonic() + SCRAPE_WAIT_S
        while True:
            answer = api(lab, "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
            if answer["status"] != "success" or answer["data"]["result"] or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert answer["status"] == "success", (panel["title"], answer)
        assert answer["data"]["result"], f"panel {panel['title']!r}: no series for {expr}"


def test_the_lab_writes_grafana_provisioning_but_never_reaches_for_its_repository(
    lab: Lab,  # noqa: F811
    deployed: PyinfraRun,
) -> None:
    # `install_grafana: false` in the lab: its apt proxy reaches Debian's mirror only
    assert not SPEC.install_grafana
    listing = sh(lab, PROM, "ls /etc/apt/sources.list.d/ /usr/share/keyrings/; ls /etc/brainall/grafana 2>&1 || true")
    assert "grafana.list" not in listing and "grafana.asc" not in listing
    assert "No such file or directory" in listing  # no admin password file either
    assert "Grafana (apt.grafana.com)" not in deployed.output
