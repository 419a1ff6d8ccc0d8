"""The running cluster, reached over SSH: inspect it, plan a switch, carry the plan out.

Used by `brainall-ops backends mode|status` and by the deploy's convergence step (both go through
`Cluster`), so a deploy and a switch do the same thing in the same order.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from brainall_ops.backends.nginx import describe_routes, parse_upstream, render_upstream, upstream_is_current
from brainall_ops.backends.remote import Remote, SSHTarget
from brainall_ops.backends.spec import (
    MODES,
    NGINX_APPLY_PATH,
    NGINX_UPSTREAM_PATH,
    TOOL_PATH,
    ClusterSpec,
    Mode,
    Route,
)
from brainall_ops.backends.switch import (
    Drain,
    Enable,
    InstanceLive,
    Live,
    Restart,
    SetMode,
    SetRoutes,
    Start,
    Step,
    Stop,
    SwitchPlan,
    plan_switch,
)
from brainall_ops.errors import BrainallError

Log = Callable[[str], None]


def parse_inspect(data: Mapping[str, Any], routes: Mapping[int, Route] | None, upstream_current: bool = True) -> Live:
    """`Live` from `backendctl inspect`'s JSON and the proxy's route table."""
    try:
        instances = {
            int(i["port"]): InstanceLive(
                port=int(i["port"]),
                active_state=str(i["active_state"]),
                sub_state=str(i["sub_state"]),
                enabled=bool(i["enabled"]),
                healthy=bool(i["healthy"]),
                digest=i.get("digest"),
                workers=i.get("workers"),
                mode=i.get("mode"),
                pid=i.get("pid"),
                processes=int(i.get("processes") or 0),
                connections=int(i.get("connections") or 0),
                restarts=int(i.get("restarts") or 0),
                health_error=i.get("health_error"),
            )
            for i in data["instances"]
        }
        mode = data.get("mode")
        return Live(
            mode=mode if mode in MODES else None,
            digests={m: str(data["digests"][m]) for m in MODES},
            instances=instances,
            routes=routes,
            shape=dict(data.get("shape") or {}),
            switching_until=data.get("switching_until"),
            watchdog=str(data.get("watchdog") or "unknown"),
            upstream_current=upstream_current,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BrainallError(f"backendctl inspect: unexpected output ({type(exc).__name__}: {exc})") from None


def shape_problems(spec: ClusterSpec, live: Live) -> list[str]:
    """How the deployed environment file differs from the role map (and the seed's variables)."""
    wanted = spec.shape_vars()
    return [
        f"{key}={live.shape.get(key, '(unset)')} on the host, {value} here"
        for key, value in wanted.items()
        if live.shape.get(key) != value
    ]


@dataclass
class StepRecord:
    step: Step
    seconds: float
    note: str = ""


@dataclass
class SwitchResult:
    plan: SwitchPlan
    records: list[StepRecord] = field(default_factory=list)
    seconds: float = 0.0


class Cluster:
    def __init__(self, spec: ClusterSpec, api: Remote, proxy: Remote, api_address: str, log: Log = print) -> None:
        self.spec = spec
        self.api = api
        self.proxy = proxy
        self.api_address = api_address
        self.log = log

    # ----------------------------------------------------------------- reading
    def inspect(self) -> Live:
        env_file = shlex.quote(self.spec.env_file)
        text = self.api.run(
            f"if [ ! -x {TOOL_PATH} ] || [ ! -s {env_file} ]; then "
            f"echo 'the backend cluster is not deployed here (run deploys/phase4.py)' >&2; exit 3; fi; "
            f"python3 {TOOL_PATH} --env-file {env_file} inspect",
            timeout=60,
        )
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise BrainallError(f"{self.api.name}: backendctl inspect did not print JSON") from None
        upstream = self.proxy.run(f"cat {NGINX_UPSTREAM_PATH} 2>/dev/null || true", timeout=30)
        routes = parse_upstream(upstream.splitlines()) if upstream.strip() else None
        current = upstream_is_current(self.spec, upstream, self.api_address) if routes else True
        return parse_inspect(data, routes, current)

    def plan(self, target: Mode, *, force: bool = False, live: Live | None = None) -> SwitchPlan:
        live = live or self.inspect()
        problems = shape_problems(self.spec, live)
        if problems:
            raise BrainallError(
                f"the cluster on {self.spec.host} was deployed with another shape ({'; '.join(problems)}): "
                "run deploys/phase4.py first"
            )
        return plan_switch(self.spec, live, target, force=force)

    # ----------------------------------------------------------------- doing
    def switch(self, target: Mode, *, force: bool = False) -> SwitchResult:
        live = self.inspect()
        plan = self.plan(target, force=force, live=live)
        return self.execute(plan, previous_mode=live.mode)

    def execute(self, plan: SwitchPlan, previous_mode: Mode | None = None) -> SwitchResult:
        result = SwitchResult(plan)
        if plan.empty:
            return result
        for warning in plan.warnings:
            self.log(f"warning: {warning}")
        bound = len(plan.steps) * (self.spec.drain_s + self.spec.start_timeout_s) + 60
        self.api.run(f"python3 {TOOL_PATH} lock {bound}", timeout=30)
        started = time.monotonic()
        try:
            for index, step in enumerate(plan.steps, 1):
                t0 = time.monotonic()
                try:
                    note = self._do(step)
                except (Exception, KeyboardInterrupt) as exc:  # an interrupted switch recovers too
                    if isinstance(exc, KeyboardInterrupt):
                        why = "interrupted"
                    else:
                        why = str(exc) if isinstance(exc, BrainallError) else f"{type(exc).__name__}: {exc}"
                    self.log(f"  [{index}/{len(plan.steps)}] FAILED {step.describe(self.spec)}: {why}")
                    recovered = self._recover(plan.target, previous_mode)
                    raise BrainallError(
                        f"switch to {plan.target} failed at step {index}/{len(plan.steps)} "
                        f"({step.describe(self.spec)}): {why}; {recovered}"
                    ) from None
                record = StepRecord(step, time.monotonic() - t0, note)
                result.records.append(record)
                suffix = f" — {note}" if note else ""
                self.log(f"  [{index}/{len(plan.steps)}] {record.seconds:6.2f}s {step.describe(self.spec)}{suffix}")
        finally:
            self.api.run(f"python3 {TOOL_PATH} unlock", timeout=30, check=False)
        result.seconds = time.monotonic() - started
        return result

    def _tool(self, args: str) -> str:
        return f"python3 {TOOL_PATH} --env-file {shlex.quote(self.spec.env_file)} {args}"

    def _do(self, step: Step) -> str:
        spec = self.spec
        if isinstance(step, SetMode):
            self.api.run(self._tool(f"set-mode {step.mode}"), timeout=30)
            return ""
        if isinstance(step, Start | Restart):
            verb = "start" if isinstance(step, Start) else "restart"
            unit = spec.instance(step.port).unit
            # a unit that failed too often is refused by systemd until reset (the watchdog does the same)
            reset = f"systemctl reset-failed {unit} 2>/dev/null; " if verb == "start" else ""
            try:
                self.api.run(f"{reset}systemctl {verb} {unit}", timeout=spec.start_timeout_s + spec.drain_s + 30)
            except BrainallError as exc:
                raise BrainallError(f"{exc} [{unit}: {self._last_log_line(unit)}]") from None
            return self._ready_from_proxy(step.port)
        if isinstance(step, Stop):
            unit = spec.instance(step.port).unit
            self.api.run(f"systemctl stop {unit}", timeout=spec.drain_s + 30)
            state = self.api.run(f"systemctl is-active {unit} || true", timeout=30).strip()
            if state in ("active", "activating", "deactivating"):
                raise BrainallError(f"{unit} is still {state} after stop")
            return ""
        if isinstance(step, Drain):
            out = self.api.run(self._tool(f"drain {step.port} {spec.drain_s}"), timeout=spec.drain_s + 30)
            drained = json.loads(out)
            if drained["remaining"]:
                return f"{drained['remaining']} connection(s) still open after {spec.drain_s}s"
            return f"no connections after {drained['waited_s']:.2f}s"
        if isinstance(step, SetRoutes):
            text = render_upstream(spec, step.table, self.api_address)
            out = self.proxy.run(f"{NGINX_APPLY_PATH} {spec.drain_s}", stdin=text, timeout=spec.drain_s + 60)
            return out.strip().splitlines()[-1] if out.strip() else ""
        if isinstance(step, Enable):
            verb = "enable" if step.enabled else "disable"
            self.api.run(f"systemctl {verb} --quiet {spec.instance(step.port).unit}", timeout=30)
            return ""
        raise AssertionError(step)

    def _last_log_line(self, unit: str) -> str:
        """The unit's most telling recent log line (an ERROR if there is one)."""
        text = self.api.run(f"journalctl -u {unit} -n 40 -o cat --no-pager 2>/dev/null || true", timeout=30)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR" in line or "Error" in line or "error" in line]
        return (errors or lines or ["no log"])[-1]

    def _ready_from_proxy(self, port: int) -> str:
        """The instance answers its health path from the proxy host: the path nginx takes."""
        url = f"http://{self.api_address}:{port}{self.spec.health_path}"
        tries = max(1, self.spec.start_timeout_s * 5)
        self.proxy.run(
            f"i=0; until curl -fsS -o /dev/null --max-time 2 {shlex.quote(url)}; do "
            f"i=$((i+1)); [ $i -ge {tries} ] && {{ echo 'not ready from the proxy host: {url}' >&2; exit 1; }}; "
            "sleep 0.2; done",
            timeout=self.spec.start_timeout_s * 3 + 30,
        )
        return f"ready from {self.proxy.name}"

    def _recover(self, target: Mode, previous_mode: Mode | None) -> str:
        """After a failed step: nginx routes to every healthy instance again (nothing left `down`),
        and the mode file is put back. What runs is reported; re-running a switch converges."""
        try:
            live = self.inspect()
            final = self.spec.routes(target)
            table: dict[int, Route] = {}
            for port in self.spec.ports:
                inst = live.instances.get(port)
                was = (live.routes or {}).get(port)
                if inst and inst.running and inst.healthy and (final[port] == "normal" or was == "normal"):
                    table[port] = "normal"
                else:
                    table[port] = final[port]
            text = render_upstream(self.spec, table, self.api_address)
            self.proxy.run(f"{NGINX_APPLY_PATH} {self.spec.drain_s}", stdin=text, timeout=self.spec.drain_s + 60)
            if previous_mode is not None and previous_mode != target:
                self.api.run(self._tool(f"set-mode {previous_mode}"), timeout=30)
            healthy = [f":{p}" for p, i in live.instances.items() if i.running and i.healthy]
            return (
                f"nginx routes {describe_routes(self.spec, table)}; healthy: {', '.join(healthy) or 'none'}; "
                f"the mode file says {previous_mode or target} (run the switch again once the cause is fixed)"
            )
        except BrainallError as exc:
            return f"recovery also failed: {exc}"


@contextmanager
def open_cluster(spec: ClusterSpec, hosts: Mapping[str, Mapping[str, Any]], log: Log = print) -> Iterator[Cluster]:
    """A `Cluster` over the inventory's SSH data for the role map's API and proxy hosts."""
    for name in (spec.host, spec.proxy_host):
        if name not in hosts:
            raise BrainallError(f"the inventory has no host {name!r} (the role map's backends host or proxy_host)")
    api_data = hosts[spec.host]
    address = api_data.get("brainall_address") or api_data.get("ssh_hostname") or spec.host
    api = Remote(SSHTarget.from_host_data(spec.host, api_data))
    proxy = Remote(SSHTarget.from_host_data(spec.proxy_host, hosts[spec.proxy_host]))
    try:
        yield Cluster(spec, api, proxy, str(address), log)
    finally:
        api.close()
        proxy.close()
