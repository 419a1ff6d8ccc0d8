"""pyinfra facts of the inference host. Every command exits 0 and says what it found, so a missing
binary or directory is an answer (read by the deploy), not a failed fact."""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra.api import FactBase

from brainall_ops.inference.logic import GpuReport, nvidia_smi_command, parse_nvidia_smi, rsync_command


class NvidiaGpus(FactBase[GpuReport]):
    """The GPUs, driver and CUDA version as `nvidia-smi` reports them (state "absent" without it)."""

    def command(self) -> str:
        return nvidia_smi_command()

    def process(self, output: list[str]) -> GpuReport:
        return parse_nvidia_smi(output)


class VenvPackageVersion(FactBase[str | None]):
    """The version of `package` installed in the virtual environment `venv`; "" without the
    package, None without the venv."""

    def command(self, venv: str, package: str) -> str:
        python = shlex.quote(f"{venv}/bin/python")
        code = shlex.quote("import importlib.metadata as m, sys; print(m.version(sys.argv[1]))")
        return (
            f"if [ -x {python} ]; then {python} -c {code} {shlex.quote(package)} 2>/dev/null || echo '-'; "
            "else echo 'no-venv'; fi"
        )

    def process(self, output: list[str]) -> str | None:
        value = "\n".join(output).strip()
        if value == "no-venv":
            return None
        return "" if value == "-" else value


class UnitState(FactBase[dict[str, str]]):
    """LoadState, ActiveState, SubState and UnitFileState of one systemd unit (LoadState
    "not-found" when there is no such unit)."""

    def command(self, unit: str) -> str:
        return (
            "systemctl show --property=LoadState --property=ActiveState --property=SubState "
            f"--property=UnitFileState {shlex.quote(unit)}"
        )

    def process(self, output: list[str]) -> dict[str, str]:
        state: dict[str, str] = {}
        for line in output:
            key, _, value = line.partition("=")
            state[key.strip()] = value.strip()
        return state


class RsyncDrift(FactBase[list[str] | None]):
    """What `rsync -a --delete source/ dest/` would change (itemized lines; [] when in sync),
    or None when `source` is not a directory."""

    def command(self, source: str, dest: str, checksum: bool = False) -> str:
        return (
            f"if [ -d {shlex.quote(source)} ]; then "
            f"{rsync_command(source, dest, dry_run=True, checksum=checksum)}; "
            "else echo 'source-missing'; fi"
        )

    @staticmethod
    def default() -> list[str] | None:
        return []  # no output at all: source and dest are in sync

    def process(self, output: list[str]) -> list[str] | None:
        if output == ["source-missing"]:
            return None
        # "cd+++" lines of a dest directory still to create count as drift too.
        return [line for line in output if line.strip()]


class ServicesReady(FactBase[list[dict[str, Any]]]):
    """One pass of the readiness probe over every service: [{name, url, unit, ready, reason}].
    Before the probe is installed, every service reads "not ready"."""

    def command(self, probe: str, args: list[str]) -> str:
        quoted = " ".join(shlex.quote(a) for a in args)
        return f"if [ -f {shlex.quote(probe)} ]; then python3 {shlex.quote(probe)} check {quoted}; fi; true"

    def process(self, output: list[str]) -> list[dict[str, Any]]:
        statuses = []
        for line in output:
            try:
                statuses.append(json.loads(line))
            except ValueError:
                continue
        return statuses

    @staticmethod
    def default() -> list[dict[str, Any]]:
        return []


class MountContaining(FactBase[str]):
    """The mount point of the filesystem `path` lies on (`findmnt -T`): "/" for a plain directory
    of the root filesystem, "" when the path cannot be looked up."""

    def command(self, path: str) -> str:
        return f"findmnt -n -o TARGET -T {shlex.quote(path)} 2>/dev/null || true"

    def process(self, output: list[str]) -> str:
        return output[0].strip() if output else ""
