"""A convergence gate: one fact read instead of one per operation when nothing has drifted.

pyinfra asks every operation's facts on every run, one SSH command each: the base system alone
reads 28 facts per host, which is most of a no-op re-run's time. A gate groups the operations of
a deploy behind two digests:

- the *desired* digest: everything the operations are given (role-map values, template sources,
  the deploy code itself), computed on the controller;
- the *live* digest: the state those operations manage, read on the host by one probe script
  (files' content, mode and owner; packages' status and version; users and their groups; units
  enabled and active; a few read-only commands).

A host records `desired live` after a run that applied the operations. On the next run the gate
reads the probe's digest and the record in one fact: when the record still matches, the
operations are not declared at all (the gate's own operation reports "No changes"); any drift on
either side (an edited role map, a changed file, a removed package, a stopped unit) declares every
operation again as usual, and pyinfra's own facts then decide what to change. The record is
written at execute time, after the operations, from the probe run afresh.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyinfra
from pyinfra import host
from pyinfra.api import FactBase, operation

RECORD_DIR = "/var/lib/brainall-ops/converged"


@dataclass(frozen=True)
class Probe:
    """What a group of operations manages on a host, read by one shell script."""

    files: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()

    def script(self) -> str:
        parts: list[str] = []
        for path in self.files:
            q = shlex.quote(path)
            parts.append(
                f"if [ -e {q} ]; then stat -c '%n %F %a %U:%G' {q}; "
                f"if [ -f {q} ]; then sha256sum {q}; fi; else echo {q} absent; fi"
            )
        if self.packages:
            names = " ".join(shlex.quote(p) for p in self.packages)
            parts.append(f"dpkg-query -W -f='${{Package}} ${{Status}} ${{Version}}\\n' {names}")
        for user in self.users:
            q = shlex.quote(user)
            parts.append(f"getent passwd {q}; id {q}")
        for unit in self.units:
            q = shlex.quote(unit)
            parts.append(f"echo {q} $(systemctl is-enabled {q}) $(systemctl is-active {q})")
        parts.extend(self.commands)
        # stderr too: "no such package" or "no such user" is state as much as stdout is
        return "{ " + "; ".join(parts) + "; } 2>&1" if parts else "true"


def digest(value: Any) -> str:
    """A stable digest of JSON-able data (tuples become lists, anything else its str)."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def source_digest(paths: Iterable[Path]) -> str:
    """The digest of files on the controller (deploy code, templates): a new release of the
    toolkit declares its operations again once."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _live_digest_command(script: str) -> str:
    return f"( {script} ) | sha256sum | cut -c1-64"


class ConvergedState(FactBase):
    """`(live digest, recorded line)`: the probe's digest now, and what the last run recorded."""

    def command(self, record: str, script: str) -> str:
        return f"{_live_digest_command(script)}; cat {shlex.quote(record)} 2>/dev/null || true"

    def process(self, output: list[str]) -> tuple[str, str]:
        live = output[0].strip() if output else ""
        recorded = output[1].strip() if len(output) > 1 else ""
        return live, recorded


@operation(is_idempotent=True)
def converged_state(record: str, desired: str, script: str, live: str, recorded: str):
    """Record `desired live` on the host unless it is already recorded.

    + record: the record file on the host
    + desired: the desired digest
    + script: the probe script, run afresh at execute time (after the gated operations)
    + live, recorded: what the gate read at prepare time
    """
    if recorded == f"{desired} {live}":
        host.noop("converged: nothing drifted since the last run")
        return
    tmp = f"{record}.tmp"
    yield (
        # root-only: a digest may cover a secret's (a CIFS password's) digest
        f"umask 077 && mkdir -p {shlex.quote(str(Path(record).parent))} && "
        f'printf "%s %s\\n" {desired} "$( {_live_digest_command(script)} )" > {shlex.quote(tmp)} && '
        f"mv {shlex.quote(tmp)} {shlex.quote(record)}"
    )


class Gate:
    """`if gate.open: <operations>` then `gate.close()`."""

    def __init__(self, name: str, desired: Any, probe: Probe) -> None:
        self.name = name
        self.record = f"{RECORD_DIR}/{name}"
        # pyinfra's version too: another pyinfra may read or apply the same operations differently
        self.desired = digest({"desired": desired, "pyinfra": pyinfra.__version__})
        self.script = probe.script()
        self.live, self.recorded = host.get_fact(ConvergedState, record=self.record, script=self.script)
        self.open = self.recorded != f"{self.desired} {self.live}"

    def close(self) -> None:
        converged_state(
            name=f"{self.name}: converged state",
            record=self.record,
            desired=self.desired,
            script=self.script,
            live=self.live,
            recorded=self.recorded,
        )
