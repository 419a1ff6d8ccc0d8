"""Boot a set of real Debian hosts on this machine as systemd-nspawn containers, and tear them down.

Each lab host runs systemd as PID 1 and sshd, has its own address on the bridge `br-brainall`
(10.77.0.1/16 on the machine's side) and its own overlay over the shared cached rootfs. Nothing
leaves the lab: the nft table `inet brainall_lab` drops whatever lab hosts send beyond
10.77.0.0/16 and anything routed into or out of the bridge, and lab hosts may reach the machine
itself only at the apt proxy (apt-cacher-ng on 10.77.0.1:3142, which fetches only from Debian's
mirror and security archive).

Everything `up` makes is recorded in `state_dir/state.json` before it is made, so `down` removes
exactly that, and a run killed at any point leaves a record the next `down` can act on. `up`
also sweeps leftovers by the lab's fixed names (bridge, nft table, `brainall-lab` cgroups,
processes carrying the lab's owner mark, overlay mounts of the lab rootfs or under the state dir)
in case a run died before recording, or ran with another state dir. Nothing else is touched.
This machine has no systemd or D-Bus as PID 1 (recipe: --register=no --keep-unit, own cgroups).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from brainall_ops.errors import BrainallError
from brainall_ops.lab import rootfs
from brainall_ops.lab.features import Feature, kernel_features, missing_required
from brainall_ops.lab.model import (
    APT_PROXY_PORT,
    BRIDGE_ADDRESS,
    BRIDGE_NAME,
    CGROUP_NAME,
    NFT_FAMILY,
    NFT_TABLE,
    LabHost,
    LabSpecError,
    validate_hosts,
)
from brainall_ops.lab.system import (
    LabCommandError,
    ProcessRef,
    all_cgroup_hierarchies,
    cgroup_hierarchies,
    kill_cgroup_tree,
    mounts,
    mounts_under,
    processes_owned_by_lab,
    remove_tree,
    run,
    spawn_detached,
    unmount,
)

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/var/lib/brainall-ops/lab")
STATE_DIR_ENV = "BRAINALL_LAB_DIR"
STATE_VERSION = 1

BOOT_TIMEOUT_S = 180.0  # per host, launch to `systemctl is-system-running` answering
STOP_TIMEOUT_S = 20.0  # clean poweroff before the host's cgroup is killed
SERVICE_START_TIMEOUT_S = 15.0  # apt proxy listening, lxcfs mounted
LXCFS_DIR_NAME = "brainall-lab-lxcfs"  # a known name: the sweep finds stale lxcfs mounts by it
SUPERVISOR_SCRIPT = Path(__file__).with_name("supervisor.py")
REQUIRED_TOOLS = {  # command -> Debian package
    "systemd-nspawn": "systemd-container",
    "nft": "nftables",
    "ip": "iproute2",
    "apt-cacher-ng": "apt-cacher-ng",
    "lxcfs": "lxcfs",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "zstd": "zstd",
    "debootstrap": "debootstrap",
    "systemctl": "systemd",
}


class LabError(BrainallError):
    """The lab could not be brought up or torn down; the message says what and where to look."""


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostBoot:
    name: str
    address: str
    system_state: str  # `systemctl is-system-running`: running or degraded
    seconds: float  # from its nspawn start to SSH and systemd answering
    failed_units: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabUp:
    state_dir: Path
    ssh_config: Path
    hosts: tuple[HostBoot, ...]
    seconds: float
    features: tuple[Feature, ...] = ()  # what this machine's kernel offers the lab


@dataclass(frozen=True)
class LabDown:
    seconds: float
    removed: tuple[str, ...]  # what was torn down, in words
    guard_drops: dict[str, int] = field(default_factory=dict)  # nft rule -> packets it dropped


@dataclass(frozen=True)
class HostStatus:
    name: str
    hostname: str
    address: str
    running: bool  # its supervisor is alive
    ssh_port_open: bool
    withheld: tuple[str, ...] = ()  # devices it was denied on purpose (LabHost.withhold)


@dataclass(frozen=True)
class LabStatus:
    state_dir: Path
    recorded: bool  # state.json exists
    bridge: bool
    nft_table: bool
    apt_proxy: bool
    lxcfs: bool
    hosts: tuple[HostStatus, ...]
    guard_drops: dict[str, int]
    features: tuple[Feature, ...] = ()


# --- paths and the state record ----------------------------------------------------------------


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def _layout(state_dir: Path | None) -> _Layout:
    return _Layout((state_dir or default_state_dir()).absolute())


@dataclass(frozen=True)
class _Layout:
    """Where things live in a state dir."""

    state_dir: Path

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def hosts_dir(self) -> Path:
        return self.state_dir / "hosts"

    @property
    def proxy_dir(self) -> Path:
        return self.state_dir / "apt-proxy"

    @property
    def lxcfs_dir(self) -> Path:
        return self.state_dir / LXCFS_DIR_NAME

    def host_dir(self, name: str) -> Path:
        return self.hosts_dir / name

    def control_dir(self) -> Path:
        """ssh ControlMaster sockets. A unix socket path holds at most 107 bytes and ssh adds a
        40-char %C hash plus a 17-char temporary suffix, so a deep state dir falls back to /tmp."""
        preferred = self.state_dir / "cm"
        if len(str(preferred)) <= 48:
            return preferred
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"brainall-lab-cm-{digest}"


class _State:
    """state.json: what this lab made, written before each thing is made (so a kill right after
    making it still leaves a record) and updated after."""

    def __init__(self, layout: _Layout, data: dict[str, object]) -> None:
        self.layout = layout
        self.data = data

    @classmethod
    def load(cls, layout: _Layout) -> _State:
        try:
            data = json.loads(layout.state_file.read_text())
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                raise ValueError("unknown state version")
        except FileNotFoundError:
            data = {}
        except ValueError as exc:
            log.warning("ignoring unreadable %s (%s); the sweep will clean up by name", layout.state_file, exc)
            data = {}
        return cls(layout, data)

    @classmethod
    def new(cls, layout: _Layout, rootfs_dir: Path) -> _State:
        return cls(
            layout,
            {"version": STATE_VERSION, "state_dir": str(layout.state_dir), "rootfs": str(rootfs_dir), "hosts": {}},
        )

    @property
    def exists(self) -> bool:
        return "version" in self.data

    @property
    def hosts(self) -> dict[str, dict[str, object]]:
        return self.data.setdefault("hosts", {})  # type: ignore[return-value]

    def host(self, name: str) -> dict[str, object]:
        try:
            return self.hosts[name]
        except KeyError:
            raise LabError(f"no lab host {name!r} in {self.layout.state_file}") from None

    def save(self) -> None:
        self.layout.state_dir.mkdir(parents=True, exist_ok=True)
        partial = self.layout.state_file.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(partial, self.layout.state_file)

    def owns_machine_lab(self) -> bool:
        """Whether the lab's machine-wide names (bridge, nft table, cgroups) are this record's:
        a record left in another state dir must not tear down the lab that replaced it."""
        owner = _bridge_owner()
        return owner is None or owner[0] == self.data.get("lab_id")

    def require_running(self) -> None:
        if not self.exists or not _link_exists(BRIDGE_NAME):
            raise LabError(f"no lab is up in {self.layout.state_dir}: run `up` first")
        if not self.owns_machine_lab():
            owner = _bridge_owner()
            raise LabError(
                f"the lab running on this machine is the one in {owner[1] if owner else '?'}, "
                f"not the one in {self.layout.state_dir}"
            )

    def lab_hosts(self) -> list[LabHost]:
        return [_host_from_record(name, record) for name, record in self.hosts.items()]


@contextlib.contextmanager
def _exclusive() -> Iterator[None]:
    """One lab operation at a time on this machine: the lab's names are machine-wide."""
    lock_dir = rootfs.cache_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / ".lab.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- public API ------------------------------------------------------------------------------


def up(hosts: Sequence[LabHost], state_dir: Path | None = None, *, boot_timeout: float = BOOT_TIMEOUT_S) -> LabUp:
    """Bring up a fresh lab with `hosts`, first tearing down whatever an earlier run left.

    Idempotent: every call ends with the same clean lab (hosts start from the pristine rootfs).
    The lab's names are machine-wide, so this also replaces a lab running from another state dir.
    Returns once every host answers SSH and systemd reports running or degraded.
    """
    started = time.monotonic()
    hosts = list(hosts)
    validate_hosts(hosts)
    if not hosts:
        raise LabSpecError("a lab needs at least one host")
    features = _check_prerequisites()
    layout = _layout(state_dir)
    if any(c in str(layout.state_dir) for c in ",: \t\n"):
        # overlayfs options are split on ',' and lowerdirs on ':'
        raise LabError(f"state dir {layout.state_dir}: use a path without ',', ':' or whitespace")
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive():
        rootfs_dir = rootfs.ensure_rootfs()
        key = rootfs.ensure_lab_key(layout.state_dir)
        try:
            _down_recorded(layout)
        except LabError as exc:  # the sweep below gets another go at what is left
            log.warning("%s", exc)
        _sweep_leftovers(layout, hosts)

        state = _State.new(layout, rootfs_dir)
        state.data["lab_id"] = uuid.uuid4().hex
        state.data["control_dir"] = str(layout.control_dir())
        state.save()
        _create_bridge(state)
        _create_guard(state)
        _start_apt_proxy(state)
        _start_lxcfs(state)
        _write_ssh_files(layout, hosts, key)
        layout.known_hosts.write_text("")  # filled with each host's keys as it boots
        launched = {}
        for host in hosts:
            _prepare_host(state, host, hosts, key)
            launched[host.name] = _launch_host(state, host.name)
        boots = _wait_hosts_ready(state, launched, boot_timeout)
    elapsed = time.monotonic() - started
    log.info("lab up: %d hosts in %.1fs", len(boots), elapsed)
    return LabUp(
        state_dir=layout.state_dir,
        ssh_config=layout.ssh_config,
        hosts=tuple(boots),
        seconds=elapsed,
        features=tuple(features),
    )


def down(state_dir: Path | None = None) -> LabDown:
    """Tear down what `up` recorded in `state_dir`. Safe to run any number of times."""
    started = time.monotonic()
    layout = _layout(state_dir)
    with _exclusive():
        removed, drops = _down_recorded(layout)
    return LabDown(seconds=time.monotonic() - started, removed=tuple(removed), guard_drops=drops)


def status(state_dir: Path | None = None) -> LabStatus:
    """What is running now, checked against the machine (not just the record)."""
    layout = _layout(state_dir)
    state = _State.load(layout)
    if not state.exists:
        return LabStatus(
            state_dir=layout.state_dir,
            recorded=False,
            bridge=False,
            nft_table=False,
            apt_proxy=False,
            lxcfs=False,
            hosts=(),
            guard_drops={},
            features=tuple(kernel_features()),
        )
    host_states = []
    for name, record in state.hosts.items():
        supervisor = record.get("supervisor")
        running = bool(supervisor) and ProcessRef.from_record(supervisor).alive()  # type: ignore[arg-type]
        host_states.append(
            HostStatus(
                name=name,
                hostname=str(record["hostname"]),
                address=str(record["address"]),
                running=running,
                ssh_port_open=running and _port_open(str(record["address"]), 22, timeout=0.5),
                withheld=tuple(str(w) for w in record.get("withhold", ())),  # type: ignore[attr-defined]
            )
        )
    return LabStatus(
        state_dir=layout.state_dir,
        recorded=state.exists,
        bridge=_link_exists(BRIDGE_NAME) and state.owns_machine_lab(),
        nft_table=_nft_table_exists() and state.owns_machine_lab(),
        apt_proxy=_recorded_process_alive(state.data.get("apt_proxy")),
        lxcfs=_recorded_process_alive(state.data.get("lxcfs")),
        hosts=tuple(host_states),
        guard_drops=_guard_drops(),
        features=tuple(kernel_features()),
    )


def stop_host(state_dir: Path | None, name: str) -> None:
    """Power one host off (as if it failed); its disk (overlay upper) and address are kept."""
    layout = _layout(state_dir)
    with _exclusive():
        state = _State.load(layout)
        state.require_running()
        state.host(name)
        _close_control_master(layout, name)
        _stop_host_processes(state, [name], shared=True)
        state.host(name)["supervisor"] = None
        state.save()


def start_host(
    state_dir: Path | None,
    name: str,
    *,
    boot_timeout: float = BOOT_TIMEOUT_S,
    withhold: frozenset[str] | None = None,
) -> HostBoot:
    """Boot a stopped host again with its disk as it was; a no-op wait when it already runs.
    `withhold`: the devices it is denied from now on (None: as before); takes effect at this boot."""
    layout = _layout(state_dir)
    with _exclusive():
        state = _State.load(layout)
        state.require_running()
        record = state.host(name)
        if withhold is not None:
            replace(_host_from_record(name, record), withhold=frozenset(withhold)).validate()
            record["withhold"] = sorted(withhold)
            state.save()
        supervisor = record.get("supervisor")
        if supervisor and ProcessRef.from_record(supervisor).alive():  # type: ignore[arg-type]
            launched_at = time.monotonic()
        else:
            if not _is_mounted(Path(str(record["mount"]))):
                _mount_overlay(state, name)
            launched_at = _launch_host(state, name)
        return _wait_hosts_ready(state, {name: launched_at}, boot_timeout)[0]


def add_host(state_dir: Path | None, host: LabHost, *, boot_timeout: float = BOOT_TIMEOUT_S) -> HostBoot:
    """Boot one more host in a running lab (e.g. a VM a later phase creates on a Proxmox host).
    Every host's /etc/hosts and the ssh_config learn the new name."""
    layout = _layout(state_dir)
    with _exclusive():
        state = _State.load(layout)
        state.require_running()
        hosts = [*state.lab_hosts(), host]
        validate_hosts(hosts)
        key = rootfs.ensure_lab_key(layout.state_dir)
        _sweep_stale_host_names([host.name])
        _prepare_host(state, host, hosts, key)
        for existing in hosts[:-1]:
            _write_etc_hosts(Path(str(state.host(existing.name)["mount"])) / "etc/hosts", hosts)
        _write_ssh_files(layout, hosts, key)
        launched_at = _launch_host(state, host.name)
        return _wait_hosts_ready(state, {host.name: launched_at}, boot_timeout)[0]


# --- bring-up steps ---------------------------------------------------------------------------


def _check_prerequisites() -> list[Feature]:
    """Root, the host packages, and the kernel features the lab cannot do without: refused before
    anything starts. Returns every feature as found, for `up` to print."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (mounts, cgroups, bridge, nftables)")
    missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise LabError(f"missing host packages: apt-get install -y {' '.join(missing)}")
    features = kernel_features()
    if lacking := missing_required(features):
        raise LabError(
            "this machine's kernel lacks what the lab cannot run without: "
            + "; ".join(f"{f.name} ({f.seen}: {f.without})" for f in lacking)
        )
    for feature in features:
        log.info("kernel: %s", feature.line())
    return features


def _create_bridge(state: _State) -> None:
    state.data["bridge"] = BRIDGE_NAME
    state.save()
    run(["ip", "link", "add", BRIDGE_NAME, "type", "bridge"])
    # The bridge names the lab that owns the machine-wide names (see _State.owns_machine_lab).
    run(
        [
            "ip",
            "link",
            "set",
            "dev",
            BRIDGE_NAME,
            "alias",
            f"{_BRIDGE_ALIAS_PREFIX} {state.data['lab_id']} {state.layout.state_dir}",
        ]
    )
    run(["ip", "address", "add", str(BRIDGE_ADDRESS), "dev", BRIDGE_NAME])
    run(["ip", "link", "set", BRIDGE_NAME, "up"])


def _guard_ruleset() -> str:
    bridge, address = BRIDGE_NAME, BRIDGE_ADDRESS.ip
    in_lab = f"{{ {BRIDGE_ADDRESS.network}, 224.0.0.0/4, 255.255.255.255 }}"  # multicast/broadcast stay on it
    return f"""
table {NFT_FAMILY} {NFT_TABLE} {{
    chain lab_egress {{
        # Anything a lab host sends beyond the lab is dropped as it arrives, before any routing
        # decision, so it holds even if something on this machine turns ip_forward on.
        type filter hook prerouting priority filter - 10; policy accept;
        iifname "{bridge}" ip daddr != {in_lab} counter drop comment "lab to outside the lab"
    }}
    chain routed_guard {{
        # With br_netfilter on (this machine), host<->host frames on the bridge also pass this
        # hook, with the bridge as both interfaces: only packets routed in or out are dropped.
        type filter hook forward priority filter - 10; policy accept;
        iifname "{bridge}" oifname != "{bridge}" counter drop comment "routed out of the lab"
        oifname "{bridge}" iifname != "{bridge}" counter drop comment "routed into the lab"
    }}
    chain lab_to_machine {{
        # Of this machine's own services, lab hosts reach only the apt proxy.
        type filter hook input priority filter - 10; policy accept;
        iifname != "{bridge}" accept
        ct state established,related accept
        ip daddr {address} tcp dport {APT_PROXY_PORT} accept comment "the apt proxy"
        icmp type echo-request accept
        counter drop comment "lab to this machine, other than the apt proxy"
    }}
}}
"""


def _create_guard(state: _State) -> None:
    state.data["nft_table"] = f"{NFT_FAMILY} {NFT_TABLE}"
    state.save()
    run(["nft", "-f", "-"], input_text=_guard_ruleset())


def _start_apt_proxy(state: _State) -> None:
    layout = state.layout
    cache = rootfs.cache_dir() / "acng"
    cache.mkdir(parents=True, exist_ok=True)
    (layout.proxy_dir / "log").mkdir(parents=True, exist_ok=True)
    address = BRIDGE_ADDRESS.ip
    # ForceManaged + only the Debian remaps: any other target is refused (403), so the proxy
    # cannot become a way out. SocketPath/PidFile keep it off the machine's /run.
    (layout.proxy_dir / "acng.conf").write_text(f"""\
CacheDir: {cache}
LogDir: {layout.proxy_dir / "log"}
SupportDir: /usr/lib/apt-cacher-ng
SocketPath: {layout.proxy_dir / "socket"}
PidFile: {layout.proxy_dir / "pid"}
BindAddress: {address}
Port: {APT_PROXY_PORT}
Remap-debrep: deb.debian.org/debian ; {rootfs.DEBIAN_MIRROR}/
Remap-secdeb: deb.debian.org/debian-security ; {rootfs.DEBIAN_SECURITY_MIRROR}/
ForceManaged: 1
ExThreshold: 4
""")
    if _port_open(str(address), APT_PROXY_PORT, timeout=0.5):
        # e.g. the distribution's apt-cacher-ng service on 0.0.0.0:3142: lab hosts would get that
        # open proxy instead of this locked-down one
        raise LabError(
            f"something else already listens on {address}:{APT_PROXY_PORT} (the system's "
            "apt-cacher-ng service? stop it: /etc/init.d/apt-cacher-ng stop)"
        )
    state.data["apt_proxy"] = {"starting": True}
    state.save()
    proxy = spawn_detached(
        ["apt-cacher-ng", "-c", layout.proxy_dir, "ForeGround=1"],
        log_path=layout.proxy_dir / "apt-cacher-ng.out",
        owner=layout.state_dir,
    )
    state.data["apt_proxy"] = {**proxy.to_record(), "listen": f"{address}:{APT_PROXY_PORT}"}
    state.save()
    proxy_log = layout.proxy_dir / "apt-cacher-ng.out"
    _wait_for(
        lambda: _port_open(str(address), APT_PROXY_PORT, timeout=0.5),
        SERVICE_START_TIMEOUT_S,
        f"apt-cacher-ng to listen on {address}:{APT_PROXY_PORT}",
        proxy,
        proxy_log,
    )
    if not proxy.alive():
        raise LabError(f"apt-cacher-ng exited right after starting; {proxy_log}:\n{_tail(proxy_log)}")


def _start_lxcfs(state: _State) -> None:
    layout = state.layout
    layout.lxcfs_dir.mkdir(parents=True, exist_ok=True)
    state.data["lxcfs"] = {"mount_point": str(layout.lxcfs_dir)}
    state.save()
    lxcfs = spawn_detached(
        ["lxcfs", "--foreground", f"--pidfile={layout.state_dir / 'lxcfs.pid'}", layout.lxcfs_dir],
        log_path=layout.state_dir / "lxcfs.log",
        owner=layout.state_dir,
    )
    state.data["lxcfs"] = {**lxcfs.to_record(), "mount_point": str(layout.lxcfs_dir)}
    state.save()
    _wait_for(
        lambda: (layout.lxcfs_dir / "proc/uptime").exists(),
        SERVICE_START_TIMEOUT_S,
        "lxcfs to mount",
        lxcfs,
        layout.state_dir / "lxcfs.log",
    )


def _prepare_host(state: _State, host: LabHost, all_hosts: Sequence[LabHost], key: Path) -> None:
    """Per-host identity goes into the overlay's upper dir; the shared rootfs stays pristine."""
    host_dir = state.layout.host_dir(host.name)
    remove_tree(host_dir)
    upper = host_dir / "upper"
    for directory in (upper, host_dir / "work", host_dir / "merged"):
        directory.mkdir(parents=True)
    (upper / "etc/systemd/network").mkdir(parents=True)
    (upper / "etc/hostname").write_text(f"{host.hostname}\n")
    # Its own machine-id, kept across reboots as on an installed host (the rootfs's is empty, so
    # without this systemd would make a new one from nspawn's random container UUID every boot).
    (upper / "etc/machine-id").write_text(f"{uuid.uuid4().hex}\n")
    (upper / "etc/machine-id").chmod(0o444)
    _write_etc_hosts(upper / "etc/hosts", all_hosts)
    addresses = "".join(f"Address={a}/{BRIDGE_ADDRESS.network.prefixlen}\n" for a in host.addresses)
    (upper / "etc/systemd/network/10-brainall-lab.network").write_text(f"""\
[Match]
Name=host0

[Network]
{addresses}# A default route, as a real host has one; the lab's nft guard drops whatever takes it.
Gateway={BRIDGE_ADDRESS.ip}
LinkLocalAddressing=no
IPv6AcceptRA=no
""")
    ssh_dir = upper / "root/.ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    ssh_dir.chmod(0o700)
    authorized = ssh_dir / "authorized_keys"
    authorized.write_text(key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    if host.ssh_port != 22:
        # 22 stays open too: the lab's own readiness probe and tooling always use it
        (upper / "etc/ssh/sshd_config.d").mkdir(parents=True)
        (upper / "etc/ssh/sshd_config.d/20-brainall-lab-ports.conf").write_text(f"Port 22\nPort {host.ssh_port}\n")

    state.hosts[host.name] = {
        "hostname": host.hostname,
        "address": host.address,
        "ssh_port": host.ssh_port,
        "extra_addresses": list(host.extra_addresses),
        "withhold": sorted(host.withhold),
        "dir": str(host_dir),
        "mount": str(host_dir / "merged"),
        "cgroups": [str(h / CGROUP_NAME / host.name) for h in cgroup_hierarchies()],
        "supervisor": None,
    }
    state.save()
    _mount_overlay(state, host.name)


def _mount_overlay(state: _State, name: str) -> None:
    record = state.host(name)
    host_dir = Path(str(record["dir"]))
    run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={state.data['rootfs']},upperdir={host_dir / 'upper'},workdir={host_dir / 'work'}",
            record["mount"],
        ]
    )


def _write_etc_hosts(path: Path, hosts: Sequence[LabHost]) -> None:
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    for host in hosts:
        names = [host.hostname] + ([host.name] if host.name != host.hostname else [])
        lines.append(f"{host.address} {' '.join(names)}")
    path.write_text("\n".join(lines) + "\n")


def _launch_host(state: _State, name: str) -> float:
    """Start the host's supervisor (which starts nspawn); returns when it was launched."""
    record = state.host(name)
    host_dir = Path(str(record["dir"]))
    cgroups = [Path(str(c)) for c in record["cgroups"]]  # type: ignore[attr-defined]
    for cgroup in cgroups:
        cgroup.mkdir(parents=True, exist_ok=True)
    nspawn = [
        "systemd-nspawn",
        "--boot",
        # no machined/D-Bus here: don't ask for a scope, stay in the supervisor's cgroup
        "--register=no",
        "--keep-unit",
        "--console=read-only",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        f"--directory={record['mount']}",
        f"--machine={name}",
        f"--hostname={record['hostname']}",
        f"--network-bridge={BRIDGE_NAME}",
        # the dir, not the FUSE file: nspawn cannot stat lxcfs files from its new pid namespace
        f"--bind-ro={state.layout.lxcfs_dir}:/var/lib/lxcfs",
    ]
    # SSHFS mounts (the Storage Box on the gpu host) need the FUSE device inside the host, and
    # systemd refuses automount units ("not supported on this system") without /dev/autofs. A
    # device this machine lacks, or that the host is denied on purpose, is left out: the deploys
    # read what the host has and adapt (features.py).
    withheld = {str(w) for w in record.get("withhold", ())}  # type: ignore[attr-defined]
    for feature, device in (("fuse", "/dev/fuse"), ("autofs", "/dev/autofs")):
        if Path(device).exists() and feature not in withheld:
            nspawn.append(f"--bind={device}")
    argv: list[str | os.PathLike[str]] = [sys.executable, "-I", SUPERVISOR_SCRIPT]
    for cgroup in cgroups:
        argv += ["--cgroup-procs", cgroup / "cgroup.procs"]
    supervisor = spawn_detached([*argv, "--", *nspawn], log_path=host_dir / "console.log", owner=state.layout.state_dir)
    launched_at = time.monotonic()
    record["supervisor"] = supervisor.to_record()
    state.save()
    return launched_at


def _write_ssh_files(layout: _Layout, hosts: Sequence[LabHost], key: Path) -> None:
    """ssh_config for `ssh -F`, testinfra and pyinfra; known_hosts is filled as hosts boot."""
    control_dir = layout.control_dir()
    control_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    entries = [f"Host {host.name}\n    HostName {host.address}\n    Port {host.ssh_port}\n" for host in hosts]
    layout.ssh_config.write_text(
        "".join(entries)
        + f"""
Host *
    User root
    IdentityFile "{key}"
    IdentitiesOnly yes
    UserKnownHostsFile "{layout.known_hosts}"
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 10
    ServerAliveInterval 5
    ServerAliveCountMax 3
    ControlMaster auto
    ControlPath "{control_dir}/%C"
    ControlPersist 60
    LogLevel ERROR
"""
    )
    layout.known_hosts.touch()


def _record_host_keys(layout: _Layout, state: _State, name: str) -> None:
    """Trust exactly the keys the host generated on its own disk (read from its overlay: nothing
    to intercept, unlike a network scan)."""
    record = state.host(name)
    host = _host_from_record(name, record)
    names = list(dict.fromkeys([host.name, host.hostname, *host.addresses]))
    if host.ssh_port != 22:  # ssh looks keys for other ports up as [name]:port
        names += [f"[{n}]:{host.ssh_port}" for n in names]
    patterns = ",".join(names)
    keys = sorted((Path(str(record["mount"])) / "etc/ssh").glob("ssh_host_*_key.pub"))
    lines = [f"{patterns} {' '.join(k.read_text().split()[:2])}" for k in keys]
    others = (
        [line for line in layout.known_hosts.read_text().splitlines() if line and line.split()[0] != patterns]
        if layout.known_hosts.exists()
        else []
    )
    partial = layout.known_hosts.with_suffix(".partial")
    partial.write_text("\n".join(others + lines) + "\n")
    os.replace(partial, layout.known_hosts)


def _wait_hosts_ready(state: _State, launched: dict[str, float], timeout: float) -> list[HostBoot]:
    """Wait for all hosts at once; fails with each failing host's console tail."""
    known_hosts_lock = threading.Lock()

    def wait_one(name: str) -> HostBoot:
        return _wait_host_ready(state, name, launched[name], timeout, known_hosts_lock)

    with ThreadPoolExecutor(max_workers=len(launched)) as pool:
        futures = {name: pool.submit(wait_one, name) for name in launched}
    failures = [str(f.exception()) for f in futures.values() if f.exception() is not None]
    if failures:
        raise LabError(
            "lab hosts did not come up (the lab is left as is for a look; `down` clears it):\n" + "\n".join(failures)
        )
    return [futures[name].result() for name in launched]


def _wait_host_ready(
    state: _State, name: str, launched_at: float, timeout: float, known_hosts_lock: threading.Lock
) -> HostBoot:
    record = state.host(name)
    address = str(record["address"])
    supervisor = ProcessRef.from_record(record["supervisor"])  # type: ignore[arg-type]
    console = Path(str(record["dir"])) / "console.log"
    deadline = launched_at + timeout
    host_key = Path(str(record["mount"])) / "etc/ssh/ssh_host_ed25519_key.pub"

    def check_alive() -> None:
        if not supervisor.alive():
            raise LabError(f"{name}: nspawn exited during boot; {console}:\n{_tail(console)}")
        if time.monotonic() > deadline:
            raise LabError(f"{name}: not up after {timeout:.0f}s; {console}:\n{_tail(console)}")

    # sshd listens only after `ssh-keygen -A`, so an open port means the host keys are written.
    while not (_port_open(address, 22, timeout=0.5) and host_key.exists()):
        check_alive()
        time.sleep(0.1)
    with known_hosts_lock:
        _record_host_keys(state.layout, state, name)
    system_state = ""
    while True:
        check_alive()
        remaining = max(1.0, deadline - time.monotonic())
        try:
            result = _ssh(state.layout, name, "systemctl is-system-running --wait", timeout=remaining, check=False)
        except LabCommandError as exc:  # the boot never finished
            raise LabError(f"{name}: {exc}; {console}:\n{_tail(console)}") from exc
        system_state = result.stdout.strip()
        if system_state in ("running", "degraded"):
            break
        if result.returncode == 255:  # ssh itself failed (sshd still starting): try again
            time.sleep(0.2)
            continue
        raise LabError(
            f"{name}: systemd is {system_state or 'unknown'} ({result.stderr.strip()}); {console}:\n{_tail(console)}"
        )
    seconds = time.monotonic() - launched_at
    failed: tuple[str, ...] = ()
    if system_state == "degraded":
        listing = _ssh(
            state.layout, name, "systemctl --failed --plain --no-legend --no-pager", timeout=15, check=False
        ).stdout
        failed = tuple(line.split()[0] for line in listing.splitlines() if line.strip())
        log.warning("%s is degraded; failed units: %s", name, ", ".join(failed) or "?")
    log.info("%s (%s): ssh up, systemd %s after %.1fs", name, address, system_state, seconds)
    return HostBoot(name=name, address=address, system_state=system_state, seconds=seconds, failed_units=failed)


def _ssh(
    layout: _Layout, name: str, command: str, *, timeout: float, check: bool = True
) -> subprocess.CompletedProcess[str]:
    # No ControlMaster for the lab's own probes: a master forked from here would outlive `up`.
    return run(
        ["ssh", "-F", layout.ssh_config, "-o", "ControlMaster=no", "-o", "ControlPath=none", name, command],
        timeout=timeout,
        check=check,
    )


def _wait_for(condition: Callable[[], bool], timeout: float, what: str, process: ProcessRef, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if not process.alive():
            raise LabError(f"waiting for {what}: the process exited; {log_path}:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            raise LabError(f"waiting for {what}: gave up after {timeout:.0f}s; {log_path}:\n{_tail(log_path)}")
        time.sleep(0.05)


# --- teardown ---------------------------------------------------------------------------------


def _down_recorded(layout: _Layout) -> tuple[list[str], dict[str, int]]:
    """Remove what the state record lists, each step tolerating that it is already gone.
    Every step is tried; errors are collected and raised at the end."""
    state = _State.load(layout)
    removed: list[str] = []
    errors: list[str] = []
    drops: dict[str, int] = {}
    if not state.exists:
        return removed, drops

    def attempt(what: str, action: Callable[[], object]) -> None:
        try:
            action()
            removed.append(what)
        except Exception as exc:  # teardown goes on; the errors are reported together
            errors.append(f"{what}: {exc}")

    shared = state.owns_machine_lab()
    if not shared:
        log.warning(
            "the lab on this machine now is the one in %s; removing only what %s itself holds",
            (_bridge_owner() or ("", "?"))[1],
            layout.state_dir,
        )
    control_dir = Path(str(state.data.get("control_dir") or layout.control_dir()))
    attempt("ssh control connections", lambda: _close_control_masters(control_dir))
    names = list(state.hosts)
    attempt(
        f"hosts {', '.join(names)}" if names else "hosts", lambda: _stop_host_processes(state, names, shared=shared)
    )
    for name in names:
        attempt(f"{name} overlay and files", lambda name=name: _remove_host_files(state, name, shared=shared))
    for service in ("lxcfs", "apt_proxy"):
        record = state.data.get(service)
        if isinstance(record, dict) and "pid" in record:
            attempt(service, lambda record=record: ProcessRef.from_record(record).stop(timeout=5))
    lxcfs = state.data.get("lxcfs")
    if isinstance(lxcfs, dict) and lxcfs.get("mount_point"):
        attempt("lxcfs mount", lambda: _unmount_and_remove(Path(str(lxcfs["mount_point"]))))
    if shared and state.data.get("nft_table"):
        drops = _guard_drops()
        attempt(f"nft table {NFT_FAMILY} {NFT_TABLE}", _delete_guard)
    if shared and state.data.get("bridge"):
        attempt(f"bridge {BRIDGE_NAME}", _delete_bridge)
    if shared:
        attempt("cgroup parents", _remove_empty_cgroup_parents)
    attempt("state files", lambda: _remove_state_files(layout, control_dir))
    if errors:
        raise LabError("lab teardown incomplete (state.json kept for another `down`):\n" + "\n".join(errors))
    layout.state_file.unlink(missing_ok=True)
    log.info("lab down: removed %s", "; ".join(removed))
    return removed, drops


def _stop_host_processes(state: _State, names: Sequence[str], *, shared: bool) -> None:
    """Power hosts off together (SIGTERM to each supervisor, which nspawn turns into a clean
    shutdown), then kill whatever is left in their cgroups and remove those (when the cgroups,
    named by host, are still this lab's: `shared`)."""
    supervisors = {}
    for name in names:
        record = state.hosts[name].get("supervisor")
        if record:
            supervisor = ProcessRef.from_record(record)  # type: ignore[arg-type]
            if supervisor.send(signal.SIGTERM):
                supervisors[name] = supervisor
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, supervisor in supervisors.items():
        if not supervisor.wait_gone(max(0.0, deadline - time.monotonic())):
            log.warning("%s did not power off within %.0fs; killing it", name, STOP_TIMEOUT_S)
    if not shared:
        return
    for name in names:
        for cgroup in state.hosts[name].get("cgroups", []):  # type: ignore[attr-defined]
            kill_cgroup_tree(Path(cgroup))
        _delete_link(_veth_name(name))


def _remove_host_files(state: _State, name: str, *, shared: bool) -> None:
    record = state.hosts[name]
    host_dir = Path(str(record["dir"]))
    _unmount_and_remove(Path(str(record["mount"])))
    remove_tree(host_dir)
    if shared:
        remove_tree(Path("/run/systemd/nspawn/propagate") / name)


def _unmount_and_remove(path: Path) -> None:
    for mount in mounts_under(path):
        unmount(mount.mount_point)
    if path.is_dir():
        path.rmdir()


def _close_control_masters(control_dir: Path) -> None:
    if not control_dir.is_dir():
        return
    for sock in control_dir.iterdir():
        if sock.is_socket():
            run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab"], timeout=10, check=False)


def _close_control_master(layout: _Layout, name: str) -> None:
    if layout.ssh_config.exists():
        run(["ssh", "-F", layout.ssh_config, "-O", "exit", name], timeout=10, check=False)


def _remove_state_files(layout: _Layout, control_dir: Path) -> None:
    for path in (layout.ssh_config, layout.known_hosts, layout.state_dir / "lxcfs.pid", layout.state_dir / "lxcfs.log"):
        path.unlink(missing_ok=True)
    for directory in (layout.hosts_dir, layout.proxy_dir, control_dir):
        remove_tree(directory)


def _delete_guard() -> None:
    if _nft_table_exists():
        run(["nft", "delete", "table", NFT_FAMILY, NFT_TABLE])


def _delete_bridge() -> None:
    # Ports first: a veth left from a killed container would otherwise just lose its master.
    for port in json.loads(run(["ip", "-json", "link", "show", "master", BRIDGE_NAME], check=False).stdout or "[]"):
        _delete_link(port["ifname"])
    _delete_link(BRIDGE_NAME)


def _delete_link(name: str) -> None:
    if _link_exists(name):
        run(["ip", "link", "delete", name], check=False)


def _remove_empty_cgroup_parents() -> None:
    for hierarchy in all_cgroup_hierarchies():
        parent = hierarchy / CGROUP_NAME
        if parent.is_dir() and not any(p.is_dir() for p in parent.iterdir()):
            parent.rmdir()


# --- the leftover sweep -----------------------------------------------------------------------


def _sweep_leftovers(layout: _Layout, hosts: Sequence[LabHost]) -> None:
    """Clear what a killed run may have left without (or before) recording it, found by the
    lab's fixed names only."""
    swept: list[str] = []
    for pid, owner in processes_owned_by_lab():
        with contextlib.suppress(LabCommandError):
            ProcessRef.of(pid).send(signal.SIGKILL)
            swept.append(f"process {pid} (lab {owner})")
    for hierarchy in all_cgroup_hierarchies():
        top = hierarchy / CGROUP_NAME
        if top.exists():
            kill_cgroup_tree(top)
            swept.append(f"cgroup {top}")
    rootfs_trees = rootfs.cache_dir() / "rootfs"
    for mount in sorted(mounts(), key=lambda m: len(m.mount_point.parts), reverse=True):
        ours = (
            layout.state_dir in mount.mount_point.parents
            or (mount.fs_type == "overlay" and f"lowerdir={rootfs_trees}/" in mount.super_options)
            or (mount.fs_type.startswith("fuse") and mount.mount_point.name == LXCFS_DIR_NAME)
        )
        if ours:
            unmount(mount.mount_point)
            swept.append(f"mount {mount.mount_point}")
    if _nft_table_exists():
        _delete_guard()
        swept.append(f"nft table {NFT_FAMILY} {NFT_TABLE}")
    if _link_exists(BRIDGE_NAME):
        _delete_bridge()
        swept.append(f"bridge {BRIDGE_NAME}")
    _sweep_stale_host_names([host.name for host in hosts])
    # ssh masters of the old hosts would hold the socket paths the new hosts' connections use
    _close_control_masters(layout.control_dir())
    for stale in (layout.hosts_dir, layout.proxy_dir, layout.lxcfs_dir):
        remove_tree(stale)
    with contextlib.suppress(OSError):
        _remove_empty_cgroup_parents()
    if swept:
        log.warning("swept leftovers of an earlier lab: %s", "; ".join(swept))


def _sweep_stale_host_names(names: Sequence[str]) -> None:
    """A killed container's veth (vb-NAME) and nspawn's propagate dir would make the next nspawn
    of that name fail."""
    for name in names:
        veth = _veth_name(name)
        deadline = time.monotonic() + 5
        # the kernel removes a dead netns's veth asynchronously; give it a moment first
        while _link_exists(veth) and time.monotonic() < deadline:
            time.sleep(0.1)
        _delete_link(veth)
        remove_tree(Path("/run/systemd/nspawn/propagate") / name)


# --- small queries ----------------------------------------------------------------------------


def _host_from_record(name: str, record: dict[str, object]) -> LabHost:
    return LabHost(
        name=name,
        hostname=str(record["hostname"]),
        address=str(record["address"]),
        ssh_port=int(record.get("ssh_port", 22)),  # type: ignore[call-overload]
        extra_addresses=tuple(str(a) for a in record.get("extra_addresses", ())),  # type: ignore[attr-defined]
        withhold=frozenset(str(w) for w in record.get("withhold", ())),  # type: ignore[attr-defined]
    )


def _veth_name(machine: str) -> str:
    # nspawn names the host side vb-MACHINE; the kernel caps names at 15 chars, and `ip` also
    # resolves the full name nspawn sets as an altname when it must shorten it.
    return f"vb-{machine}"


_BRIDGE_ALIAS_PREFIX = "brainall-lab"


def _bridge_owner() -> tuple[str, str] | None:
    """(lab id, state dir) of the lab whose bridge is up, or None when there is no bridge."""
    try:
        alias = Path(f"/sys/class/net/{BRIDGE_NAME}/ifalias").read_text().split(maxsplit=2)
    except FileNotFoundError:
        return None
    if len(alias) == 3 and alias[0] == _BRIDGE_ALIAS_PREFIX:
        return alias[1], alias[2]
    return "", "(unknown: a bridge not made by the lab)"


def _link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def _nft_table_exists() -> bool:
    return run(["nft", "list", "table", NFT_FAMILY, NFT_TABLE], check=False).returncode == 0


def _guard_drops() -> dict[str, int]:
    """Packets each guard rule dropped, by the rule's comment (empty when there is no table)."""
    result = run(["nft", "--json", "list", "table", NFT_FAMILY, NFT_TABLE], check=False)
    if result.returncode != 0:
        return {}
    drops = {}
    for item in json.loads(result.stdout).get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        counters = [e["counter"] for e in rule.get("expr", []) if isinstance(e, dict) and "counter" in e]
        if counters:
            drops[rule.get("comment", f"{rule['chain']}#{rule.get('handle')}")] = int(counters[0]["packets"])
    return drops


def _is_mounted(path: Path) -> bool:
    return any(m.mount_point == path for m in mounts())


def _recorded_process_alive(record: object) -> bool:
    return isinstance(record, dict) and "pid" in record and ProcessRef.from_record(record).alive()


def _port_open(address: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
