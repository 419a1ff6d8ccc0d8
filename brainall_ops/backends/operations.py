"""pyinfra operations of the backend cluster."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pyinfra import host, state
from pyinfra.api import FunctionCommand, operation
from pyinfra.api.exceptions import OperationError
from pyinfra.facts.files import FileContents

from brainall_ops.backends.cluster import open_cluster, parse_inspect, shape_problems
from brainall_ops.backends.facts import BackendCluster
from brainall_ops.backends.nginx import parse_upstream, upstream_is_current
from brainall_ops.backends.spec import NGINX_UPSTREAM_PATH, ClusterSpec, Mode
from brainall_ops.backends.switch import plan_switch
from brainall_ops.errors import BrainallError


def _converge(state: Any, host: Any, spec: ClusterSpec, target: Mode | None) -> bool:
    """Controller-side: the switch `brainall-ops backends mode` does, over the inventory's SSH data.
    An operator error is one red line and a failed operation, not a traceback. (pyinfra passes
    `state` and `host` to a FunctionCommand's function by these names.)"""
    hosts = {h.name: h.data.dict() for h in state.inventory}
    try:
        with open_cluster(spec, hosts, log=host.log) as cluster:
            live = cluster.inspect()
            mode = target or live.mode or spec.initial_mode
            plan = cluster.plan(mode, live=live)
            result = cluster.execute(plan, previous_mode=live.mode)
            host.log(f"backend cluster in {mode} mode ({len(plan.steps)} steps, {result.seconds:.1f}s)")
    except BrainallError as exc:
        host.log_styled(f"backend cluster: {exc}", fg="red")
        return False
    return True


@operation()
def converged(spec: ClusterSpec, target: Mode | None = None) -> Generator[Any, None, None]:
    """
    Bring the running backend cluster to its mode without dropping requests: start what the mode
    runs and wait until it is ready, restart one at a time (drained first) what runs a stale
    configuration, route nginx, drain and stop what the mode does not run.

    + spec: the cluster (``brainall_ops.backends.spec.cluster_spec``)
    + target: the mode to converge to; None keeps the host's mode (the role map's on a fresh cluster)

    Acts on the API host (reading nginx's upstream on the proxy host); on any other host it does
    nothing. Changes nothing when the cluster is converged.
    """
    if host.name != spec.host:
        return
    data = host.get_fact(BackendCluster, env_file=spec.env_file)
    if data is None:  # a dry run before the first deploy: everything is to do
        yield FunctionCommand(_converge, (spec, target), {})
        return
    proxy = state.inventory.get_host(spec.proxy_host)
    if proxy is None:
        raise OperationError(f"the inventory has no proxy host {spec.proxy_host!r}")
    lines = proxy.get_fact(FileContents, path=NGINX_UPSTREAM_PATH)
    address = str(host.data.get("brainall_address") or host.data.get("ssh_hostname") or host.name)
    current = upstream_is_current(spec, "\n".join(lines), address) if lines else True
    live = parse_inspect(data, parse_upstream(lines) if lines else None, current)
    if shape_problems(spec, live):  # the deploy writes the environment file first: only a dry run sees this
        yield FunctionCommand(_converge, (spec, target), {})
        return
    mode = target or live.mode or spec.initial_mode
    try:
        plan = plan_switch(spec, live, mode)
    except BrainallError as exc:
        raise OperationError(str(exc)) from None
    if plan.empty:
        host.noop(f"backend cluster converged in {mode} mode")
        return
    yield FunctionCommand(_converge, (spec, target), {})
