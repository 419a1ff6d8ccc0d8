"""Phase 5's data tier on the lab with the real pyinfra CLI: real PostgreSQL and Redis on
vm-brainall-db, the nightly dump to the lab's Storage Box, `brainall-ops backup verify`, and the
bastion's clean-up.

- the app VMs log in with the app role's password; the gpu host and this machine (the lab
  controller) are refused by pg_hba, and nothing listens on the db host's loopback;
- Redis wants its password and runs in protected mode on the vSwitch address only;
- rows written from the API VM are in the dump the backup service puts on the box, and
  `backup verify` restores that dump and finds the same counts; a row written after the dump
  makes it fail;
- a second run changes nothing; no password appears in anything pyinfra printed.

The lab's box is (re)deployed first with this module's own box password, as in the storage tests.
Teardown stops PostgreSQL and Redis again (packages and config stay), so the ports are free for the
firewall tests' own listeners on the same host.
Wall time: about 3-4 minutes (apt installs of postgresql and redis dominate on a fresh lab).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from brainall_ops.data.logic import CLEANUP_LOG, DUMP_LOG, DUMP_UNIT, data_spec
from brainall_ops.lab.storagebox import chroot_of
from brainall_ops.rolemap import load_rolemap
from brainall_ops.rolemap.loader import REPO_ROOT
from tests.integration.lab_fixture import Lab, lab  # noqa: F401
from tests.integration.pyinfra_run import PyinfraRun, run_pyinfra

pytestmark = pytest.mark.lab

RM = load_rolemap()
SPEC = data_spec(RM, "lab")
DB = SPEC.host
BOX_DIR = f"{chroot_of(SPEC.box.user)}/home/backups/postgres"
PRINTED: list[str] = []


def sh(testbed: Lab, name: str, command: str) -> str:
    result = testbed.host(name).run(command)
    assert result.rc == 0, f"{name}: {command!r} exited {result.rc}: {result.stdout}{result.stderr}"
    return str(result.stdout)


def pyinfra(env: dict[str, str], deploy: str, *limits: str, data: tuple[str, ...] = ()) -> PyinfraRun:
    args = ["inventories/lab.py", deploy]
    for limit in limits:
        args += ["--limit", limit]
    for item in data:
        args += ["--data", item]
    run = run_pyinfra(*args, env=env, timeout=900)
    PRINTED.append(run.output)
    print(f"$ pyinfra {' '.join(args)}\n--- exit {run.returncode}; last output:\n{run.output[-4000:]}")
    return run


def _password_file(directory: Path, name: str) -> Path:
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"P5-{name}-{secrets.token_urlsafe(18)}\n")
    return path


@pytest.fixture(scope="module")
def passwords() -> Iterator[dict[str, Path]]:
    directory = Path(tempfile.mkdtemp(prefix="brainall-data-test-"))
    yield {name: _password_file(directory, name) for name in ("box", "app", "redis")}
    shutil.rmtree(directory)


def secret(path: Path) -> str:
    return path.read_text().strip()


@pytest.fixture(scope="module")
def env(lab: Lab, passwords: dict[str, Path]) -> dict[str, str]:  # noqa: F811
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("BRAINALL_STORAGEBOX", "BRAINALL_DB",
                                                                          "BRAINALL_REDIS"))}
    return {
        **environ,
        "BRAINALL_LAB_DIR": str(lab.state_dir),
        "BRAINALL_STORAGEBOX_PASSWORD_FILE": str(passwords["box"]),
        "BRAINALL_DB_APP_PASSWORD_FILE": str(passwords["app"]),
        "BRAINALL_REDIS_PASSWORD_FILE": str(passwords["redis"]),
    }


@pytest.fixture(scope="module")
def first_run(lab: Lab, env: dict[str, str]) -> Iterator[PyinfraRun]:  # noqa: F811
    box = pyinfra(env, "deploys/lab_storagebox.py", "storagebox", data=("ssh_port=22",))
    assert box.returncode == 0, "the lab Storage Box deploy failed (see its output above)"
    run = pyinfra(env, "deploys/phase5.py", DB, "app_vms", "bastion")
    yield run
    lab.host(DB).run(f"systemctl stop {SPEC.pg_service} redis-server.service")


@pytest.fixture(scope="module")
def app_rows(lab: Lab, first_run: PyinfraRun, passwords: dict[str, Path]) -> dict[str, int]:  # noqa: F811
    assert first_run.returncode == 0, "phase 5 failed (see its output above)"
    token = secrets.token_hex(4)
    sql = (f"DROP TABLE IF EXISTS items, events; CREATE TABLE items (id serial PRIMARY KEY, name text); "
           f"CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz DEFAULT now()); "
           f"INSERT INTO items (name) SELECT 'item-{token}-' || g FROM generate_series(1, 37) g; "
           f"INSERT INTO events SELECT FROM generate_series(1, 1234);")
    psql_app(lab, "vm-brainall-api", passwords, sql)
    return {"public.items": 37, "public.events": 1234}


def psql_app(testbed: Lab, name: str, passwords: dict[str, Path], sql: str, password: str | None = None) -> str:
    pw = password if password is not None else secret(passwords["app"])
    return sh(testbed, name, f"PGPASSWORD={shlex.quote(pw)} PGCONNECT_TIMEOUT=5 psql -X -At -v ON_ERROR_STOP=1 "
                             f"-h {SPEC.address} -p {SPEC.pg_port} -U {SPEC.role} -d {SPEC.database} "
                             f"-c {shlex.quote(sql)}")


def postgres_startup_error(address: str, port: int, user: str, database: str) -> str:
    """The server's first reply to a StartupMessage from this machine: an ErrorResponse's message
    when it refuses us before authentication (pg_hba reject), else the message type."""
    params = f"user\0{user}\0database\0{database}\0\0".encode()
    packet = struct.pack("!ii", 8 + len(params), 196608) + params
    with socket.create_connection((address, port), timeout=10) as conn:
        conn.sendall(packet)
        kind = conn.recv(1)
        length = struct.unpack("!i", conn.recv(4))[0]
        body = b""
        while len(body) < length - 4:
            chunk = conn.recv(length - 4 - len(body))
            if not chunk:
                break
            body += chunk
    if kind != b"E":
        return f"message {kind!r}"
    fields = dict((part[:1], part[1:].decode(errors="replace")) for part in body.split(b"\0") if part)
    return fields.get(b"M", "")


# --------------------------------------------------------------------------- the deploy
def test_first_run_succeeds(first_run: PyinfraRun) -> None:
    assert first_run.returncode == 0, first_run.output[-3000:]
    assert first_run.error == 0


def test_postgres_and_redis_listen_on_the_vswitch_address_only(lab: Lab, first_run: PyinfraRun) -> None:  # noqa: F811
    db = lab.host(DB)
    assert db.service(SPEC.pg_service).is_running
    assert db.service("redis-server").is_running
    listening = {str(s) for s in db.socket.get_listening_sockets()}
    assert f"tcp://{SPEC.address}:{SPEC.pg_port}" in listening
    assert f"tcp://{SPEC.address}:{SPEC.redis_port}" in listening
    for wrong in (f"tcp://0.0.0.0:{SPEC.pg_port}", f"tcp://127.0.0.1:{SPEC.pg_port}", f"tcp://:::{SPEC.pg_port}",
                  f"tcp://0.0.0.0:{SPEC.redis_port}", f"tcp://127.0.0.1:{SPEC.redis_port}"):
        assert wrong not in listening
    assert db.file("/etc/redis/brainall-auth.conf").mode == 0o600
    assert db.file("/etc/redis/brainall-auth.conf").user == "redis"
    settings = sh(lab, DB, "runuser -u postgres -- psql -X -At -c 'SHOW shared_buffers' -c 'SHOW effective_cache_size'"
                           " -c 'SHOW password_encryption'").split()
    assert settings == ["4GB", "12GB", "scram-sha-256"]


def test_the_app_vms_log_in_with_the_app_password(lab: Lab, app_rows: dict[str, int],  # noqa: F811
                                                  passwords: dict[str, Path]) -> None:
    for name in ("vm-brainall-api", "vm-brainall-workers"):
        assert psql_app(lab, name, passwords, "SELECT count(*) FROM items").strip() == "37"
    wrong = lab.host("vm-brainall-api").run(
        f"PGPASSWORD=wrong-password-123 PGCONNECT_TIMEOUT=5 psql -X -At -h {SPEC.address} -U {SPEC.role} "
        f"-d {SPEC.database} -c 'SELECT 1'")
    assert wrong.rc != 0 and "password authentication failed" in wrong.stderr


def test_elsewhere_is_refused(lab: Lab, first_run: PyinfraRun) -> None:  # noqa: F811
    # This machine (the lab controller) speaks the protocol itself: pg_hba rejects it by address.
    message = postgres_startup_error(SPEC.address, SPEC.pg_port, SPEC.role, SPEC.database)
    assert "pg_hba.conf rejects connection" in message, message
    # The gpu host: the same refusal, seen by a client there.
    script = (
        "import socket, struct\n"
        f"p = b'user\\0{SPEC.role}\\0database\\0{SPEC.database}\\0\\0'\n"
        "s = socket.create_connection(('" + SPEC.address + f"', {SPEC.pg_port}), timeout=10)\n"
        "s.sendall(struct.pack('!ii', 8 + len(p), 196608) + p)\n"
        "print(s.recv(4096).decode(errors='replace'))\n"
    )
    out = sh(lab, "gpu", f"python3 -c {shlex.quote(script)}")
    assert "pg_hba.conf rejects connection" in out and "10.77.1.130" in out
    # Nothing answers on the db host's loopback (the vSwitch address only).
    local = lab.host(DB).run(f"timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{SPEC.pg_port}'")
    assert local.rc != 0


def test_redis_wants_its_password(lab: Lab, first_run: PyinfraRun, passwords: dict[str, Path]) -> None:  # noqa: F811
    cli = f"redis-cli -h {SPEC.address} -p {SPEC.redis_port}"
    anonymous = lab.host("vm-brainall-api").run(f"{cli} ping")
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr
    authed = f"REDISCLI_AUTH={shlex.quote(secret(passwords['redis']))} {cli}"
    assert sh(lab, "vm-brainall-api", f"{authed} ping").strip() == "PONG"
    assert sh(lab, "vm-brainall-api", f"{authed} config get protected-mode").split() == ["protected-mode", "yes"]
    assert sh(lab, "vm-brainall-api", f"{authed} config get maxmemory").split() == ["maxmemory", str(4096 * 1024**2)]


# --------------------------------------------------------------------------- backups
@pytest.fixture(scope="module")
def dumped(lab: Lab, app_rows: dict[str, int]) -> str:  # noqa: F811
    sh(lab, DB, f"systemctl start {DUMP_UNIT}.service")
    log = sh(lab, DB, f"tail -n 1 {DUMP_LOG}")
    assert " ok: " in log, log
    return log.split(" ok: ", 1)[1].split()[0]


def test_backup_service_puts_the_dump_on_the_box(lab: Lab, dumped: str) -> None:  # noqa: F811
    local = sh(lab, DB, f"sha256sum {SPEC.dump.local_dir}/{dumped}").split()[0]
    remote = sh(lab, "storagebox", f"sha256sum {BOX_DIR}/{dumped}").split()[0]
    assert local == remote
    assert sh(lab, DB, f"systemctl is-enabled {DUMP_UNIT}.timer").strip() == "enabled"
    journal = sh(lab, DB, f"journalctl -u {DUMP_UNIT}.service --no-pager -o cat | grep -c 'brainall-pg-dump' || true")
    assert int(journal.strip() or 0) >= 1


def backup_verify(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("brainall-ops")), "backup", "verify", "-i", "inventories/lab.py", "--json"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    PRINTED.extend([result.stdout, result.stderr])
    return result


def test_backup_verify_restores_the_latest_dump_with_the_same_counts(
    lab: Lab, env: dict[str, str], dumped: str, app_rows: dict[str, int]  # noqa: F811
) -> None:
    result = backup_verify(env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["dump"] == dumped and report["ok"] is True
    assert report["tables"] == app_rows == report["live"]
    databases = sh(lab, DB, "runuser -u postgres -- psql -X -At -c 'SELECT datname FROM pg_database'")
    assert "brainall_verify" not in databases  # the scratch database is dropped


def test_backup_verify_fails_when_the_live_database_moved_on(
    lab: Lab, env: dict[str, str], dumped: str, passwords: dict[str, Path]  # noqa: F811
) -> None:
    psql_app(lab, "vm-brainall-api", passwords, "INSERT INTO items (name) VALUES ('after the dump')")
    try:
        result = backup_verify(env)
        assert result.returncode == 1
        assert "public.items: 38 rows live, 37 in the dump" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        psql_app(lab, "vm-brainall-api", passwords, "DELETE FROM items WHERE name = 'after the dump'")


# --------------------------------------------------------------------------- the bastion
def test_bastion_cleanup_reports_bytes_freed_without_docker(lab: Lab, first_run: PyinfraRun) -> None:  # noqa: F811
    # An old rotated log it must remove, and a live log of the same age it must keep.
    sh(lab, "bastion", "head -c 200000 /dev/urandom > /var/log/brainall-test.log.1 && "
                       "echo live > /var/log/brainall-test.log && "
                       "touch -d '30 days ago' /var/log/brainall-test.log.1 /var/log/brainall-test.log")
    sh(lab, "bastion", "systemctl start brainall-cleanup.service")
    line = sh(lab, "bastion", f"tail -n 1 {CLEANUP_LOG}")
    assert " ok: freed " in line and "no docker" in line, line
    assert int(line.split(" ok: freed ", 1)[1].split()[0]) >= 200000
    assert not lab.host("bastion").file("/var/log/brainall-test.log.1").exists
    assert lab.host("bastion").file("/var/log/brainall-test.log").exists
    sh(lab, "bastion", "rm -f /var/log/brainall-test.log")


# --------------------------------------------------------------------------- second run, secrets
def test_second_run_changes_nothing(env: dict[str, str], first_run: PyinfraRun, dumped: str) -> None:
    second = pyinfra(env, "deploys/phase5.py", DB, "app_vms", "bastion")
    assert second.returncode == 0
    assert second.changed == 0, second.output[-3000:]


def test_no_password_in_anything_printed(passwords: dict[str, Path], first_run: PyinfraRun) -> None:
    printed = "\n".join(PRINTED)
    assert printed
    for path in passwords.values():
        assert secret(path) not in printed
