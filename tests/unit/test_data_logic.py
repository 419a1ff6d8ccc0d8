"""The data tier's pure logic: memory from the VM size, pg_hba from the role map, SCRAM, dumps."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brainall_ops.data.logic import (
    compare_counts,
    data_spec,
    latest_dump,
    memory_settings,
    parse_counts,
    parse_verifier_header,
    scram_verifier,
    verifier_digest,
)
from brainall_ops.data.rendering import render
from brainall_ops.errors import BrainallError
from brainall_ops.rolemap import load_rolemap
from brainall_ops.shared.secrets import Secret, one_word
from brainall_ops.shared.secrets import secret_from as _secret_from

RM = load_rolemap()


def secret_from(variable: str, environ: dict[str, str]) -> Secret | None:
    """The data tier's rule (one word of 12 or more) over the one reader."""
    return _secret_from(variable, environ, check=one_word)


def test_memory_comes_from_the_vm_size_in_the_role_map() -> None:
    spec = data_spec(RM, "lab")
    assert RM.vm("vm-brainall-db").memory_gb == 16
    assert spec.memory.shared_buffers_mb == 4096  # 25 %
    assert spec.memory.effective_cache_size_mb == 12288  # 75 %
    assert spec.memory.redis_maxmemory_mb == 4096  # 25 %


def test_memory_that_leaves_nothing_is_refused() -> None:
    with pytest.raises(BrainallError, match="leave too little"):
        memory_settings(16, 60, 75, 40, 100)


@given(st.floats(min_value=1, max_value=512), st.integers(min_value=10, max_value=5000))
def test_work_mem_stays_bounded(memory_gb: float, connections: int) -> None:
    m = memory_settings(memory_gb, 25, 75, 25, connections)
    assert 4 <= m.work_mem_mb <= 256
    assert m.shared_buffers_mb + m.redis_maxmemory_mb <= m.memory_mb


def test_lab_spec_uses_lab_addresses_and_the_app_vms_only() -> None:
    spec = data_spec(RM, "lab")
    assert spec.address == "10.77.1.71"
    assert [r.address for r in spec.hba] == ["10.77.1.61/32", "10.77.1.62/32"]
    assert spec.box.address == "10.77.1.50" and spec.box.port == 23
    production = data_spec(RM)
    assert production.address == "192.168.100.71"
    assert production.box.address == "u503462.your-storagebox.de"


def test_pg_hba_lets_in_the_app_hosts_with_scram_and_rejects_the_rest() -> None:
    text = render("pg_hba.conf.j2", spec=data_spec(RM, "lab"))
    rules = [line.split("#")[0].split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    hosts = [r for r in rules if r[0] == "host"]
    assert hosts[:2] == [
        ["host", "brainall", "brainall_app", "10.77.1.61/32", "scram-sha-256"],
        ["host", "brainall", "brainall_app", "10.77.1.62/32", "scram-sha-256"],
    ]
    assert hosts[-2:] == [["host", "all", "all", "0.0.0.0/0", "reject"], ["host", "all", "all", "::/0", "reject"]]
    assert not any("trust" in r or "md5" in r for r in rules)


def test_postgres_and_redis_listen_on_the_vswitch_address_only() -> None:
    spec = data_spec(RM, "lab")
    pg = render("postgresql.conf.j2", spec=spec)
    assert "listen_addresses = '10.77.1.71'" in pg
    assert "shared_buffers = 4096MB" in pg and "effective_cache_size = 12288MB" in pg
    redis = render("redis.conf.j2", spec=spec, auth="/etc/redis/brainall-auth.conf")
    assert "bind 10.77.1.71\n" in redis
    assert "protected-mode yes" in redis and "maxmemory 4096mb" in redis
    assert "requirepass" not in redis  # the password lives in the 0600 include only


def test_scram_verifier_matches_rfc7677_and_round_trips() -> None:
    # RFC 7677's test vector: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = scram_verifier("pencil", salt, 4096)
    assert verifier.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    server_key = base64.b64decode(verifier.rsplit(":", 1)[1])
    nonce = b"rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = b"n=user,r=rOprNGfwEbeRWgbNEkqO,r=" + nonce + b",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=" + nonce
    signature = base64.b64encode(hmac.new(server_key, auth_message, "sha256").digest()).decode()
    assert signature == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    header = verifier.rsplit("$", 1)[0]
    assert parse_verifier_header(header) == (4096, salt)
    assert verifier_digest(verifier) == hashlib.sha256(verifier.split("$", 2)[2].encode()).hexdigest()
    assert parse_verifier_header("md5abc") is None


def test_latest_dump_picks_the_newest_of_the_database() -> None:
    names = ["brainall-20260101T020000Z.dump", "brainall-20260103T020000Z.dump", "other-20270101T000000Z.dump",
             ".partial-brainall-20280101T000000Z.dump", "brainall-20260102T020000Z.dump", "notes.txt"]
    assert latest_dump(names, "brainall") == "brainall-20260103T020000Z.dump"
    assert latest_dump(["notes.txt"], "brainall") is None


def test_row_counts_compare_table_by_table() -> None:
    live = parse_counts(["public.a|3", "public.b|10", ""])
    assert compare_counts(live, {"public.a": 3, "public.b": 10}) == []
    problems = compare_counts(live, {"public.a": 2, "public.c": 1})
    assert problems == [
        "public.a: 3 rows live, 2 in the dump",
        "public.b: in the live database (10 rows), not in the dump",
        "public.c: in the dump (1 rows), not in the live database",
    ]
    with pytest.raises(BrainallError, match="unexpected row count"):
        parse_counts(["garbage"])


def _secret_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "secret"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_secrets_come_from_env_or_a_private_file_outside_the_repo(tmp_path: Path) -> None:
    assert secret_from("X_PW", {}) is None
    assert secret_from("X_PW", {"X_PW": "a-long-password-1"}).reveal() == "a-long-password-1"
    good = _secret_file(tmp_path, "file-password-123\n")
    secret = secret_from("X_PW", {"X_PW_FILE": str(good)})
    assert secret is not None and secret.reveal() == "file-password-123"
    assert "file-password" not in repr(secret) and "file-password" not in f"{secret}"
    with pytest.raises(BrainallError, match="not both"):
        secret_from("X_PW", {"X_PW": "a-long-password-1", "X_PW_FILE": str(good)})
    open_file = _secret_file(tmp_path, "file-password-123\n", 0o640)
    with pytest.raises(BrainallError, match="open to group or others") as exc:
        secret_from("X_PW", {"X_PW_FILE": str(open_file)})
    assert "file-password" not in str(exc.value)
    with pytest.raises(BrainallError, match="one word"):
        secret_from("X_PW", {"X_PW": "has a space in it"})
    with pytest.raises(BrainallError, match="shorter than 12"):
        secret_from("X_PW", {"X_PW": "short"})


def test_a_secret_file_inside_the_repo_is_refused() -> None:
    from brainall_ops.rolemap.loader import REPO_ROOT

    inside = REPO_ROOT / "inventories" / "brainall-v2.yaml"
    with pytest.raises(BrainallError, match="inside the repository"):
        secret_from("X_PW", {"X_PW_FILE": str(inside)})
