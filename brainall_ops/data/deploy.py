"""Phase 5, the data tier as pyinfra deploys: PostgreSQL and Redis on the data host, their
clients on the app hosts, the nightly dump to the Storage Box, and the bastion's clean-up.

Secrets come from the environment or secret files (`shared.secrets`), only when the host needs
them, and reach the host on stdin or as a SCRAM verifier (never a command line).
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import OperationError, deploy
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from brainall_ops.data.logic import (
    CLEANUP_LOG,
    DUMP_LOG,
    REDIS_AUTH,
    REDIS_CONF,
    REDIS_DROPIN,
    DataSpec,
    cleanup_job,
    data_spec,
    member_names,
)
from brainall_ops.data.operations import postgres_database, postgres_role
from brainall_ops.data.rendering import TEMPLATES, template_path
from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.models import BastionCleanup
from brainall_ops.shared.apt import apt_packages
from brainall_ops.shared.deploy_context import environment_for, rolemap_for
from brainall_ops.shared.secrets import DB_APP_PASSWORD, REDIS_PASSWORD, STORAGEBOX_PASSWORD, Secret
from brainall_ops.storage import box_access, box_reachable, secret_file, timer_job


def _guarded(body) -> None:  # type: ignore[no-untyped-def]
    # pyinfra prints its own errors as one line; anything else would be a traceback.
    try:
        body()
    except BrainallError as exc:
        raise OperationError(f"{host.name}: {exc}") from None


@deploy("BrainAll data tier (phase 5)")
def data_tier() -> None:
    _guarded(_data_tier)


def _data_tier() -> None:
    rm = rolemap_for(host.data)
    if rm.data is None:
        return
    name = host.data.brainall_name
    if name == rm.data.host:
        spec = data_spec(rm, environment_for(host.data))
        _database_host(spec)
    elif name in member_names(rm, list(rm.data.postgres.clients)):
        apt_packages(
            name="PostgreSQL and Redis clients",
            packages=["postgresql-client", "redis-tools"],
            update=True,
            cache_time=6 * 3600,
            no_recommends=True,
        )
    if rm.data.cleanup is not None and name == rm.data.cleanup.host:
        _cleanup(rm.data.cleanup)


def _database_host(spec: DataSpec) -> None:
    app_password = DB_APP_PASSWORD.require(what=f"the app role {spec.role} on {spec.host}")
    redis_password = REDIS_PASSWORD.require(what=f"Redis on {spec.host}")

    apt_packages(
        name="PostgreSQL, Redis and the backup tools",
        packages=spec.packages,
        update=True,
        cache_time=6 * 3600,
        no_recommends=True,
    )

    # PostgreSQL: Debian's postgresql.conf includes conf.d/, so ours is one file there.
    pg_conf = files.template(
        name=f"PostgreSQL settings ({spec.address}:{spec.pg_port}, memory from the VM size)",
        src=template_path("postgresql.conf.j2"),
        dest=f"{spec.pg_conf_dir}/conf.d/50-brainall.conf",
        user="postgres",
        group="postgres",
        mode="0644",
        spec=spec,
    )
    hba = files.template(
        name="pg_hba.conf: the app hosts (scram-sha-256), everyone else rejected",
        src=template_path("pg_hba.conf.j2"),
        dest=f"{spec.pg_conf_dir}/pg_hba.conf",
        user="postgres",
        group="postgres",
        mode="0640",
        spec=spec,
    )
    systemd.service(
        name=f"{spec.pg_service} restarted for its new settings",
        service=spec.pg_service,
        restarted=True,
        _if=pg_conf.did_change,
    )
    systemd.service(
        name=f"{spec.pg_service} reloads pg_hba.conf",
        service=spec.pg_service,
        reloaded=True,
        _if=lambda: hba.did_change() and not pg_conf.did_change(),
    )
    systemd.service(name=f"{spec.pg_service} running", service=spec.pg_service, running=True, enabled=True)
    postgres_role(name=f"Role {spec.role} (SCRAM password from {DB_APP_PASSWORD.variable})", role=spec.role,
                  password=app_password)
    postgres_database(name=f"Database {spec.database} owned by {spec.role}", database=spec.database, owner=spec.role)

    # Redis: the password in its own 0600 file the config includes.
    auth = secret_file(
        name=f"Redis password {REDIS_AUTH} (0600)",
        path=REDIS_AUTH,
        content=Secret(f"requirepass {redis_password.reveal()}\n"),
        owner="redis:redis",
    )
    redis_conf = files.template(
        name=f"Redis settings ({spec.address}:{spec.redis_port}, protected mode)",
        src=template_path("redis.conf.j2"),
        dest=REDIS_CONF,
        user="redis",
        group="redis",
        mode="0640",
        spec=spec,
        auth=REDIS_AUTH,
    )
    dropin = files.template(
        name="Redis starts after the network",
        src=template_path("redis-network.conf.j2"),
        dest=REDIS_DROPIN,
        mode="0644",
        create_remote_dir=True,
    )
    systemd.daemon_reload(name="systemd reads the Redis drop-in", _if=dropin.did_change)
    systemd.service(
        name="Redis restarted for its new settings",
        service="redis-server.service",
        restarted=True,
        _if=any_changed(redis_conf, auth, dropin),
    )
    systemd.service(name="Redis running", service="redis-server.service", running=True, enabled=True)

    _dump_backup(spec)


def _dump_backup(spec: DataSpec) -> None:
    """The db host's own key on the Storage Box (storage's machinery), then the dump's timer."""
    box, job = spec.box, spec.dump
    box_reachable(name=f"Storage Box {box.where} reachable", box=box)
    parts = job.remote.split(":", 1)[1].split("/")
    dirs = ["/".join(parts[: end + 1]) for end in range(len(parts))]  # parents first: sftp mkdir is not -p
    box_access(box, spec.host, STORAGEBOX_PASSWORD.read(), dirs, "Dump directory on the Storage Box")
    files.directory(name=f"Dump directory {job.local_dir}", path=job.local_dir, user="postgres",
                    group="postgres", mode="0700")
    timer_job(job, TEMPLATES / "pg-dump.sh.j2", log=DUMP_LOG)


def _cleanup(cleanup: BastionCleanup) -> None:
    timer_job(cleanup_job(cleanup), TEMPLATES / "cleanup.sh.j2", log=CLEANUP_LOG)
