"""Fresh SSH connections from the controller: how a new ruleset is confirmed, how `plan --live` reads.

Always a new TCP connection (no ControlMaster reuse): an established connection survives any
ruleset through `ct state established`, so only a new one proves the host is still reachable.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class SshTarget:
    """Where and how to log in; None leaves the choice to ssh and the operator's ssh config."""

    name: str
    hostname: str
    port: int = 22
    user: str | None = None
    key: str | None = None
    known_hosts: str | None = None
    strict_host_key_checking: str | None = None

    def describe(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.hostname}:{self.port}"


@dataclass(frozen=True)
class SshPath:
    """A target reached directly, or through a jump host (the bastion: the production path)."""

    target: SshTarget
    via: SshTarget | None = None

    def describe(self) -> str:
        hop = f"{self.via.name} ({self.via.describe()}) -> " if self.via else ""
        return f"{hop}{self.target.name} ({self.target.describe()})"


def _options(target: SshTarget, connect_timeout_s: int) -> list[str]:
    options = [
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={connect_timeout_s}",
        "-o", "ControlMaster=no",
        "-o", "ControlPath=none",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=2",
        "-p", str(target.port),
    ]  # fmt: skip
    if target.user:
        options += ["-l", target.user]
    if target.key:
        options += ["-i", target.key, "-o", "IdentitiesOnly=yes"]
    if target.known_hosts:
        options += ["-o", f"UserKnownHostsFile={target.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
    if target.strict_host_key_checking:
        options += ["-o", f"StrictHostKeyChecking={target.strict_host_key_checking}"]
    return options


def ssh_argv(path: SshPath, command: str, connect_timeout_s: int = 10) -> list[str]:
    argv = ["ssh", *_options(path.target, connect_timeout_s)]
    if path.via is not None:
        jump = ["ssh", *_options(path.via, connect_timeout_s), "-W", "%h:%p", path.via.hostname]
        # ssh expands %-tokens in ProxyCommand: a literal % in a path must be doubled
        argv += ["-o", "ProxyCommand=" + shlex.join(a if a == "%h:%p" else a.replace("%", "%%") for a in jump)]
    return [*argv, path.target.hostname, command]


@dataclass(frozen=True)
class SshResult:
    ok: bool
    output: str
    error: str


def run_ssh(path: SshPath, command: str, connect_timeout_s: int = 10, timeout_s: float | None = None) -> SshResult:
    """Run `command` over a fresh connection; never raises for a connection that fails."""
    argv = ssh_argv(path, command, connect_timeout_s)
    limit = timeout_s if timeout_s is not None else 2 * connect_timeout_s + 10
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=limit, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return SshResult(False, "", f"no answer within {limit:g} s")
    except OSError as exc:
        return SshResult(False, "", f"cannot run ssh: {exc.strerror}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return SshResult(False, done.stdout, last)
    return SshResult(True, done.stdout, "")
