"""`brainall-ops plan`: the dry run. Exit 0: nothing to change, 2: changes, 1: error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from brainall_ops.rolemap.cli import RoleMapCommand, rolemap_option
from brainall_ops.rolemap.loader import BUILTIN_ROLEMAP, display_path, load_rolemap


@click.command(cls=RoleMapCommand)
@rolemap_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--live", is_flag=True, help="Also read live state (read-only calls only).")
@click.option(
    "--environment",
    default="production",
    show_default=True,
    help="Which addresses and endpoints a live plan reads (e.g. lab: the lab hosts and the Proxmox simulator).",
)
def plan(rolemap_path: Path | None, as_json: bool, live: bool, environment: str) -> None:
    """Show, phase by phase, what the deploys would do. Touches nothing."""
    from brainall_ops.planning.plan import build_plan

    path = rolemap_path or BUILTIN_ROLEMAP
    rm = load_rolemap(path)
    if environment != "production" and environment not in rm.environments:
        from brainall_ops.errors import BrainallError

        known = ", ".join(sorted({"production", *rm.environments}))
        raise BrainallError(f"unknown environment {environment!r} (the role map has: {known})")
    from brainall_ops.planning.fleet import located_refusal
    from brainall_ops.planning.placement import PlacementError

    try:
        result = build_plan(rm, display_path(path), live=live, environment=environment)
    except PlacementError as exc:
        raise located_refusal(rm, exc) from None
    if as_json:
        try:
            # allow_nan=False: the output is JSON, which has no Infinity or NaN
            text = json.dumps(result.to_json(), indent=2, sort_keys=False, allow_nan=False)
        except ValueError as exc:
            from brainall_ops.errors import BrainallError

            raise BrainallError(f"the plan cannot be written as JSON: {exc}") from None
        click.echo(text)
    else:
        from brainall_ops.planning.render import render_plan

        render_plan(result)
    if result.refusals:
        if as_json:
            for refusal in result.refusals:
                click.echo(f"refused: {refusal}", err=True)
        sys.exit(1)
    sys.exit(2 if result.has_changes else 0)
