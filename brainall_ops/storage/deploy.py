"""Phase 1, Storage Box clients as pyinfra deploys: keys, SSHFS and CIFS automounts, rsync
backups on a timer, the Ollama model move; and configs to Git (`config_git_backup`).

Runs on the hosts the role map's `storage` section names (a no-op on any other host). The box
is addressed per environment (`logic.box_endpoint`): its DNS name in production, the lab's
stand-in in the lab. The box password is read from the environment only when this host needs
it (a CIFS credentials file, or a key the box does not know yet).
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import OperationError, deploy
from pyinfra.operations import apt, files, systemd
from pyinfra.operations.util import any_changed

from brainall_ops.deploy_context import environment_for, rolemap_for
from brainall_ops.errors import BrainallError
from brainall_ops.storage.config_git import GITIGNORE, config_git_job_for
from brainall_ops.storage.config_git import LOG as CONFIG_GIT_LOG
from brainall_ops.storage.config_git import PACKAGES as CONFIG_GIT_PACKAGES
from brainall_ops.storage.config_git import remote_dirs as config_git_remote_dirs
from brainall_ops.storage.logic import (
    BACKUP_LOG,
    CIFS_CREDENTIALS,
    CLIENT_DIR,
    KEY_PATH,
    UNIT_DIR,
    ClientPlan,
    MountUnits,
    TimerJob,
    backup_job,
    box_endpoint,
    cifs_credentials,
    cifs_units,
    client_plan,
    sshfs_units,
)
from brainall_ops.storage.operations import (
    box_directories,
    box_host_key_pinned,
    box_key_installed,
    box_reachable,
    marked_block,
    ollama_models_moved,
    secret_file,
    ssh_keypair,
)
from brainall_ops.storage.rendering import jinja_env, template_path
from brainall_ops.storage.secrets import Secret, box_password


def _password(reason: str, required: bool) -> Secret | None:
    password = box_password()
    if password is None and required:
        raise BrainallError(
            f"{reason} needs the Storage Box password: set BRAINALL_STORAGEBOX_PASSWORD "
            "or BRAINALL_STORAGEBOX_PASSWORD_FILE (a file outside the repo, mode 0600)"
        )
    return password


@deploy("BrainAll Storage Box clients")
def storage_clients() -> None:
    # pyinfra prints its own errors as one line; anything else would be a traceback.
    try:
        _storage_clients()
    except BrainallError as exc:
        raise OperationError(f"{host.name}: {exc}") from None


def _storage_clients() -> None:
    rm = rolemap_for(host.data)
    plan = client_plan(rm, environment_for(host.data), host.data.brainall_name)
    if plan is None:
        return
    box = plan.box
    name = plan.host
    password = _password(f"CIFS on {name}", required=bool(plan.cifs))

    box_reachable(name=f"Storage Box {box.where} reachable", box=box)
    apt.packages(
        name="Storage Box client packages",
        packages=plan.packages,
        update=True,
        cache_time=6 * 3600,
        no_recommends=True,
    )
    files.directory(name=f"{CLIENT_DIR} (root only)", path=CLIENT_DIR, user="root", group="root", mode="0700")
    ssh_keypair(name="ed25519 key for the Storage Box", path=KEY_PATH, comment=f"brainall-storagebox@{name}")
    box_host_key_pinned(name=f"Storage Box host key pinned ({box.known_hosts_name})", box=box)
    box_key_installed(name=f"Key installed on the Storage Box ({box.login})", box=box, password=password)
    if plan.remote_dirs:
        box_directories(name="Directories on the Storage Box", box=box, paths=plan.remote_dirs)

    _mounts(plan, password)
    _backups(plan)
    if plan.ollama is not None:
        move = plan.ollama
        files.template(
            name="Ollama model move script",
            src=template_path("ollama-move.sh.j2"),
            dest=move.script,
            mode="0700",
            move=move,
            q=shlex.quote,
        )
        ollama_models_moved(
            name=f"Ollama models {move.source} on the Storage Box",
            script=move.script,
            source=move.source,
            target=move.target,
        )


def _mount_unit_files(units: MountUnits) -> list:
    mount = files.template(
        name=f"{units.mount_unit}",
        src=template_path("mount.j2"),
        dest=f"{UNIT_DIR}/{units.mount_unit}",
        mode="0644",
        units=units,
    )
    automount = files.template(
        name=f"{units.automount_unit}",
        src=template_path("automount.j2"),
        dest=f"{UNIT_DIR}/{units.automount_unit}",
        mode="0644",
        units=units,
    )
    return [mount, automount]


def _mounts(plan: ClientPlan, password: Secret | None) -> None:
    all_units = [sshfs_units(m, plan.box) for m in plan.sshfs] + [cifs_units(m, plan.box) for m in plan.cifs]
    if not all_units:
        return
    credentials = None
    if plan.cifs:
        assert password is not None  # required above
        credentials = secret_file(
            name=f"CIFS credentials {CIFS_CREDENTIALS} (0600)",
            path=CIFS_CREDENTIALS,
            content=Secret(cifs_credentials(plan.box.user, password.reveal())),
        )
    written = {units.where: _mount_unit_files(units) for units in all_units}
    changed = [op for ops in written.values() for op in ops]
    systemd.daemon_reload(name="systemd reads the mount units", _if=any_changed(*changed))
    for units in all_units:
        mount_op = written[units.where][0]
        systemd.service(
            name=f"{units.automount_unit} enabled and started",
            service=units.automount_unit,
            running=True,
            enabled=True,
        )
        # A mount already up keeps its old options until remounted; `restarted` does nothing when it
        # is not mounted (the automount mounts it with the new unit on next access).
        refresh = [mount_op] if units.kind == "sshfs" or credentials is None else [mount_op, credentials]
        systemd.service(
            name=f"{units.mount_unit} remounted with its new settings if mounted",
            service=units.mount_unit,
            running=None,
            restarted=True,
            _if=any_changed(*refresh),
        )


def _timer_job(job: TimerJob, script_template: str, **context: object) -> None:
    """A timer job's script, service and timer (the shared `job.*.j2`), the timer enabled."""
    script = files.template(
        name=f"Script {job.script}",
        src=template_path(script_template),
        dest=job.script,
        mode="0700",
        create_remote_dir=True,
        jinja_env_kwargs=jinja_env(),
        job=job,
        q=shlex.quote,
        **context,
    )
    service = files.template(
        name=f"{job.unit}.service",
        src=template_path("job.service.j2"),
        dest=f"{UNIT_DIR}/{job.unit}.service",
        mode="0644",
        job=job,
    )
    timer = files.template(
        name=f"{job.unit}.timer",
        src=template_path("job.timer.j2"),
        dest=f"{UNIT_DIR}/{job.unit}.timer",
        mode="0644",
        job=job,
    )
    systemd.daemon_reload(name=f"systemd reads {job.unit}", _if=any_changed(script, service, timer))
    systemd.service(
        name=f"{job.unit}.timer enabled and started",
        service=f"{job.unit}.timer",
        running=True,
        enabled=True,
    )


def _backups(plan: ClientPlan) -> None:
    for backup in plan.backups:
        _timer_job(backup_job(backup, plan.box), "backup.sh.j2", log=BACKUP_LOG)


@deploy("BrainAll configs to Git (/etc by etckeeper, bundled to the Storage Box)")
def config_git_backup() -> None:
    """On a host the role map's `storage.config_git` names (a no-op elsewhere). Runs after the
    deploy that gives the host its Storage Box key: storage_clients (phase 1), data_tier (phase 5)."""
    try:
        _config_git_backup()
    except BrainallError as exc:
        raise OperationError(f"{host.name}: {exc}") from None


def _config_git_backup() -> None:
    rm = rolemap_for(host.data)
    job = config_git_job_for(rm, environment_for(host.data), host.data.brainall_name)
    if job is None:
        return
    box_directories(name="Configs directory on the Storage Box", box=box_endpoint(rm, environment_for(host.data)),
                    paths=config_git_remote_dirs(rm))
    # Before etckeeper exists: its first commit (at install) already leaves these out.
    # etckeeper keeps lines outside its own section when it rewrites the file.
    marked_block(
        name=f"{GITIGNORE}: secrets and /etc/pve kept out of git",
        path=GITIGNORE,
        lines=list(job.excludes),
        begin="# BEGIN brainall-ops: kept out of git (secrets, /etc/pve); do not edit",
        end="# END brainall-ops",
    )
    apt.packages(
        name="git and etckeeper",
        packages=list(CONFIG_GIT_PACKAGES),
        update=True,
        cache_time=6 * 3600,
        no_recommends=True,
    )
    _timer_job(job, "config-git.sh.j2", log=CONFIG_GIT_LOG)
