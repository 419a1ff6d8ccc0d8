"""The controller's record of each host's last confirmed ruleset: what an offline plan diffs against.

Kept per environment, so a lab deploy never shows up in a production plan:
    $BRAINALL_STATE_DIR/firewall/<environment>/<host>.nft
(default state dir: $XDG_STATE_HOME/brainall-ops, else ~/.local/state/brainall-ops).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

STATE_DIR_ENV = "BRAINALL_STATE_DIR"


def state_dir() -> Path:
    explicit = os.environ.get(STATE_DIR_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "brainall-ops"


def record_path(environment: str, name: str) -> Path:
    return state_dir() / "firewall" / environment / f"{name}.nft"


def read_record(environment: str, name: str) -> str | None:
    try:
        return record_path(environment, name).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def write_record(environment: str, name: str, text: str) -> Path:
    """Atomically: a reader sees the old record or the new one, never half of one."""
    path = record_path(environment, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
