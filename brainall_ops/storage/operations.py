"""pyinfra operations for Storage Box clients (and the lab's stand-in box).

Each reads a fact and yields commands only on drift. Secrets reach the host only on a
command's stdin (`_stdin`), which pyinfra never prints, logs or puts in a command line; the
files that hold them are created under umask 077, so they are never readable by others, not
even for a moment.

Operations that need an earlier operation's result (a key before a login) run their checks
for real only while pyinfra executes; during a planning pass (`--dry`, or the change preview
pyinfra shows when run without `-y`) they assume the earlier operation will have done its work.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator

from pyinfra import host
from pyinfra.api import OperationError, StringCommand, operation
from pyinfra.facts.files import File

from brainall_ops.shared.secrets import Secret
from brainall_ops.storage.facts import (
    BoxHostKeyPinned,
    BoxLogin,
    BoxMissingDirs,
    BoxPort,
    ChrootMissing,
    LocalModelsState,
    SecretFileState,
)
from brainall_ops.storage.logic import (
    CONNECT_TIMEOUT_S,
    KEY_PATH,
    KNOWN_HOSTS,
    BoxEndpoint,
    ssh_options,
)


def _executing() -> bool:
    return bool(host.state.is_executing)


def _host_name() -> str:
    return str(getattr(host.data, "brainall_name", None) or host.name)


def _refuse(message: str) -> Iterator[StringCommand]:
    """Stop this host with `message`. While planning (`--dry`) as pyinfra's one-line operation
    error; while executing as a command that fails with it, which pyinfra prints under the
    host's name (an exception raised then would also print a greenlet traceback)."""
    if not _executing():
        raise OperationError(message)
    yield StringCommand(f"echo {shlex.quote(message)} >&2; exit 1")


@operation(is_idempotent=True)
def box_reachable(box: BoxEndpoint):
    """Fail at once, naming the box's address and port, when this host cannot reach the box;
    yields nothing (no change) when it can."""
    probe = host.get_fact(BoxPort, address=box.address, port=box.port)
    if probe.state != "ok":
        yield from _refuse(f"Storage Box {box.where} unreachable from {_host_name()}: {probe.detail}")


@operation(is_idempotent=True)
def ssh_keypair(path: str, comment: str):
    """An ed25519 key pair made on the host (the private key never leaves it)."""
    private = host.get_fact(File, path=path)
    public = host.get_fact(File, path=f"{path}.pub")
    quoted = shlex.quote(path)
    if not private:
        yield StringCommand(
            f"umask 077 && rm -f {quoted}.pub && ssh-keygen -q -t ed25519 -N '' -C {shlex.quote(comment)} -f {quoted}"
        )
    elif not public:
        yield StringCommand(
            f"umask 077 && ssh-keygen -y -f {quoted} > {quoted}.pub.tmp && mv {quoted}.pub.tmp {quoted}.pub"
        )


@operation(is_idempotent=True)
def box_host_key_pinned(box: BoxEndpoint):
    """Pin the box's host key in the clients' known_hosts on first contact (trust on first use).

    Never replaced afterwards: a changed key makes every login fail with ssh's own warning,
    which is the point.
    """
    if host.get_fact(BoxHostKeyPinned, known_hosts_name=box.known_hosts_name):
        return
    scan = f"ssh-keyscan -T {CONNECT_TIMEOUT_S} -p {box.port} -t ed25519,ecdsa,rsa {shlex.quote(box.address)}"
    yield StringCommand(
        f"umask 077 && scanned=$({scan} 2>/dev/null | grep -v '^#') && [ -n \"$scanned\" ] "
        f"|| {{ echo 'Storage Box {box.where}: no host key offered to {_host_name()}' >&2; exit 1; }}; "
        f"printf '%s\\n' \"$scanned\" >> {KNOWN_HOSTS}"
    )


def _askpass_login(box: BoxEndpoint, command: str) -> str:
    """A shell snippet that runs `ssh BOX COMMAND` with password authentication, the password
    read from this snippet's stdin into a 0600 file in a 0700 directory that is removed after."""
    options = " ".join(
        f"-o {key}={value}"
        for key, value in ssh_options(box)
        if key not in ("BatchMode", "PasswordAuthentication", "KbdInteractiveAuthentication", "IdentitiesOnly")
    )
    return (
        "umask 077; dir=$(mktemp -d) || exit 1; trap 'rm -rf \"$dir\"' EXIT; "
        'cat > "$dir/password"; '
        'printf \'#!/bin/sh\\ncat "%s"\\n\' "$dir/password" > "$dir/askpass"; chmod 700 "$dir/askpass"; '
        f'SSH_ASKPASS="$dir/askpass" SSH_ASKPASS_REQUIRE=force ssh {options} '
        "-o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive "
        "-o NumberOfPasswordPrompts=1 "
        f"{shlex.quote(box.login)} {command}"
    )


@operation(is_idempotent=True)
def box_key_installed(box: BoxEndpoint, password: Secret | None):
    """This host's public key authorized on the box, installed with the box's `install-ssh-key`
    (logged in with the box password once); checked afterwards with a key-only login."""
    probe = host.get_fact(BoxLogin, box=box)
    name = _host_name()
    if probe.state == "ok":
        return
    if probe.state == "host-key":
        yield from _refuse(
            f"Storage Box {box.where}: the host key does not match the one pinned in {KNOWN_HOSTS} on {name} "
            f"({probe.detail}); if the box really changed its key, remove the old one from that file"
        )
        return
    if probe.state == "unreachable":
        yield from _refuse(f"Storage Box {box.where} unreachable from {name}: {probe.detail}")
        return
    if probe.state == "error" and _executing():
        yield from _refuse(f"Storage Box {box.where}: login from {name} failed: {probe.detail}")
        return
    # "denied", or "no-key" (the key and pin are made by earlier operations of this deploy)
    if password is None:
        if probe.state == "no-key" and not _executing():
            return  # planning pass: nothing can be said before the key exists
        yield from _refuse(
            f"Storage Box {box.where}: the key of {name} is not installed there yet, and installing it needs "
            "the box password (BRAINALL_STORAGEBOX_PASSWORD or BRAINALL_STORAGEBOX_PASSWORD_FILE)"
        )
        return
    verify = " ".join(
        [
            "sftp -b /dev/null",
            f"-P {box.port}",
            *(f"-o {k}={v}" for k, v in ssh_options(box) if k != "Port"),
            shlex.quote(box.login),
        ]
    )
    yield StringCommand(
        f"( {_askpass_login(box, 'install-ssh-key')} < {KEY_PATH}.pub ) "
        f"|| {{ echo 'Storage Box {box.where}: install-ssh-key failed (wrong password?)' >&2; exit 1; }}; "
        f"{verify} >/dev/null 2>&1 "
        f"|| {{ echo 'Storage Box {box.where}: the key was sent but a key login still fails' >&2; exit 1; }}",
        _stdin=password.reveal(),
    )


@operation(is_idempotent=True)
def box_directories(box: BoxEndpoint, paths: list[str]):
    """Directories on the box (relative to the user's home), made over SFTP; parents come first in `paths`."""
    missing = host.get_fact(BoxMissingDirs, box=box, paths=tuple(paths))
    if missing is None:
        if _executing():
            yield from _refuse(f"Storage Box {box.where}: {_host_name()} cannot log in to create {', '.join(paths)}")
            return
        missing = list(paths)  # planning pass before the key is installed
    if not missing:
        return
    options = " ".join(f"-o {k}={v}" for k, v in ssh_options(box) if k != "Port")
    sftp = f"sftp -b - -P {box.port} {options} {shlex.quote(box.login)}"
    # "-mkdir": carry on past an existing one; then each path is checked on its own session
    # (a `cd` back to the start is not portable: "/" is the chroot root, not the home).
    mkdirs = "".join(f"-mkdir {path}\n" for path in missing)
    checks = " && ".join(
        f"{{ printf %s {shlex.quote(f'cd {path}' + chr(10))} | {sftp} >/dev/null 2>&1 "
        f"|| {{ echo {shlex.quote(f'Storage Box {box.where}: could not create {path}')} >&2; false; }}; }}"
        for path in missing
    )
    yield StringCommand(f"printf %s {shlex.quote(mkdirs)} | {sftp} >/dev/null 2>&1; {checks}")


@operation(is_idempotent=True)
def secret_file(path: str, content: Secret, mode: str = "0600", owner: str = "root:root"):
    """A file holding a secret: written from stdin under umask 077 to a temporary name next to
    it, then renamed over it, so it never exists readable by others or half-written. Compared by
    sha256 (computed on the host), so an unchanged file is left alone."""
    import hashlib

    state = host.get_fact(SecretFileState, path=path)
    text = content.reveal()
    if not text.endswith("\n"):
        text += "\n"  # pyinfra ends every stdin line with a newline
    digest = hashlib.sha256(text.encode()).hexdigest()
    wanted = {"sha256": digest, "mode": mode.lstrip("0"), "owner": owner}
    if state is not None and all(state.get(key) == value for key, value in wanted.items()):
        return
    quoted = shlex.quote(path)
    tmp = shlex.quote(f"{path}.brainall-new")
    yield StringCommand(
        f"umask 077 && mkdir -p $(dirname {quoted}) && rm -f {tmp} && cat > {tmp} && "
        f"chown {owner} {tmp} && chmod {mode} {tmp} && mv -f {tmp} {quoted}",
        _stdin=text.splitlines(),
    )


@operation(is_idempotent=True)
def ollama_models_moved(script: str, source: str, target: str):
    """Run the model move script when `source` is still a local directory."""
    state = host.get_fact(LocalModelsState, path=source)
    if state == "absent" or state == f"link:{target}":
        return
    if state.startswith("link:"):
        yield from _refuse(f"{source} on {_host_name()} is a link to {state[5:]}, not to {target}: left alone")
        return
    yield StringCommand(shlex.quote(script))


@operation(is_idempotent=True)
def lab_chroot_populated(script: str):
    """The lab box's chroot holds every program its shell offers, with their libraries."""
    missing = host.get_fact(ChrootMissing, script=script)
    if missing == []:
        return
    yield StringCommand(shlex.quote(script))


@operation(is_idempotent=True)
def marked_block(path: str, lines: list[str], begin: str, end: str):
    """Our lines between `begin` and `end` marker lines at the top of a text file (created if
    missing); the rest of the file is left as it is. Compared line by line: no change, no command
    (pyinfra's files.block always runs its shell and reports a change)."""
    from pyinfra.facts.files import FileContents

    current = list(host.get_fact(FileContents, path=path) or [])
    block = [begin, *lines, end]
    if begin in current and end in current[current.index(begin) :]:
        start = current.index(begin)
        stop = current.index(end, start)
        if current[start : stop + 1] == block:
            return
        wanted = current[:start] + block + current[stop + 1 :]
    else:
        wanted = block + current
    text = "".join(f"{line}\n" for line in wanted)
    quoted = shlex.quote(path)
    tmp = shlex.quote(f"{path}.brainall-new")
    yield StringCommand(
        f"umask 022 && printf %s {shlex.quote(text)} > {tmp} && "
        f"{{ [ ! -e {quoted} ] || chmod --reference={quoted} {tmp}; }} && mv -f {tmp} {quoted}"
    )
