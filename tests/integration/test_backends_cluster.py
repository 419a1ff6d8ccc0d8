"""The backend cluster for real, in the lab: the real deploy (pyinfra, deploys/phase4.py) puts a real
ASGI app (brainall_ops/lab/backend_app) on the API host under systemd and real nginx in front of it
on the nginx host; a bounded load loop runs through nginx while the mode switches, the primary is
killed, and primary and secondary both stop. Every request is counted.

Wall time: about 3-5 minutes (most of it apt on a fresh lab; about 2 minutes when installed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from brainall_ops.lab.load import BackgroundLoad, LoadResult
from brainall_ops.rolemap import REPO_ROOT
from tests.integration.lab_fixture import Lab, lab  # noqa: F401

pytestmark = pytest.mark.lab

API = "vm-brainall-api"
NGINX = "vm-brainall-nginx"
PORTS = (8000, 8080, 3001)
BIN = Path(sys.executable).parent
DEPLOY_DATA = [
    "--data",
    "backends_app_source=brainall_ops/lab/backend_app",
    "--data",
    "backends_app=lab_app:app",
    "--data",
    "backends_extra_packages=python3-starlette",
]
# The load: 4 clients, paced, bounded in count and in time; each scenario stops it once done.
LOAD = {"concurrency": 4, "rate": 250.0, "requests": 30_000, "max_seconds": 150.0}
WAIT_S = 90  # the longest any single wait below may take before the test fails (a hang, not a speed check)


def _env(lab_: Lab) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OMNIMIND_")}
    return {**clean, "BRAINALL_LAB_DIR": str(lab_.state_dir)}


def deploy(
    lab_: Lab, *extra: str, env: dict[str, str] | None = None, dry: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN / "pyinfra"),
            "--dry" if dry else "-y",
            "inventories/lab.py",
            "deploys/phase4.py",
            "--limit",
            API,
            "--limit",
            NGINX,
            *DEPLOY_DATA,
            *extra,
        ],
        cwd=REPO_ROOT,
        env={**_env(lab_), **(env or {})},
        capture_output=True,
        text=True,
        timeout=1500,
    )


def grand_total(output: str) -> dict[str, str]:
    """pyinfra's results table, last row: hosts, changed ("Success"), errors, unchanged."""
    for line in reversed(output.splitlines()):
        if "Grand total" in line:
            cells = line.split("Grand total", 1)[1].split()
            return dict(zip(("hosts", "changed", "error", "no_change"), cells, strict=True))
    raise AssertionError(f"no results table in pyinfra's output:\n{output[-3000:]}")


def cli(lab_: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / "brainall-ops"), "backends", *args, "-i", "inventories/lab.py"],
        cwd=REPO_ROOT,
        env=_env(lab_),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"brainall-ops backends {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def status(lab_: Lab) -> dict[str, Any]:
    return json.loads(cli(lab_, "status", "--json").stdout)


def instances(lab_: Lab) -> dict[int, dict[str, Any]]:
    return {i["port"]: i for i in status(lab_)["instances"]}


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout:g}s")


def report(request: pytest.FixtureRequest, text: str) -> None:
    """Figures for the reader of the test run: on the terminal even under output capture, and in
    the junit XML (record_property)."""
    request.node.user_properties.append(("backends", text))
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if terminal is None or capture is None:
        print(f"[backends] {text}")
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line(f"\n[backends] {text}")


def recovery_bound() -> float:
    """The design bound of the double failure: a watchdog round (interval + probe timeout), the
    standby's start to ready, and nginx's fail_timeout before it retries a server it saw fail."""
    from brainall_ops.rolemap import load_rolemap

    b = load_rolemap().backends
    assert b is not None
    return b.watchdog.interval_s + b.watchdog.health_timeout_s + b.start_timeout_s + b.proxy.fail_timeout_s


def start_load(lab_: Lab) -> BackgroundLoad:
    return BackgroundLoad(lab_.address(NGINX), 80, **LOAD).start()


def unit_state(lab_: Lab, port: int) -> str:
    return lab_.host(API).run(f"systemctl is-active brainall-backend@{port}.service").stdout.strip()


@pytest.fixture(scope="module")
def deployed(lab: Lab, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:  # noqa: F811
    for name in (API, NGINX):
        lab.spec(name)  # fails loudly when the lab lacks a host
    first = deploy(lab)
    assert first.returncode == 0, f"deploy failed:\n{first.stdout[-6000:]}\n{first.stderr[-3000:]}"
    second = deploy(lab)
    assert second.returncode == 0, f"second deploy failed:\n{second.stdout[-6000:]}\n{second.stderr[-3000:]}"
    # every scenario starts from production mode
    cli(lab, "mode", "production")
    try:
        yield {"first": first.stdout + first.stderr, "second": second.stdout + second.stderr}
    finally:
        # Free the ports for the other modules of the session (the firewall test listens on :80 and
        # :8000 of these hosts): the cluster and nginx stop; the next deploy brings them back.
        units = " ".join(f"brainall-backend@{p}.service" for p in PORTS)
        lab.host(API).run(f"systemctl disable --now brainall-backends-watchdog.service {units}")
        lab.host(NGINX).run("systemctl disable --now nginx.service")


# --------------------------------------------------------------------------- the deploy
def test_the_deploy_is_idempotent(deployed: dict[str, Any]) -> None:
    totals = grand_total(deployed["second"])
    assert totals["error"] == "-", deployed["second"][-4000:]
    assert totals["changed"] == "-", f"a second deploy changed something:\n{deployed['second'][-6000:]}"
    assert int(totals["no_change"]) >= 20  # every operation ran, and none had anything to do


def test_the_hosts_run_what_the_role_map_says(lab: Lab, deployed: dict[str, Any]) -> None:  # noqa: F811
    api, nginx = lab.host(API), lab.host(NGINX)
    for package in ("python3-uvicorn", "python3-fastapi", "python3-starlette", "curl"):
        assert api.package(package).is_installed, package
    unit = api.file("/etc/systemd/system/brainall-backend@.service")
    assert unit.is_file and "Restart=on-failure" in unit.content_string
    assert "ExecStartPost=" in unit.content_string and "MemoryMax=4096M" in unit.content_string
    env = api.file("/etc/brainall/backends.env")
    assert (env.user, env.group, env.mode) == ("root", "brainall-api", 0o640)
    assert "OMNIMIND_WORKERS_VALIDATION=2" in env.content_string
    assert "OMNIMIND_VALIDATION_MODE=false" in api.file("/etc/brainall/backends-mode.env").content_string
    assert api.service("brainall-backends-watchdog.service").is_running
    for port in PORTS:
        service = api.service(f"brainall-backend@{port}.service")
        assert service.is_running and service.is_enabled, port
    # the app runs as the service user, not root
    users = api.run("ps -o user= -C python3").stdout.split()
    assert "brainall-api" in users
    assert nginx.package("nginx").is_installed and nginx.service("nginx").is_running
    assert nginx.run("nginx -t").rc == 0
    assert not nginx.file("/etc/nginx/sites-enabled/default").exists
    upstream = nginx.file("/etc/nginx/brainall/backends-upstream.conf").content_string
    assert f"server {lab.address(API)}:3001 backup" in upstream
    answer = json.loads(nginx.check_output("curl -fsS http://127.0.0.1/"))
    assert answer["port"] in PORTS and answer["mode"] == "production" and answer["workers"] == 1


def test_a_dry_deploy_shows_the_switch_and_changes_nothing(lab: Lab, deployed: dict[str, Any]) -> None:  # noqa: F811
    before = instances(lab)
    dry = deploy(lab, dry=True, env={"OMNIMIND_VALIDATION_MODE": "true"})
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    output = dry.stdout + dry.stderr  # pyinfra logs to stderr
    row = next(line for line in output.splitlines() if "Backend cluster converged to its mode" in line)
    assert f"1 ({API})" in row, row  # the switch to validation is detected as a change ...
    after = status(lab)
    assert after["mode"] == "production"  # ... and not made
    assert {p: i["pid"] for p, i in before.items()} == {i["port"]: i["pid"] for i in after["instances"]}


def test_status_shows_each_instance_and_the_mode(lab: Lab, deployed: dict[str, Any]) -> None:  # noqa: F811
    data = status(lab)
    assert data["mode"] == "production" and data["watchdog"] == "active" and not data["shape_problems"]
    rows = {i["port"]: i for i in data["instances"]}
    assert {p: (r["role"], r["in_mode"], r["health"], r["workers"], r["nginx"]) for p, r in rows.items()} == {
        8000: ("primary", "runs", "ok", 1, "normal"),
        8080: ("secondary", "runs", "ok", 1, "normal"),
        3001: ("fallback", "runs", "ok", 1, "backup"),
    }
    table = cli(lab, "status").stdout
    assert "mode production (3 x 1 worker(s))" in table and "3001" in table


# --------------------------------------------------------------------------- the switches
def test_mode_switches_drop_no_request(
    lab: Lab,  # noqa: F811
    deployed: dict[str, Any],
    request: pytest.FixtureRequest,
) -> None:
    dry = cli(lab, "mode", "validation", "--dry").stdout
    assert "dry run: nothing changed" in dry and "stop :3001 (fallback)" in dry
    assert status(lab)["mode"] == "production"  # --dry changed nothing

    load = start_load(lab)
    # beside it, clients that open a connection per request: no keep-alive, so nothing to re-send
    fresh = BackgroundLoad(lab.address(NGINX), 80, **{**LOAD, "concurrency": 2, "rate": 100.0}, keepalive=False)
    fresh.start()
    time.sleep(2)
    t_validation = load.now()
    to_validation = cli(lab, "mode", "validation").stdout
    t_validation_done = load.now()
    rows = instances(lab)
    time.sleep(2)
    t_production = load.now()
    to_production = cli(lab, "mode", "production").stdout
    t_production_done = load.now()
    result = load.finish(tail_s=2)
    fresh_result = fresh.finish(tail_s=0)

    report(request, f"production -> validation -> production under load: {result.summary()}")
    report(request, f"the same, one connection per request: {fresh_result.summary()}")
    report(request, f"switch to validation: {to_validation.strip().splitlines()[-1]}")
    report(request, f"switch to production: {to_production.strip().splitlines()[-1]}")
    assert result.count > 1000 and fresh_result.count > 500
    assert result.failed == [], result.summary()
    assert fresh_result.failed == [] and fresh_result.resent == 0, fresh_result.summary()

    # validation ran 2 backends x 2 workers with the fallback stopped
    assert {p: (r["state"], r["workers"], r["processes"]) for p, r in rows.items()} == {
        8000: ("active/running", 2, 2),
        8080: ("active/running", 2, 2),
        3001: ("inactive/dead", None, 0),
    }
    served = result.ports(since=t_validation_done, until=t_production)
    assert set(served) == {8000, 8080}, served
    # both workers exist (the process count above); which worker accepts each connection is the
    # kernel's choice, so a short window may see only one of them serve: at least one did
    assert 1 <= len(result.pids(8000, since=t_validation_done, until=t_production)) <= 2
    # and production is back: 3 x 1, the fallback started before anything else changed
    back = instances(lab)
    assert all(back[p]["state"] == "active/running" and back[p]["workers"] == 1 for p in PORTS), back
    assert t_validation < t_validation_done < t_production < t_production_done


def test_killing_the_primary_drops_no_request(
    lab: Lab,  # noqa: F811
    deployed: dict[str, Any],
    request: pytest.FixtureRequest,
) -> None:
    before = instances(lab)[8000]
    load = start_load(lab)
    time.sleep(2)
    lab.host(API).check_output("systemctl kill --signal=SIGKILL brainall-backend@8000.service")
    t_kill = load.now()
    wait_for(
        "systemd restarts the killed primary",
        lambda: (i := instances(lab)[8000])["health"] == "ok" and i["pid"] != before["pid"],
    )
    t_back = load.now()
    time.sleep(4)  # past nginx's fail_timeout: the primary takes traffic again
    result = load.finish(tail_s=1)
    after = instances(lab)[8000]
    report(request, f"primary killed (SIGKILL), back after {t_back - t_kill:.1f}s: {result.summary()}")
    assert after["restarts"] == before["restarts"] + 1
    assert result.count > 1000
    assert result.failed == [], result.summary()
    assert result.ports(since=t_back).get(8000), "nginx never sent traffic to the restarted primary"


def test_primary_and_secondary_down_the_watchdog_starts_the_standby(
    lab: Lab,  # noqa: F811
    deployed: dict[str, Any],
    request: pytest.FixtureRequest,
) -> None:
    cli(lab, "mode", "validation")
    assert unit_state(lab, 3001) == "inactive"
    api = lab.host(API)
    since = api.check_output("date '+%Y-%m-%d %H:%M:%S'")

    load = start_load(lab)
    time.sleep(2)
    t_down = load.now()
    api.check_output("systemctl stop brainall-backend@8000.service brainall-backend@8080.service")
    t_stopped = load.now()
    wait_for("the watchdog brings the standby :3001 up", lambda: unit_state(lab, 3001) == "active")
    time.sleep(3)
    result = load.finish(tail_s=1)

    failed = [s for s in result.samples if not s.ok and s.start >= t_down]
    served_by_standby = [s for s in result.samples if s.ok and s.port == 3001]
    assert served_by_standby, "the standby never served"
    first_standby = served_by_standby[0].end
    recovered = max([first_standby, *(s.end for s in failed)])  # from here on every request succeeded
    journal = api.check_output(f"journalctl -u brainall-backends-watchdog.service --since '{since}' --no-pager")
    report(
        request,
        f"primary+secondary stopped at t={t_down:.2f}s (stop returned after {t_stopped - t_down:.2f}s): "
        f"{len(failed)} failed requests of {result.count}; recovered {recovered - t_down:.2f}s after the stop "
        f"(first answer from :3001 at +{first_standby - t_down:.2f}s; design bound {recovery_bound():.0f}s)",
    )
    assert "starting standby :3001" in journal
    tail = [s for s in result.samples if s.start > recovered]
    assert len(tail) > 100 and all(s.ok for s in tail), "requests failed after the standby took over"

    # back to normal validation (8000 and 8080 started and ready first, 3001 drained and stopped)
    load = start_load(lab)
    time.sleep(1)
    restore = cli(lab, "mode", "validation").stdout
    restored = load.finish(tail_s=2)
    report(request, f"validation restored under load: {restored.summary()}")
    assert "stop :3001 (fallback)" in restore and "start :8000 (primary)" in restore
    assert restored.failed == [], restored.summary()
    rows = instances(lab)
    assert [rows[p]["state"] for p in PORTS] == ["active/running", "active/running", "inactive/dead"]


def test_a_failed_switch_is_one_line_and_rolled_back(
    lab: Lab,  # noqa: F811
    deployed: dict[str, Any],
    request: pytest.FixtureRequest,
) -> None:
    """:3001 cannot start (another process holds its port): the switch to production stops there, nginx
    still routes to the healthy backends, the mode file is back to validation; no request fails."""
    cli(lab, "mode", "validation")
    api = lab.host(API)
    squatter = "brainall-backends-test-squatter"
    api.check_output(f"systemd-run --unit {squatter} python3 -m http.server 3001 --bind 0.0.0.0")
    try:
        load = start_load(lab)
        time.sleep(1)
        failed = subprocess.run(
            [str(BIN / "brainall-ops"), "backends", "mode", "production", "-i", "inventories/lab.py"],
            cwd=REPO_ROOT,
            env=_env(lab),
            capture_output=True,
            text=True,
            timeout=600,
        )
        result = load.finish(tail_s=1)
    finally:
        api.run(f"systemctl stop {squatter}")
    report(request, f"a failed switch under load: {result.summary()}")
    errors = [line for line in failed.stderr.splitlines() if line.strip()]
    assert failed.returncode == 1 and len(errors) == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert errors[0].startswith("error: switch to production failed at step 2/"), errors[0]
    assert "address already in use" in errors[0] and "the mode file says validation" in errors[0]
    data = status(lab)
    assert data["mode"] == "validation" and not data["switching"]
    rows = {i["port"]: i for i in data["instances"]}
    assert [rows[p]["nginx"] for p in PORTS] == ["normal", "normal", "backup"]
    assert rows[8000]["health"] == rows[8080]["health"] == "ok"
    assert result.failed == [], result.summary()
    # with the port free again, the same switch goes through
    cli(lab, "mode", "production")
    assert all(i["health"] == "ok" for i in instances(lab).values())


def test_a_deploy_that_changes_the_workers_restarts_without_dropping(
    lab: Lab,  # noqa: F811
    deployed: dict[str, Any],
    request: pytest.FixtureRequest,
) -> None:
    """The seed's variables at deploy time: OMNIMIND_WORKERS=2 rolls production to 3 x 2, drained."""
    cli(lab, "mode", "production")
    load = start_load(lab)
    time.sleep(1)
    changed = deploy(lab, env={"OMNIMIND_WORKERS": "2"})
    rows = instances(lab)
    back = deploy(lab)
    result = load.finish(tail_s=1)
    report(request, f"two deploys (workers 1 -> 2 -> 1) under load: {result.summary()}")
    assert changed.returncode == 0 and back.returncode == 0, (changed.stdout[-3000:], back.stdout[-3000:])
    assert [rows[p]["workers"] for p in PORTS] == [2, 2, 2]
    assert [r["workers"] for r in instances(lab).values()] == [1, 1, 1]
    assert result.failed == [], result.summary()


def test_a_load_result_counts_failures() -> None:
    """The counter itself: a refused connection is a failed request, not a missing one."""
    from brainall_ops.lab.load import run_load

    result: LoadResult = run_load("127.0.0.1", 9, requests=5, concurrency=2, max_seconds=10)
    assert result.count == 5 and len(result.failed) == 5
    assert {s.error for s in result.failed} == {"ConnectionRefusedError"}
