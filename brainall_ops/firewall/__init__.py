"""Phase 2 firewall: one nftables table `inet brainall` per host and VM, from the role map's policy.

policy.py      the role map's `firewall:` section compiled per host (pure)
render.py      the ruleset, fail2ban jail and boot unit from templates/firewall/*.j2
diff.py        rule-level diff of two rulesets (a rendering, or nft's live listing)
record.py      the controller's record of each host's last confirmed ruleset
remote.py      the host-side steps of a commit-confirmed apply
sshpath.py     fresh SSH connections: confirmation, `plan --live`
facts.py       pyinfra facts; operations.py: pyinfra operations; deploy.py: the @deploy
live.py        read the live tables for `brainall-ops plan --live`
plan.py        this concern's part of `brainall-ops plan`
"""

from __future__ import annotations

import importlib
from typing import Any

# The public API other concerns import (`from brainall_ops.firewall import name`): fresh SSH
# connections to the fleet's hosts, as `plan --live` reads them. Loaded on first use.
_API = {
    "SshPath": "sshpath",
    "SshTarget": "sshpath",
    "run_ssh": "sshpath",
    "ssh_targets": "live",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
