"""`brainall-ops backup verify`: the latest dump on the Storage Box, restored into a scratch
database on the db host, its row counts compared with the live database's.

Everything runs on the db host over SSH (the inventory's SSH data): the dump is fetched from the
box with the host's own key (storage's machinery), restored with pg_restore as postgres, counted,
and the scratch database dropped whatever happens.
"""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import dataclass
from typing import Protocol

from brainall_ops.data.logic import COUNT_ROWS_SQL, DataSpec, compare_counts, latest_dump, parse_counts, psql
from brainall_ops.errors import BrainallError

SCRATCH_PREFIX = "brainall_verify"


@dataclass(frozen=True)
class VerifyResult:
    dump: str
    tables: dict[str, int]  # restored counts
    live: dict[str, int]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


class Runner(Protocol):
    """What verify needs of a host connection (backends.remote.Remote): stdout, BrainallError on failure."""

    def run(self, command: str, *, timeout: float = 120) -> str: ...


def list_box_dumps(runner: Runner, spec: DataSpec) -> list[str]:
    out = runner.run(
        f"rsync --list-only -e {shlex.quote(spec.dump.ssh)} {shlex.quote(spec.dump.remote + '/')}", timeout=120
    )
    return [line.split()[-1] for line in out.splitlines() if line.startswith("-") and line.split()]


def verify_latest(runner: Runner, spec: DataSpec, scratch: str = SCRATCH_PREFIX) -> VerifyResult:
    names = list_box_dumps(runner, spec)
    latest = latest_dump(names, spec.database)
    if latest is None:
        raise BrainallError(f"no dump of {spec.database} on the Storage Box ({spec.dump.where})")
    work = runner.run("mktemp -d /var/tmp/brainall-verify.XXXXXX").strip()
    quoted_work = shlex.quote(work)
    dump_path = shlex.quote(f"{work}/{latest}")
    drop = psql("postgres", f'DROP DATABASE IF EXISTS "{scratch}"')
    try:
        runner.run(
            f"chmod 0755 {quoted_work} && rsync -t -e {shlex.quote(spec.dump.ssh)} "
            f"{shlex.quote(spec.dump.remote + '/' + latest)} {dump_path} && chmod 0644 {dump_path}",
            timeout=1800,
        )
        runner.run(drop)
        runner.run(psql("postgres", f'CREATE DATABASE "{scratch}"'))
        runner.run(
            f"runuser -u postgres -- pg_restore --no-owner --no-privileges --exit-on-error -d {scratch} {dump_path}",
            timeout=3600,
        )
        restored = parse_counts(runner.run(psql(scratch, COUNT_ROWS_SQL), timeout=1800).splitlines())
        live = parse_counts(runner.run(psql(spec.database, COUNT_ROWS_SQL), timeout=1800).splitlines())
    finally:
        # Never leave the scratch database or the fetched dump behind, whatever failed above.
        for command in (drop, f"rm -rf {quoted_work}"):
            with contextlib.suppress(BrainallError):
                runner.run(command)
    problems = compare_counts(live, restored)
    if not live and not restored:
        problems.append(f"{spec.database}: no tables in the live database nor in the dump: nothing was verified")
    return VerifyResult(dump=latest, tables=restored, live=live, problems=problems)
