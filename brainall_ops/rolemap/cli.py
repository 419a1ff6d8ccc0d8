"""`brainall-ops validate`, `brainall-ops inventory` and `brainall-ops init`."""

from __future__ import annotations

from pathlib import Path

import click

from brainall_ops.rolemap.loader import BUILTIN_ROLEMAP, REPO_ROOT, display_path, load_rolemap


class RoleMapCommand(click.Command):
    """A command whose exit codes mean something (`plan`: 2 is "changes to make"): a usage
    error exits 1, like every other error, instead of click's 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            exc.exit_code = 1
            raise


# Not click.Path(dir_okay=False): click would refuse a directory with a usage error (exit 2);
# the loader refuses it as one `file:line: (file): message` line, exit 1.
rolemap_option = click.option(
    "--rolemap",
    "rolemap_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Role map YAML (default: the built-in BrainAll V2 map, inventories/brainall-v2.yaml).",
)


@click.command(cls=RoleMapCommand)
@rolemap_option
def validate(rolemap_path: Path | None) -> None:
    """Check a role map: schema, duplicates, references, placement."""
    from brainall_ops.planning.fleet import place_located

    rm = load_rolemap(rolemap_path)
    place_located(rm)
    click.echo(f"{display_path(rolemap_path or BUILTIN_ROLEMAP)}: ok ({len(rm.hosts)} hosts, {len(rm.vms)} VMs)")


@click.command()
@rolemap_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for the inventory files (default: inventories/ of the repository).",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if any file would change.")
def inventory(rolemap_path: Path | None, out_dir: Path | None, check: bool) -> None:
    """Write pyinfra inventories (one per site, plus lab.py) from the role map."""
    import tempfile

    from brainall_ops.planning.inventory import write_inventories

    path = rolemap_path or BUILTIN_ROLEMAP
    rm = load_rolemap(path)
    target = out_dir or REPO_ROOT / "inventories"
    if check:
        with tempfile.TemporaryDirectory() as scratch:
            fresh = write_inventories(rm, path, Path(scratch))
            stale = [
                target / p.name
                for p, _ in fresh
                if not (target / p.name).exists() or (target / p.name).read_bytes() != p.read_bytes()
            ]
        for p in stale:
            click.echo(f"{display_path(p)}: out of date (run `brainall-ops inventory`)")
        if stale:
            raise SystemExit(1)
        click.echo("inventories are up to date")
        return
    for p, changed in write_inventories(rm, path, target):
        click.echo(f"{'wrote' if changed else 'unchanged'} {display_path(p)}")


def _deploy_scripts() -> list[Path]:
    """The phase deploys `init` writes: the wheel's copy (setup.py puts deploys/ there), or in a
    source checkout the checkout's own deploys/ beside the package."""
    from importlib.resources import files

    packaged = Path(str(files("brainall_ops"))) / "skeleton" / "deploys"
    source = packaged if packaged.is_dir() else Path(str(files("brainall_ops"))).parent / "deploys"
    return sorted(source.glob("*.py"))


FLEET_README = """# {name}: a BrainAll fleet repository (written by `brainall-ops init`)

Edit the role map, regenerate the inventories, plan, then run a phase with pyinfra from here:

    brainall-ops validate --rolemap inventories/{rolemap}
    brainall-ops inventory --rolemap inventories/{rolemap}
    brainall-ops plan --rolemap inventories/{rolemap}
    pyinfra inventories/<site>.py deploys/phase1.py --dry
"""


@click.command()
@rolemap_option
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(rolemap_path: Path | None, directory: Path) -> None:
    """Write a fleet repository in DIRECTORY: the role map to edit, its inventories, the phase deploys."""
    import shutil

    from brainall_ops.errors import BrainallError
    from brainall_ops.planning.inventory import write_inventories

    if directory.exists() and any(directory.iterdir()):
        raise BrainallError(f"{directory}: not empty; `init` writes a new fleet repository into an empty directory")
    source = rolemap_path or BUILTIN_ROLEMAP
    rm = load_rolemap(source)
    scripts = _deploy_scripts()
    if not scripts:
        raise BrainallError("this installation has no phase deploys to copy (a wheel built without setup.py's hook?)")
    inventories = directory / "inventories"
    inventories.mkdir(parents=True, exist_ok=True)
    rolemap = inventories / source.name
    shutil.copyfile(source, rolemap)
    written = [rolemap]
    written += [path for path, _changed in write_inventories(rm, rolemap, inventories, root=directory)]
    (directory / "deploys").mkdir(exist_ok=True)
    for script in scripts:
        shutil.copyfile(script, directory / "deploys" / script.name)
        written.append(directory / "deploys" / script.name)
    readme = directory / "README.md"
    readme.write_text(FLEET_README.format(name=directory.resolve().name, rolemap=source.name), encoding="utf-8")
    written.append(readme)
    for path in written:
        click.echo(f"wrote {path}")
