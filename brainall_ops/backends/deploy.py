"""Phase 4 as a pyinfra deploy: the backend cluster on the API host, nginx in front of it on the
proxy host, then the running cluster brought to its mode (no request dropped on a re-run)."""

from __future__ import annotations

import hashlib
import os
from io import StringIO
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pyinfra import host, state
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.files import Directory, File
from pyinfra.operations import files, server, systemd

from brainall_ops.backends import operations
from brainall_ops.backends.nginx import render_upstream
from brainall_ops.backends.spec import (
    NGINX_APPLY_PATH,
    NGINX_SITE_PATH,
    NGINX_UPSTREAM_PATH,
    TOOL_DIR,
    TOOL_PATH,
    UNIT_PATH,
    WATCHDOG_UNIT,
    ClusterSpec,
    cluster_spec,
    env_file_vars,
    seed_overrides,
)
from brainall_ops.rolemap.loader import REPO_ROOT
from brainall_ops.rolemap.models import Backends
from brainall_ops.shared.apt import apt_packages
from brainall_ops.shared.deploy_context import rolemap_for
from brainall_ops.shared.templating import template_dir

TEMPLATES = template_dir("backends")
HOST_TOOL = Path(__file__).with_name("hosttool.py")
STAGING = "/etc/brainall/staging"
APT_TIMEOUT_S = 900  # apt through a proxy has been seen to hang: fail instead
APP_EXCLUDE = ["*.pyc", "*.pyo", ".git*"]
APP_EXCLUDE_DIRS = ["__pycache__", ".git", ".pytest_cache", ".venv"]


def _template(name: str) -> str:
    return str(TEMPLATES / name)


def deploy_parameters(b: Backends, data: Any) -> Backends:
    """The role map's section with the deploy's own parameters applied (pyinfra `--data`):
    backends_app, backends_app_source and backends_extra_packages (comma-separated) — the lab
    ships its test app this way."""
    update: dict[str, object] = {}
    if app := data.get("backends_app"):
        update["app"] = str(app)
    if source := data.get("backends_app_source"):
        update["app_source"] = str(source)
    if extra := data.get("backends_extra_packages"):
        names = [p.strip() for p in str(extra).split(",") if p.strip()]
        update["packages"] = [*b.packages, *(n for n in names if n not in b.packages)]
    if not update:
        return b
    # through the model again, so a bad parameter is refused like a bad role-map value
    try:
        return Backends.model_validate({**b.model_dump(), **update})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise DeployError(f"backends deploy parameters (--data): {problems}") from None


def app_revision(source: Path) -> str:
    """A digest of the app's files (names and contents): a change restarts the instances."""
    digest = hashlib.sha256()
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = path.relative_to(source)
        if any(part in APP_EXCLUDE_DIRS for part in rel.parts) or path.suffix in (".pyc", ".pyo"):
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _app_source(b: Backends) -> Path | None:
    if b.app_source is None:
        return None
    path = Path(b.app_source)
    path = path if path.is_absolute() else REPO_ROOT / path
    if not path.is_dir():
        raise DeployError(f"backends.app_source {b.app_source}: no such directory on this machine")
    return path


@deploy("BrainAll backend cluster (phase 4)")
def backend_cluster() -> None:
    rm = rolemap_for(host.data)
    if rm.backends is None:
        host.noop("the role map has no backends section")
        return
    b = deploy_parameters(rm.backends, host.data)
    b, mode_asked = seed_overrides(b, os.environ)
    spec = cluster_spec(b)
    name = host.data.get("brainall_name") or host.name
    if name == spec.host:
        _backends_host(b, spec)
    if name == spec.proxy_host:
        _proxy_host(b, spec)
    if name in (spec.host, spec.proxy_host):
        # on both hosts (a no-op on the proxy), so it runs after every file of both is in place
        operations.converged(name="Backend cluster converged to its mode", spec=spec, target=mode_asked)


def _backends_host(b: Backends, spec: ClusterSpec) -> None:
    apt_packages(
        name="uvicorn and the app's runtime (Debian packages)",
        packages=[*b.packages, "python3", "curl"],
        update=True,
        cache_time=6 * 3600,
        no_recommends=True,
        _timeout=APT_TIMEOUT_S,
    )
    server.group(name=f"Group {b.user}", group=b.user, system=True)
    server.user(
        name=f"Service user {b.user}",
        user=b.user,
        group=b.user,
        system=True,
        shell="/usr/sbin/nologin",
        home=b.app_dir,
        ensure_home=False,  # the app's code stays root's: the service only reads it
    )

    source = _app_source(b)
    if source is not None:
        files.directory(name="App directory", path=b.app_dir, user="root", group="root", mode="0755")
        files.sync(
            name=f"App from {b.app_source}",
            src=str(source),
            dest=b.app_dir,
            user="root",
            group="root",
            mode="0644",
            dir_mode="0755",
            delete=True,
            exclude=APP_EXCLUDE,
            exclude_dir=APP_EXCLUDE_DIRS,
        )
        revision = app_revision(source)
    else:
        if not host.get_fact(Directory, path=b.app_dir):
            raise DeployError(f"{b.app_dir} (backends.app_dir) is not on {spec.host} and no app_source is given")
        revision = "unmanaged"

    files.directory(name="backendctl directory", path=TOOL_DIR, mode="0755")
    tool = files.put(name="backendctl (the cluster's host tool)", src=str(HOST_TOOL), dest=TOOL_PATH, mode="0755")
    files.directory(name="Environment directory", path=str(Path(b.env_file).parent), mode="0755")
    env = files.template(
        name=f"Cluster environment {b.env_file}",
        src=_template("backends.env.j2"),
        dest=b.env_file,
        user="root",
        group=b.user,
        mode="0640",  # the service user reads it (no secrets here: the app's own go elsewhere)
        mode_file=b.mode_file,
        variables=env_file_vars(b, spec, app=b.app, app_dir=b.app_dir, app_revision=revision),
    )
    unit = files.template(
        name="systemd template unit brainall-backend@.service",
        src=_template("brainall-backend@.service.j2"),
        dest=UNIT_PATH,
        mode="0644",
        service_user=b.user,  # (`user` would be the file's owner)
        env_file=b.env_file,
        mode_file=b.mode_file,
        app_dir=b.app_dir,
        tool_path=TOOL_PATH,
        start_timeout_s=b.start_timeout_s,
        drain_s=b.drain_s,
        limits=b.limits,
    )
    watchdog_unit = files.template(
        name="systemd unit of the watchdog",
        src=_template("brainall-backends-watchdog.service.j2"),
        dest=f"/etc/systemd/system/{WATCHDOG_UNIT}",
        mode="0644",
        tool_path=TOOL_PATH,
        env_file=b.env_file,
        interval_s=f"{b.watchdog.interval_s:g}",
    )
    systemd.daemon_reload(name="systemd reads the units", _if=lambda: unit.did_change() or watchdog_unit.did_change())
    systemd.service(name="Watchdog running", service=WATCHDOG_UNIT, running=True, enabled=True)
    systemd.service(
        name="Watchdog picks up the new tool or environment",
        service=WATCHDOG_UNIT,
        restarted=True,
        _if=lambda: tool.did_change() or env.did_change() or watchdog_unit.did_change(),
    )


def _proxy_host(b: Backends, spec: ClusterSpec) -> None:
    api = state.inventory.get_host(spec.host)
    address = (api.data.get("brainall_address") if api is not None else None) or spec.host
    apt_packages(
        name="nginx",
        packages=["nginx", "curl"],
        update=True,
        cache_time=6 * 3600,
        no_recommends=True,
        _timeout=APT_TIMEOUT_S,
    )
    files.directory(name="backendctl directory", path=TOOL_DIR, mode="0755")
    files.template(
        name="nginx-apply (tested, atomic, graceful upstream changes)",
        src=_template("nginx-apply.sh.j2"),
        dest=NGINX_APPLY_PATH,
        mode="0755",
        upstream_path=NGINX_UPSTREAM_PATH,
    )
    files.directory(name="Upstream directory", path=str(Path(NGINX_UPSTREAM_PATH).parent), mode="0755")
    if host.get_fact(File, path=NGINX_UPSTREAM_PATH) is None:
        # only the first time: from then on the upstream is the switch's (the mode lives on the hosts)
        files.put(
            name="Initial upstream (the role map's mode)",
            src=StringIO(render_upstream(spec, spec.routes(spec.initial_mode), str(address))),
            dest=NGINX_UPSTREAM_PATH,
            mode="0644",
        )
    files.link(name="Debian's default site off", path="/etc/nginx/sites-enabled/default", present=False)
    files.directory(name="Staging directory", path=STAGING, mode="0700")
    staged = files.template(
        name="nginx site (staged)",
        src=_template("nginx-site.conf.j2"),
        dest=f"{STAGING}/brainall-backends.conf",
        mode="0644",
        upstream="brainall_backends",
        upstream_path=NGINX_UPSTREAM_PATH,
        proxy=b.proxy,
    )
    site = server.shell(
        name="Install the site if nginx -t accepts it (else the previous one is restored)",
        commands=[
            f"if [ -f {NGINX_SITE_PATH} ]; then cp -p {NGINX_SITE_PATH} {STAGING}/site.previous; "
            f"else rm -f {STAGING}/site.previous; fi; "
            f"install -m 0644 {STAGING}/brainall-backends.conf {NGINX_SITE_PATH} && "
            f"if nginx -t; then :; else "
            f"if [ -f {STAGING}/site.previous ]; then cp -p {STAGING}/site.previous {NGINX_SITE_PATH}; "
            f"else rm -f {NGINX_SITE_PATH}; fi; echo 'nginx -t failed: previous site restored' >&2; exit 1; fi"
        ],
        _if=staged.did_change,
    )
    systemd.service(name="nginx running", service="nginx.service", running=True, enabled=True)
    systemd.service(
        name="nginx reloads the site (graceful)",
        service="nginx.service",
        reloaded=True,
        _if=site.did_change,
    )
