"""The data tier's secrets: the app role's PostgreSQL password and the Redis password.

Each comes from an environment variable or from a file named by `<VAR>_FILE` (the rule and the
masked `Secret` are brainall_ops.shared.secrets'); these two must also be one word of 12 or more.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from brainall_ops.errors import BrainallError
from brainall_ops.shared.secrets import Secret
from brainall_ops.shared.secrets import secret_from as _secret_from

DB_APP_PASSWORD_ENV = "BRAINALL_DB_APP_PASSWORD"
REDIS_PASSWORD_ENV = "BRAINALL_REDIS_PASSWORD"


def one_word(value: str, origin: str) -> str:
    if not value:
        raise BrainallError(f"{origin}: the secret is empty")
    # Both end up in one-line settings (a SCRAM verifier's input, `requirepass`): no breaks, no NUL;
    # Redis's config parser splits on whitespace and quotes, so those are refused too.
    if any(ch in value for ch in "\n\r\x00\"' \t\\"):
        raise BrainallError(f"{origin}: the secret must be one word (no spaces, quotes, backslashes or line breaks)")
    if len(value) < 12:
        raise BrainallError(f"{origin}: the secret is shorter than 12 characters")
    return value


def secret_from(
    variable: str, environ: Mapping[str, str] | None = None, repo_root: Path | None = None
) -> Secret | None:
    """The secret from `variable` or the file `variable_FILE` names; None when neither is set."""
    return _secret_from(variable, environ, repo_root, check=one_word)


def required_secret(variable: str, what: str, environ: Mapping[str, str] | None = None) -> Secret:
    secret = secret_from(variable, environ)
    if secret is None:
        raise BrainallError(f"{what} needs {variable} or {variable}_FILE (a file outside the repo, mode 0600)")
    return secret
