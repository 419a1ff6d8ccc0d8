"""The data tier's secrets: the app role's PostgreSQL password and the Redis password.

Each comes from an environment variable or from a file named by `<VAR>_FILE` (outside the
repository, ours, mode 0600), like the Storage Box password (`storage.secrets`), whose `Secret`
keeps the value out of every repr, log line and exception.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from brainall_ops.errors import BrainallError
from brainall_ops.storage.secrets import Secret

DB_APP_PASSWORD_ENV = "BRAINALL_DB_APP_PASSWORD"
REDIS_PASSWORD_ENV = "BRAINALL_REDIS_PASSWORD"


def _checked(value: str, origin: str) -> Secret:
    if not value:
        raise BrainallError(f"{origin}: the secret is empty")
    # Both end up in one-line settings (a SCRAM verifier's input, `requirepass`): no breaks, no NUL;
    # Redis's config parser splits on whitespace and quotes, so those are refused too.
    if any(ch in value for ch in "\n\r\x00\"' \t\\"):
        raise BrainallError(f"{origin}: the secret must be one word (no spaces, quotes, backslashes or line breaks)")
    if len(value) < 12:
        raise BrainallError(f"{origin}: the secret is shorter than 12 characters")
    return Secret(value)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def read_secret_file(path: Path, origin: str, repo_root: Path) -> Secret:
    resolved = path.expanduser().resolve()
    if _inside(resolved, repo_root.resolve()):
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
    return _checked(text[:-1] if text.endswith("\n") else text, origin)


def secret_from(
    variable: str, environ: Mapping[str, str] | None = None, repo_root: Path | None = None
) -> Secret | None:
    """The secret from `variable` or the file `variable_FILE` names; None when neither is set."""
    from brainall_ops.rolemap.loader import REPO_ROOT

    env = os.environ if environ is None else environ
    value = env.get(variable)
    file_name = env.get(f"{variable}_FILE")
    if value is not None and file_name:
        raise BrainallError(f"set either {variable} or {variable}_FILE, not both")
    if file_name:
        return read_secret_file(Path(file_name), f"{variable}_FILE={file_name}", repo_root or REPO_ROOT)
    if value is not None:
        return _checked(value, variable)
    return None


def required_secret(variable: str, what: str, environ: Mapping[str, str] | None = None) -> Secret:
    secret = secret_from(variable, environ)
    if secret is None:
        raise BrainallError(f"{what} needs {variable} or {variable}_FILE (a file outside the repo, mode 0600)")
    return secret
