"""The session-wide lab for integration tests: the fleet's hosts booted once as nspawn containers.

Best loaded as a plugin, which also turns on the ordering hook below:

    # tests/conftest.py
    pytest_plugins = ["tests.integration.lab_fixture"]

Importing `lab` into a test module works too: pytest then makes one fixture per module, and they
all share the one lab below, so the lab still boots once per session.

The lab's bridge and nft table names are machine-wide, so one session lab serves every test
module; never call `up` with another state dir in a test. Tests that tear the lab down or rebuild
it (`lab.reset()`) are decorated `@resets_lab`; with the plugin loaded they run after every other
test of the session, so no other module sees its hosts reset under it.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from brainall_ops.lab import LabHost, LabUp, default_state_dir, down, lab_hosts, status, up
from brainall_ops.rolemap import REPO_ROOT

SIMULATOR_PORT = 8006  # the lab environment's proxmox api_url: https://127.0.0.1:8006

# The state dir is the lab's usual one (BRAINALL_LAB_DIR, default /var/lib/brainall-ops/lab): fixed
# rather than a pytest tmp dir, so a run killed mid-way leaves its record where the next run (a
# fresh clone in CI) finds it, and inventories/lab.py finds the lab's key and known_hosts there.

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Lab:
    state_dir: Path
    hosts: list[LabHost]
    boot: LabUp | None  # None: a lab that was already up was reused
    phase2_output: str = ""  # what `pyinfra inventories/lab.py deploys/phase2.py` printed
    simulator: subprocess.Popen[str] | None = field(default=None, repr=False)
    _testinfra_hosts: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def names(self) -> list[str]:
        return [host.name for host in self.hosts]

    def spec(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no lab host {name!r}; the lab has {', '.join(self.names)}")

    def address(self, name: str) -> str:
        return self.spec(name).address

    def host(self, name: str) -> Any:
        """A pytest-testinfra host over the lab's ssh_config (ControlMaster: fast repeated calls)."""
        import testinfra

        if name not in self._testinfra_hosts:
            self._testinfra_hosts[name] = testinfra.get_host(f"ssh://{name}", ssh_config=str(self.ssh_config))
        return self._testinfra_hosts[name]

    def reset(self) -> LabUp:
        """Bring the lab up again from scratch (for `@resets_lab` tests that broke or changed it)."""
        self.boot = up(self.hosts, self.state_dir)
        return self.boot


def resets_lab(test: F) -> F:
    """Marks a test that tears the session lab down or rebuilds it (see the module docstring).
    An attribute, not a marker: it needs no marker registration where the plugin is not loaded."""
    test.resets_lab = True  # type: ignore[attr-defined]
    return test


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A stable sort keeps the file order within each group.
    items.sort(key=lambda item: bool(getattr(getattr(item, "function", None), "resets_lab", False)))


# One lab per session however many fixture definitions pytest makes (see the module docstring).
_session_lab: Lab | None = None
_session_failure: str | None = None
_session_kept = False


def _running_lab(state_dir: Path, hosts: list[LabHost]) -> bool:
    """A lab with exactly these hosts, all running and answering SSH."""
    current = status(state_dir)
    running = {h.name for h in current.hosts if h.running and h.ssh_port_open}
    return current.bridge and current.nft_table and current.apt_proxy and running == {h.name for h in hosts}


def _stop_simulator(pid_file: Path) -> None:
    """Stop a simulator a killed run left behind (only if it really is ours)."""
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return
    if "brainall_ops.lab.pve_simulator" in cmdline:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)


def start_simulator(state_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """The Proxmox API simulator on 127.0.0.1:8006, seeded from the role map, whose lab hook
    turns every VM it starts into a lab host at the VM's cloud-init address."""
    work = state_dir / "proxmox"
    work.mkdir(parents=True, exist_ok=True)
    pid_file = work / "simulator.pid"
    _stop_simulator(pid_file)
    (work / "cluster.json").unlink(missing_ok=True)  # a fresh cluster: phase 2 creates the VMs
    with open(work / "simulator.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "brainall_ops.lab.pve_simulator", "--port", str(SIMULATOR_PORT),
             "--state", str(work / "cluster.json"), "--tls-dir", str(work), "--lab-state", str(state_dir),
             "--task-seconds", "0.1"],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
        )
    pid_file.write_text(str(process.pid))
    info: dict[str, str] = {}
    assert process.stdout is not None
    for line in process.stdout:
        key, sep, value = line.strip().partition("=")
        if sep:
            info[key] = value
        if "token_secret_file" in info:
            break
    if "token_secret_file" not in info:
        process.kill()
        pytest.fail(f"the Proxmox simulator did not start: {(work / 'simulator.log').read_text()[-2000:]}")
    return process, info


def _box_password_env() -> dict[str, str]:
    """Phase 2 creates the vzdump storage on the Storage Box with the box password; the simulator
    mounts nothing, so a run without one gets a throwaway password of its own."""
    if any(os.environ.get(k) for k in ("BRAINALL_STORAGEBOX_PASSWORD", "BRAINALL_STORAGEBOX_PASSWORD_FILE")):
        return {}
    return {"BRAINALL_STORAGEBOX_PASSWORD": f"lab-vzdump-{secrets.token_urlsafe(12)}"}


def phase2_through_simulator(lab: Lab) -> None:
    """Phase 2 as in production: pyinfra creates the VMs through the Proxmox API; in the lab the
    simulator boots each one as a lab host, so later phases reach the VMs over SSH."""
    lab.simulator, info = start_simulator(lab.state_dir)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("pyinfra")), "-y", "inventories/lab.py", "deploys/phase2.py",
         "--limit", "proxmox"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "BRAINALL_PROXMOX_TOKEN_FILE": info["token_secret_file"], **_box_password_env()},
    )
    lab.phase2_output = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.fail(f"phase 2 on the lab failed:\n{lab.phase2_output[-4000:]}")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The fleet's hosts, plus the phase-2 VMs created through the Proxmox API simulator.

    Every session boots a fresh lab, runs phase 2 on it, and tears it all down at the end, in CI
    and outside it alike. A lab left up by an earlier run is never reused: its hosts carry what
    that run's deploys and tests did (a firewall half applied, apt lists of another day, units
    stopped by a failover test), so a module run alone on it would not answer as it does in the
    full run. `up` replaces it (and sweeps what a killed run left) before anything starts.
    BRAINALL_LAB_KEEP=1 leaves this session's lab up at the end, to look at; the next session
    still rebuilds it.
    """
    global _session_lab, _session_failure, _session_kept
    if _session_failure is not None:
        pytest.fail(f"the lab failed to come up earlier in this session:\n{_session_failure}")
    if _session_lab is None:
        if os.geteuid() != 0:
            pytest.fail("the lab needs root: run the integration tests as root")
        state_dir = default_state_dir()
        os.environ["BRAINALL_LAB_DIR"] = str(state_dir)  # for inventories/lab.py in pyinfra runs
        everything = lab_hosts(None, with_vms=True)
        if _running_lab(state_dir, everything):
            print("lab: a lab left up by an earlier run is not reused: booting a fresh one")
        _session_kept = os.environ.get("BRAINALL_LAB_KEEP", "") == "1"
        try:
            _session_lab = Lab(state_dir=state_dir, hosts=everything, boot=up(lab_hosts(None), state_dir))
            phase2_through_simulator(_session_lab)
        except BaseException as exc:
            _session_failure = str(exc)
            if _session_lab is not None and _session_lab.simulator is not None:
                _session_lab.simulator.terminate()
            down(state_dir)
            raise
    try:
        yield _session_lab
    finally:
        # every fixture definition finalizes at the end of the session; the first one takes it down
        if _session_lab is not None:
            if _session_lab.simulator is not None:
                _session_lab.simulator.terminate()
                _session_lab.simulator.wait(timeout=30)
            if not _session_kept:
                down(_session_lab.state_dir)
            _session_lab = None
