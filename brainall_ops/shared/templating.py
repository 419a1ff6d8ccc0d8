"""The jinja2 environments that render `templates/<concern>/`.

One factory for every concern, so each template is compiled once per machine rather than once
per run: jinja2's own bytecode cache (a per-user directory under the system's temp dir, keyed
by each template's source checksum, so an edited template is recompiled) saves `brainall-ops
plan` the compilation of the firewall rulesets it renders on every run.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from brainall_ops.rolemap.loader import REPO_ROOT

if TYPE_CHECKING:
    import jinja2

TEMPLATES = REPO_ROOT / "templates"


@cache
def _bytecode_cache() -> jinja2.BytecodeCache | None:
    import jinja2

    try:
        return jinja2.FileSystemBytecodeCache()
    except RuntimeError:  # no private temp directory can be made: compile every time
        return None


def environment(concern: str, **options: Any) -> jinja2.Environment:
    """A strict environment loading `templates/<concern>/`; `options` go to jinja2.Environment."""
    import jinja2  # lazily: commands that render nothing never pay for jinja2

    settings: dict[str, Any] = {"undefined": jinja2.StrictUndefined, "keep_trailing_newline": True}
    settings.update(options)
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES / concern)),
        bytecode_cache=_bytecode_cache(),
        **settings,
    )
