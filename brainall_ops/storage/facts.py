"""pyinfra facts about a host's side of the Storage Box: can it reach the box, log in, see its paths.

Every command here exits 0 and prints its own status (a failed fact command would fail the
host before the operation could say what is wrong). None of them is given a secret.
"""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

from brainall_ops.storage.logic import (
    CONNECT_TIMEOUT_S,
    KEY_PATH,
    KNOWN_HOSTS,
    MOUNT_SUPPORT_COMMAND,
    BoxEndpoint,
    MountSupport,
    Probe,
    parse_mount_support,
    parse_port_check,
    parse_probe,
    ssh_options,
)


def _sftp_batch(box: BoxEndpoint, batch: str) -> str:
    """An sftp session running `batch` with this host's key and pinned host key, never prompting."""
    options = " ".join(f"-o {key}={value}" for key, value in ssh_options(box) if key != "Port")
    return f"printf %s {shlex.quote(batch)} | sftp -b - -P {box.port} {options} {shlex.quote(box.login)}"


def box_listing_command(box: BoxEndpoint, paths: tuple[str, ...]) -> str:
    """One SFTP session that logs in with this host's key and lists `paths` (a missing one is an
    error line, not the end of the session): what a convergence probe records of the box side."""
    # `-cd` may fail without ending the batch; a bare `cd` returns to where the session started.
    batch = "".join(f"-cd {path}\ncd\n" for path in paths)
    session = f"{_sftp_batch(box, batch)} 2>&1"
    return f'if [ -f {KEY_PATH} ] && [ -f {KNOWN_HOSTS} ]; then {session}; echo "rc=$?"; else echo no-key; fi'


class BoxPort(FactBase[Probe]):
    """Whether the box's SSH port accepts a TCP connection from this host (bash's /dev/tcp)."""

    def command(self, address: str, port: int) -> str:
        target = shlex.quote(f"/dev/tcp/{address}/{port}")
        return (
            f"out=$(timeout {CONNECT_TIMEOUT_S} bash -c 'exec 3<>\"$1\"' check {target} 2>&1); rc=$?; "
            'if [ "$rc" = 0 ]; then echo open; else echo closed; '
            f'if [ "$rc" = 124 ]; then echo "connection timed out after {CONNECT_TIMEOUT_S}s"; fi; '
            "printf '%s\\n' \"$out\"; fi"
        )

    def process(self, output: list[str]) -> Probe:
        return parse_port_check(output)


class BoxHostKeyPinned(FactBase[bool]):
    """Whether the known_hosts file the clients use holds a key for the box's name and port."""

    def command(self, known_hosts_name: str) -> str:
        return (
            f"if [ -f {KNOWN_HOSTS} ] && ssh-keygen -F {shlex.quote(known_hosts_name)} -f {KNOWN_HOSTS} >/dev/null; "
            "then echo pinned; else echo missing; fi"
        )

    def process(self, output: list[str]) -> bool:
        return output[:1] == ["pinned"]


class BoxLogin(FactBase[Probe]):
    """Whether this host's key logs in to the box (an empty SFTP session, no prompt)."""

    def command(self, box: BoxEndpoint) -> str:
        return (
            f"if [ ! -f {KEY_PATH} ] || [ ! -f {KNOWN_HOSTS} ]; then echo no-key; else "
            f'out=$({_sftp_batch(box, "")} 2>&1); echo "rc=$?"; printf \'%s\\n\' "$out"; fi'
        )

    def process(self, output: list[str]) -> Probe:
        return parse_probe(output)


class BoxMissingDirs(FactBase[list[str]]):
    """Which of `paths` (relative to the box user's home) do not exist on the box; None when this
    host cannot log in yet."""

    @staticmethod
    def default() -> list[str]:
        return []

    def command(self, box: BoxEndpoint, paths: tuple[str, ...]) -> str:
        checks = "; ".join(
            f"{_sftp_batch(box, f'cd {path}')} >/dev/null 2>&1 || echo missing={shlex.quote(path)}" for path in paths
        )
        return f"if {_sftp_batch(box, '')} >/dev/null 2>&1; then echo login=ok; {checks}; else echo login=failed; fi"

    def process(self, output: list[str]) -> list[str] | None:  # type: ignore[override]
        if output[:1] != ["login=ok"]:
            return None
        return [line.removeprefix("missing=") for line in output[1:] if line.startswith("missing=")]


class SecretFileState(FactBase[dict[str, str] | None]):
    """Owner, mode and sha256 of a file that holds a secret; None when it does not exist.

    Only the digest leaves the host, never the content.
    """

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return (
            f"if [ -f {quoted} ]; then stat -c 'owner=%U:%G mode=%a' {quoted}; "
            f"echo sha256=$(sha256sum < {quoted} | cut -d' ' -f1); else echo absent; fi"
        )

    def process(self, output: list[str]) -> dict[str, str] | None:
        if output[:1] == ["absent"]:
            return None
        fields: dict[str, str] = {}
        for line in output:
            for word in line.split():
                key, _, value = word.partition("=")
                fields[key] = value
        return fields


class LocalModelsState(FactBase[str]):
    """What the Ollama models path is: `absent`, `dir`, or `link:DEST`."""

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return (
            f"if [ -L {quoted} ]; then echo link:$(readlink {quoted}); "
            f"elif [ -d {quoted} ]; then echo dir; else echo absent; fi"
        )

    def process(self, output: list[str]) -> str:
        return output[0] if output else "absent"


class SshdPorts(FactBase[list[int]]):
    """The ports sshd's effective configuration listens on."""

    @staticmethod
    def default() -> list[int]:
        return []

    def command(self) -> str:
        # With a connection spec: plain `sshd -T` refuses a config with `Match LocalPort` blocks
        # (the lab box's own), and an empty answer would rewrite the drop-in on every other run.
        return (
            "sshd -T -C user=root,host=localhost,addr=127.0.0.1,laddr=127.0.0.1,lport=22 2>/dev/null "
            "| awk '$1 == \"port\" {print $2}' || true"
        )

    def process(self, output: list[str]) -> list[int]:
        return sorted({int(line) for line in output if line.strip().isdigit()})


class ChrootMissing(FactBase[list[str] | None]):
    """Files the lab box's chroot lacks (from its populate script's --check); None when the
    script is not installed yet."""

    def command(self, script: str) -> str:
        quoted = shlex.quote(script)
        return f"if [ -x {quoted} ]; then echo checked; {quoted} --check; else echo no-script; fi"

    def process(self, output: list[str]) -> list[str] | None:
        if output[:1] != ["checked"]:
            return None
        return output[1:]


class HostMountSupport(FactBase[MountSupport]):
    """Whether systemd here can automount (/dev/autofs), and which of fuse and cifs the kernel
    can mount: decides the Storage Box mounts' mode (logic.MountSupport)."""

    def command(self) -> str:
        return MOUNT_SUPPORT_COMMAND

    def process(self, output: list[str]) -> MountSupport:
        return parse_mount_support(output)
