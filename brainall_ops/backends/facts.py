"""pyinfra facts of the backend cluster."""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra.api import FactBase

from brainall_ops.backends.spec import TOOL_PATH

MISSING = "__brainall_backends_missing__"


class BackendCluster(FactBase):
    """`backendctl inspect` on the API host: the mode, each instance's unit state, health, workers and
    configuration digest. None until the deploy has installed the tool and the environment file."""

    def command(self, env_file: str) -> str:
        quoted = shlex.quote(env_file)
        return (
            f"if [ -x {TOOL_PATH} ] && [ -s {quoted} ]; then python3 {TOOL_PATH} --env-file {quoted} inspect; "
            f"else echo {MISSING}; fi"
        )

    def process(self, output: list[str]) -> dict[str, Any] | None:
        text = "\n".join(output).strip()
        if not text or text == MISSING:
            return None
        return json.loads(text)
