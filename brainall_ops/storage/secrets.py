"""The Storage Box password: `BRAINALL_STORAGEBOX_PASSWORD` or a secret file named by
`BRAINALL_STORAGEBOX_PASSWORD_FILE` (brainall_ops.shared.secrets has the rule and the masked `Secret`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from brainall_ops.shared.secrets import MASK, Secret, one_line, read_secret_file, secret_from

__all__ = ["MASK", "PASSWORD_ENV", "PASSWORD_FILE_ENV", "Secret", "box_password", "read_password_file"]

PASSWORD_ENV = "BRAINALL_STORAGEBOX_PASSWORD"
PASSWORD_FILE_ENV = "BRAINALL_STORAGEBOX_PASSWORD_FILE"


def read_password_file(path: Path, repo_root: Path) -> Secret:
    """The password from a file owned by us, readable by nobody else, outside the repository."""
    origin = f"{PASSWORD_FILE_ENV}={path}"
    # It goes into `password=` lines (CIFS credentials, chpasswd): one line, no NUL.
    return Secret(one_line(read_secret_file(path, origin, repo_root), origin))


def box_password(environ: Mapping[str, str] | None = None, repo_root: Path | None = None) -> Secret | None:
    """The password, or None when neither variable is set. Both set is refused (which one wins?)."""
    return secret_from(PASSWORD_ENV, environ, repo_root)
