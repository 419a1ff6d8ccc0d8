"""Small host-side primitives the lab is built from: commands, processes, mounts, cgroups.

Everything here works on a machine without systemd or D-Bus (the CI VM) and with no
third-party imports, so the CLI stays fast to start.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from brainall_ops.errors import BrainallError

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Marks every process the lab starts (supervisors, apt proxy, lxcfs), so a later `up` can find
# and stop what a killed run left behind even when that run's state.json is gone.
OWNER_ENV = "BRAINALL_LAB_OWNER"


class LabCommandError(BrainallError):
    """A host command the lab depends on failed."""


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = 60,
    check: bool = True,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a bounded wait, capturing its output as text."""
    args = [os.fspath(arg) for arg in argv]
    try:
        # `input` when there is text to send, else stdin from /dev/null: never both (gevent's
        # subprocess, patched in by pyinfra's CLI, refuses `stdin` next to `input` even when None)
        stream: dict[str, object] = {"input": input_text} if input_text is not None else {"stdin": subprocess.DEVNULL}
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **stream)  # type: ignore[call-overload]
    except subprocess.TimeoutExpired as exc:
        raise LabCommandError(f"timed out after {timeout:.0f}s: {' '.join(args)}") from exc
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise LabCommandError(f"exit {result.returncode}: {' '.join(args)}: {detail}")
    return result


# --- processes -------------------------------------------------------------------------------


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, or None when there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


@dataclass(frozen=True)
class ProcessRef:
    """A process identified so that a reused pid (or a reboot) is never mistaken for it."""

    pid: int
    start_ticks: int
    boot_id: str

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        stat = _proc_stat(pid)
        if stat is None:
            raise LabCommandError(f"process {pid} exited right after it was started")
        return cls(pid=pid, start_ticks=stat[1], boot_id=boot_id())

    @classmethod
    def from_record(cls, record: dict[str, object]) -> ProcessRef:
        return cls(pid=int(record["pid"]), start_ticks=int(record["start_ticks"]), boot_id=str(record["boot_id"]))  # type: ignore[call-overload]

    def to_record(self) -> dict[str, object]:
        return {"pid": self.pid, "start_ticks": self.start_ticks, "boot_id": self.boot_id}

    def alive(self) -> bool:
        """Running. A zombie counts as gone: PID 1 on this machine reaps orphans only now and then."""
        if self.boot_id != boot_id():
            return False
        stat = _proc_stat(self.pid)
        if stat is None or stat[1] != self.start_ticks:
            return False
        if stat[0] in ("Z", "X"):
            _reap(self.pid)  # it is this very process: collect it if it is our child
            return False
        return True

    def send(self, signum: int) -> bool:
        """Send a signal if the process is still this one; False when it was already gone."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, timeout: float, signum: int = signal.SIGTERM) -> None:
        """Ask it to exit, then kill it once `timeout` has passed."""
        if self.send(signum) and not self.wait_gone(timeout):
            self.send(signal.SIGKILL)
            self.wait_gone(5)


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def spawn_detached(
    argv: Sequence[str | os.PathLike[str]], *, log_path: Path, owner: Path, cwd: Path | None = None
) -> ProcessRef:
    """Start a long-lived process in its own session that outlives the caller (the CLI exits)."""
    env = dict(os.environ)
    env[OWNER_ENV] = str(owner)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [os.fspath(arg) for arg in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd=cwd,
        )
    # Popen is dropped on purpose: the process outlives us and is tracked by its ProcessRef;
    # _reap() collects its status if it exits while we are still running.
    process.returncode = 0  # keeps Popen.__del__ from warning about a "still running" child
    return ProcessRef.of(process.pid)


def processes_owned_by_lab() -> Iterator[tuple[int, str]]:
    """(pid, owner state dir) of every live process carrying the lab's owner mark."""
    marker = f"{OWNER_ENV}=".encode()
    own_pid = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own_pid:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(marker):
                stat = _proc_stat(int(entry.name))
                if stat is not None and stat[0] not in ("Z", "X"):
                    yield int(entry.name), item[len(marker) :].decode(errors="replace")
                break


# --- mounts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    mount_point: Path
    fs_type: str
    source: str
    super_options: str


def _unescape_mount_field(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[Mount]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields = before.split()
        fs_type, source, super_options = [*after.split(), "", "", ""][:3]
        found.append(Mount(Path(_unescape_mount_field(fields[4])), fs_type, source, super_options))
    return found


def mounts_under(directory: Path) -> list[Mount]:
    """Mounts at or below `directory`, deepest first (the order to unmount them in)."""
    directory = directory.resolve()
    below = [m for m in mounts() if m.mount_point == directory or directory in m.mount_point.parents]
    return sorted(below, key=lambda m: len(m.mount_point.parts), reverse=True)


def is_mount_point(path: Path) -> bool:
    resolved = path.resolve()
    return any(m.mount_point == resolved for m in mounts())


def unmount(path: Path, timeout: float = 30) -> None:
    """Unmount every mount stacked on `path`; a busy mount is detached lazily rather than left."""
    for _ in range(8):
        if not is_mount_point(path):
            return
        if run(["umount", path], timeout=timeout, check=False).returncode != 0:
            run(["umount", "--lazy", path], timeout=timeout, check=False)
    if is_mount_point(path):
        raise LabCommandError(f"could not unmount {path}")


def remove_tree(path: Path) -> None:
    """Delete a directory tree, refusing while anything is still mounted inside it."""
    if not path.exists():
        return
    still_mounted = mounts_under(path)
    if still_mounted:
        raise LabCommandError(f"refusing to delete {path}: {still_mounted[0].mount_point} is mounted")
    # rm copes with overlay whiteouts and read-only bits, and never crosses into other filesystems.
    run(["rm", "-rf", "--one-file-system", path], timeout=300)


# --- cgroups ---------------------------------------------------------------------------------


def cgroup_hierarchies() -> list[Path]:
    """Hierarchies a container needs its own cgroup in: the unified one on a pure cgroup2 host,
    the named `systemd` v1 one plus the unified one on a v1/hybrid host (this CI VM)."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]
    return [h for h in (CGROUP_ROOT / "systemd", CGROUP_ROOT / "unified") if (h / "cgroup.procs").exists()]


def all_cgroup_hierarchies() -> list[Path]:
    """Every mounted hierarchy, for the leftover sweep (a container's systemd may use any)."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]
    return sorted(h for h in CGROUP_ROOT.iterdir() if (h / "cgroup.procs").exists())


def _cgroup_dirs_deepest_first(top: Path) -> list[Path]:
    found = [Path(root) for root, _dirs, _files in os.walk(top)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def cgroup_pids(top: Path) -> set[int]:
    pids: set[int] = set()
    for directory in _cgroup_dirs_deepest_first(top):
        try:
            pids.update(int(line) for line in (directory / "cgroup.procs").read_text().split())
        except FileNotFoundError:
            continue
    return pids


def kill_cgroup_tree(top: Path, timeout: float = 15) -> None:
    """SIGKILL everything in a cgroup subtree, then remove the (now empty) cgroup directories."""
    if not top.exists():
        return
    deadline = time.monotonic() + timeout
    while True:
        kill_file = top / "cgroup.kill"  # cgroup2 (kernel >= 5.14): the kernel kills the whole subtree
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        pids = cgroup_pids(top)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _reap(pid)
        if not pids and _remove_cgroup_dirs(top):
            return
        if time.monotonic() >= deadline:
            raise LabCommandError(f"cgroup {top} still holds processes {sorted(pids)} after {timeout:.0f}s")
        time.sleep(0.05)


def _remove_cgroup_dirs(top: Path) -> bool:
    for directory in _cgroup_dirs_deepest_first(top):
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno in (errno.EBUSY, errno.ENOTEMPTY):
                return False
            raise
    return not top.exists()
