"""The lab hosts' Debian bookworm root filesystem: built once with debootstrap, then cached.

Two caches live in the machine-wide cache dir (default /var/cache/brainall-ops, so they survive
fresh clones of the repo, which is how CI runs):

- `base-<key>.tar.zst`: the plain debootstrap tree, keyed by the debootstrap inputs only, so a
  change to the customization below costs seconds, not a 90 s debootstrap;
- `rootfs-<key>.tar.zst`: the customized tree, keyed by the whole recipe.

The customized tree is extracted once to `rootfs/<key>/` and used read-only as the lower layer
of every host's overlay. Nothing per host or per lab (SSH key, hostname, address) is baked in:
the runtime writes those into each host's overlay upper dir, so one cached tree serves any lab.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from brainall_ops.errors import BrainallError
from brainall_ops.lab.model import APT_PROXY_URL
from brainall_ops.lab.system import LabCommandError, mounts, mounts_under, remove_tree, run, unmount

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("/var/cache/brainall-ops")
CACHE_DIR_ENV = "BRAINALL_CACHE_DIR"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
LAB_KEY_NAME = "id_ed25519"

# Bump when the meaning of the build steps below changes without the recipe data changing.
_BUILDER_VERSION = 1
_DEBOOTSTRAP_TIMEOUT_S = 1200
_TAR_TIMEOUT_S = 300
_TAR_FLAGS = ("--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls")


class RootfsBuildError(BrainallError):
    """debootstrap or the customization of the tree failed."""


@dataclass(frozen=True)
class TreeFile:
    """A file written into the tree (path is absolute inside the tree)."""

    path: str
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class RootfsRecipe:
    """Everything that determines the tree; its hash is the cache key."""

    suite: str
    mirror: str
    variant: str
    packages: tuple[str, ...]
    remove: tuple[str, ...] = ()  # globs, removed before the files are written
    directories: tuple[tuple[str, int], ...] = ()  # (path, mode)
    files: tuple[TreeFile, ...] = ()
    enable_units: tuple[str, ...] = ()
    mask_units: tuple[str, ...] = ()
    builder_version: int = field(default=_BUILDER_VERSION)

    def base_key(self) -> str:
        return _digest(
            {
                "builder": self.builder_version,
                "suite": self.suite,
                "mirror": self.mirror,
                "variant": self.variant,
                "packages": self.packages,
            }
        )

    def key(self) -> str:
        return _digest(dataclasses.asdict(self))


def _digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


_SOURCES = f"""\
Types: deb
URIs: {DEBIAN_MIRROR}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {DEBIAN_SECURITY_MIRROR}
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

_APT_CONF = f"""\
// Lab hosts reach Debian only through the lab's apt proxy on the bridge: nothing is routed off it.
Acquire::http::Proxy "{APT_PROXY_URL}";
// Several hosts refreshing at once through the proxy were seen to leave an apt-get hanging
// forever. Bounded network waits plus retries turn such a stall into a short retry.
Acquire::http::Timeout "20";
Acquire::Retries "5";
"""

# Host keys are made per container at its first sshd start (stored in the host's overlay upper),
# so no two lab hosts, and no two labs, share a host key.
_SSH_KEYGEN_DROPIN = """\
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
"""

_SSHD_CONFIG = """\
# Lab hosts: root logs in with the lab key only (the runtime installs it per host).
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""

# The hosts share the CI kernel, whose /proc/uptime is the VM's. pyinfra's server.reboot waits
# for the uptime to drop, so the runtime binds an lxcfs mount at /var/lib/lxcfs and this unit
# puts its uptime over /proc/uptime (binding the FUSE file directly from nspawn fails).
_LXCFS_UPTIME_UNIT = """\
[Unit]
Description=Per-container /proc/uptime from the lab's lxcfs
DefaultDependencies=no
ConditionPathExists=/var/lib/lxcfs/proc/uptime
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/mount --bind /var/lib/lxcfs/proc/uptime /proc/uptime

[Install]
WantedBy=sysinit.target
"""

# No DNS server is reachable from the lab; with no nameserver line glibc tries 127.0.0.1 and
# fails at once instead of waiting out timeouts on the build machine's resolver.
_RESOLV_CONF = "# brainall lab: no DNS; lab host names are in /etc/hosts\n"

DEFAULT_RECIPE = RootfsRecipe(
    suite="bookworm",
    mirror=DEBIAN_MIRROR,
    variant="minbase",
    packages=(
        "systemd",
        "systemd-sysv",
        "dbus",
        "openssh-server",
        "python3",
        "sudo",
        "iproute2",
        "ca-certificates",
        "procps",
    ),
    remove=(
        "/etc/machine-id",
        "/var/lib/dbus/machine-id",  # else systemd copies this one id into every host
        "/etc/hostname",
        "/etc/ssh/ssh_host_*",
        "/etc/apt/sources.list",
        "/var/cache/apt/archives/*.deb",
        "/var/cache/apt/*.bin",
    ),
    directories=(("/root/.ssh", 0o700), ("/etc/systemd/system/ssh.service.d", 0o755)),
    files=(
        # empty, so no two hosts can share an id: the runtime gives each host its own
        TreeFile("/etc/machine-id", "", 0o444),
        TreeFile("/etc/hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"),
        TreeFile("/etc/resolv.conf", _RESOLV_CONF),
        TreeFile("/etc/apt/sources.list.d/debian.sources", _SOURCES),
        TreeFile("/etc/apt/apt.conf.d/80brainall-lab", _APT_CONF),
        TreeFile("/etc/systemd/system/ssh.service.d/10-brainall-lab-keygen.conf", _SSH_KEYGEN_DROPIN),
        TreeFile("/etc/ssh/sshd_config.d/10-brainall-lab.conf", _SSHD_CONFIG),
        TreeFile("/etc/systemd/system/lxcfs-uptime.service", _LXCFS_UPTIME_UNIT),
    ),
    enable_units=("systemd-networkd.service", "lxcfs-uptime.service"),
    mask_units=(
        "systemd-networkd-wait-online.service",  # nothing in the lab waits for "online"
        "getty@tty1.service",  # the console is read-only; no logins on it
        "console-getty.service",
    ),
)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR)


def extracted_rootfs_dir(cache: Path | None = None, recipe: RootfsRecipe = DEFAULT_RECIPE) -> Path:
    return (cache or cache_dir()) / "rootfs" / recipe.key()


def rootfs_tarball(cache: Path | None = None, recipe: RootfsRecipe = DEFAULT_RECIPE) -> Path:
    return (cache or cache_dir()) / f"rootfs-{recipe.key()}.tar.zst"


def ensure_rootfs(cache: Path | None = None, recipe: RootfsRecipe = DEFAULT_RECIPE) -> Path:
    """The extracted rootfs for `recipe`: restored from the tarball cache, or built and cached.

    Trees are assembled under a temporary name and renamed into place, so a build killed midway
    never leaves a half tree that looks complete.
    """
    cache = cache or cache_dir()
    target = extracted_rootfs_dir(cache, recipe)
    with _cache_lock(cache):
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.parent / f".{target.name}.partial"
        _discard(partial)
        tarball = rootfs_tarball(cache, recipe)
        if tarball.is_file():
            log.info("rootfs: restoring %s", tarball.name)
            _extract(tarball, partial)
        else:
            _build(cache, recipe, partial)
            log.info("rootfs: saving %s", tarball.name)
            _archive(partial, tarball)
        partial.rename(target)
        _prune_extracted(cache, keep=target)
        return target


def drop_extracted_rootfs(cache: Path | None = None, recipe: RootfsRecipe = DEFAULT_RECIPE) -> None:
    """Delete the extracted tree (not the tarballs), e.g. to time a cold start from the cache."""
    cache = cache or cache_dir()
    with _cache_lock(cache):
        target = extracted_rootfs_dir(cache, recipe)
        if _in_use_as_lower(target):
            raise LabCommandError(f"{target} is the lower layer of a mounted overlay: bring the lab down first")
        remove_tree(target)


def ensure_lab_key(state_dir: Path) -> Path:
    """The lab's SSH key (ed25519) in the state dir, made on first use; returns the private key."""
    key = state_dir / LAB_KEY_NAME
    if not (key.is_file() and key.with_suffix(".pub").is_file()):
        state_dir.mkdir(parents=True, exist_ok=True)
        key.unlink(missing_ok=True)
        key.with_suffix(".pub").unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "brainall-lab", "-f", key], timeout=30)
    return key


@contextlib.contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    """One builder at a time per cache dir, across processes."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(cache: Path, recipe: RootfsRecipe, tree: Path) -> None:
    base = cache / f"base-{recipe.base_key()}.tar.zst"
    if base.is_file():
        log.info("rootfs: restoring debootstrap base %s", base.name)
        _extract(base, tree)
    else:
        build_log = cache / f"debootstrap-{recipe.base_key()}.log"
        log.info("rootfs: debootstrap %s (%s) into %s, log %s", recipe.suite, recipe.variant, tree, build_log)
        argv = [
            "debootstrap",
            f"--variant={recipe.variant}",
            f"--include={','.join(recipe.packages)}",
            recipe.suite,
            str(tree),
            recipe.mirror,
        ]
        with open(build_log, "w") as out:
            try:
                result = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=_DEBOOTSTRAP_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise RootfsBuildError(f"debootstrap took over {_DEBOOTSTRAP_TIMEOUT_S}s; see {build_log}") from exc
        if result.returncode != 0:
            tail = "\n".join(build_log.read_text(errors="replace").splitlines()[-15:])
            raise RootfsBuildError(f"debootstrap failed (exit {result.returncode}); see {build_log}:\n{tail}")
        _archive(tree, base)
    log.info("rootfs: customizing")
    customize(tree, recipe)


def customize(tree: Path, recipe: RootfsRecipe) -> None:
    """Apply the recipe's edits to a debootstrapped tree."""
    for pattern in recipe.remove:
        for path in tree.glob(pattern.lstrip("/")):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for directory, mode in recipe.directories:
        path = _inside(tree, directory)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
    for tree_file in recipe.files:
        path = _inside(tree, tree_file.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # e.g. /etc/resolv.conf may be a symlink
        path.write_text(tree_file.content)
        path.chmod(tree_file.mode)
    # `systemctl --root` edits the unit symlinks offline: no systemd needs to run here.
    if recipe.enable_units:
        run(["systemctl", f"--root={tree}", "enable", *recipe.enable_units], timeout=60)
    if recipe.mask_units:
        run(["systemctl", f"--root={tree}", "mask", *recipe.mask_units], timeout=60)
    # a networkd host needs no ifupdown; keep a half-configured one from failing at boot
    (tree / "etc/systemd/system/multi-user.target.wants/networking.service").unlink(missing_ok=True)


def _inside(tree: Path, absolute: str) -> Path:
    # Not resolved: links in the tree point at paths inside it, not on the build machine.
    if not absolute.startswith("/") or ".." in Path(absolute).parts:
        raise RootfsBuildError(f"recipe path {absolute!r} must be absolute, without '..'")
    return tree / absolute.lstrip("/")


def _archive(tree: Path, tarball: Path) -> None:
    partial = tarball.with_name(f".{tarball.name}.partial")
    run(
        [
            "tar",
            "--create",
            f"--file={partial}",
            "--use-compress-program=zstd -T0 -3",
            *_TAR_FLAGS,
            f"--directory={tree}",
            ".",
        ],
        timeout=_TAR_TIMEOUT_S,
    )
    partial.rename(tarball)


def _extract(tarball: Path, tree: Path) -> None:
    tree.mkdir(parents=True)
    run(
        [
            "tar",
            "--extract",
            f"--file={tarball}",
            "--use-compress-program=zstd -d -T0",
            *_TAR_FLAGS,
            "--same-owner",
            "--same-permissions",
            f"--directory={tree}",
        ],
        timeout=_TAR_TIMEOUT_S,
    )


def _in_use_as_lower(tree: Path) -> bool:
    needle = f"lowerdir={tree.resolve()}"
    return any(m.fs_type == "overlay" and needle in m.super_options for m in mounts())


def _discard(tree: Path) -> None:
    """Delete a tree of ours, first unmounting what a killed debootstrap left in it (/proc, /sys)."""
    for mount in mounts_under(tree):
        unmount(mount.mount_point)
    remove_tree(tree)


def _prune_extracted(cache: Path, keep: Path) -> None:
    """Drop trees of older recipes and killed builds (tarballs stay), unless a lab still uses one."""
    for tree in (cache / "rootfs").iterdir():
        if tree != keep and tree.is_dir() and not _in_use_as_lower(tree):
            log.info("rootfs: removing %s (an older recipe or an unfinished build)", tree.name)
            try:
                _discard(tree)
            except LabCommandError as exc:  # never fail a good build over old litter
                log.warning("rootfs: could not remove %s: %s", tree, exc)
