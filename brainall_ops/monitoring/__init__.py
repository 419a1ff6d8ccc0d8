"""Phase 5: node exporter everywhere, Prometheus with alert rules, Grafana provisioning."""

from __future__ import annotations

import importlib
from typing import Any

# The public API other concerns import (`from brainall_ops.X import name`), each name -> the module
# defining it; loaded on first use, so importing one name never drags in pyinfra for a pure caller.
_API = {
    "GRAFANA_ADMIN_PASSWORD_ENV": "logic",
    "monitoring_spec": "logic",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
