"""backendctl, the cluster's tool on the API host: its pure parts (the rest runs in the lab)."""

from __future__ import annotations

from brainall_ops.backends.hosttool import (
    config_digest,
    count_established,
    mode_of,
    parse_env,
    port_of,
    watchdog_decision,
)

ENV = parse_env(
    """
# comment
OMNIMIND_BACKENDS=3
OMNIMIND_WORKERS=1
OMNIMIND_BACKENDS_VALIDATION=2
OMNIMIND_WORKERS_VALIDATION="2"
BRAINALL_BACKEND_INSTANCES=8000:primary,8080:secondary,3001:fallback
BRAINALL_MIN_HEALTHY=2
BRAINALL_MIN_HEALTHY_VALIDATION=1
"""
)


def test_env_files_read_like_systemd() -> None:
    assert ENV["OMNIMIND_WORKERS_VALIDATION"] == "2"
    assert "comment" not in "".join(ENV)
    assert mode_of({"OMNIMIND_VALIDATION_MODE": "true"}) == "validation"
    assert mode_of({"OMNIMIND_VALIDATION_MODE": "false"}) == mode_of({}) == "production"


def test_the_watchdog_starts_the_standby_when_primary_and_secondary_are_down() -> None:
    active = {8000: False, 8080: False, 3001: False}
    to_start, message = watchdog_decision(ENV, "validation", {8000: False, 8080: False, 3001: False}, active, False)
    assert to_start == [3001]
    assert message is not None and "starting standby :3001" in message


def test_the_watchdog_leaves_a_validation_cluster_with_one_healthy_backend() -> None:
    healthy = {8000: False, 8080: True, 3001: False}
    assert watchdog_decision(ENV, "validation", healthy, {8000: True, 8080: True}, False) == ([], None)


def test_the_standby_it_started_counts_once_healthy() -> None:
    healthy = {8000: False, 8080: False, 3001: True}
    assert watchdog_decision(ENV, "validation", healthy, {3001: True}, False) == ([], None)


def test_a_standby_already_starting_is_not_started_twice() -> None:
    to_start, message = watchdog_decision(
        ENV, "validation", {8000: False, 8080: False, 3001: False}, {3001: True}, False
    )
    assert to_start == [] and message is not None and "waiting for standby :3001" in message


def test_production_has_no_standby_it_only_warns() -> None:
    to_start, message = watchdog_decision(ENV, "production", {8000: True, 8080: False, 3001: False}, {}, False)
    assert to_start == [] and message is not None and "1 healthy < 2" in message


def test_during_a_switch_only_an_empty_cluster_counts() -> None:
    # production's minimum is 2; a switch drains one at a time on purpose
    assert watchdog_decision(ENV, "production", {8000: True, 8080: False, 3001: False}, {}, True) == ([], None)
    assert watchdog_decision(ENV, "validation", {8000: False, 8080: False, 3001: False}, {}, True)[0] == [3001]


def test_no_mode_no_action() -> None:
    assert watchdog_decision(ENV, None, {8000: False}, {}, False) == ([], None)


def test_established_connections_on_a_port() -> None:
    lines = [
        "   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999 0 1 1",  # listen :8000
        "   1: 3D014D0A:1F40 3F014D0A:A1B2 01 00000000:00000000 00:00000000 00000000   999 0 2 1",  # est :8000
        "   2: 3D014D0A:1F40 3F014D0A:A1B3 06 00000000:00000000 00:00000000 00000000   999 0 3 1",  # time-wait
        "   3: 3D014D0A:1F90 3F014D0A:A1B4 01 00000000:00000000 00:00000000 00000000   999 0 4 1",  # est :8080
    ]
    assert count_established(lines, 8000) == 1
    assert count_established(lines, 8080) == 1
    assert count_established(lines, 3001) == 0


def test_the_digest_changes_with_any_input() -> None:
    base = config_digest(b"env", "production", b"unit", b"tool")
    assert base == config_digest(b"env", "production", b"unit", b"tool")
    others = {
        config_digest(b"env2", "production", b"unit", b"tool"),
        config_digest(b"env", "validation", b"unit", b"tool"),
        config_digest(b"env", "production", b"unit2", b"tool"),
        config_digest(b"env", "production", b"unit", b"tool2"),
        config_digest(b"en", "vproduction", b"unit", b"tool"),  # no ambiguity at the boundaries
    }
    assert base not in others and len(others) == 5


def test_unit_names() -> None:
    assert port_of("brainall-backend@3001.service") == 3001
