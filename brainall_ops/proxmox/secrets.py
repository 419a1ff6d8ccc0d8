"""The Proxmox API token secret: from the environment or a secret file, never printed.

`BRAINALL_PROXMOX_TOKEN_SECRET` holds the secret itself; `BRAINALL_PROXMOX_TOKEN_FILE` names a
file holding it, which must be a regular file outside the repository, readable by its owner only
(mode 0600 or 0400). The secret travels in a `Secret`, whose repr and str are masked, and every
message that leaves the client goes through `scrub`, because proxmoxer and requests can put the
`Authorization` header or request data into their exceptions.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.loader import REPO_ROOT

SECRET_ENV = "BRAINALL_PROXMOX_TOKEN_SECRET"
SECRET_FILE_ENV = "BRAINALL_PROXMOX_TOKEN_FILE"
MASK = "***"
_AUTH_HEADER = re.compile(r"(PVEAPIToken=[^=\s'\"]+=)[^\s'\",}]+")


class SecretError(BrainallError):
    pass


class Secret:
    """A string that does not show itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    __str__ = __repr__

    def __reduce__(self) -> object:
        raise TypeError("a Secret is not pickled")


def read_token_secret(env: Mapping[str, str] | None = None, repo_root: Path = REPO_ROOT) -> Secret:
    env = os.environ if env is None else env
    value = env.get(SECRET_ENV)
    if value:
        return Secret(value.strip())
    file_name = env.get(SECRET_FILE_ENV)
    if not file_name:
        raise SecretError(
            f"no Proxmox API token secret: set {SECRET_ENV}, or {SECRET_FILE_ENV} to a file readable by you only"
        )
    return Secret(_read_secret_file(Path(file_name).expanduser(), repo_root))


def _read_secret_file(path: Path, repo_root: Path) -> str:
    where = f"{SECRET_FILE_ENV}={path}"
    try:
        resolved = path.resolve(strict=True)
        info = resolved.stat()
    except OSError as exc:
        raise SecretError(f"{where}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SecretError(f"{where}: not a regular file")
    if resolved.is_relative_to(repo_root.resolve()):
        raise SecretError(f"{where}: the secret file is inside the repository; keep secrets outside it")
    if info.st_mode & 0o077:
        raise SecretError(f"{where}: readable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it")
    try:
        value = resolved.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"{where}: cannot read it ({type(exc).__name__})") from None
    if not value:
        raise SecretError(f"{where}: the file is empty")
    return value


def scrub(text: str, *secrets: Secret | str | None) -> str:
    """`text` without any secret in it, and without the value of any API-token header."""
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value:
            text = text.replace(value, MASK)
    return _AUTH_HEADER.sub(rf"\1{MASK}", text)
