"""The Proxmox VE API client: proxmoxer underneath, with what a deploy needs around it.

- Where: the role map's `proxmox.api_host` address in the environment, port `api_port`, unless
  the environment overrides `api_url`, or `BRAINALL_PROXMOX_URL` does (tests, the bench and the
  lab point it at the simulator). Certificates are verified: against `BRAINALL_PROXMOX_CA`, the
  environment's or the section's `ca_file`, or the system store (`verify_ssl: false` turns it off).
- Auth: the API token `proxmox.token_id`, its secret from `shared.secrets.PROXMOX_TOKEN`. The
  `openssh` backend (pvesh on `api_host` over SSH, proxmoxer's) is the alternative.
- Tasks: every UPID is waited for, with a timeout, and its exit status checked; a failure carries
  the task log. proxmoxer's `Tasks.blocking_status` is not used: it returns None on timeout
  (easy to mistake for success) and sleeps a full poll interval after the task ended; here the
  poll starts at 50 ms and backs off to 1 s.
- Locks: a call or task that fails with PVE's "can't lock file ... got timeout" is retried with
  backoff (`proxmox.lock_retries`); any other failure is reported as is. The refusals a caller
  can act on are named: a stale config digest (`is_stale_digest`: "checksum mismatch (file change
  by other user?)"), a VM's config lock (`vm_lock`: "VM is locked (backup)") and a lost VMID race
  on clone (`taken_vmid`, in PVE's two forms, see `VMID_TAKEN`).
- Booleans are sent as 0/1: PVE's JSONSchema refuses anything else for a boolean parameter
  ("type check ('boolean') failed - got 'True'").
- Errors are one-line `ProxmoxError`s (BrainallError); the token secret and any API-token header
  are scrubbed from them, and they never chain the original exception.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.models import RoleMap
from brainall_ops.shared.secrets import PROXMOX_TOKEN, Secret, scrub

URL_ENV = "BRAINALL_PROXMOX_URL"
CA_ENV = "BRAINALL_PROXMOX_CA"
LOCK_TIMEOUT = re.compile(r"can't lock file '[^']*' - got timeout")
# A clone whose new VMID another clone took first (qemu-server PVE/API2/Qemu.pm clone_vm): on the
# same node its early check, or that check in the task, says "config file already exists"; from
# another node the task fails when pmxcfs refuses to rename the new config into place.
VMID_TAKEN = re.compile(
    r"unable to create VM (?P<vmid>\d+): config file already exists"
    r"|unable to create VM (?P<created>\d+) - VM \d+ already exists on node"  # create_vm's create_and_lock_config
    r"|close \(rename\) atomic file '[^']*/qemu-server/(?P<renamed>\d+)\.conf' failed: File exists"
)
# update_vm_api / resize_vm refuse a config whose digest is not the one read (PVE::AbstractConfig
# says "checksum mismatch", SectionConfig files "detected modified configuration").
STALE_DIGEST = re.compile(
    r"checksum mismatch \(file change by other user\?\)|detected modified configuration - file changed by other user"
)
VM_LOCKED = re.compile(r"VM is locked \((?P<lock>[\w-]+)\)")
LOCK_BACKOFF_S = 0.25
# Every API method the toolkit calls; the contract test checks each against PVE's official schema.
ENDPOINTS: tuple[tuple[str, str], ...] = (
    ("GET", "/cluster/resources"),
    ("GET", "/cluster/nextid"),
    ("GET", "/nodes/{node}/qemu/{vmid}/config"),
    ("GET", "/nodes/{node}/qemu/{vmid}/pending"),
    ("POST", "/nodes/{node}/qemu/{vmid}/clone"),
    ("POST", "/nodes/{node}/qemu/{vmid}/config"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/resize"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/start"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/reboot"),
    ("POST", "/nodes/{node}/storage/{storage}/download-url"),
    ("POST", "/nodes/{node}/qemu"),
    ("POST", "/nodes/{node}/qemu/{vmid}/template"),
    ("GET", "/nodes/{node}/tasks/{upid}/status"),
    ("GET", "/nodes/{node}/tasks/{upid}/log"),
    ("GET", "/storage/{storage}"),
    ("POST", "/storage"),
    ("PUT", "/storage/{storage}"),
    ("GET", "/cluster/backup"),
    ("POST", "/cluster/backup"),
    ("PUT", "/cluster/backup/{id}"),
)
GET_ATTEMPTS = 3


class ProxmoxError(BrainallError):
    """A Proxmox API call or task failed; the message says which, and why."""

    @property
    def is_lock_timeout(self) -> bool:
        return bool(LOCK_TIMEOUT.search(self.pve_text))

    @property
    def pve_text(self) -> str:
        """What PVE said (an API error's reason, a task's exit status)."""
        return str(self)

    @property
    def is_stale_digest(self) -> bool:
        return bool(STALE_DIGEST.search(self.pve_text))

    @property
    def vm_lock(self) -> str | None:
        """The lock (backup, clone, migrate, ...) PVE named when it refused to touch a VM."""
        found = VM_LOCKED.search(self.pve_text)
        return found.group("lock") if found else None

    def taken_vmid(self) -> int | None:
        """The VMID a clone lost to another one, from either of PVE's answers."""
        found = VMID_TAKEN.search(self.pve_text)
        if found is None:
            return None
        return int(found.group("vmid") or found.group("created") or found.group("renamed"))


class ApiError(ProxmoxError):
    def __init__(self, message: str, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(message)

    @property
    def pve_text(self) -> str:
        return self.reason


class ProxmoxConnectionError(ProxmoxError):
    pass


class TaskFailed(ProxmoxError):
    def __init__(self, what: str, upid: str, exitstatus: str, log: list[str]) -> None:
        self.upid = upid
        self.exitstatus = exitstatus
        self.log = log
        lines = [line for line in log if line and not line.startswith("TASK ")]
        tail = "".join(f"\n    | {line}" for line in lines[-10:])
        super().__init__(f"{what} failed: {exitstatus} (task {upid}){tail}")

    @property
    def pve_text(self) -> str:
        return self.exitstatus


class TaskTimeout(ProxmoxError):
    def __init__(self, what: str, upid: str, timeout: float) -> None:
        self.upid = upid
        super().__init__(
            f"{what}: task {upid} still running after {timeout:g} s; it goes on in Proxmox, "
            "and the next run picks up what it leaves"
        )


# --------------------------------------------------------------------------- where and how
@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach the API (no secret in here: it is read when a client is made)."""

    url: str
    token_id: str
    verify: bool | str
    backend: Literal["https", "openssh"] = "https"
    ssh_user: str = "root"
    ssh_port: int = 22
    task_timeout_s: float = 600.0
    lock_retries: int = 5
    request_timeout_s: float = 30.0

    def __repr__(self) -> str:
        return f"ConnectionSettings({self.url}, {self.token_id})"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 8006


def connection_settings(
    rm: RoleMap, environment: str = "production", env: Mapping[str, str] | None = None
) -> ConnectionSettings:
    from brainall_ops.proxmox.spec import expand_path
    from brainall_ops.rolemap.environment import endpoints

    env = os.environ if env is None else env
    proxmox = rm.proxmox
    if proxmox is None:
        raise BrainallError("the role map has no 'proxmox' section")
    override = proxmox.environments.get(environment)
    api_host = endpoints(rm, environment)[proxmox.api_host]
    url = env.get(URL_ENV) or (override.api_url if override and override.api_url else None)
    if not url:
        url = f"https://{api_host.address}:{proxmox.api_port}"
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/"):
        raise BrainallError(f"proxmox API URL {url!r}: expected https://HOST[:PORT]")
    verify: bool | str = proxmox.verify_ssl
    ca = env.get(CA_ENV) or (override.ca_file if override and override.ca_file else None) or proxmox.ca_file
    if ca and verify:
        verify = expand_path(ca, env)
        if not os.path.isfile(verify):
            hint = " (is the lab's Proxmox simulator running?)" if environment == "lab" else ""
            raise BrainallError(f"proxmox CA bundle {verify}: no such file{hint}")
    return ConnectionSettings(
        url=f"https://{parts.hostname}:{parts.port or proxmox.api_port}",
        token_id=proxmox.token_id,
        verify=verify,
        backend=proxmox.backend,
        ssh_user=api_host.ssh_user,
        ssh_port=api_host.ssh_port,
        task_timeout_s=float(proxmox.task_timeout_s),
        lock_retries=proxmox.lock_retries,
    )


# --------------------------------------------------------------------------- the client
class ProxmoxClient:
    def __init__(
        self,
        settings: ConnectionSettings,
        secret: Secret | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.calls = 0
        self.sleep = sleep
        self._secret = secret if secret is not None or settings.backend == "openssh" else PROXMOX_TOKEN.require()
        self._api = self._connect()

    def _connect(self) -> Any:
        from proxmoxer import ProxmoxAPI

        s = self.settings
        if s.backend == "openssh":
            try:
                return ProxmoxAPI(s.host, backend="openssh", user=s.ssh_user, port=s.ssh_port, service="PVE")
            except ImportError as exc:
                raise ProxmoxError(f"the openssh backend needs the openssh_wrapper package ({exc})") from None
        user, _, token_name = s.token_id.partition("!")
        assert self._secret is not None
        return ProxmoxAPI(
            s.host,
            port=s.port,
            backend="https",
            user=user,
            token_name=token_name,
            token_value=self._secret.reveal(),
            verify_ssl=s.verify,
            timeout=s.request_timeout_s,
        )

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secret)

    # ----------------------------------------------------------------------- calls
    def request(self, method: str, path: str, **params: Any) -> Any:
        """One API call (GETs are retried on a dropped connection). Raises ProxmoxError."""
        import requests
        from proxmoxer.core import ResourceException

        resource = self._api(path.strip("/"))
        call = getattr(resource, method.lower())
        params = {key: int(value) if isinstance(value, bool) else value for key, value in params.items()}
        attempts = GET_ATTEMPTS if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            self.calls += 1
            try:
                return call(**params)
            except ResourceException as exc:
                reason = self._scrub(str(exc.content or exc.status_message or "")).strip()
                text = f"{method} {path}: HTTP {exc.status_code}: {reason}"
                if exc.errors:
                    text += " (" + "; ".join(f"{k}: {v}" for k, v in sorted(_errors(exc.errors).items())) + ")"
                raise ApiError(self._scrub(text), exc.status_code, reason) from None
            except requests.exceptions.SSLError as exc:
                raise ProxmoxConnectionError(
                    f"{self.settings.url}: TLS verification failed ({self._scrub(_first_line(exc))}); "
                    f"give the CA with {CA_ENV} or proxmox.ca_file"
                ) from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                if attempt < attempts:
                    self.sleep(0.2 * attempt)
                    continue
                what = "no answer" if isinstance(exc, requests.exceptions.Timeout) else "connection failed or dropped"
                unknown = (
                    ""
                    if method == "GET"
                    else "; whether it was carried out is unknown until the next run reads the cluster"
                )
                raise ProxmoxConnectionError(
                    f"{method} {path}: {what} at {self.settings.url} ({self._scrub(_first_line(exc))}){unknown}"
                ) from None
            except Exception as exc:  # proxmoxer's other backends raise their own types
                raise ProxmoxError(f"{method} {path}: {type(exc).__name__}: {self._scrub(_first_line(exc))}") from None
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, **params)

    # ----------------------------------------------------------------------- tasks
    def wait_task(self, upid: str, what: str, timeout: float | None = None) -> dict[str, Any]:
        from proxmoxer.tools import Tasks

        node = Tasks.decode_upid(upid)["node"]
        timeout = self.settings.task_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            status = self.get(f"/nodes/{node}/tasks/{upid}/status")
            if status.get("status") == "stopped":
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TaskTimeout(what, upid, timeout)
            self.sleep(min(delay, left))
            delay = min(delay * 2, 1.0)
        exitstatus = str(status.get("exitstatus", ""))
        if exitstatus == "OK" or exitstatus.startswith("WARNINGS"):
            return status
        log = [self._scrub(line) for line in self.task_log(node, upid)]
        raise TaskFailed(what, upid, self._scrub(exitstatus), log)

    def task_log(self, node: str, upid: str) -> list[str]:
        from proxmoxer.tools import Tasks

        try:
            lines = self.get(f"/nodes/{node}/tasks/{upid}/log", start=0, limit=500)
        except ProxmoxError as exc:
            return [f"(task log unavailable: {exc})"]
        return Tasks.decode_log(lines).splitlines()

    def run(self, method: str, path: str, what: str, **params: Any) -> Any:
        """A mutating call, its task waited for; retried with backoff on a VM lock timeout."""
        for attempt in range(self.settings.lock_retries + 1):
            try:
                result = self.request(method, path, **params)
                if isinstance(result, str) and result.startswith("UPID:"):
                    return self.wait_task(result, what)
                return result
            except ProxmoxError as exc:
                if not exc.is_lock_timeout or attempt == self.settings.lock_retries:
                    raise
                self.sleep(LOCK_BACKOFF_S * 2**attempt * (1 + random.random() / 4))
        raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _errors(errors: Any) -> dict[str, str]:
    if isinstance(errors, dict):
        return {str(k): str(v).strip() for k, v in errors.items()}
    return {"errors": str(errors)}


__all__ = [
    "ENDPOINTS",
    "STALE_DIGEST",
    "VMID_TAKEN",
    "VM_LOCKED",
    "ApiError",
    "ConnectionSettings",
    "ProxmoxClient",
    "ProxmoxConnectionError",
    "ProxmoxError",
    "TaskFailed",
    "TaskTimeout",
    "connection_settings",
]
