"""The data templates (templates/data/*.j2), through the shared template factory."""

from __future__ import annotations

from typing import Any

from brainall_ops.shared import templating

CONCERN = "data"
TEMPLATES = templating.template_dir(CONCERN)


def template_path(name: str) -> str:
    return templating.template_path(CONCERN, name)


def render(name: str, **context: Any) -> str:
    """As files.template renders it, with the loader the deploy gives it (the timer scripts import
    storage's shared `_job.sh.j2`)."""
    return templating.render(CONCERN, name, "storage", **context)
