"""What happens outside the simulator when a VM starts or stops: the pluggable hook.

The simulator calls the hook from the start/stop task, after the VM's state changed and outside
its state lock; the task ends only when the hook returns, and fails with the hook's error (a VM
that does not come up). Three hooks:

- `RecordingHook` appends each event as a JSON line to a file (tests, debugging);
- `LabHook` makes a started VM a real lab host: a systemd-nspawn container named after the VM,
  at its cloud-init address, through `brainall_ops.lab.runtime.add_host` / `stop_host`;
- any object with `on_vm_started(event)` / `on_vm_stopped(event)` (the `VMHook` protocol).
"""

from __future__ import annotations

import importlib
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class VMEvent:
    vmid: int
    name: str
    node: str
    address: str | None  # from ipconfig0 (cloud-init), without the prefix length
    ci_user: str | None
    ssh_keys: tuple[str, ...]


class VMHook(Protocol):
    def on_vm_started(self, event: VMEvent) -> None: ...

    def on_vm_stopped(self, event: VMEvent) -> None: ...


class RecordingHook:
    """Appends `{"event": "started"|"stopped", ...}` lines to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _write(self, kind: str, event: VMEvent) -> None:
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"event": kind, **asdict(event)}) + "\n")

    def on_vm_started(self, event: VMEvent) -> None:
        self._write("started", event)

    def on_vm_stopped(self, event: VMEvent) -> None:
        self._write("stopped", event)

    def events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]


class LabHookUnavailable(RuntimeError):
    """The lab's runtime API is not there (or not the one this hook was written against)."""


class LabHook:
    """A started VM becomes a lab host (booted again if the lab has it already); a stopped one stops.

    Uses the lab's API (`brainall_ops.lab`): `LabHost(name, hostname, address)`, `add_host`,
    `start_host`, `stop_host` and `status`, all taking the lab's state dir. The lab's own SSH key
    reaches its hosts, so the VM's cloud-init keys are not passed on.
    """

    REQUIRED = ("LabHost", "add_host", "start_host", "stop_host", "status")

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.lab = self._load()

    @classmethod
    def _load(cls) -> Any:
        try:
            lab = importlib.import_module("brainall_ops.lab")
        except ImportError as exc:
            raise LabHookUnavailable(f"the lab is not available ({exc})") from None
        missing = []
        for name in cls.REQUIRED:
            try:
                getattr(lab, name)
            except (AttributeError, ImportError):
                missing.append(name)
        if missing:
            raise LabHookUnavailable(f"the lab API lacks {', '.join(missing)}")
        return lab

    def on_vm_started(self, event: VMEvent) -> None:
        if event.address is None:
            raise RuntimeError(f"{event.name} has no static ipconfig0 address for its lab host")
        known = {h.name: h for h in self.lab.status(self.state_dir).hosts}
        host = known.get(event.name)
        if host is None:
            self.lab.add_host(self.state_dir, self.lab.LabHost(event.name, event.name, event.address))
        elif host.address != event.address:
            raise RuntimeError(
                f"lab host {event.name} has address {host.address}, the VM's cloud-init says {event.address}"
            )
        else:
            self.lab.start_host(self.state_dir, event.name)

    def on_vm_stopped(self, event: VMEvent) -> None:
        self.lab.stop_host(self.state_dir, event.name)
