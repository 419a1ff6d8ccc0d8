"""Storage: the Storage Box, its clients' mounts and keys, backups to it, and /etc to Git."""

from __future__ import annotations

import importlib
from typing import Any

# The public API other concerns import (`from brainall_ops.X import name`), each name -> the module
# defining it; loaded on first use, so importing one name never drags in pyinfra for a pure caller.
_API = {
    "BoxEndpoint": "logic",
    "box_access": "deploy",
    "box_endpoint": "logic",
    "box_reachable": "operations",
    "secret_file": "operations",
    "ssh_command": "logic",
    "timer_job": "deploy",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
