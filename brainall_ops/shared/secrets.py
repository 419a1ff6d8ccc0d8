"""Every secret the toolkit reads, declared once here, read by one reader, and never shown.

The declarations (`PROXMOX_TOKEN`, `STORAGEBOX_PASSWORD`, `DB_APP_PASSWORD`, `REDIS_PASSWORD`,
`GRAFANA_ADMIN_PASSWORD`, `INFERENCE_REDIS_PASSWORD`) name each secret's variables, the check its
value must pass and what to say when it is missing; `read()` / `require()` apply the one rule.

Every secret follows one rule: `VAR` holds the value, or `VAR_FILE` names a regular file that
belongs to this user, is closed to group and others (0600/0400) and lies outside the repository.
Setting both is refused (which would win?). The value travels in a `Secret`, whose repr, str and
format are masked, so a secret that ends up in a log line, an exception or pyinfra's operation
metadata prints as `********`; only `reveal()` hands it out, to be written to a host through a
command's stdin or a 0600 file, never a command line.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from brainall_ops.errors import BrainallError

MASK = "********"


class SecretError(BrainallError):
    """A secret is missing or refused; the message never holds the value."""


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


# A check of a secret's value: returns it (maybe normalised) or raises SecretError naming `origin`.
Check = Callable[[str, str], str]


def one_line(value: str, origin: str) -> str:
    """The least every secret must be: not empty, one line, no NUL."""
    if not value:
        raise SecretError(f"{origin}: the secret is empty")
    if any(ch in value for ch in "\n\r\x00"):
        raise SecretError(f"{origin}: the secret must be one line (no line breaks or NUL)")
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
        raise SecretError(f"{origin}: the secret file is inside the repository ({root}); keep it outside")
    try:
        info = resolved.stat()
    except OSError as exc:
        raise SecretError(f"{origin}: cannot read the secret file: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SecretError(f"{origin}: not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise SecretError(
            f"{origin}: the secret file is open to group or others (mode {mode:04o}); run: chmod 600 {resolved}"
        )
    if info.st_uid != os.geteuid():
        raise SecretError(f"{origin}: the secret file belongs to uid {info.st_uid}, not to this user")
    try:
        text = resolved.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SecretError(f"{origin}: cannot read the secret file: {reason}") from None
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
        raise SecretError(f"set either {variable} or {file_variable}, not both")
    if file_name:
        origin = f"{file_variable}={file_name}"
        return Secret(check(read_secret_file(Path(file_name), origin, repo_root), origin))
    if value is not None:
        return Secret(check(value, variable))
    return None


def one_word(value: str, origin: str) -> str:
    """The data tier's passwords: one word of 12 or more characters."""
    if not value:
        raise SecretError(f"{origin}: the secret is empty")
    # They end up in one-line settings (a SCRAM verifier's input, `requirepass`): no breaks, no NUL;
    # Redis's config parser splits on whitespace and quotes, so those are refused too.
    if any(ch in value for ch in "\n\r\x00\"' \t\\"):
        raise SecretError(f"{origin}: the secret must be one word (no spaces, quotes, backslashes or line breaks)")
    if len(value) < 12:
        raise SecretError(f"{origin}: the secret is shorter than 12 characters")
    return value


def _token(value: str, origin: str) -> str:
    return one_line(value.strip(), origin)


_REDIS_URL_SAFE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,256}$")


def _inference_redis(value: str, origin: str) -> str:
    # Also part of the redis:// URL the inference services are given: only URL-safe characters.
    if not _REDIS_URL_SAFE.match(value):
        raise SecretError(f"{origin}: the Redis password must be 16 to 256 characters of A-Z a-z 0-9 . _ ~ + / = -")
    return value


@dataclass(frozen=True)
class Declared:
    """One secret: `variable` holds it, or `file_variable` names its file; `check` vets the value;
    `missing` is the message when neither is set (`{what}` is who needs it)."""

    variable: str
    check: Check = one_line
    file_variable: str = ""
    missing: str = "{what} needs {variable} or {file_variable} (a file outside the repo, mode 0600)"

    def __post_init__(self) -> None:
        if not self.file_variable:
            object.__setattr__(self, "file_variable", f"{self.variable}_FILE")

    def read(self, environ: Mapping[str, str] | None = None, repo_root: Path | None = None) -> Secret | None:
        """The secret, or None when neither variable is set."""
        return secret_from(self.variable, environ, repo_root, self.check, self.file_variable)

    def require(
        self, environ: Mapping[str, str] | None = None, repo_root: Path | None = None, *, what: str = "this deploy"
    ) -> Secret:
        secret = self.read(environ, repo_root)
        if secret is None:
            raise SecretError(self.missing.format(what=what, variable=self.variable, file_variable=self.file_variable))
        return secret


PROXMOX_TOKEN = Declared(
    "BRAINALL_PROXMOX_TOKEN_SECRET",
    _token,
    "BRAINALL_PROXMOX_TOKEN_FILE",
    "no Proxmox API token secret: set {variable}, or {file_variable} to a file readable by you only",
)
# It goes into `password=` lines (CIFS credentials, chpasswd, PVE's storage): one line, no NUL.
STORAGEBOX_PASSWORD = Declared(
    "BRAINALL_STORAGEBOX_PASSWORD",
    missing="{what} needs the Storage Box password: set {variable} or {file_variable} "
    "(a file outside the repo, mode 0600)",
)
DB_APP_PASSWORD = Declared("BRAINALL_DB_APP_PASSWORD", one_word)
REDIS_PASSWORD = Declared("BRAINALL_REDIS_PASSWORD", one_word)
GRAFANA_ADMIN_PASSWORD = Declared("BRAINALL_GRAFANA_ADMIN_PASSWORD", one_word)
INFERENCE_REDIS_PASSWORD = Declared(
    "BRAINALL_INFERENCE_REDIS_PASSWORD",
    _inference_redis,
    missing="set {variable} (or {file_variable}): the inference cache listens on the vSwitch "
    "and takes no connection there without a password",
)
# Where a secret lands on a host (outside any Git history: storage's config_git excludes it).
REDIS_AUTH_FILE = "/etc/redis/brainall-auth.conf"  # requirepass, the data tier's and the inference cache's

DECLARED = (
    PROXMOX_TOKEN,
    STORAGEBOX_PASSWORD,
    DB_APP_PASSWORD,
    REDIS_PASSWORD,
    GRAFANA_ADMIN_PASSWORD,
    INFERENCE_REDIS_PASSWORD,
)

_AUTH_HEADER = re.compile(r"(PVEAPIToken=[^=\s'\"]+=)[^\s'\",}]+")


def scrub(text: str, *secrets: Secret | str | None) -> str:
    """`text` without any of `secrets` in it, and without the value of any API-token header
    (proxmoxer and requests can put the `Authorization` header or request data into exceptions)."""
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value:
            text = text.replace(value, MASK)
    return _AUTH_HEADER.sub(rf"\1{MASK}", text)
