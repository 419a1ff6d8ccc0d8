"""The storage templates (templates/storage/*.j2), through the shared template factory.

The deploy hands these paths to `files.template` with `jinja_env()` (so a template can import
the shared macros of `_job.sh.j2`); tests and `render` use the same jinja2 settings and loader
(brainall_ops.shared.templating), so what a test reads is what a host gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brainall_ops.shared import templating

CONCERN = "storage"
TEMPLATES = templating.template_dir(CONCERN)


def template_path(name: str) -> str:
    return templating.template_path(CONCERN, name)


def jinja_env(*first: Path) -> dict[str, Any]:
    """files.template's `jinja_env_kwargs`: templates found in `first` (another concern's
    template directory, templates/<concern>/), then storage's (the shared macros)."""
    return templating.loader_kwargs(*(directory.name for directory in first), CONCERN)


def render(name: str, **context: Any) -> str:
    return templating.render(CONCERN, name, **context)
