"""Running commands on the cluster's hosts over OpenSSH, with the inventory's SSH data.

A switch is a sequence of short commands on two hosts that must happen in order; one
multiplexed SSH connection per host (ControlMaster) makes each a few milliseconds. The user's
own ssh configuration still applies (a ProxyJump through the bastion, say); the inventory's
`ssh_*` data (key, known_hosts, port, user) override it. Commands run as root: through `sudo -n`
when the inventory's user is not root.
"""

from __future__ import annotations

import runpy
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.loader import REPO_ROOT


class RemoteError(BrainallError):
    """A command failed on a host; the message names the host, the command and its last error line."""


@dataclass(frozen=True)
class SSHTarget:
    name: str
    hostname: str
    port: int = 22
    user: str = "root"
    key: str | None = None
    known_hosts: str | None = None
    strict_host_key_checking: str | None = None

    @classmethod
    def from_host_data(cls, name: str, data: Mapping[str, Any]) -> SSHTarget:
        return cls(
            name=name,
            hostname=str(data.get("ssh_hostname") or name),
            port=int(data.get("ssh_port") or 22),
            user=str(data.get("ssh_user") or "root"),
            key=data.get("ssh_key"),
            known_hosts=data.get("ssh_known_hosts_file"),
            strict_host_key_checking=data.get("ssh_strict_host_key_checking"),
        )


def load_inventory(path: str | Path) -> dict[str, dict[str, Any]]:
    """Host name -> host data of a pyinfra inventory file (the generated ones are plain Python)."""
    resolved = Path(path) if Path(path).is_absolute() else (Path.cwd() / path)
    if not resolved.exists() and not Path(path).is_absolute():
        resolved = REPO_ROOT / path
    if not resolved.is_file():
        raise BrainallError(f"inventory {path}: no such file")
    try:
        namespace = runpy.run_path(str(resolved))
    except Exception as exc:  # an inventory is Python; report its error in one line
        raise BrainallError(f"inventory {path}: cannot load it: {type(exc).__name__}: {exc}") from None
    hosts = namespace.get("all")
    if not isinstance(hosts, list):
        raise BrainallError(f"inventory {path}: no `all` list of (name, data) hosts")
    out: dict[str, dict[str, Any]] = {}
    for entry in hosts:
        if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], dict):
            out[str(entry[0])] = dict(entry[1])
        elif isinstance(entry, str):
            out[entry] = {}
    return out


class Remote:
    """One host, reached over a multiplexed OpenSSH connection (close() ends it)."""

    def __init__(self, target: SSHTarget, control_dir: str | None = None, connect_timeout: int = 10) -> None:
        self.target = target
        self.name = target.name
        if shutil.which("ssh") is None:
            raise BrainallError("the ssh client is not installed on this machine")
        self._own_dir = control_dir is None
        self._control_dir = control_dir or tempfile.mkdtemp(prefix="brainall-ssh-")
        self._control_path = str(Path(self._control_dir) / f"{target.name}.sock")
        options = [
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={connect_timeout}",
            "-o", "ServerAliveInterval=10",
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={self._control_path}",
            "-o", "ControlPersist=300",
            "-p", str(target.port),
            "-l", target.user,
        ]  # fmt: skip
        if target.key:
            options += ["-i", str(target.key), "-o", "IdentitiesOnly=yes"]
        if target.known_hosts:
            options += ["-o", f"UserKnownHostsFile={target.known_hosts}"]
        if target.strict_host_key_checking:
            value = {"true": "yes", "false": "no"}.get(str(target.strict_host_key_checking).lower())
            options += ["-o", f"StrictHostKeyChecking={value or target.strict_host_key_checking}"]
        self._argv = ["ssh", *options, target.hostname]

    def run(self, command: str, *, stdin: str | None = None, timeout: float = 120, check: bool = True) -> str:
        """stdout of `command` (a shell command line) run as root on the host."""
        remote = command if self.target.user == "root" else f"sudo -n sh -c {shlex.quote(command)}"
        try:
            result = subprocess.run(
                [*self._argv, remote],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.name}: `{_short(command)}` did not finish within {timeout:g}s") from None
        if check and result.returncode != 0:
            lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
            why = lines[-1] if lines else "no output"
            if result.returncode == 255:
                raise RemoteError(f"{self.name}: ssh to {self.target.hostname} failed: {why}")
            raise RemoteError(f"{self.name}: `{_short(command)}` failed (exit {result.returncode}): {why}")
        return result.stdout

    def close(self) -> None:
        subprocess.run(
            [*self._argv[:-1], "-O", "exit", self.target.hostname], capture_output=True, timeout=10, check=False
        )
        if self._own_dir:
            shutil.rmtree(self._control_dir, ignore_errors=True)


def _short(command: str, limit: int = 80) -> str:
    one_line = " ".join(command.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"
