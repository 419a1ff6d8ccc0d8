"""The simulator's HTTPS server: PVE's API under /api2/json, and an admin API under /_simulator.

The admin API is the simulator's own (PVE has nothing at /_simulator): tests and the bench use
it to inject faults, read the request log, edit a VM behind the toolkit's back and wait for
tasks. In-process, the same operations are methods of `Simulator`; out of process,
`SimulatorAdmin` calls them over HTTPS.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from brainall_ops.lab.pve_simulator.api import Api
from brainall_ops.lab.pve_simulator.cluster import ApiError, Cluster, Fault, RequestRecord
from brainall_ops.lab.pve_simulator.schema import ApiSchema
from brainall_ops.lab.pve_simulator.tls import make_certificates

API_PREFIX = "/api2/json"
ADMIN_PREFIX = "/_simulator"
# Parameters that carry a secret: the request log keeps that they were sent, never their value
# (pveproxy's access log has no request bodies at all).
SECRET_PARAMS = frozenset({"password", "encryption-key", "master-pubkey", "keyring", "cipassword"})
LOGGED_SECRET = "********"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], simulator: Simulator, context: ssl.SSLContext) -> None:
        self.simulator = simulator
        self.ssl_context = context
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the connection's own thread, not in the accept loop.
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            with contextlib.suppress(OSError):
                tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-request is not the simulator's problem


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each answer waits ~40 ms for a delayed ACK
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ----------------------------------------------------------------------- plumbing
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any, reason: str | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status, _reason(reason) if reason else None)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # ----------------------------------------------------------------------- dispatch
    def _dispatch(self, http_method: str) -> None:
        url = urlsplit(self.path)
        body = self._body()
        if url.path.startswith(ADMIN_PREFIX + "/"):
            self._admin(http_method, url.path[len(ADMIN_PREFIX) :], url.query, body)
            return
        if not url.path.startswith(API_PREFIX + "/"):
            self._send(404, {"data": None}, "Not Found")
            return
        self._api(http_method, unquote(url.path[len(API_PREFIX) :]), url.query, body)

    def _api(self, http_method: str, path: str, query: str, body: bytes) -> None:
        simulator = self.server.simulator
        cluster = simulator.cluster
        raw = dict(parse_qsl(query, keep_blank_values=True))
        if body:
            raw.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if cluster.settings.latency_s:
            time.sleep(cluster.settings.latency_s)
        seq = cluster.next_seq()
        logged = {k: LOGGED_SECRET if k in SECRET_PARAMS else v for k, v in raw.items()}
        record = RequestRecord(seq, time.time(), http_method, path, logged, 0, None)
        cluster.record(record)

        if cluster.take_fault(("drop",), http_method, path, when="before") is not None:
            record.status = "dropped"
            self._drop()
            return
        try:
            record.user = simulator.api.authenticate(self.headers.get("Authorization"))
            request = simulator.api.resolve(http_method, path, raw, record.user)
            injected = cluster.take_fault(("http_error",), http_method, path)
            if injected is not None:
                raise ApiError(injected.status, injected.message or "injected failure")
            data = simulator.api.call(request)
        except ApiError as exc:
            record.status = exc.status
            payload: dict[str, Any] = {"data": None, "message": exc.message + "\n"}
            if exc.errors:
                payload["errors"] = exc.errors
            self._send(exc.status, payload, exc.message)
            return
        record.status = 200
        if cluster.take_fault(("drop",), http_method, path, when="after") is not None:  # done; the answer is lost
            record.status = "dropped"
            self._drop()
            return
        self._send(200, {"data": data})

    # ----------------------------------------------------------------------- admin
    def _admin(self, http_method: str, path: str, query: str, body: bytes) -> None:
        simulator = self.server.simulator
        args = json.loads(body) if body else {}
        query_args = dict(parse_qsl(query))
        try:
            result = simulator.admin(http_method, path, {**query_args, **args})
        except (KeyError, ValueError, TypeError) as exc:
            self._send(400, {"error": str(exc)}, "Bad Request")
            return
        self._send(200, {"data": result})


def _reason(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "error"
    return first.encode("latin-1", "replace").decode("latin-1")[:200]


class Simulator:
    """A running simulator: `with Simulator(cluster) as sim: sim.url, sim.ca_file`."""

    def __init__(
        self,
        cluster: Cluster,
        schema: ApiSchema | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_dir: Path | None = None,
    ) -> None:
        self.cluster = cluster
        self.schema = schema or ApiSchema()
        self.api = Api(cluster, self.schema)
        self.host = host
        self.port = port
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if tls_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pve-sim-tls-")
            tls_dir = Path(self._tmp.name)
        self.certificates = make_certificates(tls_dir, [host])
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the simulator is not started"
        return f"https://{self.host}:{self._server.server_address[1]}"

    @property
    def ca_file(self) -> Path:
        return self.certificates.ca_file

    def start(self) -> Simulator:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificates.cert_file, self.certificates.key_file)
        self._server = _Server((self.host, self.port), self, context)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="pve-simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.cluster.wait_idle(timeout=10)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------- admin operations
    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return self.cluster.request_log(since)

    def mark(self) -> int:
        """The sequence number the next request gets: `requests(since=mark)` is what came after."""
        return self.cluster.next_seq()

    def add_fault(self, **fields: Any) -> None:
        self.cluster.add_fault(Fault(**fields))

    def clear_faults(self) -> None:
        self.cluster.clear_faults()

    def settings(self, **changes: float) -> dict[str, float]:
        with self.cluster.lock:
            for key, value in changes.items():
                if not hasattr(self.cluster.settings, key):
                    raise KeyError(f"unknown setting {key!r}")
                setattr(self.cluster.settings, key, float(value))
            return dict(vars(self.cluster.settings))

    def edit_vm(self, vmid: int, set: dict[str, str] | None = None, delete: list[str] | None = None) -> None:
        """Change a VM's current config behind the API (someone in the GUI, then a reboot)."""
        with self.cluster.lock:
            vm = self.cluster.vms[int(vmid)]
            for key, value in (set or {}).items():
                vm.config[key] = str(value)
            for key in delete or []:
                vm.config.pop(key, None)
            self.cluster.save()

    def set_vm_status(self, vmid: int, status: str) -> None:
        with self.cluster.lock:
            vm = self.cluster.vms[int(vmid)]
            if status not in ("running", "stopped"):
                raise ValueError(f"status must be running or stopped, not {status!r}")
            vm.status = status  # type: ignore[assignment]
            vm.started_at = time.time() if status == "running" else None
            self.cluster.save()

    def add_token(self, token_id: str, secret: str, privileges: dict[str, list[str]] | None = None) -> None:
        self.cluster.add_token(
            token_id, secret, {path: set(privs) for path, privs in privileges.items()} if privileges else None
        )

    def wait_idle(self, timeout: float = 30.0) -> bool:
        return self.cluster.wait_idle(timeout)

    def state(self) -> dict[str, Any]:
        snapshot = self.cluster.snapshot()
        snapshot["running_tasks"] = [t.upid for t in self.cluster.running_tasks()]
        snapshot["faults"] = [vars(f) for f in self.cluster.faults]
        return snapshot

    def admin(self, http_method: str, path: str, args: dict[str, Any]) -> Any:
        """The admin API's routing (also what `SimulatorAdmin` calls over HTTPS)."""
        parts = path.strip("/").split("/")
        match http_method, parts:
            case "GET", ["requests"]:
                return self.requests(int(args.get("since", 0)))
            case "GET", ["mark"]:
                return self.mark()
            case "GET", ["state"]:
                return self.state()
            case "POST", ["faults"]:
                self.add_fault(**args)
                return None
            case "DELETE", ["faults"]:
                self.clear_faults()
                return None
            case "POST", ["settings"]:
                return self.settings(**args)
            case "POST", ["vms", vmid, "config"]:
                self.edit_vm(int(vmid), args.get("set"), args.get("delete"))
                return None
            case "POST", ["vms", vmid, "status"]:
                self.set_vm_status(int(vmid), args["status"])
                return None
            case "POST", ["tokens"]:
                self.add_token(args["token_id"], args["secret"], args.get("privileges"))
                return None
            case "POST", ["wait-idle"]:
                return self.wait_idle(float(args.get("timeout", 30)))
        raise KeyError(f"no admin operation {http_method} {path}")


class SimulatorAdmin:
    """The admin API of a simulator running as its own process."""

    def __init__(self, url: str, ca_file: Path | str) -> None:
        import requests

        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.verify = str(ca_file)

    def _call(self, http_method: str, path: str, **args: Any) -> Any:
        response = self.session.request(http_method, f"{self.url}{ADMIN_PREFIX}{path}", json=args or None, timeout=60)
        response.raise_for_status()
        return response.json()["data"]

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return self._call("GET", f"/requests?since={since}")

    def mark(self) -> int:
        return self._call("GET", "/mark")

    def add_fault(self, **fields: Any) -> None:
        self._call("POST", "/faults", **fields)

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def settings(self, **changes: float) -> dict[str, float]:
        return self._call("POST", "/settings", **changes)

    def edit_vm(self, vmid: int, set: dict[str, str] | None = None, delete: list[str] | None = None) -> None:
        self._call("POST", f"/vms/{vmid}/config", set=set or {}, delete=delete or [])

    def set_vm_status(self, vmid: int, status: str) -> None:
        self._call("POST", f"/vms/{vmid}/status", status=status)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        return self._call("POST", "/wait-idle", timeout=timeout)

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/state")
