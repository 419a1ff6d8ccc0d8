"""Phase 1, Storage Box clients as pyinfra deploys: keys, SSHFS and CIFS automounts, rsync
backups on a timer, the Ollama model move; and configs to Git (`config_git_backup`).

Runs on the hosts the role map's `storage` section names (a no-op on any other host). The box
is addressed per environment (`logic.box_endpoint`): its DNS name in production, the lab's
stand-in in the lab. The box password is read from the environment only when this host needs
it (a CIFS credentials file, or a key the box does not know yet).

Both deploys sit behind a convergence gate (brainall_ops/shared/converge.py): a no-op re-run reads one
fact per host, whose probe also logs in to the box with the host's key and checks the box's
directories, so a key or directory removed on the box side opens the gate as well.
"""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

from pyinfra import host
from pyinfra.api import OperationError, deploy
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from brainall_ops.errors import BrainallError
from brainall_ops.shared import converge
from brainall_ops.shared.apt import apt_packages
from brainall_ops.shared.converge import Gate, source_digest
from brainall_ops.shared.converge import Probe as StateProbe
from brainall_ops.shared.deploy_context import environment_for, rolemap_for
from brainall_ops.shared.secrets import STORAGEBOX_PASSWORD, Secret
from brainall_ops.storage.config_git import GITIGNORE, ConfigGitJob, config_git_job_for
from brainall_ops.storage.config_git import LOG as CONFIG_GIT_LOG
from brainall_ops.storage.config_git import PACKAGES as CONFIG_GIT_PACKAGES
from brainall_ops.storage.config_git import remote_dirs as config_git_remote_dirs
from brainall_ops.storage.facts import BoxHostKeyPinned, HostMountSupport, LocalModelsState, box_listing_command
from brainall_ops.storage.logic import (
    BACKUP_LOG,
    CIFS_CREDENTIALS,
    CLIENT_DIR,
    KEY_PATH,
    KNOWN_HOSTS,
    MOUNT_SUPPORT_COMMAND,
    REMOUNT_LOG,
    REMOUNT_STATE_DIR,
    UNIT_DIR,
    BoxEndpoint,
    ClientPlan,
    MountSupport,
    MountUnits,
    RemountJob,
    TimerJob,
    backup_job,
    box_endpoint,
    cifs_credentials,
    cifs_units,
    client_plan,
    remount_job,
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
from brainall_ops.storage.rendering import TEMPLATES, jinja_env, template_path


def _password(reason: str, required: bool) -> Secret | None:
    return STORAGEBOX_PASSWORD.require(what=reason) if required else STORAGEBOX_PASSWORD.read()


# The code and templates the operations come from: a new release declares them again once.
SOURCES = (
    *Path(__file__).parent.glob("*.py"),
    *TEMPLATES.glob("*.j2"),
    Path(converge.__file__),
)


def _job_files(job: TimerJob) -> tuple[str, ...]:
    return (job.script, f"{UNIT_DIR}/{job.unit}.service", f"{UNIT_DIR}/{job.unit}.timer")


def _mount_units(plan: ClientPlan, support: MountSupport | None = None) -> list[MountUnits]:
    """The host's mount units, in the mode its `support` allows (automount when not known)."""
    units = [sshfs_units(m, plan.box) for m in plan.sshfs] + [cifs_units(m, plan.box) for m in plan.cifs]
    return units if support is None else [u.in_mode(support.mode) for u in units]


def _remount_job_for_every_mode(plan: ClientPlan) -> RemountJob | None:
    """The remount job as it is in mount mode: its files are probed whatever the mode (absent
    under automount), so that a switch of mode opens the gate."""
    return remount_job([u.in_mode("mount") for u in _mount_units(plan)], plan.box)


def _mount_state_command(units: list[MountUnits], remount: RemountJob | None) -> str:
    """The units' state as the host's mode defines it: with /dev/autofs the automounts (their
    mounts come and go on their own); without, the mounts themselves and the remount timer."""

    def states(names: list[str]) -> str:
        return "; ".join(f"echo {n} $(systemctl is-enabled {n}) $(systemctl is-active {n})" for n in names)

    automounts = [u.automount_unit for u in units]
    mounts = [u.mount_unit for u in units] + ([f"{remount.unit}.timer"] if remount else [])
    return f"if [ -e /dev/autofs ]; then {states(automounts)}; else {states(mounts)}; fi"


def _backup_jobs(plan: ClientPlan) -> list[TimerJob]:
    return [backup_job(b, plan.box) for b in plan.backups]


def clients_probe(plan: ClientPlan) -> StateProbe:
    """Everything `storage_clients` manages on a host, and its access to the box."""
    box = plan.box
    units = _mount_units(plan)
    jobs = _backup_jobs(plan)
    files_ = [CLIENT_DIR, KEY_PATH, f"{KEY_PATH}.pub", KNOWN_HOSTS]
    files_ += [CIFS_CREDENTIALS] if plan.cifs else []
    files_ += [f"{UNIT_DIR}/{name}" for u in units for name in (u.mount_unit, u.automount_unit)]
    remount = _remount_job_for_every_mode(plan)
    files_ += [path for job in [*jobs, *([remount] if remount else [])] for path in _job_files(job)]
    commands = [BoxHostKeyPinned().command(box.known_hosts_name), box_listing_command(box, tuple(plan.remote_dirs))]
    if units:
        # what the host offers decides the mounts' mode: a change there opens the gate too
        commands += [MOUNT_SUPPORT_COMMAND, _mount_state_command(units, remount)]
    if plan.ollama is not None:
        files_.append(plan.ollama.script)
        commands.append(LocalModelsState().command(plan.ollama.source))
    return StateProbe(
        files=tuple(files_),
        packages=tuple(plan.packages),
        # timers (their services come and go on their own); the mounts by mode, in `commands`
        units=tuple(f"{job.unit}.timer" for job in jobs),
        commands=tuple(commands),
    )


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
    desired = {
        "plan": plan,
        # a new password must reach the credentials file; only its digest enters the (root-only) record
        "cifs": hashlib.sha256(cifs_credentials(box.user, password.reveal()).encode()).hexdigest()
        if plan.cifs and password is not None
        else None,
        "sources": source_digest(SOURCES),
    }
    gate = Gate("storage-clients", desired, clients_probe(plan))
    if gate.open:
        _client_operations(plan, password)
    gate.close()


def _client_operations(plan: ClientPlan, password: Secret | None) -> None:
    box = plan.box
    name = plan.host
    box_reachable(name=f"Storage Box {box.where} reachable", box=box)
    apt_packages(
        name="Storage Box client packages",
        packages=plan.packages,
        update=True,
        cache_time=6 * 3600,
        no_recommends=True,
    )
    box_access(box, name, password, plan.remote_dirs, "Directories on the Storage Box")

    support = host.get_fact(HostMountSupport) if (plan.sshfs or plan.cifs) else None
    _mounts(plan, password, support)
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


def box_access(box: BoxEndpoint, name: str, password: Secret | None, remote_dirs: list[str], dirs_label: str) -> None:
    """This host's own way onto the box: its ed25519 key (installed on the box with the box
    password the first time only), the box's host key pinned, and the directories it writes to."""
    files.directory(name=f"{CLIENT_DIR} (root only)", path=CLIENT_DIR, user="root", group="root", mode="0700")
    ssh_keypair(name="ed25519 key for the Storage Box", path=KEY_PATH, comment=f"brainall-storagebox@{name}")
    box_host_key_pinned(name=f"Storage Box host key pinned ({box.known_hosts_name})", box=box)
    box_key_installed(name=f"Key installed on the Storage Box ({box.login})", box=box, password=password)
    if remote_dirs:
        box_directories(name=dirs_label, box=box, paths=remote_dirs)


def _mount_unit_files(units: MountUnits) -> list:
    """The mount unit and, in automount mode, its automount; in mount mode an automount left by an
    earlier run (the host had autofs then) is stopped, disabled and removed first."""
    mount = files.template(
        name=f"{units.mount_unit}",
        src=template_path("mount.j2"),
        dest=f"{UNIT_DIR}/{units.mount_unit}",
        mode="0644",
        units=units,
    )
    automount_path = f"{UNIT_DIR}/{units.automount_unit}"
    if units.mode == "automount":
        automount = files.template(
            name=f"{units.automount_unit}",
            src=template_path("automount.j2"),
            dest=automount_path,
            mode="0644",
            units=units,
        )
    else:
        systemd.service(
            name=f"{units.automount_unit} stopped and disabled (no autofs here)",
            service=units.automount_unit,
            running=False,
            enabled=False,
        )
        automount = files.file(name=f"{units.automount_unit} removed", path=automount_path, present=False)
    return [mount, automount]


def _mounts(plan: ClientPlan, password: Secret | None, support: MountSupport | None) -> None:
    all_units = _mount_units(plan, support)
    remount = remount_job(all_units, plan.box)
    if not all_units:
        return
    assert support is not None  # read whenever the plan has mounts
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
        refresh = [mount_op] if units.kind == "sshfs" or credentials is None else [mount_op, credentials]
        mountable = units.mode == "automount" or units.filesystem in support.filesystems
        if units.mode == "automount":
            systemd.service(
                name=f"{units.automount_unit} enabled and started",
                service=units.automount_unit,
                running=True,
                enabled=True,
            )
        else:
            systemd.service(
                name=f"{units.mount_unit} enabled"
                + (" and mounted" if mountable else f" (not mounted: this kernel cannot mount {units.filesystem})"),
                service=units.mount_unit,
                # Without the filesystem a start can only fail: the unit waits, enabled, and the
                # remount timer mounts it once the kernel can (the module loaded, a new kernel).
                running=True if mountable else None,
                enabled=True,
            )
        if mountable:
            # A mount already up keeps its old options until remounted; `restarted` does nothing
            # when it was not mounted (automount: it mounts with the new unit on next access).
            systemd.service(
                name=f"{units.mount_unit} remounted with its new settings if mounted",
                service=units.mount_unit,
                running=None,
                restarted=True,
                _if=any_changed(*refresh),
            )
    if remount is not None:
        timer_job(remount, TEMPLATES / "remount.sh.j2", log=REMOUNT_LOG, state_dir=REMOUNT_STATE_DIR)
    else:
        _remount_job_removed(_remount_job_for_every_mode(plan))


def timer_job(job: TimerJob, script_src: Path, **context: object) -> None:
    """A timer job's script (`script_src`, which may import the shared `_job.sh.j2` macros), its
    service and timer (the shared `job.*.j2`), the timer enabled."""
    script = files.template(
        name=f"Script {job.script}",
        src=str(script_src),
        dest=job.script,
        mode="0700",
        create_remote_dir=True,
        jinja_env_kwargs=jinja_env(script_src.parent),
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


def _remount_job_removed(job: RemountJob | None) -> None:
    """The remount timer of an earlier run in mount mode, gone now that the host has autofs."""
    if job is None:
        return
    systemd.service(
        name=f"{job.unit}.timer stopped and disabled (autofs here)",
        service=f"{job.unit}.timer",
        running=False,
        enabled=False,
    )
    removed = [files.file(name=f"{path} removed", path=path, present=False) for path in _job_files(job)]
    systemd.daemon_reload(name=f"systemd forgets {job.unit}", _if=any_changed(*removed))


def _backups(plan: ClientPlan) -> None:
    for backup in _backup_jobs(plan):
        timer_job(backup, TEMPLATES / "backup.sh.j2", log=BACKUP_LOG)


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
    box = box_endpoint(rm, environment_for(host.data))
    remote_dirs = tuple(config_git_remote_dirs(rm))
    probe = StateProbe(
        files=(GITIGNORE, *_job_files(job)),
        packages=CONFIG_GIT_PACKAGES,
        units=(f"{job.unit}.timer",),
        commands=(box_listing_command(box, remote_dirs),),
    )
    gate = Gate("config-git", {"job": job, "dirs": remote_dirs, "sources": source_digest(SOURCES)}, probe)
    if gate.open:
        _config_git_operations(job, box, remote_dirs)
    gate.close()


def _config_git_operations(job: ConfigGitJob, box: BoxEndpoint, remote_dirs: tuple[str, ...]) -> None:
    box_directories(name="Configs directory on the Storage Box", box=box, paths=list(remote_dirs))
    # Before etckeeper exists: its first commit (at install) already leaves these out.
    # etckeeper keeps lines outside its own section when it rewrites the file.
    marked_block(
        name=f"{GITIGNORE}: secrets and /etc/pve kept out of git",
        path=GITIGNORE,
        lines=list(job.excludes),
        begin="# BEGIN brainall-ops: kept out of git (secrets, /etc/pve); do not edit",
        end="# END brainall-ops",
    )
    apt_packages(
        name="git and etckeeper",
        packages=list(CONFIG_GIT_PACKAGES),
        update=True,
        cache_time=6 * 3600,
        no_recommends=True,
    )
    timer_job(job, TEMPLATES / "config-git.sh.j2", log=CONFIG_GIT_LOG)
