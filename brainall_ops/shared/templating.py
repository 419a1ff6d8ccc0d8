"""The one template factory: the jinja2 settings that render `brainall_ops/templates/<concern>/`.

The templates are package data (found with importlib.resources, never from the source tree), so
an installed wheel renders what a checkout renders. Every template is rendered with the settings
pyinfra's `files.template` uses (strict undefined names, trailing newline kept); a concern's
templates may import another concern's (the timer scripts import storage's `_job.sh.j2` macros),
which is what `also` adds to the loader's search path.

Compiled templates are cached once per machine rather than once per run: jinja2's own bytecode
cache (a per-user directory under the system's temp dir, keyed by each template's source
checksum, so an edited template is recompiled) saves `brainall-ops plan` the compilation of the
firewall rulesets it renders on every run.
"""

from __future__ import annotations

import shlex
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainall_ops.errors import BrainallError

if TYPE_CHECKING:
    import jinja2


@cache
def templates_root() -> Path:
    """The package's templates directory (on disk: pyinfra reads a template by its path)."""
    from importlib.resources import files

    root = files("brainall_ops").joinpath("templates")
    if not isinstance(root, Path):  # a zipped install: pyinfra and jinja2 need real files
        raise BrainallError("brainall_ops must be installed unzipped: its templates are read from disk")
    return root


def template_dir(concern: str) -> Path:
    return templates_root() / concern


def template_path(concern: str, name: str) -> str:
    """A template's path, as `files.template(src=...)` takes it."""
    return str(template_dir(concern) / name)


def loader_kwargs(*concerns: str) -> dict[str, Any]:
    """files.template's `jinja_env_kwargs` (a fresh dict each time: pyinfra pops the loader):
    templates found in each of `concerns`, in order (e.g. data's, then storage's shared macros)."""
    from jinja2 import FileSystemLoader

    return {"loader": FileSystemLoader([str(template_dir(name)) for name in concerns])}


@cache
def _bytecode_cache() -> jinja2.BytecodeCache | None:
    import jinja2

    try:
        return jinja2.FileSystemBytecodeCache()
    except RuntimeError:  # no private temp directory can be made: compile every time
        return None


def environment(concern: str, *also: str, **options: Any) -> jinja2.Environment:
    """A strict environment loading `templates/<concern>/` (then `also`); `options` go to
    jinja2.Environment."""
    import jinja2  # lazily: commands that render nothing never pay for jinja2

    settings: dict[str, Any] = {"undefined": jinja2.StrictUndefined, "keep_trailing_newline": True}
    settings.update(options)
    return jinja2.Environment(bytecode_cache=_bytecode_cache(), **loader_kwargs(concern, *also), **settings)


def render(concern: str, name: str, *also: str, **context: Any) -> str:
    """`name` rendered as `files.template` renders it on a host (with `q` = shlex.quote, which
    the shell templates use), so what a test reads is what a host gets."""
    return environment(concern, *also).get_template(name).render(q=shlex.quote, **context)
