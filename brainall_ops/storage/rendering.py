"""The storage templates (templates/storage/*.j2), rendered the way pyinfra's files.template does.

The deploy hands these paths to `files.template` with `jinja_env()` (so a template can import
the shared macros of `_job.sh.j2`); tests and `render` use the same jinja2 settings (strict
undefined names, trailing newline kept, the same loader), so what a test reads is what a host gets.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from brainall_ops.rolemap.loader import REPO_ROOT

TEMPLATES = REPO_ROOT / "templates" / "storage"


def template_path(name: str) -> str:
    return str(TEMPLATES / name)


def jinja_env(*first: Path) -> dict[str, Any]:
    """files.template's `jinja_env_kwargs` (a fresh dict each time: pyinfra pops the loader):
    templates found in `first` (another concern's templates), then here (the shared macros)."""
    from jinja2 import FileSystemLoader

    return {"loader": FileSystemLoader([str(path) for path in (*first, TEMPLATES)])}


def render(name: str, **context: Any) -> str:
    from jinja2 import Environment, StrictUndefined

    env = Environment(undefined=StrictUndefined, keep_trailing_newline=True, **jinja_env())
    template = env.from_string((TEMPLATES / name).read_text(encoding="utf-8"))
    return template.render(q=shlex.quote, **context)
