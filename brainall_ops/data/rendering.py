"""The data templates (templates/data/*.j2), rendered the way pyinfra's files.template does."""

from __future__ import annotations

import shlex
from typing import Any

from brainall_ops.rolemap.loader import REPO_ROOT

TEMPLATES = REPO_ROOT / "templates" / "data"


def template_path(name: str) -> str:
    return str(TEMPLATES / name)


def render(name: str, **context: Any) -> str:
    """As files.template renders it, with the loader the deploy gives it (the timer scripts import
    storage's shared `_job.sh.j2`)."""
    from jinja2 import Environment, StrictUndefined

    from brainall_ops.storage.rendering import jinja_env

    env = Environment(undefined=StrictUndefined, keep_trailing_newline=True, **jinja_env(TEMPLATES))
    template = env.from_string((TEMPLATES / name).read_text(encoding="utf-8"))
    return template.render(q=shlex.quote, **context)
