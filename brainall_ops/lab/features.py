"""What this machine's kernel offers the lab, read from /proc, /sys and /dev (never assumed).

Machines of one kind do not share one kernel: one has autofs and cifs, the next has neither
(nor any loadable module). `lab up` and `lab status` print this table; `up` refuses before
anything starts when a feature the lab cannot do without is missing, and a feature the lab can
do without says what the rehearsal does instead. A host may also be denied a feature on purpose
(`LabHost.withhold`), so the path a kernel without it takes runs on any kernel.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROC_FILESYSTEMS = Path("/proc/filesystems")
WITHHOLDABLE = frozenset({"autofs", "fuse"})  # devices a lab host can be denied (LabHost.withhold)


@dataclass(frozen=True)
class Feature:
    name: str
    present: bool
    seen: str  # what was read, in words
    without: str  # what a missing one changes in the rehearsal (or why the lab cannot run)
    required: bool = False

    def line(self) -> str:
        state = "yes" if self.present else ("MISSING (required)" if self.required else "no")
        return f"{self.name}: {state}: {self.seen}" + ("" if self.present else f": {self.without}")


def kernel_filesystems(path: Path = PROC_FILESYSTEMS) -> set[str]:
    try:
        return {line.split()[-1] for line in path.read_text().splitlines() if line.split()}
    except OSError:
        return set()


def _module_available(name: str) -> bool:
    """A module the kernel could load (this machine may have no /lib/modules at all)."""
    import os

    root = Path("/lib/modules") / os.uname().release
    return root.is_dir() and any(root.rglob(f"{name}.ko*"))


def _nftables_works() -> tuple[bool, str]:
    if shutil.which("nft") is None:
        return False, "no nft command (apt-get install nftables)"
    try:
        done = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"nft list tables: {exc}"
    if done.returncode != 0:
        return False, f"nft list tables: {(done.stderr.strip().splitlines() or ['failed'])[-1]}"
    return True, "nf_tables answers (nft list tables)"


def _check(name: str, test: Callable[[], tuple[bool, str]], without: str, required: bool = False) -> Feature:
    present, seen = test()
    return Feature(name, present, seen, without, required)


def kernel_features() -> list[Feature]:
    """Every kernel feature the lab and the rehearsed deploys rely on, as found now."""
    filesystems = kernel_filesystems()

    def fs(name: str) -> Callable[[], tuple[bool, str]]:
        def test() -> tuple[bool, str]:
            if name in filesystems:
                return True, f"{name} in /proc/filesystems"
            if _module_available(name):
                return True, f"{name} loadable as a module"
            return False, f"no {name} in /proc/filesystems and no module"

        return test

    def device(path: str, fs_name: str | None = None) -> Callable[[], tuple[bool, str]]:
        def test() -> tuple[bool, str]:
            if Path(path).exists():
                return True, f"{path} present"
            kernel = f"; {fs_name} in the kernel" if fs_name and fs_name in filesystems else ""
            return False, f"no {path}{kernel}"

        return test

    def cgroups() -> tuple[bool, str]:
        root = Path("/sys/fs/cgroup")
        if (root / "cgroup.controllers").exists():
            return True, "unified cgroup v2 hierarchy"
        if (root / "systemd" / "cgroup.procs").exists():
            return True, "cgroup v1 with the named systemd hierarchy (hybrid)"
        return False, "neither a cgroup v2 hierarchy nor a v1 systemd one under /sys/fs/cgroup"

    def path_exists(path: str, what: str) -> Callable[[], tuple[bool, str]]:
        return lambda: (Path(path).exists(), f"{path} {'present' if Path(path).exists() else 'absent'} ({what})")

    def loaded_or_module(module: str, loaded: Path) -> Callable[[], tuple[bool, str]]:
        def test() -> tuple[bool, str]:
            if loaded.exists():
                return True, f"{module} in the kernel ({loaded})"
            if _module_available(module):
                return True, f"{module} loadable as a module"
            return False, f"no {module}: no {loaded} and no module"

        return test

    return [
        _check("cgroups", cgroups, "systemd-nspawn cannot give a host its own cgroup", required=True),
        _check("overlayfs", fs("overlay"), "hosts are copy-on-write overlays of the cached rootfs", required=True),
        _check("nftables", _nftables_works, "the lab's guard (nothing leaves the bridge) cannot be set", required=True),
        _check(
            "network namespaces",
            path_exists("/proc/self/ns/net", "each host has its own"),
            "hosts cannot have their own network",
            required=True,
        ),
        _check(
            "bridge",
            loaded_or_module("bridge", Path("/sys/module/bridge")),
            "the lab's bridge (br-brainall) cannot be made",
            required=True,
        ),
        _check(
            "conntrack",
            loaded_or_module("nf_conntrack", Path("/proc/sys/net/netfilter/nf_conntrack_max")),
            "nftables rules on `ct state` (the lab's guard, every host's firewall) cannot load",
            required=True,
        ),
        _check(
            "FUSE",
            device("/dev/fuse", "fuse"),
            "lxcfs (per-host uptime across reboots) and SSHFS mounts cannot run",
            required=True,
        ),
        _check(
            "autofs",
            device("/dev/autofs", "autofs"),
            "Storage Box mounts use mount units with a retry timer instead of automounts; the automount "
            "units are checked with systemd-analyze verify only",
        ),
        _check(
            "CIFS",
            fs("cifs"),
            "CIFS mount units are written, enabled and verified, and the share is tested with smbclient "
            "using the same credentials file; nothing is mounted through the kernel",
        ),
        _check(
            "KVM",
            device("/dev/kvm"),
            "not used either way: the lab's VMs are containers that the Proxmox simulator boots",
        ),
        _check(
            "br_netfilter",
            path_exists("/proc/sys/net/bridge/bridge-nf-call-iptables", "bridged frames pass inet hooks"),
            "host-to-host frames on the bridge skip the machine's forward hook (the lab's guard still "
            "drops whatever is routed off the bridge)",
        ),
    ]


def missing_required(features: list[Feature]) -> list[Feature]:
    return [f for f in features if f.required and not f.present]
