"""nginx's side of the cluster: the upstream file, rendered from a route table and read back.

A route table maps each backend port to `normal` (takes traffic), `backup` (only when every normal
server has failed) or `down` (no new requests: being drained). It is the one thing a switch
changes on the proxy host, one reload per step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import TYPE_CHECKING

from brainall_ops.backends.spec import NGINX_UPSTREAM_PATH, UPSTREAM_NAME, ClusterSpec, Route
from brainall_ops.shared.templating import environment

if TYPE_CHECKING:
    import jinja2

_SERVER = re.compile(r"^\s*server\s+(?P<address>[^\s;]+):(?P<port>\d+)(?P<params>[^;]*);")


@cache
def _jinja() -> jinja2.Environment:
    return environment("backends", autoescape=False)


def render_template(name: str, **context: object) -> str:
    return _jinja().get_template(name).render(**context)


def render_upstream(spec: ClusterSpec, routes: Mapping[int, Route], address: str, note: str | None = None) -> str:
    """The upstream file for `routes`, servers in role-map order. The same routes always render
    the same text (unless a `note` is given), so a file can be checked against its own routes."""
    ordered = [(port, routes[port]) for port in spec.ports if port in routes]
    if all(route == "backup" for _, route in ordered):
        raise ValueError("nginx needs a server that is not a backup in an upstream")
    if all(route == "down" for _, route in ordered):
        raise ValueError("an upstream whose every server is down serves nothing")
    return render_template(
        "nginx-upstream.conf.j2",
        upstream=UPSTREAM_NAME,
        routes=ordered,
        address=address,
        proxy=spec.proxy,
        note=note or f"routes {describe_routes(spec, routes)}",
    )


def render_site(spec: ClusterSpec) -> str:
    return render_template(
        "nginx-site.conf.j2", upstream=UPSTREAM_NAME, upstream_path=NGINX_UPSTREAM_PATH, proxy=spec.proxy
    )


def parse_upstream(lines: Iterable[str]) -> dict[int, Route]:
    """The route table of an upstream file (its `server` lines), as nginx will read it."""
    routes: dict[int, Route] = {}
    for line in lines:
        match = _SERVER.match(line.split("#", 1)[0])
        if match is None:
            continue
        params = match["params"].split()
        route: Route = "down" if "down" in params else "backup" if "backup" in params else "normal"
        routes[int(match["port"])] = route
    return routes


def upstream_is_current(spec: ClusterSpec, text: str, address: str) -> bool:
    """Whether an upstream file is what this toolkit renders for its own routes (the role map's proxy
    settings, the API host's address): False after a change of max_fails, keepalive, address..."""
    routes = parse_upstream(text.splitlines())
    try:
        expected = render_upstream(spec, routes, address)
    except (ValueError, KeyError):
        return False
    return text.strip() == expected.strip()


def describe_routes(spec: ClusterSpec, routes: Mapping[int, Route]) -> str:
    return " ".join(f":{port}={routes[port]}" for port in spec.ports if port in routes) or "(none)"
