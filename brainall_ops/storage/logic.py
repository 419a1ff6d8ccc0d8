"""Storage Box clients, as pure logic: where the box answers, which files each client host gets.

Everything here is computed from the role map and the environment; nothing touches a host.
The deploy (`deploy.py`) turns these into pyinfra operations, and the unit tests check them
directly.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Literal

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.environment import PRODUCTION
from brainall_ops.rolemap.models import CIFSMount, RoleMap, RsyncBackup, SSHFSMount
from brainall_ops.shared.timer_jobs import TimerJob

# Everything the clients keep for the box, readable by root only.
CLIENT_DIR = "/etc/brainall/storagebox"
KEY_PATH = f"{CLIENT_DIR}/id_ed25519"
KNOWN_HOSTS = f"{CLIENT_DIR}/known_hosts"
CIFS_CREDENTIALS = f"{CLIENT_DIR}/cifs-credentials"
SCRIPT_DIR = "/usr/local/lib/brainall-storage"
UNIT_DIR = "/etc/systemd/system"
LOCK_DIR = "/run/lock"
BACKUP_LOG = "/var/log/brainall-storage-backup.log"
CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class BoxEndpoint:
    """Where the Storage Box answers in one environment, and as whom the clients log in."""

    address: str
    port: int
    user: str

    @property
    def where(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def login(self) -> str:
        return f"{self.user}@{self.address}"

    @property
    def known_hosts_name(self) -> str:
        """The name ssh looks the host key up by (`[host]:port` off port 22)."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def remote(self, path: str) -> str:
        """An rsync/sshfs remote spec for a path relative to the box user's home."""
        return f"{self.login}:{path}"


def box_endpoint(rm: RoleMap, environment: str) -> BoxEndpoint:
    """The box of `environment`: its DNS name in production, the environment's address elsewhere.

    A test environment must give the box an address of its own: falling back to the production
    name would send a lab's mounts and backups to the real box.
    """
    if rm.storage is None:
        raise BrainallError("the role map has no storage section")
    box = rm.storage.box
    override = rm.environments[environment].hosts.get(box.name) if environment in rm.environments else None
    if environment == PRODUCTION:
        address = str(override.address) if override and override.address else box.hostname
    elif override is None or override.address is None:
        raise BrainallError(
            f"environment {environment!r} gives the Storage Box no address "
            f"(environments.{environment}.hosts.{box.name}.address): refusing to use the production box"
        )
    else:
        address = str(override.address)
    port = override.ssh_port if override and override.ssh_port else box.ssh_port
    return BoxEndpoint(address=address, port=port, user=box.user)


# --------------------------------------------------------------------------- ssh
def ssh_options(box: BoxEndpoint, *, alive_interval_s: int = 15, alive_count_max: int = 3) -> list[tuple[str, str]]:
    """ssh_config options every client connection uses: this host's key, the pinned host key,
    and no prompt of any kind (a mount or a backup must fail, never wait)."""
    return [
        ("Port", str(box.port)),
        ("IdentityFile", KEY_PATH),
        ("IdentitiesOnly", "yes"),
        ("UserKnownHostsFile", KNOWN_HOSTS),
        ("GlobalKnownHostsFile", "/dev/null"),
        ("StrictHostKeyChecking", "yes"),
        ("BatchMode", "yes"),
        ("PasswordAuthentication", "no"),
        ("KbdInteractiveAuthentication", "no"),
        ("ConnectTimeout", str(CONNECT_TIMEOUT_S)),
        ("ServerAliveInterval", str(alive_interval_s)),
        ("ServerAliveCountMax", str(alive_count_max)),
    ]


def ssh_command(box: BoxEndpoint, **kwargs: int) -> str:
    """The `ssh ...` command line for rsync's `-e` (no host: rsync adds it)."""
    return " ".join(["ssh", *(f"-o {key}={value}" for key, value in ssh_options(box, **kwargs))])


# --------------------------------------------------------------------------- probing the box
ProbeState = Literal["ok", "no-key", "denied", "host-key", "unreachable", "error"]


@dataclass(frozen=True)
class Probe:
    """What a client host saw when it logged in to the box with its key."""

    state: ProbeState
    detail: str = ""


_UNREACHABLE = (
    "connection refused",
    "connection timed out",
    "no route to host",
    "network is unreachable",
    "could not resolve hostname",
    "name or service not known",
    "temporary failure in name resolution",
    "connection closed by",
    "connection reset",
)


def parse_probe(lines: list[str]) -> Probe:
    """Read the output of the login probe: a `rc=N` line, then what ssh/sftp printed."""
    if not lines:
        return Probe("error", "the probe printed nothing")
    first, rest = lines[0].strip(), [line.strip() for line in lines[1:] if line.strip()]
    if first == "no-key":
        return Probe("no-key")
    match = re.fullmatch(r"rc=(\d+)", first)
    if not match:
        return Probe("error", f"unexpected probe output: {first}")
    text = " ".join(rest).lower()
    last = rest[-1] if rest else ""
    if match.group(1) == "0":
        return Probe("ok")
    if "host key verification failed" in text or "remote host identification has changed" in text:
        return Probe("host-key", last)
    if "permission denied" in text or "too many authentication failures" in text:
        return Probe("denied", last)
    if any(marker in text for marker in _UNREACHABLE):
        return Probe("unreachable", last)
    return Probe("error", last or f"exit status {match.group(1)}")


def parse_port_check(lines: list[str]) -> Probe:
    """Read the output of the TCP check (`open`, or `closed` and the reason)."""
    text = [line.strip() for line in lines if line.strip()]
    if text[:1] == ["open"]:
        return Probe("ok")
    reason = text[-1] if len(text) > 1 else "no answer"
    # bash prints "bash: connect: Connection refused" and a second line naming /dev/tcp
    for line in text[1:]:
        lower = line.lower()
        if any(marker in lower for marker in _UNREACHABLE) or "timed out" in lower:
            reason = line.split(": ")[-1]
            break
    return Probe("unreachable", reason)


# --------------------------------------------------------------------------- systemd units
_UNIT_SAFE = re.compile(r"[A-Za-z0-9:_.]")


def unit_name_for_path(path: str, suffix: str) -> str:
    """`systemd-escape --path --suffix=SUFFIX PATH`: the unit name systemd requires for a mount point."""
    parts = [part for part in path.split("/") if part]
    if not parts:
        return f"-.{suffix}"
    out = []
    for index, char in enumerate("/".join(parts)):
        if char == "/":
            out.append("-")
        elif _UNIT_SAFE.fullmatch(char) and not (index == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out) + f".{suffix}"


MountMode = Literal["automount", "mount"]


@dataclass(frozen=True)
class MountSupport:
    """What a host's kernel and systemd offer the Storage Box mounts (the `MountSupport` fact).

    systemd runs automount units only where `/dev/autofs` exists (its own check): a kernel built
    without autofs has none, and a container may not be given the device. Such a host gets plain
    mount units instead (`mode == "mount"`). `filesystems`: which of fuse and cifs the kernel can
    mount now or load as a module.
    """

    autofs: bool
    why_not_autofs: str = ""  # why there is no automount, in words ("" when there is)
    filesystems: frozenset[str] = frozenset()

    @property
    def mode(self) -> MountMode:
        return "automount" if self.autofs else "mount"

    def describe(self) -> str:
        """One line: the mode this host gets, and why."""
        if self.autofs:
            return "automount (/dev/autofs present): mounted on first access"
        return (
            f"mount units pulled in by remote-fs.target (nofail, mount timeout) and a retry timer: "
            f"{self.why_not_autofs}"
        )


# What the MountSupport fact's command prints, one word per line.
_AUTOFS_REASONS = {
    "no-autofs-device": "no /dev/autofs: the kernel has autofs but this host was not given the device (a container?)",
    "no-autofs-kernel": "no /dev/autofs: the kernel is built without autofs (not in /proc/filesystems)",
}

MOUNT_SUPPORT_COMMAND = (
    "if [ -e /dev/autofs ]; then echo autofs; "
    "elif grep -qw autofs /proc/filesystems 2>/dev/null; then echo no-autofs-device; "
    "else echo no-autofs-kernel; fi; "
    "[ -e /dev/fuse ] && echo fs:fuse; "
    # cifs: loaded, or a module the kernel can load when mount.cifs asks for it
    "{ grep -qw cifs /proc/filesystems 2>/dev/null || "
    "find /lib/modules/$(uname -r) -name 'cifs.ko*' 2>/dev/null | grep -q .; } && echo fs:cifs; true"
)


def parse_mount_support(lines: list[str]) -> MountSupport:
    words = [line.strip() for line in lines if line.strip()]
    filesystems = frozenset(w.removeprefix("fs:") for w in words if w.startswith("fs:"))
    autofs = "autofs" in words
    reason = next((_AUTOFS_REASONS[w] for w in words if w in _AUTOFS_REASONS), "")
    if not autofs and not reason:
        reason = "the host did not say whether it has /dev/autofs"
    return MountSupport(autofs=autofs, why_not_autofs=reason, filesystems=filesystems)


@dataclass(frozen=True)
class MountUnits:
    """A mount unit and its automount, with what the templates need to write them.

    `mode`: "automount" (the automount is enabled and mounts on first access; the mount unit is
    static) or "mount" (no autofs on the host: the mount unit itself is enabled, `nofail`, and the
    remount timer brings it back when the box returns).
    """

    kind: Literal["sshfs", "cifs"]
    what: str
    where: str
    fs_type: str
    options: str
    timeout_s: int
    description: str
    mode: MountMode = "automount"

    @property
    def mount_unit(self) -> str:
        return unit_name_for_path(self.where, "mount")

    @property
    def automount_unit(self) -> str:
        return unit_name_for_path(self.where, "automount")

    @property
    def enabled_unit(self) -> str:
        """The unit remote-fs.target pulls in: the automount, or (without autofs) the mount itself."""
        return self.automount_unit if self.mode == "automount" else self.mount_unit

    @property
    def filesystem(self) -> str:
        """The kernel filesystem the mount needs (MountSupport.filesystems)."""
        return "fuse" if self.kind == "sshfs" else "cifs"

    @property
    def unit_options(self) -> str:
        # nofail: a mount that fails never fails remote-fs.target (mount.fuse and mount.cifs skip it)
        return self.options if self.mode == "automount" else f"{self.options},nofail"

    def in_mode(self, mode: MountMode) -> MountUnits:
        return replace(self, mode=mode)


def sshfs_units(mount: SSHFSMount, box: BoxEndpoint) -> MountUnits:
    options = [
        "_netdev",
        # idmap=user: the box user's files show as root's here, not as whichever local uid
        # happens to share the box's number.
        "idmap=user",
        "reconnect",
        f"port={box.port}",
    ]
    options += [
        f"{key}={value}"
        for key, value in ssh_options(
            box, alive_interval_s=mount.server_alive_interval_s, alive_count_max=mount.server_alive_count_max
        )
        if key != "Port"
    ]
    if mount.allow_other:
        options.append("allow_other")
    purpose = f" ({mount.purpose})" if mount.purpose else ""
    return MountUnits(
        kind="sshfs",
        what=box.remote(mount.remote_path),
        where=mount.mount_point,
        fs_type="fuse.sshfs",
        options=",".join(options),
        timeout_s=mount.mount_timeout_s,
        description=f"Storage Box {mount.remote_path} over SSHFS{purpose}",
    )


def cifs_unc(mount: CIFSMount, box: BoxEndpoint) -> str:
    return f"//{box.address}/{mount.share}" + (f"/{mount.subdir}" if mount.subdir else "")


def cifs_units(mount: CIFSMount, box: BoxEndpoint) -> MountUnits:
    options = [
        "_netdev",
        f"credentials={CIFS_CREDENTIALS}",
        f"vers={mount.smb_version}",
        f"uid={mount.uid}",
        f"gid={mount.gid}",
        f"file_mode={mount.file_mode}",
        f"dir_mode={mount.dir_mode}",
        f"iocharset={mount.iocharset}",
    ]
    if mount.seal:
        options.append("seal")
    purpose = f" ({mount.purpose})" if mount.purpose else ""
    where = f"{mount.share}/{mount.subdir}" if mount.subdir else mount.share
    return MountUnits(
        kind="cifs",
        what=cifs_unc(mount, box),
        where=mount.mount_point,
        fs_type="cifs",
        options=",".join(options),
        timeout_s=mount.mount_timeout_s,
        description=f"Storage Box share {where} over CIFS{purpose}",
    )


def cifs_credentials(user: str, password: str) -> str:
    """The credentials file mount.cifs and smbclient -A both read."""
    return f"username={user}\npassword={password}\n"


# --------------------------------------------------------------------------- remount
REMOUNT_LOG = "/var/log/brainall-storage-remount.log"
REMOUNT_STATE_DIR = "/run/brainall-storage-remount"  # each mount's last state: log only what changed


@dataclass(frozen=True)
class RemountJob(TimerJob):
    """Without autofs nothing mounts a Storage Box share again once it has dropped (the box was
    down at boot, restarted, or the SSHFS process died): this timer checks every mount-mode unit
    and starts it again, logging one line only when a mount's state changes."""

    mounts: tuple[MountUnits, ...] = ()

    @property
    def description(self) -> str:
        return "Storage Box mounts brought back when the box answers again"

    @property
    def tag(self) -> str:
        return "brainall-storage-remount"

    @property
    def unit(self) -> str:
        return "brainall-storage-remount"

    @property
    def script(self) -> str:
        return f"{SCRIPT_DIR}/remount"

    @property
    def lock(self) -> str:
        return f"{LOCK_DIR}/brainall-storage-remount.lock"


REMOUNT_EVERY = "*:*:0/30"  # every 30 s: the bound on how long a mount stays down once the box is back


def remount_job(units: list[MountUnits], box: BoxEndpoint) -> RemountJob | None:
    """The retry timer for the units in mount mode, or None when every unit has autofs."""
    mounts = tuple(u for u in units if u.mode == "mount")
    if not mounts:
        return None
    return RemountJob(name="remount", where=box.where, on_calendar=REMOUNT_EVERY, randomized_delay_s=0, mounts=mounts)


# --------------------------------------------------------------------------- backups
@dataclass(frozen=True)
class BackupJob(TimerJob):
    """One rsync backup: its script, its service and timer."""

    sources: tuple[str, ...] = ()
    remote: str = ""
    ssh: str = ""
    excludes: tuple[str, ...] = field(default=())

    @property
    def description(self) -> str:
        return f"rsync backup {self.name} to the Storage Box"

    @property
    def tag(self) -> str:
        return f"brainall-backup {self.name}"

    @property
    def unit(self) -> str:
        return f"brainall-backup-{self.name}"

    @property
    def script(self) -> str:
        return f"{SCRIPT_DIR}/backup-{self.name}"

    @property
    def lock(self) -> str:
        return f"{LOCK_DIR}/brainall-backup-{self.name}.lock"

    def rsync_command(self) -> str:
        """The rsync of every present source (passed as "$@") into the destination, full paths kept."""
        parts = ["rsync", "-rlpt", "--relative", "--partial", "--stats", "--no-human-readable"]
        parts += [f"--exclude={shlex.quote(pattern)}" for pattern in self.excludes]
        parts += ["-e", shlex.quote(self.ssh), '"$@"', shlex.quote(self.remote + "/")]
        return " ".join(parts)


def backup_job(backup: RsyncBackup, box: BoxEndpoint) -> BackupJob:
    return BackupJob(
        name=backup.name,
        sources=tuple(backup.sources),
        remote=box.remote(backup.destination),
        where=f"{box.where}/{backup.destination}",
        ssh=ssh_command(box),
        on_calendar=backup.on_calendar,
        randomized_delay_s=backup.randomized_delay_s,
        excludes=tuple(backup.exclude),
    )


# --------------------------------------------------------------------------- ollama
@dataclass(frozen=True)
class OllamaMove:
    """Copy `source` to the box, verify, then make `source` a link to `target` (the SSHFS view)."""

    source: str
    remote: str
    target: str
    service: str
    ssh: str
    mount_point: str = ""  # the SSHFS mount `target` lies under: the move refuses while it is not mounted

    @property
    def script(self) -> str:
        return f"{SCRIPT_DIR}/ollama-models-to-storagebox"


def ollama_move(rm: RoleMap, box: BoxEndpoint) -> OllamaMove | None:
    if rm.storage is None or rm.storage.ollama is None:
        return None
    move = rm.storage.ollama
    source = move.source or (rm.inference.ollama_models_dir if rm.inference else None)
    service = move.service or (rm.inference.ollama_service if rm.inference else "ollama")
    if source is None:
        raise BrainallError("storage.ollama: no source directory (and no inference.ollama_models_dir)")
    for mount in rm.storage.sshfs:
        if mount.host != move.host:
            continue
        if move.remote_path == mount.remote_path:
            target = mount.mount_point
        elif move.remote_path.startswith(mount.remote_path + "/"):
            target = mount.mount_point + move.remote_path[len(mount.remote_path) :]
        else:
            continue
        return OllamaMove(
            source=source,
            remote=box.remote(move.remote_path),
            target=target,
            service=service,
            ssh=ssh_command(box),
            mount_point=mount.mount_point,
        )
    raise BrainallError(f"storage.ollama: {move.remote_path!r} is under no SSHFS mount of {move.host!r}")


def parse_listing(lines: list[str]) -> tuple[int, int]:
    """(files, bytes) of regular files in `rsync --list-only --no-human-readable` output."""
    files = total = 0
    for line in lines:
        parts = line.split(None, 4)
        if len(parts) == 5 and parts[0].startswith("-"):
            files += 1
            total += int(parts[1].replace(",", ""))
    return files, total


# --------------------------------------------------------------------------- per host
@dataclass(frozen=True)
class ClientPlan:
    """What one host needs from the box."""

    host: str
    box: BoxEndpoint
    sshfs: tuple[SSHFSMount, ...]
    cifs: tuple[CIFSMount, ...]
    backups: tuple[RsyncBackup, ...]
    ollama: OllamaMove | None

    @property
    def packages(self) -> list[str]:
        packages = ["openssh-client"]
        if self.sshfs:
            packages.append("sshfs")
        if self.cifs:
            packages.append("cifs-utils")
        if self.backups or self.ollama:
            packages += ["rsync", "util-linux"]  # util-linux: flock
        return packages

    @property
    def remote_dirs(self) -> list[str]:
        """Directories on the box the mounts and backups need, parents first (sftp mkdir is not -p)."""
        wanted = [m.remote_path for m in self.sshfs]
        wanted += [m.subdir for m in self.cifs if m.subdir]
        wanted += [b.destination for b in self.backups]
        dirs: list[str] = []
        for path in wanted:
            parts = path.split("/")
            for end in range(1, len(parts) + 1):
                prefix = "/".join(parts[:end])
                if prefix not in dirs:
                    dirs.append(prefix)
        return dirs


def client_plan(rm: RoleMap, environment: str, host: str) -> ClientPlan | None:
    """What `host` needs, or None when the role map names it nowhere in `storage`."""
    if rm.storage is None:
        return None
    storage = rm.storage
    sshfs = tuple(m for m in storage.sshfs if m.host == host)
    cifs = tuple(m for m in storage.cifs if m.host == host)
    backups = tuple(b for b in storage.backups if b.host == host)
    wants_ollama = storage.ollama is not None and storage.ollama.host == host
    if not (sshfs or cifs or backups or wants_ollama):
        return None
    box = box_endpoint(rm, environment)
    return ClientPlan(
        host=host,
        box=box,
        sshfs=sshfs,
        cifs=cifs,
        backups=backups,
        ollama=ollama_move(rm, box) if wants_ollama else None,
    )


def client_hosts(rm: RoleMap) -> list[str]:
    """Every host the storage section names, in role-map order."""
    if rm.storage is None:
        return []
    named = {m.host for m in [*rm.storage.sshfs, *rm.storage.cifs, *rm.storage.backups]}
    if rm.storage.ollama:
        named.add(rm.storage.ollama.host)
    order = [h.name for h in rm.hosts] + [v.name for v in rm.vms]
    return [name for name in order if name in named]
