"""What a plan is made of: changes, phase by phase."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Action = Literal["create", "update", "delete", "unchanged", "run", "refuse"]

SYMBOLS: dict[str, str] = {
    "create": "+",
    "update": "~",
    "delete": "-",
    "unchanged": "=",
    "run": ">",
    "refuse": "!",
}

PHASES: dict[str, str] = {
    "phase1": "1 preparation: Storage Box, SSH keys, mounts, backups",
    "phase2": "2 infrastructure: VMs, Ceph, firewall",
    "phase3": "3 AI services: vLLM in place of Ollama",
    "phase4": "4 backend: dynamic-mode cluster behind nginx",
    "phase5": "5 data: PostgreSQL, Redis, backups, monitoring",
}


@dataclass(frozen=True)
class Change:
    phase: str
    concern: str
    action: Action
    target: str
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.action]

    @property
    def is_change(self) -> bool:
        return self.action in ("create", "update", "delete", "run")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["symbol"] = self.symbol
        return data


@dataclass
class Contribution:
    """One concern's part of a plan. A refusal means the plan must not be carried out."""

    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
