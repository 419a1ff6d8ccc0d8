"""`brainall-ops backup`: verify backups by restoring them.

    brainall-ops backup verify -i inventories/lab.py

Restores the newest pg_dump on the Storage Box into a scratch database on the data host and
compares every table's row count with the live database; exit 1 on any difference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from brainall_ops.errors import BrainallError

DEFAULT_INVENTORY = "inventories/hel1.py"


@click.group()
def backup() -> None:
    """Verify backups by restoring them."""


@backup.command()
@click.option(
    "--inventory",
    "-i",
    default=DEFAULT_INVENTORY,
    show_default=True,
    help="pyinfra inventory with the data host's SSH data (inventories/lab.py for the lab).",
)
@click.option("--rolemap", type=click.Path(dir_okay=False), help="Role map (default: the one the inventory names).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(inventory: str, rolemap: str | None, as_json: bool) -> None:
    """Restore the latest database dump from the Storage Box into a scratch database and compare row counts."""
    from brainall_ops.backends.remote import Remote, SSHTarget, load_inventory
    from brainall_ops.data.logic import data_spec
    from brainall_ops.data.verify import verify_latest
    from brainall_ops.rolemap.environment import PRODUCTION
    from brainall_ops.rolemap.loader import REPO_ROOT, load_rolemap

    hosts = load_inventory(inventory)
    if rolemap is None:
        named = sorted({str(d["brainall_rolemap"]) for d in hosts.values() if d.get("brainall_rolemap")})
        if len(named) > 1:
            raise BrainallError(f"inventory {inventory} names several role maps ({', '.join(named)}): use --rolemap")
        if named:
            rolemap = named[0] if Path(named[0]).is_absolute() else str(REPO_ROOT / named[0])
    rm = load_rolemap(rolemap)
    if rm.data is None:
        raise BrainallError("the role map has no data section")
    if rm.data.host not in hosts:
        raise BrainallError(f"inventory {inventory} has no host {rm.data.host} (data.host)")
    data: dict[str, Any] = hosts[rm.data.host]
    # inventories/lab.py finds the lab's key through BRAINALL_LAB_DIR, which load_inventory already applied
    environment = str(data.get("brainall_environment") or PRODUCTION)
    spec = data_spec(rm, environment)
    remote = Remote(SSHTarget.from_host_data(rm.data.host, data))
    try:
        result = verify_latest(remote, spec)
    finally:
        remote.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "dump": result.dump,
                    "tables": result.tables,
                    "live": result.live,
                    "problems": result.problems,
                    "ok": result.ok,
                },
                indent=2,
            )
        )
    else:
        click.echo(f"{rm.data.host}: restored {result.dump} from {spec.dump.where} into a scratch database")
        for table in sorted(set(result.tables) | set(result.live)):
            restored, live = result.tables.get(table, "-"), result.live.get(table, "-")
            mark = "ok" if restored == live else "DIFFERS"
            click.echo(f"  {table}: {restored} restored, {live} live  {mark}")
    if not result.ok:
        raise BrainallError(f"backup verify: {'; '.join(result.problems)}")
    if not as_json:
        click.echo(f"ok: {len(result.tables)} table(s), every row count matches")
