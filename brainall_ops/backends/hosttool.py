#!/usr/bin/python3
"""backendctl: the backend cluster's tool on the API host (shipped there by deploys/phase4.py).

Standard library only: it runs with Debian's python3 next to uvicorn and never imports brainall_ops.
Everything it knows comes from the cluster's environment file (written by the deploy from the
role map) and the mode file (written by `brainall-ops backends mode`).

    backendctl [--env-file F] launch PORT      exec uvicorn for one instance (the unit's ExecStart)
    backendctl serve UVICORN-ARGS...           uvicorn's command line (launch execs it)
    backendctl [--env-file F] ready PORT       wait until the instance answers its health path (ExecStartPost)
    backendctl [--env-file F] inspect          the cluster as JSON (units, health, config digests)
    backendctl [--env-file F] set-mode MODE    write the mode file atomically
    backendctl [--env-file F] drain PORT S     wait up to S seconds for the port's connections to finish
    backendctl lock SECONDS | unlock           the "switch in progress" marker the watchdog honours
    backendctl [--env-file F] watchdog         start the standby when too few backends are healthy
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

ENV_FILE = "/etc/brainall/backends.env"
UNIT_PATH = "/etc/systemd/system/brainall-backend@.service"
RUN_DIR = "/run/brainall-backends"
LOCK_PATH = f"{RUN_DIR}/switching"
MODES = ("production", "validation")


# --------------------------------------------------------------------------- configuration
def parse_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments, blank lines, quotes)."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


TRUE = ("true", "1", "yes", "on")
SHAPE_KEYS = ("BRAINALL_BACKEND_INSTANCES", "BRAINALL_MIN_HEALTHY", "BRAINALL_MIN_HEALTHY_VALIDATION")


def mode_of(env: Mapping[str, str]) -> str:
    return "validation" if env.get("OMNIMIND_VALIDATION_MODE", "false").strip().lower() in TRUE else "production"


def instances_of(env: Mapping[str, str]) -> list[tuple[int, str]]:
    out = []
    for item in env.get("BRAINALL_BACKEND_INSTANCES", "").split(","):
        if item.strip():
            port, _, role = item.strip().partition(":")
            out.append((int(port), role))
    return out


def workers_for(env: Mapping[str, str], mode: str) -> int:
    """The seed's rule: validation runs OMNIMIND_WORKERS_VALIDATION workers, production OMNIMIND_WORKERS."""
    if mode == "validation":
        return int(env.get("OMNIMIND_WORKERS_VALIDATION", "2"))
    return int(env.get("OMNIMIND_WORKERS", "1"))


def running_ports(env: Mapping[str, str], mode: str) -> list[int]:
    """The first N instances run in a mode (N = OMNIMIND_BACKENDS[_VALIDATION]); the rest are standby."""
    key = "OMNIMIND_BACKENDS_VALIDATION" if mode == "validation" else "OMNIMIND_BACKENDS"
    count = int(env.get(key, "2" if mode == "validation" else "3"))
    return [port for port, _ in instances_of(env)[:count]]


def min_healthy(env: Mapping[str, str], mode: str) -> int:
    key = "BRAINALL_MIN_HEALTHY_VALIDATION" if mode == "validation" else "BRAINALL_MIN_HEALTHY"
    return int(env.get(key, "1"))


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return b""


def config_digest(env_bytes: bytes, mode: str, unit_bytes: bytes, tool_bytes: bytes) -> str:
    """What an instance started now runs with: a change in any of these makes it stale."""
    digest = hashlib.sha256()
    for part in (env_bytes, mode.encode(), unit_bytes, tool_bytes):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:16]


class Config:
    def __init__(self, env_file: str) -> None:
        self.env_file = env_file
        self.env_bytes = _read(env_file)
        if not self.env_bytes:
            raise SystemExit(f"backendctl: {env_file} is missing or empty (run deploys/phase4.py)")
        self.env = parse_env(self.env_bytes.decode())
        self.mode_file = self.env.get("BRAINALL_BACKEND_MODE_FILE", "/etc/brainall/backends-mode.env")
        mode_text = _read(self.mode_file).decode()
        self.mode: str | None = mode_of(parse_env(mode_text)) if mode_text.strip() else None
        self.health_path = self.env.get("BRAINALL_HEALTH_PATH", "/health")
        self.address = probe_address(self.env)

    def digest(self, mode: str) -> str:
        return config_digest(self.env_bytes, mode, _read(UNIT_PATH), _read(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- probes
def probe_address(env: Mapping[str, str]) -> str:
    """Where the instances answer on this host: their bind address, or loopback for a wildcard."""
    bind = env.get("BRAINALL_BIND", "0.0.0.0")
    return "127.0.0.1" if bind in ("", "0.0.0.0") else bind


def probe(port: int, path: str, timeout: float, address: str = "127.0.0.1") -> str | None:
    """None when http://ADDRESS:PORT/PATH answers 200, else why not."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=timeout) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return str(reason) or type(exc).__name__


def probe_all(ports: Sequence[int], path: str, timeout: float, address: str = "127.0.0.1") -> dict[int, str | None]:
    if not ports:
        return {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(ports)) as pool:
        results = pool.map(lambda p: probe(p, path, timeout, address), ports)
        return dict(zip(ports, results, strict=True))


def established_connections(port: int, proc_net: Sequence[str] = ("/proc/net/tcp", "/proc/net/tcp6")) -> int:
    """TCP connections in ESTABLISHED state whose local port is `port`."""
    count = 0
    for path in proc_net:
        try:
            with open(path) as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        count += count_established(lines, port)
    return count


def count_established(lines: Sequence[str], port: int) -> int:
    count = 0
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        local, state = fields[1], fields[3]
        if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


def process_environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            raw = handle.read()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def serving_processes(pid: int, workers: int | None) -> int:
    """How many processes serve requests: uvicorn itself with one worker, else its worker children
    (multiprocessing's spawned `spawn_main`; its resource tracker does not serve)."""
    if not pid:
        return 0
    if not workers or workers <= 1:
        return 1 if os.path.exists(f"/proc/{pid}") else 0
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            if parent != pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except (OSError, ValueError, IndexError):
            continue
        if b"spawn_main" in cmdline:
            count += 1
    return count


def systemctl_show(units: Sequence[str], properties: Sequence[str]) -> list[dict[str, str]]:
    output = subprocess.run(
        ["systemctl", "show", "--no-pager", *(f"--property={p}" for p in properties), *units],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    blocks: list[dict[str, str]] = [{}]
    for line in output.splitlines():
        if not line.strip():
            if blocks[-1]:
                blocks.append({})
            continue
        key, _, value = line.partition("=")
        blocks[-1][key] = value
    return [b for b in blocks if b]


def unit(port: int) -> str:
    return f"brainall-backend@{port}.service"


def port_of(unit_name: str) -> int:
    return int(unit_name.split("@", 1)[1].split(".", 1)[0])


def lock_deadline(now: float | None = None) -> float | None:
    """The deadline of a switch in progress, or None (no marker, or an expired one)."""
    try:
        with open(LOCK_PATH) as handle:
            deadline = float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return deadline if deadline > (time.time() if now is None else now) else None


# --------------------------------------------------------------------------- commands
def cmd_launch(cfg: Config, port: int) -> None:
    mode = mode_of(os.environ)
    workers = workers_for(os.environ, mode)
    app = os.environ["BRAINALL_APP"]
    app_dir = os.environ.get("BRAINALL_APP_DIR", ".")
    os.environ.update(
        BRAINALL_BACKEND_PORT=str(port),
        BRAINALL_BACKEND_WORKERS=str(workers),
        BRAINALL_BACKEND_MODE=mode,
        BRAINALL_BACKEND_DIGEST=cfg.digest(mode),
    )
    uvicorn_args = [
        app,
        "--app-dir",
        app_dir,
        "--host",
        os.environ.get("BRAINALL_BIND", "0.0.0.0"),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--timeout-keep-alive",
        os.environ.get("BRAINALL_KEEPALIVE_TIMEOUT", "10"),
        "--no-access-log",
        "--no-use-colors",
    ]
    print(f"backendctl: {mode} mode: uvicorn {app} on :{port} with {workers} worker(s)", flush=True)
    # exec, so that /proc/PID/environ of the unit's main process carries the digest and workers
    os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), "serve", *uvicorn_args])


def cmd_serve(uvicorn_args: Sequence[str]) -> None:
    """uvicorn's own command line, with one fix: uvicorn 0.17 (Debian 12) creates the listening socket
    of a multi-worker server with protocol 0, so asyncio never sets TCP_NODELAY on the workers'
    connections and every answer written in two parts waits ~40 ms for a delayed ACK (measured:
    p50 45 ms in validation mode). The socket gets its real protocol (and TCP_NODELAY) here."""
    import socket

    import uvicorn.config
    import uvicorn.main

    bind_socket = uvicorn.config.Config.bind_socket

    def bind_tcp_socket(self: uvicorn.config.Config) -> socket.socket:
        sock = bind_socket(self)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
            sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    uvicorn.config.Config.bind_socket = bind_tcp_socket  # type: ignore[method-assign]
    sys.argv = ["uvicorn", *uvicorn_args]
    uvicorn.main.main()


def cmd_ready(cfg: Config, port: int, timeout: float) -> int:
    """Poll the health path until it answers; give up at once if the instance died (systemd gives
    ExecStartPost= the main process's pid as $MAINPID)."""
    deadline = time.monotonic() + timeout
    main_pid = os.environ.get("MAINPID", "")
    why: str | None = "not probed"
    while time.monotonic() < deadline:
        why = probe(port, cfg.health_path, 1.0, cfg.address)
        if why is None:
            return 0
        if main_pid.isdigit() and not os.path.exists(f"/proc/{main_pid}"):
            print(f"backendctl: :{port} exited before it was ready (last probe: {why})", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"backendctl: :{port}{cfg.health_path} not ready after {timeout:g}s: {why}", file=sys.stderr)
    return 1


def inspect(cfg: Config) -> dict:
    ports = [port for port, _ in instances_of(cfg.env)]
    shows = systemctl_show(
        [unit(p) for p in ports] + ["brainall-backends-watchdog.service"],
        ["Id", "ActiveState", "SubState", "MainPID", "UnitFileState", "NRestarts"],
    )
    by_unit = {s.get("Id", ""): s for s in shows}
    timeout = float(cfg.env.get("BRAINALL_WATCHDOG_HEALTH_TIMEOUT", "1"))
    health = probe_all(ports, cfg.health_path, timeout, cfg.address)
    instances = []
    for port, role in instances_of(cfg.env):
        show = by_unit.get(unit(port), {})
        pid = int(show.get("MainPID", "0") or 0)
        environ = process_environ(pid) if pid else {}
        workers = int(environ["BRAINALL_BACKEND_WORKERS"]) if "BRAINALL_BACKEND_WORKERS" in environ else None
        instances.append(
            {
                "port": port,
                "role": role,
                "active_state": show.get("ActiveState", "unknown"),
                "sub_state": show.get("SubState", "unknown"),
                "enabled": show.get("UnitFileState", "") == "enabled",
                "pid": pid or None,
                "restarts": int(show.get("NRestarts", "0") or 0),
                "digest": environ.get("BRAINALL_BACKEND_DIGEST"),
                "workers": workers,
                "mode": environ.get("BRAINALL_BACKEND_MODE"),
                "processes": serving_processes(pid, workers),
                "connections": established_connections(port),
                "healthy": health[port] is None,
                "health_error": health[port],
            }
        )
    watchdog = by_unit.get("brainall-backends-watchdog.service", {})
    return {
        "mode": cfg.mode,
        "digests": {mode: cfg.digest(mode) for mode in MODES},
        "shape": {k: v for k, v in cfg.env.items() if k.startswith("OMNIMIND_") or k in SHAPE_KEYS},
        "switching_until": lock_deadline(),
        "watchdog": watchdog.get("ActiveState", "unknown"),
        "instances": instances,
    }


def cmd_set_mode(cfg: Config, mode: str) -> None:
    flag = "true" if mode == "validation" else "false"
    text = (
        "# The backend cluster's mode, written by `brainall-ops backends mode` (do not edit by hand:\n"
        "# a switch also drains and restarts instances and reloads nginx).\n"
        f"OMNIMIND_VALIDATION_MODE={flag}\n"
    )
    tmp = f"{cfg.mode_file}.tmp"
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, cfg.mode_file)


def cmd_drain(port: int, timeout: float) -> dict:
    start = time.monotonic()
    remaining = established_connections(port)
    while remaining and time.monotonic() - start < timeout:
        time.sleep(0.05)
        remaining = established_connections(port)
    return {"port": port, "remaining": remaining, "waited_s": round(time.monotonic() - start, 3)}


def cmd_lock(seconds: float) -> int:
    """Create the marker atomically; an expired one (a switch that died) is taken over."""
    os.makedirs(RUN_DIR, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(LOCK_PATH, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            held = lock_deadline()
            if held is not None:
                print(f"backendctl: a switch is in progress (until {time.ctime(held)})", file=sys.stderr)
                return 3
            cmd_unlock()
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{time.time() + seconds:.3f}\n")
        return 0
    print("backendctl: could not take the switch marker", file=sys.stderr)
    return 3


def cmd_unlock() -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(LOCK_PATH)


def watchdog_decision(
    env: Mapping[str, str],
    mode: str | None,
    healthy: Mapping[int, bool],
    active: Mapping[int, bool],
    switching: bool,
) -> tuple[list[int], str | None]:
    """(ports to start, message) for one watchdog round.

    Healthy backends are counted over every instance (a standby it started counts once up). Below
    the mode's minimum it starts the standby instances that are not running. A switch in progress
    lowers the minimum to 1: the switch drains instances on purpose, one at a time."""
    if mode is None:
        return [], None
    running = running_ports(env, mode)
    standby = [port for port, _ in instances_of(env) if port not in running]
    count = sum(1 for ok in healthy.values() if ok)
    minimum = 1 if switching else min_healthy(env, mode)
    if count >= minimum:
        return [], None
    to_start = [port for port in standby if not active.get(port, False)]
    down = ", ".join(f":{p}" for p, ok in healthy.items() if not ok)
    if to_start:
        started = ", ".join(f":{p}" for p in to_start)
        return to_start, f"{count} healthy < {minimum} ({mode}; down: {down}): starting standby {started}"
    starting = [port for port in standby if active.get(port) and not healthy.get(port)]
    if starting:
        waiting = ", ".join(f":{p}" for p in starting)
        return [], f"{count} healthy < {minimum} ({mode}; down: {down}): waiting for standby {waiting}"
    return [], f"{count} healthy < {minimum} ({mode}; down: {down}) and no standby left to start"


def cmd_watchdog(env_file: str) -> None:
    last_message = None
    while True:
        cfg = Config(env_file)
        interval = float(cfg.env.get("BRAINALL_WATCHDOG_INTERVAL", "2"))
        timeout = float(cfg.env.get("BRAINALL_WATCHDOG_HEALTH_TIMEOUT", "1"))
        ports = [port for port, _ in instances_of(cfg.env)]
        health = probe_all(ports, cfg.health_path, timeout, cfg.address)
        shows = systemctl_show([unit(p) for p in ports], ["Id", "ActiveState"])
        active = {port_of(s["Id"]): s.get("ActiveState") in ("active", "activating") for s in shows}
        to_start, message = watchdog_decision(
            cfg.env, cfg.mode, {p: health[p] is None for p in ports}, active, lock_deadline() is not None
        )
        if message and message != last_message:
            print(f"watchdog: {message}", flush=True)
        last_message = message
        for port in to_start:
            subprocess.run(["systemctl", "reset-failed", unit(port)], check=False, capture_output=True)
            subprocess.run(["systemctl", "start", "--no-block", unit(port)], check=False)
        time.sleep(interval)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backendctl", description=__doc__.splitlines()[1])
    parser.add_argument("--env-file", default=ENV_FILE)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("launch", "ready"):
        sub.add_parser(name).add_argument("port", type=int)
    sub.add_parser("inspect")
    sub.add_parser("set-mode").add_argument("mode", choices=MODES)
    drain = sub.add_parser("drain")
    drain.add_argument("port", type=int)
    drain.add_argument("timeout", type=float)
    sub.add_parser("lock").add_argument("seconds", type=float)
    sub.add_parser("unlock")
    sub.add_parser("watchdog")
    sub.add_parser("digest").add_argument("mode", choices=MODES)
    sub.add_parser("serve").add_argument("uvicorn_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if args.command == "lock":
        return cmd_lock(args.seconds)
    if args.command == "unlock":
        cmd_unlock()
        return 0
    if args.command == "drain":
        print(json.dumps(cmd_drain(args.port, args.timeout)))
        return 0
    if args.command == "watchdog":
        cmd_watchdog(args.env_file)
        return 0
    if args.command == "serve":
        cmd_serve(args.uvicorn_args)
        return 0
    cfg = Config(args.env_file)
    if args.command == "launch":
        cmd_launch(cfg, args.port)
    if args.command == "ready":
        return cmd_ready(cfg, args.port, float(cfg.env.get("BRAINALL_START_TIMEOUT", "30")))
    if args.command == "inspect":
        print(json.dumps(inspect(cfg), sort_keys=True))
    elif args.command == "set-mode":
        cmd_set_mode(cfg, args.mode)
    elif args.command == "digest":
        print(cfg.digest(args.mode))
    return 0


if __name__ == "__main__":
    sys.exit(main())
