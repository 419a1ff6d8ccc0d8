"""The backend cluster's shape from the role map and the seed's OMNIMIND_* variables."""

from __future__ import annotations

import pytest

from brainall_ops.backends.hosttool import instances_of, min_healthy, parse_env, running_ports, workers_for
from brainall_ops.backends.nginx import render_template
from brainall_ops.backends.spec import (
    SEED_VARIABLES,
    cluster_spec,
    env_file_vars,
    mode_file_text,
    parse_mode_flag,
    seed_overrides,
)
from brainall_ops.errors import BrainallError
from brainall_ops.rolemap import load_rolemap
from brainall_ops.rolemap.models import Backends


@pytest.fixture(scope="module")
def backends() -> Backends:
    b = load_rolemap().backends
    assert b is not None
    return b


def test_the_seeds_dynamic_mode(backends: Backends) -> None:
    spec = cluster_spec(backends)
    assert [(i.port, i.role) for i in spec.instances] == [(8000, "primary"), (8080, "secondary"), (3001, "fallback")]
    # production: 3 backends x 1 worker; validation: 2 x 2, the fallback on standby
    assert [i.port for i in spec.running("production")] == [8000, 8080, 3001]
    assert spec.standby("production") == ()
    assert (spec.production.workers, spec.validation.workers) == (1, 2)
    assert [i.port for i in spec.running("validation")] == [8000, 8080]
    assert [i.port for i in spec.standby("validation")] == [3001]
    assert spec.initial_mode == "production"


def test_routes_put_the_fallback_and_the_standby_on_backup(backends: Backends) -> None:
    spec = cluster_spec(backends)
    assert spec.routes("production") == {8000: "normal", 8080: "normal", 3001: "backup"}
    assert spec.routes("validation") == {8000: "normal", 8080: "normal", 3001: "backup"}
    one = cluster_spec(backends, {"OMNIMIND_BACKENDS_VALIDATION": "1"})
    assert one.routes("validation") == {8000: "normal", 8080: "backup", 3001: "backup"}


def test_seed_variables_override_the_role_map(backends: Backends) -> None:
    environ = {
        "OMNIMIND_BACKENDS": "2",
        "OMNIMIND_WORKERS": "3",
        "OMNIMIND_WORKERS_VALIDATION": "4",
        "OMNIMIND_VALIDATION_MODE": "true",
    }
    updated, mode = seed_overrides(backends, environ)
    assert mode == "validation" and updated.mode == "validation"
    spec = cluster_spec(backends, environ)
    assert (spec.production.backends, spec.production.workers, spec.validation.workers) == (2, 3, 4)
    assert spec.initial_mode == "validation"
    # unset or empty variables leave the role map alone
    assert cluster_spec(backends, {"OMNIMIND_WORKERS": ""}) == cluster_spec(backends)
    assert seed_overrides(backends, {})[1] is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OMNIMIND_BACKENDS": "three"}, "OMNIMIND_BACKENDS='three': expected a whole number >= 1"),
        ({"OMNIMIND_WORKERS": "0"}, "OMNIMIND_WORKERS='0': expected a whole number >= 1"),
        ({"OMNIMIND_BACKENDS": "4"}, "OMNIMIND_BACKENDS='4': the role map has only 3 backend instances"),
        ({"OMNIMIND_VALIDATION_MODE": "maybe"}, "OMNIMIND_VALIDATION_MODE='maybe': expected true or false"),
    ],
)
def test_bad_seed_variables_are_one_line_errors(backends: Backends, environ: dict[str, str], message: str) -> None:
    with pytest.raises(BrainallError) as info:
        cluster_spec(backends, environ)
    assert str(info.value) == message


def test_mode_flag_reads_like_the_seed() -> None:
    assert parse_mode_flag("true") == parse_mode_flag("TRUE") == parse_mode_flag("1") == "validation"
    assert parse_mode_flag("false") == parse_mode_flag("") == "production"


def test_every_seed_variable_is_documented_and_written(backends: Backends) -> None:
    spec = cluster_spec(backends)
    names = [name for name, _, _ in env_file_vars(backends, spec, app="a:b", app_dir="/srv/x", app_revision="r")]
    # the mode lives in its own file (the switch writes it); the others are the deploy's
    assert set(SEED_VARIABLES) - set(names) == {"OMNIMIND_VALIDATION_MODE"}
    assert "OMNIMIND_VALIDATION_MODE=true" in mode_file_text("validation")
    assert "OMNIMIND_VALIDATION_MODE=false" in mode_file_text("production")


def test_the_host_tool_reads_the_environment_file_as_the_spec_means_it(backends: Backends) -> None:
    """backendctl (standard library only, on the host) and the controller agree on the shape."""
    for environ in ({}, {"OMNIMIND_BACKENDS": "2", "OMNIMIND_BACKENDS_VALIDATION": "1", "OMNIMIND_WORKERS": "2"}):
        b, _ = seed_overrides(backends, environ)
        spec = cluster_spec(b)
        text = render_template(
            "backends.env.j2",
            mode_file=b.mode_file,
            variables=env_file_vars(b, spec, app=b.app, app_dir=b.app_dir, app_revision="abc"),
        )
        env = parse_env(text)
        assert env["BRAINALL_APP"] == b.app and env["BRAINALL_BACKEND_MODE_FILE"] == b.mode_file
        assert instances_of(env) == [(i.port, i.role) for i in spec.instances]
        for mode in ("production", "validation"):
            assert running_ports(env, mode) == [i.port for i in spec.running(mode)]
            assert workers_for(env, mode) == spec.shape(mode).workers
            assert min_healthy(env, mode) == spec.shape(mode).min_healthy
        assert {k: env[k] for k in spec.shape_vars()} == spec.shape_vars()


FALLBACK_FIRST = ("{port: 8000, role: primary}", "{port: 3001, role: fallback}")


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        (
            [
                (
                    "validation: {backends: 2, workers: 2, min_healthy: 1}",
                    "validation: {backends: 2, workers: 2, min_healthy: 4}",
                )
            ],
            "backends.validation.min_healthy: more than the instances (3)",
        ),
        (
            [
                ("{port: 3001, role: fallback}", "{port: 8000, role: primary}"),
                FALLBACK_FIRST,
                ("production: {backends: 3, workers: 1, min_healthy: 2}", "production: {backends: 1, workers: 1}"),
            ],
            "backends.production.backends: runs only fallback instances (nginx backups)",
        ),
        (
            [("    max_fails: 1 ", "    max_fails: -1 ")],
            "backends.proxy.max_fails: Input should be greater than or equal to 0",
        ),
    ],
)
def test_bad_backends_sections_name_the_field(edits: list[tuple[str, str]], message: str) -> None:
    from brainall_ops.errors import RoleMapError
    from brainall_ops.rolemap import BUILTIN_ROLEMAP, parse_rolemap

    text = BUILTIN_ROLEMAP.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    with pytest.raises(RoleMapError) as info:
        parse_rolemap(text, "fleet.yaml")
    assert any(p.split(": ", 1)[1].startswith(message) for p in info.value.problems), info.value.problems
