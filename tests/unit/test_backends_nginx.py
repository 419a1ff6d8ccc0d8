"""nginx's side: the upstream rendered from a route table reads back as the same table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brainall_ops.backends.nginx import parse_upstream, render_site, render_upstream, upstream_is_current
from brainall_ops.backends.spec import cluster_spec
from brainall_ops.rolemap import load_rolemap

B = load_rolemap().backends
assert B is not None
SPEC = cluster_spec(B)


def test_the_validation_upstream() -> None:
    text = render_upstream(SPEC, SPEC.routes("validation"), "10.77.1.61", "mode validation")
    servers = [line.strip() for line in text.splitlines() if line.strip().startswith("server ")]
    assert servers == [
        "server 10.77.1.61:8000 max_fails=1 fail_timeout=1s;",
        "server 10.77.1.61:8080 max_fails=1 fail_timeout=1s;",
        "server 10.77.1.61:3001 backup max_fails=1 fail_timeout=1s;",
    ]
    assert "keepalive 16;" in text and "keepalive_timeout 4s;" in text
    assert text.count("{") == text.count("}") == 1


def test_a_drained_server_is_down() -> None:
    text = render_upstream(SPEC, {8000: "down", 8080: "normal", 3001: "backup"}, "10.0.0.1", "drain")
    assert "server 10.0.0.1:8000 down max_fails=1" in text
    assert parse_upstream(text.splitlines()) == {8000: "down", 8080: "normal", 3001: "backup"}


@given(st.fixed_dictionaries({p: st.sampled_from(["normal", "backup", "down"]) for p in SPEC.ports}))
def test_routes_round_trip_or_are_refused(routes: dict) -> None:
    values = set(routes.values())
    if values <= {"backup"} or values == {"down"}:
        with pytest.raises(ValueError):
            render_upstream(SPEC, routes, "10.0.0.1", "x")
        return
    assert parse_upstream(render_upstream(SPEC, routes, "10.0.0.1", "x").splitlines()) == routes


def test_an_upstream_is_current_only_as_rendered_now() -> None:
    routes = SPEC.routes("production")
    text = render_upstream(SPEC, routes, "10.0.0.1")
    assert upstream_is_current(SPEC, text, "10.0.0.1")
    assert not upstream_is_current(SPEC, text, "10.0.0.2")  # the API host moved
    assert not upstream_is_current(SPEC, text.replace("max_fails=1", "max_fails=3"), "10.0.0.1")
    assert not upstream_is_current(SPEC, "garbage", "10.0.0.1")


def test_comments_and_other_lines_are_not_servers() -> None:
    lines = ["# server 1.2.3.4:9 down;", "upstream x {", "  server 1.2.3.4:8000 weight=2; # primary", "}"]
    assert parse_upstream(lines) == {8000: "normal"}


def test_the_site_retries_safely_and_passes_websockets() -> None:
    site = render_site(SPEC)
    assert "include /etc/nginx/brainall/backends-upstream.conf;" in site
    assert "proxy_next_upstream error timeout http_502 http_503;" in site
    assert "non_idempotent" not in site.replace("no `non_idempotent`", "")
    assert "proxy_next_upstream_tries 3;" in site
    assert "proxy_set_header Upgrade $http_upgrade;" in site
    assert "listen 80 default_server;" in site
