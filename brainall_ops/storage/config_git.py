"""Configs to Git, as pure logic: /etc kept in git by etckeeper on each host, and a git bundle
of that repository (every ref) pushed to the Storage Box on a timer.

The box speaks SFTP/rsync over SSH but no git, hence bundles: `git clone HOST.bundle` restores
the whole history anywhere. Secrets never enter the repository: the toolkit's own secret files,
the system's (shadow, SSH host keys, TLS private keys) and Proxmox's pmxcfs (/etc/pve, backed up by
the rsync backup) are kept out by a block in /etc/.gitignore written before etckeeper's first
commit; the job refuses to push a repository whose history holds any of them anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from brainall_ops.rolemap.models import RoleMap
from brainall_ops.shared.secrets import REDIS_AUTH_FILE
from brainall_ops.storage.logic import (
    CLIENT_DIR,
    LOCK_DIR,
    SCRIPT_DIR,
    BoxEndpoint,
    TimerJob,
    box_endpoint,
    client_hosts,
    ssh_command,
)

UNIT = "brainall-config-git"
LOG = "/var/log/brainall-config-git.log"
GITIGNORE = "/etc/.gitignore"
PACKAGES = ("git", "etckeeper", "rsync", "util-linux", "openssh-client")


def _etc_relative(path: str) -> str:
    """An absolute path under /etc as an anchored gitignore pattern (`/etc/x/` -> `/x/`)."""
    assert path.startswith("/etc/"), path
    return path[len("/etc") :]


# Never in git, whatever the role map says: what the toolkit writes there holding a secret
# (the box key and CIFS password, the Redis passwords, the lab box's password), the system's
# secrets, and Proxmox's cluster filesystem (FUSE; its private keys live in /etc/pve/priv).
BUILTIN_EXCLUDES: tuple[str, ...] = (
    "/pve/",
    _etc_relative(CLIENT_DIR) + "/",
    "/brainall/storagebox-lab/",  # the lab box's password (lab/storagebox.py's PASSWORD_FILE directory)
    _etc_relative(REDIS_AUTH_FILE),  # the data tier's and the inference cache's requirepass
    "/shadow",
    "/shadow-",
    "/gshadow",
    "/gshadow-",
    "/ssh/ssh_host_*_key",
    "/ssl/private/",
)


@dataclass(frozen=True)
class ConfigGitJob(TimerJob):
    """One host's job: etckeeper commit if needed, bundle, rsync to the box, one log line."""

    host: str = ""
    remote: str = ""
    ssh: str = ""
    excludes: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        return "configs (/etc in git) as a git bundle to the Storage Box"

    @property
    def unit(self) -> str:
        return UNIT

    @property
    def script(self) -> str:
        return f"{SCRIPT_DIR}/config-git"

    @property
    def lock(self) -> str:
        return f"{LOCK_DIR}/{UNIT}.lock"

    @property
    def tag(self) -> str:
        return f"{UNIT} {self.host}"

    def gitignore_block(self) -> str:
        """The lines of our block in /etc/.gitignore (pyinfra's files.block adds the markers)."""
        return "\n".join(self.excludes)


def config_git_hosts(rm: RoleMap) -> list[str]:
    """The hosts that push their /etc, in role-map order: the section's list, or by default every
    host and VM with a Storage Box key (the storage clients and the data host)."""
    if rm.storage is None or rm.storage.config_git is None:
        return []
    section = rm.storage.config_git
    if section.hosts is not None:
        return list(section.hosts)
    keyed = set(client_hosts(rm)) | ({rm.data.host} if rm.data else set())
    order = [h.name for h in rm.hosts] + [v.name for v in rm.vms]
    return [name for name in order if name in keyed]


def config_git_job(rm: RoleMap, box: BoxEndpoint, host: str) -> ConfigGitJob | None:
    """`host`'s job, or None when it pushes no configs."""
    if host not in config_git_hosts(rm):
        return None
    assert rm.storage is not None and rm.storage.config_git is not None
    section = rm.storage.config_git
    excludes = list(BUILTIN_EXCLUDES) + [p for p in section.exclude if p not in BUILTIN_EXCLUDES]
    return ConfigGitJob(
        name="configs",
        where=f"{box.where}/{section.destination}/{host}.bundle",
        on_calendar=section.on_calendar,
        randomized_delay_s=section.randomized_delay_s,
        host=host,
        remote=box.remote(f"{section.destination}/{host}.bundle"),
        ssh=ssh_command(box),
        excludes=tuple(excludes),
    )


def config_git_job_for(rm: RoleMap, environment: str, host: str) -> ConfigGitJob | None:
    if host not in config_git_hosts(rm):
        return None
    return config_git_job(rm, box_endpoint(rm, environment), host)


def remote_dirs(rm: RoleMap) -> list[str]:
    """The bundles' directory on the box, parents first."""
    assert rm.storage is not None and rm.storage.config_git is not None
    parts = rm.storage.config_git.destination.split("/")
    return ["/".join(parts[: end + 1]) for end in range(len(parts))]
