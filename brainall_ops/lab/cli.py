"""`brainall-ops lab`: bring the fleet up as real hosts on this machine, look at it, tear it down.

Only click is imported here; the runtime and rich load inside the command that needs them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

DEFAULT_STATE_DIR = "/var/lib/brainall-ops/lab"  # = runtime.DEFAULT_STATE_DIR, without importing it

F = TypeVar("F", bound=Callable[..., Any])


def _state_dir_option(command: F) -> F:
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="BRAINALL_LAB_DIR",
        default=DEFAULT_STATE_DIR,
        show_default=True,
        show_envvar=True,
        help="Where the lab keeps its record, SSH key, ssh_config and host overlays.",
    )(command)


def _print_features(console: Any, features: Any) -> None:
    """The kernel features table: what this machine offers the lab, and what a missing one changes."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="kernel features the lab relies on")
    for column in ("feature", "here", "seen", "without it"):
        table.add_column(column)
    for f in features:
        here = "[green]yes[/green]" if f.present else ("[red]MISSING[/red]" if f.required else "[yellow]no[/yellow]")
        table.add_row(f.name, here, Text(f.seen), Text("" if f.present else f.without))
    console.print(table)


def _log_progress() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")


@click.group(name="lab")
def lab() -> None:
    """Bring the fleet up as real hosts on this machine (systemd-nspawn containers)."""


@lab.command()
@_state_dir_option
@click.option(
    "--rolemap",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Role map to take the hosts from (default: the built-in one).",
)
@click.option("--boot-timeout", type=float, default=180.0, show_default=True, help="Seconds per host.")
@click.option(
    "--with-vms",
    is_flag=True,
    help="Also boot the phase-2 VMs at their lab addresses (rehearse later phases without phase 2).",
)
@click.option(
    "--withhold",
    multiple=True,
    metavar="HOST=FEATURE",
    envvar="BRAINALL_LAB_WITHHOLD",
    show_envvar=True,
    help="Deny HOST a device this machine has (autofs, fuse), to rehearse a kernel without it.",
)
def up(state_dir: Path, rolemap: Path | None, boot_timeout: float, with_vms: bool, withhold: tuple[str, ...]) -> None:
    """Boot the lab hosts and wait until each answers SSH.

    Whatever an earlier lab left on this machine is cleared first; hosts start pristine.
    """
    from rich.console import Console
    from rich.table import Table

    from brainall_ops.lab import runtime
    from brainall_ops.lab.spec import lab_hosts, parse_withhold

    _log_progress()
    denied = parse_withhold(withhold)
    result = runtime.up(lab_hosts(rolemap, with_vms=with_vms, withhold=denied), state_dir, boot_timeout=boot_timeout)
    table = Table(title=f"lab up in {result.seconds:.1f}s")
    for column in ("host", "address", "systemd", "ready after", "withheld"):
        table.add_column(column)
    for boot in result.hosts:
        state = boot.system_state + (f" ({', '.join(boot.failed_units)})" if boot.failed_units else "")
        table.add_row(
            boot.name, boot.address, state, f"{boot.seconds:.1f}s", ", ".join(sorted(denied.get(boot.name, ())))
        )
    console = Console()
    _print_features(console, result.features)
    console.print(table)
    console.print(f"ssh -F {result.ssh_config} HOST   (or: brainall-ops lab ssh HOST)")


@lab.command()
@_state_dir_option
def down(state_dir: Path) -> None:
    """Stop the lab and remove what `up` made.

    The cached rootfs, the apt cache and the lab SSH key stay for the next `up`.
    """
    from brainall_ops.lab import runtime

    _log_progress()
    result = runtime.down(state_dir)
    if not result.removed:
        click.echo(f"no lab recorded in {state_dir}")
        return
    drops = ", ".join(f"{rule}: {packets}" for rule, packets in result.guard_drops.items())
    click.echo(f"lab down in {result.seconds:.1f}s" + (f"; guard drops: {drops}" if drops else ""))


@lab.command()
@_state_dir_option
def status(state_dir: Path) -> None:
    """Show the lab's hosts and shared parts as they are now."""
    from rich.console import Console
    from rich.table import Table

    from brainall_ops.lab import runtime

    current = runtime.status(state_dir)
    console = Console()
    _print_features(console, current.features)
    if not current.recorded:
        console.print(f"no lab recorded in {state_dir}")
        return

    def mark(ok: bool) -> str:
        return "[green]up[/green]" if ok else "[red]down[/red]"

    table = Table(title=f"lab in {current.state_dir}")
    for column in ("host", "hostname", "address", "container", "ssh", "withheld"):
        table.add_column(column)
    for host in current.hosts:
        table.add_row(
            host.name,
            host.hostname,
            host.address,
            mark(host.running),
            mark(host.ssh_port_open),
            ", ".join(host.withheld),
        )
    console.print(table)
    console.print(
        f"bridge {mark(current.bridge)}  nft guard {mark(current.nft_table)}  "
        f"apt proxy {mark(current.apt_proxy)}  lxcfs {mark(current.lxcfs)}"
    )
    if current.guard_drops:
        console.print("guard drops: " + ", ".join(f"{rule}: {n}" for rule, n in current.guard_drops.items()))


@lab.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@_state_dir_option
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(state_dir: Path, host: str, command: tuple[str, ...]) -> None:
    """Open a shell on HOST, or run COMMAND there.

    Runs `ssh -F STATE_DIR/ssh_config HOST COMMAND...`.
    """
    ssh_config = state_dir / "ssh_config"
    if not ssh_config.is_file():
        raise click.ClickException(f"no lab is up in {state_dir} (no {ssh_config})")
    os.execvp("ssh", ["ssh", "-F", str(ssh_config), host, *command])


if __name__ == "__main__":
    lab()
