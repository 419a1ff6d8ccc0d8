"""The `brainall-ops` command line.

Subcommands live next to their concern and are imported only when invoked, so `plan` never
pays for pyinfra, gevent or proxmoxer. Operator errors (BrainallError) are one plain line on
stderr and exit 1; never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

# Scanning every installed distribution for pydantic plugins costs more than the rest of an
# offline plan; this toolkit uses none.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from brainall_ops.errors import BrainallError, RoleMapError

# name -> "module:attribute" of a click command or group
SUBCOMMANDS: dict[str, str] = {
    "plan": "brainall_ops.planning.cli:plan",
    "inventory": "brainall_ops.rolemap.cli:inventory",
    "validate": "brainall_ops.rolemap.cli:validate",
    "init": "brainall_ops.rolemap.cli:init",
    "lab": "brainall_ops.lab.cli:lab",
    "ceph": "brainall_ops.ceph.cli:ceph",
    "backends": "brainall_ops.backends.cli:backends",
    "survey": "brainall_ops.survey.cli:survey",
    "roles": "brainall_ops.survey.cli:roles",
    "backup": "brainall_ops.data.cli:backup",
}

SHORT_HELP: dict[str, str] = {
    "plan": "Show what the deploys would do (dry run; touches nothing).",
    "inventory": "Write the pyinfra inventories from the role map.",
    "validate": "Check a role map and report every problem.",
    "init": "Write a new fleet repository (role map, inventories, deploys).",
    "lab": "Bring the fleet up as real hosts on this machine.",
    "ceph": "Read and fix Ceph placement-group health.",
    "backends": "Switch and inspect the backend cluster mode.",
    "survey": "Measure the fleet over SSH.",
    "roles": "Propose roles from measurements.",
    "backup": "Verify backups by restoring them.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, target in SUBCOMMANDS.items() if _module_exists(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing help must not import every subcommand's module.
        rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _module_exists(target: str) -> bool:
    module_name = target.split(":")[0]
    path = Path(__file__).resolve().parent.parent.joinpath(*module_name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="brainall-ops")
def cli() -> None:
    """Provision the BrainAll V2 fleet from its role map."""


def main(argv: list[str] | None = None) -> Any:
    try:
        return cli.main(args=argv, prog_name="brainall-ops", standalone_mode=False)
    except BrainallError as exc:
        # role-map problems already read "file:line: field: message", one per line
        click.echo(str(exc) if isinstance(exc, RoleMapError) else f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
