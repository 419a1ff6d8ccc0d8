"""The backend cluster's shape: which instances run in each mode, how nginx routes to them, and the
seed's environment variables.

Pure logic (no pyinfra, no I/O): the deploy, the `backends` CLI, the plan and the unit tests all
build a `ClusterSpec` from the role map's `backends:` section with `cluster_spec()`.

The second seed drives the cluster with environment variables; they are accepted here as
overrides of the role map (the operator's shell, as the seed has it) and written to the cluster's
environment file for the app and the host tool:

    OMNIMIND_BACKENDS            instances running in production        (production.backends, seed default 3)
    OMNIMIND_WORKERS             uvicorn workers per instance, production (production.workers, default 1)
    OMNIMIND_WORKERS_VALIDATION  workers per instance in validation       (validation.workers, default 2)
    OMNIMIND_VALIDATION_MODE     true|false: the mode                     (mode)
    OMNIMIND_BACKENDS_VALIDATION instances running in validation (ours; the seed hard-codes 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.models import BackendMode, BackendProxy, Backends

Mode = Literal["production", "validation"]
Route = Literal["normal", "backup", "down"]
MODES: tuple[Mode, ...] = ("production", "validation")

UNIT_TEMPLATE = "brainall-backend@.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_TEMPLATE}"
WATCHDOG_UNIT = "brainall-backends-watchdog.service"
TOOL_DIR = "/usr/local/lib/brainall-backends"
TOOL_PATH = f"{TOOL_DIR}/backendctl"
NGINX_APPLY_PATH = f"{TOOL_DIR}/nginx-apply"
NGINX_SITE_PATH = "/etc/nginx/conf.d/brainall-backends.conf"
NGINX_UPSTREAM_PATH = "/etc/nginx/brainall/backends-upstream.conf"
UPSTREAM_NAME = "brainall_backends"

# The seed's variable -> (the role-map field it overrides, what it means)
SEED_VARIABLES: dict[str, tuple[str, str]] = {
    "OMNIMIND_BACKENDS": ("production.backends", "instances running in production"),
    "OMNIMIND_WORKERS": ("production.workers", "uvicorn workers per instance in production"),
    "OMNIMIND_WORKERS_VALIDATION": ("validation.workers", "uvicorn workers per instance in validation"),
    "OMNIMIND_VALIDATION_MODE": ("mode", "true: validation mode, false: production"),
    "OMNIMIND_BACKENDS_VALIDATION": ("validation.backends", "instances running in validation (not in the seed)"),
}


@dataclass(frozen=True)
class Instance:
    port: int
    role: Literal["primary", "secondary", "fallback"]

    @property
    def unit(self) -> str:
        return f"brainall-backend@{self.port}.service"

    @property
    def label(self) -> str:
        return f":{self.port} ({self.role})"


@dataclass(frozen=True)
class ModeShape:
    backends: int
    workers: int
    min_healthy: int


@dataclass(frozen=True)
class ClusterSpec:
    """What the role map (with the seed's overrides) asks of the cluster."""

    host: str
    proxy_host: str
    instances: tuple[Instance, ...]
    production: ModeShape
    validation: ModeShape
    initial_mode: Mode
    env_file: str
    mode_file: str
    health_path: str
    start_timeout_s: int
    drain_s: int
    proxy: BackendProxy

    def shape(self, mode: Mode) -> ModeShape:
        return self.production if mode == "production" else self.validation

    def running(self, mode: Mode) -> tuple[Instance, ...]:
        return self.instances[: self.shape(mode).backends]

    def standby(self, mode: Mode) -> tuple[Instance, ...]:
        return self.instances[self.shape(mode).backends :]

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(i.port for i in self.instances)

    def instance(self, port: int) -> Instance:
        for instance in self.instances:
            if instance.port == port:
                return instance
        raise KeyError(port)

    def routes(self, mode: Mode) -> dict[int, Route]:
        """nginx's upstream once the cluster is in `mode`: running primaries and secondaries take
        traffic; fallbacks and standby instances are `backup` (tried only when every normal server
        has failed; a stopped standby listed there costs nothing and serves as soon as the
        watchdog starts it, without a reload)."""
        running = {i.port for i in self.running(mode)}
        return {i.port: "normal" if i.port in running and i.role != "fallback" else "backup" for i in self.instances}

    def shape_vars(self) -> dict[str, str]:
        """The environment-file variables that define the cluster's shape (compared with the host's)."""
        return {
            "OMNIMIND_BACKENDS": str(self.production.backends),
            "OMNIMIND_WORKERS": str(self.production.workers),
            "OMNIMIND_BACKENDS_VALIDATION": str(self.validation.backends),
            "OMNIMIND_WORKERS_VALIDATION": str(self.validation.workers),
            "BRAINALL_BACKEND_INSTANCES": ",".join(f"{i.port}:{i.role}" for i in self.instances),
            "BRAINALL_MIN_HEALTHY": str(self.production.min_healthy),
            "BRAINALL_MIN_HEALTHY_VALIDATION": str(self.validation.min_healthy),
        }


def parse_mode_flag(value: str, variable: str = "OMNIMIND_VALIDATION_MODE") -> Mode:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return "validation"
    if lowered in ("false", "0", "no", "off", ""):
        return "production"
    raise BrainallError(f"{variable}={value!r}: expected true or false")


def _count(environ: Mapping[str, str], variable: str, upper: int | None = None) -> int | None:
    raw = environ.get(variable)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise BrainallError(f"{variable}={raw!r}: expected a whole number >= 1") from None
    if value < 1:
        raise BrainallError(f"{variable}={raw!r}: expected a whole number >= 1")
    if upper is not None and value > upper:
        raise BrainallError(f"{variable}={raw!r}: the role map has only {upper} backend instances")
    return value


def seed_overrides(b: Backends, environ: Mapping[str, str]) -> tuple[Backends, Mode | None]:
    """The role map's section with the seed's variables applied, and the mode they ask for (None when
    OMNIMIND_VALIDATION_MODE is unset). Bad values are one-line errors naming the variable."""
    n = len(b.instances)
    production: dict[str, int] = {}
    validation: dict[str, int] = {}
    if (v := _count(environ, "OMNIMIND_BACKENDS", n)) is not None:
        production["backends"] = v
    if (v := _count(environ, "OMNIMIND_WORKERS")) is not None:
        production["workers"] = v
    if (v := _count(environ, "OMNIMIND_BACKENDS_VALIDATION", n)) is not None:
        validation["backends"] = v
    if (v := _count(environ, "OMNIMIND_WORKERS_VALIDATION")) is not None:
        validation["workers"] = v
    mode: Mode | None = None
    if "OMNIMIND_VALIDATION_MODE" in environ:
        mode = parse_mode_flag(environ["OMNIMIND_VALIDATION_MODE"])
    updated = b.model_copy(
        update={
            "production": b.production.model_copy(update=production),
            "validation": b.validation.model_copy(update=validation),
            **({"mode": mode} if mode else {}),
        }
    )
    for name, shape in (("production", updated.production), ("validation", updated.validation)):
        if all(i.role == "fallback" for i in updated.instances[: shape.backends]):
            raise BrainallError(f"{name} would run only fallback instances (nginx needs a primary or secondary)")
    return updated, mode


def _shape(m: BackendMode) -> ModeShape:
    return ModeShape(backends=m.backends, workers=m.workers, min_healthy=m.min_healthy)


def cluster_spec(b: Backends, environ: Mapping[str, str] | None = None) -> ClusterSpec:
    """The cluster asked for by the role map's `backends:` section and the seed's variables in `environ`."""
    if environ is not None:
        b, _ = seed_overrides(b, environ)
    return ClusterSpec(
        host=b.host,
        proxy_host=b.proxy_host,
        instances=tuple(Instance(i.port, i.role) for i in b.instances),
        production=_shape(b.production),
        validation=_shape(b.validation),
        initial_mode=b.mode,
        env_file=b.env_file,
        mode_file=b.mode_file,
        health_path=b.health_path,
        start_timeout_s=b.start_timeout_s,
        drain_s=b.drain_s,
        proxy=b.proxy,
    )


def env_file_vars(
    b: Backends, spec: ClusterSpec, *, app: str, app_dir: str, app_revision: str
) -> list[tuple[str, str, str]]:
    """(name, value, comment) for every line of the cluster's environment file, in order."""
    return [
        ("OMNIMIND_BACKENDS", str(spec.production.backends), SEED_VARIABLES["OMNIMIND_BACKENDS"][1]),
        ("OMNIMIND_WORKERS", str(spec.production.workers), SEED_VARIABLES["OMNIMIND_WORKERS"][1]),
        (
            "OMNIMIND_BACKENDS_VALIDATION",
            str(spec.validation.backends),
            SEED_VARIABLES["OMNIMIND_BACKENDS_VALIDATION"][1],
        ),
        (
            "OMNIMIND_WORKERS_VALIDATION",
            str(spec.validation.workers),
            SEED_VARIABLES["OMNIMIND_WORKERS_VALIDATION"][1],
        ),
        ("BRAINALL_BACKEND_INSTANCES", spec.shape_vars()["BRAINALL_BACKEND_INSTANCES"], "port:role, in order"),
        ("BRAINALL_MIN_HEALTHY", str(spec.production.min_healthy), "watchdog threshold, production"),
        ("BRAINALL_MIN_HEALTHY_VALIDATION", str(spec.validation.min_healthy), "watchdog threshold, validation"),
        ("BRAINALL_APP", app, "ASGI import path"),
        ("BRAINALL_APP_DIR", app_dir, "the app's code"),
        ("BRAINALL_APP_REVISION", app_revision, "digest of the shipped app (a change restarts the instances)"),
        ("BRAINALL_BIND", str(b.bind), "address uvicorn listens on"),
        ("BRAINALL_HEALTH_PATH", spec.health_path, "readiness and watchdog probe"),
        ("BRAINALL_START_TIMEOUT", str(spec.start_timeout_s), "seconds for an instance to become ready"),
        ("BRAINALL_KEEPALIVE_TIMEOUT", str(b.proxy.keepalive_timeout_s + 5), "uvicorn keep-alive (> nginx's)"),
        ("BRAINALL_WATCHDOG_INTERVAL", f"{b.watchdog.interval_s:g}", "seconds between watchdog rounds"),
        ("BRAINALL_WATCHDOG_HEALTH_TIMEOUT", f"{b.watchdog.health_timeout_s:g}", "seconds per health probe"),
        ("BRAINALL_BACKEND_MODE_FILE", spec.mode_file, "holds OMNIMIND_VALIDATION_MODE"),
    ]


def mode_file_text(mode: Mode) -> str:
    flag = "true" if mode == "validation" else "false"
    return (
        "# The backend cluster's mode, written by `brainall-ops backends mode` (do not edit by hand:\n"
        "# a switch also drains and restarts instances and reloads nginx).\n"
        f"OMNIMIND_VALIDATION_MODE={flag}\n"
    )
