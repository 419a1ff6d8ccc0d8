"""Running the real pyinfra CLI on the lab, and reading its results table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from brainall_ops.rolemap import REPO_ROOT

PYINFRA = Path(sys.executable).with_name("pyinfra")
LAB_INVENTORY = "inventories/lab.py"
_TOTAL = re.compile(r"^\s*Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", re.M)


@dataclass(frozen=True)
class PyinfraRun:
    returncode: int
    output: str
    operations: int
    success: int
    error: int
    no_change: int

    @property
    def changed(self) -> int:
        return self.success


def run_pyinfra(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> PyinfraRun:
    """`pyinfra -y INVENTORY DEPLOY ...` from the repository root; output is stdout+stderr."""
    result = subprocess.run(
        [str(PYINFRA), "-y", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    match = _TOTAL.search(output)

    def count(value: str | None) -> int:
        return 0 if value in (None, "-") else int(value)

    ops, success, error, no_change = (match.groups() if match else (None, None, None, None))
    return PyinfraRun(result.returncode, output, count(ops), count(success), count(error), count(no_change))
