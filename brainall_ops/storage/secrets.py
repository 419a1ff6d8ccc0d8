"""The Storage Box password: read from the environment or a secret file outside the repo, never shown.

`Secret` keeps the value out of every repr, str and format, so a password that ends up in a
log line, an exception or pyinfra's operation metadata prints as `********`. The value is
only handed out by `reveal()`, which the deploy calls when it writes the value to a host
through a command's stdin (never a command line).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from brainall_ops.errors import BrainallError

PASSWORD_ENV = "BRAINALL_STORAGEBOX_PASSWORD"
PASSWORD_FILE_ENV = "BRAINALL_STORAGEBOX_PASSWORD_FILE"
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


def _check_value(value: str, origin: str) -> Secret:
    if not value:
        raise BrainallError(f"{origin}: the Storage Box password is empty")
    # The password goes into `password=` lines (CIFS credentials, chpasswd): one line, no NUL.
    if any(ch in value for ch in "\n\r\x00"):
        raise BrainallError(f"{origin}: the Storage Box password must be one line (no line breaks or NUL)")
    return Secret(value)


def _is_inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def read_password_file(path: Path, repo_root: Path) -> Secret:
    """The password from a file owned by us, readable by nobody else, outside the repository."""
    origin = f"{PASSWORD_FILE_ENV}={path}"
    resolved = path.expanduser().resolve()
    if _is_inside(resolved, repo_root.resolve()):
        raise BrainallError(f"{origin}: the secret file is inside the repository ({repo_root}); keep it outside")
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
    # One trailing newline is what editors and `echo >` leave; it is not part of the password.
    return _check_value(text[:-1] if text.endswith("\n") else text, origin)


def box_password(environ: Mapping[str, str] | None = None, repo_root: Path | None = None) -> Secret | None:
    """The password, or None when neither variable is set. Both set is refused (which one wins?)."""
    from brainall_ops.rolemap.loader import REPO_ROOT

    env = os.environ if environ is None else environ
    value = env.get(PASSWORD_ENV)
    file_name = env.get(PASSWORD_FILE_ENV)
    if value is not None and file_name:
        raise BrainallError(f"set either {PASSWORD_ENV} or {PASSWORD_FILE_ENV}, not both")
    if file_name:
        return read_password_file(Path(file_name), repo_root or REPO_ROOT)
    if value is not None:
        return _check_value(value, PASSWORD_ENV)
    return None
