"""The Proxmox API token secret: from the environment or a secret file, never printed.

`BRAINALL_PROXMOX_TOKEN_SECRET` holds the secret itself; `BRAINALL_PROXMOX_TOKEN_FILE` names a
file holding it (brainall_ops.shared.secrets has the rule: a regular file of ours, outside the repository,
mode 0600 or 0400, and the masked `Secret`). Every message that leaves the client goes through
`scrub`, because proxmoxer and requests can put the `Authorization` header or request data into
their exceptions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from brainall_ops.errors import BrainallError
from brainall_ops.shared.secrets import MASK, Secret, one_line, secret_from

__all__ = ["SECRET_ENV", "SECRET_FILE_ENV", "Secret", "SecretError", "read_token_secret", "scrub"]

SECRET_ENV = "BRAINALL_PROXMOX_TOKEN_SECRET"
SECRET_FILE_ENV = "BRAINALL_PROXMOX_TOKEN_FILE"
_AUTH_HEADER = re.compile(r"(PVEAPIToken=[^=\s'\"]+=)[^\s'\",}]+")


class SecretError(BrainallError):
    pass


def _token(value: str, origin: str) -> str:
    return one_line(value.strip(), origin)


def read_token_secret(env: Mapping[str, str] | None = None, repo_root: Path | None = None) -> Secret:
    try:
        secret = secret_from(SECRET_ENV, env, repo_root, check=_token, file_variable=SECRET_FILE_ENV)
    except BrainallError as exc:
        raise SecretError(str(exc)) from None
    if secret is None:
        raise SecretError(
            f"no Proxmox API token secret: set {SECRET_ENV}, or {SECRET_FILE_ENV} to a file readable by you only"
        )
    return secret


def scrub(text: str, *secrets: Secret | str | None) -> str:
    """`text` without any secret in it, and without the value of any API-token header."""
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value:
            text = text.replace(value, MASK)
    return _AUTH_HEADER.sub(rf"\1{MASK}", text)
