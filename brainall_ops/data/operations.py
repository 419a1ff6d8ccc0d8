"""pyinfra operations of the data tier: each reads a fact and yields commands only on drift.

SQL goes to psql on stdin (`_stdin`), which pyinfra never prints: a role's password reaches
PostgreSQL as a SCRAM verifier computed on the controller, so the plain password never reaches
the db host at all, and not even the verifier appears in a command line.
"""

from __future__ import annotations

import os

from pyinfra import host
from pyinfra.api import OperationError, StringCommand, operation

from brainall_ops.data.facts import PostgresDatabaseOwner, PostgresRole
from brainall_ops.data.logic import parse_verifier_header, scram_verifier, verifier_digest
from brainall_ops.shared.secrets import Secret

PSQL_STDIN = "runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@operation(is_idempotent=True)
def postgres_role(role: str, password: Secret):
    """A login role whose SCRAM-SHA-256 password is `password`; created or re-keyed on drift."""
    state = host.get_fact(PostgresRole, role=role)
    if state is None and host.state.is_executing:
        raise OperationError(f"PostgreSQL does not answer on {host.name}: cannot manage role {role}")
    if state is not None and state.exists:
        parsed = parse_verifier_header(state.header)
        if parsed is not None:
            iterations, salt = parsed
            if verifier_digest(scram_verifier(password.reveal(), salt, iterations)) == state.digest:
                return
        verb = "ALTER ROLE"
    else:
        verb = "CREATE ROLE"
    verifier = scram_verifier(password.reveal(), os.urandom(16))
    yield StringCommand(PSQL_STDIN, _stdin=[f"{verb} {_ident(role)} LOGIN PASSWORD '{verifier}';"])


@operation(is_idempotent=True)
def postgres_database(database: str, owner: str):
    """A database owned by `owner`, created when absent, its owner set on drift."""
    current = host.get_fact(PostgresDatabaseOwner, database=database)
    if current == owner:
        return
    if current is None and host.state.is_executing:
        raise OperationError(f"PostgreSQL does not answer on {host.name}: cannot manage database {database}")
    if current not in (None, "absent"):
        yield StringCommand(PSQL_STDIN, _stdin=[f"ALTER DATABASE {_ident(database)} OWNER TO {_ident(owner)};"])
        return
    yield StringCommand(PSQL_STDIN, _stdin=[f"CREATE DATABASE {_ident(database)} OWNER {_ident(owner)};"])
    # The app's schema lives in `public`, which PostgreSQL 15 no longer opens to everyone.
    yield StringCommand(
        f"runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d {database}",
        _stdin=[
            f"ALTER SCHEMA public OWNER TO {_ident(owner)};",
            f"REVOKE ALL ON DATABASE {_ident(database)} FROM PUBLIC;",
        ],
    )
