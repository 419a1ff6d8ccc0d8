"""The lab: real Debian hosts as systemd-nspawn containers on this machine, for deploys and tests.

    from brainall_ops.lab import lab_hosts, up, down
    lab = up(lab_hosts(None), state_dir)    # every host answers SSH; ssh -F lab.ssh_config NAME
    down(state_dir)

Names are resolved on first use, so importing the package (e.g. for the `lab` CLI group) costs
nothing until the runtime is actually needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "LabHost": "model",
    "LabSpecError": "model",
    "LAB_NETWORK": "model",
    "BRIDGE_ADDRESS": "model",
    "BRIDGE_NAME": "model",
    "NFT_TABLE": "model",
    "lab_hosts": "spec",
    "ensure_rootfs": "rootfs",
    "ensure_lab_key": "rootfs",
    "up": "runtime",
    "down": "runtime",
    "status": "runtime",
    "stop_host": "runtime",
    "start_host": "runtime",
    "add_host": "runtime",
    "default_state_dir": "runtime",
    "LabError": "runtime",
    "LabUp": "runtime",
    "LabDown": "runtime",
    "LabStatus": "runtime",
    "HostBoot": "runtime",
    "HostStatus": "runtime",
}

__all__ = [
    "BRIDGE_ADDRESS",
    "BRIDGE_NAME",
    "LAB_NETWORK",
    "NFT_TABLE",
    "HostBoot",
    "HostStatus",
    "LabDown",
    "LabError",
    "LabHost",
    "LabSpecError",
    "LabStatus",
    "LabUp",
    "add_host",
    "default_state_dir",
    "down",
    "ensure_lab_key",
    "ensure_rootfs",
    "lab_hosts",
    "start_host",
    "status",
    "stop_host",
    "up",
]

if TYPE_CHECKING:
    from brainall_ops.lab.model import BRIDGE_ADDRESS, BRIDGE_NAME, LAB_NETWORK, NFT_TABLE, LabHost, LabSpecError
    from brainall_ops.lab.rootfs import ensure_lab_key, ensure_rootfs
    from brainall_ops.lab.runtime import (
        HostBoot,
        HostStatus,
        LabDown,
        LabError,
        LabStatus,
        LabUp,
        add_host,
        default_state_dir,
        down,
        start_host,
        status,
        stop_host,
        up,
    )
    from brainall_ops.lab.spec import lab_hosts


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
