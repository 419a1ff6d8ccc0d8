"""The data tier as pure logic: what the db host gets, computed from the role map and environment.

Nothing here touches a host: the deploy turns it into pyinfra operations, the plan into changes,
and the unit tests check it directly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import shlex
from dataclasses import dataclass

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.environment import PRODUCTION, endpoints
from brainall_ops.rolemap.models import BastionCleanup, RoleMap
from brainall_ops.shared.secrets import REDIS_AUTH_FILE
from brainall_ops.shared.timer_jobs import TimerJob
from brainall_ops.storage import BoxEndpoint, box_endpoint, ssh_command

MB = 1024 * 1024
SCRIPT_DIR = "/usr/local/lib/brainall-data"
UNIT_DIR = "/etc/systemd/system"
LOCK_DIR = "/run/lock"
DUMP_LOG = "/var/log/brainall-data-backup.log"
CLEANUP_LOG = "/var/log/brainall-cleanup.log"
REDIS_CONF = "/etc/redis/redis.conf"
REDIS_AUTH = REDIS_AUTH_FILE
REDIS_DROPIN = "/etc/systemd/system/redis-server.service.d/brainall.conf"
DUMP_UNIT = "brainall-pg-dump"
CLEANUP_UNIT = "brainall-cleanup"
# A dump's name carries its UTC time, so names sort in time order on any listing.
DUMP_NAME = re.compile(r"^(?P<db>[a-z_][a-z0-9_]*)-(?P<stamp>\d{8}T\d{6}Z)\.dump$")
SCRAM_ITERATIONS = 4096  # PostgreSQL's default scram_iterations


# --------------------------------------------------------------------------- memory
@dataclass(frozen=True)
class MemorySettings:
    memory_mb: int
    shared_buffers_mb: int
    effective_cache_size_mb: int
    work_mem_mb: int
    maintenance_work_mem_mb: int
    redis_maxmemory_mb: int


def memory_settings(memory_gb: float, shared_pct: float, cache_pct: float, redis_pct: float,
                    max_connections: int) -> MemorySettings:
    """PostgreSQL and Redis memory from the VM's size: percentages of it, rounded down to whole MB.

    work_mem: what is left after shared_buffers and Redis, over 4 sorts per connection at most,
    kept in [4, 256] MB; maintenance_work_mem 5 % of memory, at most 2 GB.
    """
    total = int(memory_gb * 1024)
    if total < 256:
        raise BrainallError(f"the data host has {memory_gb:g} GB of memory: too little for PostgreSQL and Redis")
    shared = int(total * shared_pct / 100)
    redis = int(total * redis_pct / 100)
    if shared + redis > total * 0.8:
        raise BrainallError(
            f"shared_buffers ({shared} MB) and Redis maxmemory ({redis} MB) leave too little of {total} MB"
        )
    free = total - shared - redis
    work = max(4, min(256, free // (max_connections * 4)))
    return MemorySettings(
        memory_mb=total,
        shared_buffers_mb=shared,
        effective_cache_size_mb=int(total * cache_pct / 100),
        work_mem_mb=work,
        maintenance_work_mem_mb=max(64, min(2048, total // 20)),
        redis_maxmemory_mb=redis,
    )


# --------------------------------------------------------------------------- the data host
@dataclass(frozen=True)
class HbaRule:
    address: str  # a /32 CIDR
    client: str  # the host's name, for the comment


@dataclass(frozen=True)
class DumpJob(TimerJob):
    """The nightly pg_dump: into `local_dir` (the newest `keep` kept), mirrored to the box."""

    database: str = ""
    local_dir: str = ""
    remote: str = ""  # rsync remote spec of the box directory
    ssh: str = ""
    keep: int = 7

    @property
    def description(self) -> str:
        return f"pg_dump of {self.database} to the Storage Box"

    @property
    def unit(self) -> str:
        return DUMP_UNIT

    @property
    def script(self) -> str:
        return f"{SCRIPT_DIR}/pg-dump"

    @property
    def lock(self) -> str:
        return f"{LOCK_DIR}/{DUMP_UNIT}.lock"

    @property
    def tag(self) -> str:
        return f"{DUMP_UNIT} {self.database}"


@dataclass(frozen=True)
class CleanupJob(TimerJob):
    """The bastion's bounded clean-up (role map: data.cleanup)."""

    cleanup: BastionCleanup | None = None

    @property
    def description(self) -> str:
        return "Bounded disk clean-up (journal, rotated logs, unused Docker images)"

    @property
    def unit(self) -> str:
        return CLEANUP_UNIT

    @property
    def script(self) -> str:
        return f"{SCRIPT_DIR}/cleanup"

    @property
    def lock(self) -> str:
        return f"{LOCK_DIR}/{CLEANUP_UNIT}.lock"

    @property
    def tag(self) -> str:
        return CLEANUP_UNIT


def cleanup_job(cleanup: BastionCleanup) -> CleanupJob:
    # spread over half an hour: the clean-up is not urgent, and hosts need not run it at once
    return CleanupJob(name="cleanup", where="", on_calendar=cleanup.on_calendar, randomized_delay_s=1800,
                      cleanup=cleanup)


@dataclass(frozen=True)
class DataSpec:
    """Everything the data host gets in one environment."""

    host: str
    address: str
    pg_version: int
    pg_port: int
    database: str
    role: str
    max_connections: int
    hba: tuple[HbaRule, ...]
    clients: tuple[str, ...]  # host names that may connect
    redis_port: int
    redis_policy: str
    memory: MemorySettings
    box: BoxEndpoint
    dump: DumpJob

    @property
    def pg_conf_dir(self) -> str:
        return f"/etc/postgresql/{self.pg_version}/main"

    @property
    def pg_service(self) -> str:
        return f"postgresql@{self.pg_version}-main.service"

    @property
    def packages(self) -> list[str]:
        # rsync and openssh-client: the dump to the box; util-linux: flock
        return [f"postgresql-{self.pg_version}", "postgresql-client-common", "redis-server", "rsync",
                "openssh-client", "util-linux"]


def member_names(rm: RoleMap, names: list[str]) -> list[str]:
    """Host and VM names for a list of host names and groups, in role-map order, each once."""
    groups = rm.groups()
    known = {h.name for h in rm.hosts} | {v.name for v in rm.vms}
    out: list[str] = []
    for name in names:
        members = groups.get(name, [name] if name in known else None)
        if members is None:
            raise BrainallError(f"data: {name!r} is neither a host, a VM nor a group of the role map")
        out += [m for m in members if m not in out]
    return out


def vm_memory_gb(rm: RoleMap, name: str) -> float:
    for vm in rm.vms:
        if vm.name == name:
            return vm.memory_gb
    for host in rm.hosts:
        if host.name == name:
            return host.hardware.ram_gb
    raise BrainallError(f"data.host {name!r} is neither a VM nor a host of the role map")


def data_spec(rm: RoleMap, environment: str = PRODUCTION) -> DataSpec:
    if rm.data is None:
        raise BrainallError("the role map has no data section")
    data = rm.data
    where = endpoints(rm, environment)
    if data.host not in where:
        raise BrainallError(f"data.host {data.host!r} has no address in environment {environment!r}")
    pg, redis = data.postgres, data.redis
    clients = member_names(rm, list(pg.clients))
    hba = []
    for client in clients:
        if client not in where:
            raise BrainallError(f"data.postgres.clients: {client!r} has no address in environment {environment!r}")
        hba.append(HbaRule(address=f"{where[client].address}/32", client=client))
    box = box_endpoint(rm, environment)
    dump = data.dump
    return DataSpec(
        host=data.host,
        address=str(where[data.host].address),
        pg_version=pg.version,
        pg_port=pg.port,
        database=pg.database,
        role=pg.role,
        max_connections=pg.max_connections,
        hba=tuple(hba),
        clients=tuple(clients),
        redis_port=redis.port,
        redis_policy=redis.maxmemory_policy,
        memory=memory_settings(
            vm_memory_gb(rm, data.host), pg.shared_buffers_pct, pg.effective_cache_size_pct, redis.maxmemory_pct,
            pg.max_connections,
        ),
        box=box,
        dump=DumpJob(
            name=pg.database,
            database=pg.database,
            local_dir=dump.local_dir,
            remote=box.remote(dump.destination),
            where=f"{box.where}/{dump.destination}",
            ssh=ssh_command(box),
            on_calendar=dump.on_calendar,
            randomized_delay_s=0,
            after=(f"postgresql@{pg.version}-main.service",),
            keep=dump.keep,
        ),
    )


# --------------------------------------------------------------------------- SCRAM
def scram_verifier(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677).

    The deploy hands PostgreSQL this verifier, never the password: the plain password does not
    reach the db host at all. (SASLprep is the identity for the ASCII passwords `secrets` allows.)
    """
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def parse_verifier_header(text: str) -> tuple[int, bytes] | None:
    """(iterations, salt) from `SCRAM-SHA-256$<iterations>:<salt>`, or None."""
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)", text.strip())
    if not match:
        return None
    return int(match.group(1)), base64.b64decode(match.group(2))


def verifier_digest(verifier: str) -> str:
    """sha256 of a verifier's keys part: what the host reports, so the keys never leave it."""
    keys = verifier.split("$", 2)[2]
    return hashlib.sha256(keys.encode()).hexdigest()


# --------------------------------------------------------------------------- dumps
def latest_dump(names: list[str], database: str) -> str | None:
    """The newest dump of `database` among file names (other files ignored)."""
    dumps = sorted(
        (match.group("stamp"), name)
        for name in names
        if (match := DUMP_NAME.match(name)) and match.group("db") == database
    )
    return dumps[-1][1] if dumps else None


def compare_counts(live: dict[str, int], restored: dict[str, int]) -> list[str]:
    """Differences between the live database's row counts and the restored dump's, one line each."""
    problems = []
    for table in sorted(set(live) | set(restored)):
        if table not in restored:
            problems.append(f"{table}: in the live database ({live[table]} rows), not in the dump")
        elif table not in live:
            problems.append(f"{table}: in the dump ({restored[table]} rows), not in the live database")
        elif live[table] != restored[table]:
            problems.append(f"{table}: {live[table]} rows live, {restored[table]} in the dump")
    return problems


def parse_counts(lines: list[str]) -> dict[str, int]:
    """`schema.table|count` lines (psql -At) into a dict."""
    out: dict[str, int] = {}
    for line in lines:
        if not line.strip():
            continue
        table, _, count = line.rpartition("|")
        if not table or not count.strip().isdigit():
            raise BrainallError(f"unexpected row count line from psql: {line.strip()!r}")
        out[table] = int(count)
    return out


# Exact row counts of every user table, in one statement (no function has to be created).
COUNT_ROWS_SQL = (
    "SELECT table_schema || '.' || table_name, "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', table_schema, table_name), "
    "false, true, '')))[1]::text::bigint "
    "FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
    "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
)


def psql(database: str, sql: str) -> str:
    """A psql command line run as the postgres superuser over the local socket (peer auth)."""
    return f"runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 -d {shlex.quote(database)} -c {shlex.quote(sql)}"
