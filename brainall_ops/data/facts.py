"""pyinfra facts of the data tier. Every command exits 0 and prints its own state; none is given
a secret, and none prints one: a role's password is reported as its SCRAM salt and a digest."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pyinfra.api import FactBase


@dataclass(frozen=True)
class RoleState:
    exists: bool
    header: str = ""  # "SCRAM-SHA-256$<iterations>:<salt>", empty when no SCRAM password
    digest: str = ""  # sha256 of the verifier's keys


def _sql(database: str, sql: str) -> str:
    return f"runuser -u postgres -- psql -X -At -d {shlex.quote(database)} -c {shlex.quote(sql)} 2>/dev/null"


class PostgresRole(FactBase[RoleState | None]):
    """A role's existence and password (salt and digest only); None when PostgreSQL does not answer."""

    def command(self, role: str) -> str:
        literal = "'" + role.replace("'", "''") + "'"
        query = _sql("postgres", f"SELECT coalesce(rolpassword, '') FROM pg_authid WHERE rolname = {literal}")
        return (
            f"if ! command -v psql >/dev/null || ! out=$({query}); then echo down; "
            'elif [ -z "$out" ] && [ "$(' + _sql("postgres", f"SELECT 1 FROM pg_roles WHERE rolname = {literal}")
            + ')" != 1 ]; then echo absent; '
            "else echo present; echo \"header=$(printf %s \"$out\" | cut -d'$' -f1-2)\"; "
            "echo \"digest=$(printf %s \"$out\" | cut -d'$' -f3 | tr -d '\\n' | sha256sum | cut -d' ' -f1)\"; fi"
        )

    def process(self, output: list[str]) -> RoleState | None:
        if output[:1] == ["down"]:
            return None
        if output[:1] == ["absent"]:
            return RoleState(exists=False)
        fields = dict(line.split("=", 1) for line in output[1:] if "=" in line)
        header = fields.get("header", "")
        return RoleState(exists=True, header=header if header.startswith("SCRAM-SHA-256$") else "",
                         digest=fields.get("digest", ""))


class PostgresDatabaseOwner(FactBase[str | None]):
    """The owner of a database, `absent`, or None when PostgreSQL does not answer."""

    def command(self, database: str) -> str:
        literal = "'" + database.replace("'", "''") + "'"
        query = _sql(
            "postgres",
            f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = {literal}",
        )
        return f'if ! command -v psql >/dev/null || ! out=$({query}); then echo down; else echo "owner=$out"; fi'

    def process(self, output: list[str]) -> str | None:
        if output[:1] == ["down"] or not output:
            return None
        owner = output[0].removeprefix("owner=")
        return owner or "absent"


class DockerState(FactBase[str]):
    """`absent` (no docker command), `down` (no daemon answering) or `up`."""

    def command(self) -> str:
        return (
            "if ! command -v docker >/dev/null; then echo absent; "
            "elif timeout 10 docker info >/dev/null 2>&1; then echo up; else echo down; fi"
        )

    def process(self, output: list[str]) -> str:
        return output[0] if output else "absent"
