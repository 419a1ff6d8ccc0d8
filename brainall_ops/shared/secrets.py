"""Secrets (the Proxmox API token, the Storage Box password, the data tier's passwords): read from
the environment or from a secret file outside the repository, and never shown.

Every secret follows one rule: `VAR` holds the value, or `VAR_FILE` names a regular file that
belongs to this user, is closed to group and others (0600/0400) and lies outside the repository.
Setting both is refused (which would win?). The value travels in a `Secret`, whose repr, str and
format are masked, so a secret that ends up in a log line, an exception or pyinfra's operation
metadata prints as `********`; only `reveal()` hands it out, to be written to a host through a
command's stdin or a 0600 file, never a command line.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from brainall_ops.errors import BrainallError

MASK = "********"


class Secret:
    """A string that never shows itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is not pickled")


# A check of a secret's value: returns it (maybe normalised) or raises BrainallError naming `origin`.
Check = Callable[[str, str], str]


def one_line(value: str, origin: str) -> str:
    """The least every secret must be: not empty, one line, no NUL."""
    if not value:
        raise BrainallError(f"{origin}: the secret is empty")
    if any(ch in value for ch in "\n\r\x00"):
        raise BrainallError(f"{origin}: the secret must be one line (no line breaks or NUL)")
    return value


def _fleet_root() -> Path | None:
    from brainall_ops.rolemap.loader import FLEET_ROOT

    return FLEET_ROOT


def read_secret_file(path: Path, origin: str, repo_root: Path | None = None) -> str:
    """The text of a secret file: ours, closed to everyone else, outside the fleet repository
    (`repo_root`, default the one the toolkit runs in; outside any, that check has no object).

    One trailing newline (what editors and `echo >` leave) is not part of the secret.
    """
    root = repo_root or _fleet_root()
    root = root.resolve() if root is not None else None
    resolved = path.expanduser().resolve()
    if root is not None and resolved.is_relative_to(root):
        raise BrainallError(f"{origin}: the secret file is inside the repository ({root}); keep it outside")
    try:
        info = resolved.stat()
    except OSError as exc:
        raise BrainallError(f"{origin}: cannot read the secret file: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise BrainallError(f"{origin}: not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise BrainallError(
            f"{origin}: the secret file is open to group or others (mode {mode:04o}); run: chmod 600 {resolved}"
        )
    if info.st_uid != os.geteuid():
        raise BrainallError(f"{origin}: the secret file belongs to uid {info.st_uid}, not to this user")
    try:
        text = resolved.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise BrainallError(f"{origin}: cannot read the secret file: {reason}") from None
    return text[:-1] if text.endswith("\n") else text


def secret_from(
    variable: str,
    environ: Mapping[str, str] | None = None,
    repo_root: Path | None = None,
    check: Check = one_line,
    file_variable: str | None = None,
) -> Secret | None:
    """The secret from `variable` or from the file `file_variable` (default `variable_FILE`)
    names, passed through `check`; None when neither is set."""
    env = os.environ if environ is None else environ
    file_variable = file_variable or f"{variable}_FILE"
    value = env.get(variable)
    file_name = env.get(file_variable)
    if value is not None and file_name:
        raise BrainallError(f"set either {variable} or {file_variable}, not both")
    if file_name:
        origin = f"{file_variable}={file_name}"
        return Secret(check(read_secret_file(Path(file_name), origin, repo_root), origin))
    if value is not None:
        return Secret(check(value, variable))
    return None
