"""`brainall-ops survey` and `brainall-ops roles`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from brainall_ops.errors import BrainallError

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_INVENTORIES = ("inventories/hel1.py", "inventories/fsn1.py")
MEASUREMENTS_DIR = Path("measurements")


def _default_out() -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return MEASUREMENTS_DIR / f"survey-{stamp}.yaml"


def _console() -> Console:
    """rich's console; wide enough for the tables when the output goes to a log rather than a terminal."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 160))


def _check_out(out: Path, force: bool, protected: list[Path]) -> None:
    """The measurements never land on the hand-kept role map, nor silently on another file."""
    resolved = out.resolve()
    for path in protected:
        if resolved == path.resolve():
            raise BrainallError(f"--out {out} is the role map: measurements go to their own file")
    if out.exists() and not force:
        raise BrainallError(f"{out} exists: choose another --out, or --force to replace it")
    if out.exists() and out.is_dir():
        raise BrainallError(f"--out {out} is a directory")


@click.command()
@click.option(
    "--inventory",
    "-i",
    "inventories",
    multiple=True,
    type=click.Path(path_type=Path),
    help="pyinfra inventory file (repeatable) [the production fleet: " + ", ".join(DEFAULT_INVENTORIES) + "].",
)
@click.option("--limit", multiple=True, metavar="HOST|GROUP", help="Only these hosts or groups (repeatable).")
@click.option(
    "--out", "-o", type=click.Path(path_type=Path), help="Measurements file [measurements/survey-<UTC>.yaml]."
)
@click.option("--force", is_flag=True, help="Replace --out if it exists (never a role map).")
@click.option("--connect-timeout", type=click.IntRange(1, 120), default=10, show_default=True, help="SSH connect, s.")
@click.option("--probe-timeout", type=click.IntRange(1, 600), default=20, show_default=True, help="Each probe, s.")
@click.option("--disk-timeout", type=click.IntRange(1, 600), default=60, show_default=True, help="Disk test, s.")
@click.option(
    "--disk-test-mb", type=click.IntRange(0, 4096), default=256, show_default=True, help="Disk test file; 0 skips it."
)
@click.option("--disk-dir", default="/var/tmp", show_default=True, help="Where the disk test's temporary file goes.")
@click.option("--ping-count", type=click.IntRange(1, 50), default=5, show_default=True, help="Pings per pair.")
@click.option(
    "--latency-method",
    type=click.Choice(["auto", "tcp"]),
    default="auto",
    show_default=True,
    help="auto: ICMP ping where installed, else TCP connect to port 22; tcp: always TCP.",
)
@click.option("--storagebox", metavar="ADDRESS:PORT", help="Probe this Storage Box address instead of the role map's.")
def survey(
    inventories: tuple[Path, ...],
    limit: tuple[str, ...],
    out: Path | None,
    force: bool,
    connect_timeout: int,
    probe_timeout: int,
    disk_timeout: int,
    disk_test_mb: int,
    disk_dir: str,
    ping_count: int,
    latency_method: str,
    storagebox: str | None,
) -> None:
    """Measure the fleet over SSH, every host in parallel: latency matrix, disk, CPU, RAM, GPU,
    Proxmox VMs, Ceph health, Storage Box reachability. Every probe is bounded; a host that does
    not answer is reported, not fatal. Writes a timestamped measurements file."""
    from rich.live import Live

    from brainall_ops.rolemap.loader import BUILTIN_ROLEMAP, REPO_ROOT
    from brainall_ops.survey.display import Progress, survey_summary
    from brainall_ops.survey.facts import PROBES
    from brainall_ops.survey.measurements import Bounds, write_survey
    from brainall_ops.survey.runner import run_survey
    from brainall_ops.survey.selection import FleetSelection, parse_target

    if not inventories:
        inventories = tuple(REPO_ROOT / path for path in DEFAULT_INVENTORIES)
    for inventory in inventories:
        # checked here, before gevent patches the process: pyinfra would take a missing file for a host
        if not inventory.is_file():
            raise BrainallError(f"inventory {inventory}: no such file")
    target = parse_target(storagebox) if storagebox else None
    out = out or _default_out()
    _check_out(out, force, [BUILTIN_ROLEMAP])
    bounds = Bounds(
        connect_s=connect_timeout,
        probe_s=probe_timeout,
        disk_s=disk_timeout,
        disk_test_mb=disk_test_mb,
        ping_count=ping_count,
    )
    console = _console()
    live_mode = console.is_terminal
    state: dict[str, object] = {}

    def on_selection(selection: FleetSelection) -> None:
        if selection.rolemap:
            _check_out(out, force, [REPO_ROOT / selection.rolemap])
        for name, why in selection.left_out.items():
            console.print(f"[dim]not surveyed: {name} ({why})[/dim]")
        progress = Progress(selection.names, PROBES)
        state["progress"] = progress
        if live_mode:
            live = Live(progress.render(), console=console, auto_refresh=False, transient=False)
            live.start()
            state["live"] = live
        else:
            print(f"surveying {', '.join(selection.names)}", flush=True)

    def emit(event: object) -> None:
        progress = state.get("progress")
        if isinstance(progress, Progress):
            progress.handle(event)  # type: ignore[arg-type]
            if not live_mode:
                line = Progress.line(event)  # type: ignore[arg-type]
                if line:
                    print(line, flush=True)

    def tick() -> None:
        live, progress = state.get("live"), state.get("progress")
        if isinstance(live, Live) and isinstance(progress, Progress):
            live.update(progress.render(), refresh=True)

    try:
        result = run_survey(
            list(inventories),
            limit=limit,
            bounds=bounds,
            disk_dir=disk_dir,
            latency_method=latency_method,
            storagebox=target,
            emit=emit,
            tick=tick,
            on_selection=on_selection,
        )
    finally:
        live = state.get("live")
        if isinstance(live, Live):
            tick()
            live.stop()
    write_survey(result, out)
    console.print(survey_summary(result))
    problems = sum(len(h.errors) + (0 if h.answered else 1) for h in result.hosts.values())
    console.print(f"measurements written to {out} ({len(result.hosts)} hosts, {problems} problems, {result.seconds} s)")


@click.command()
@click.option(
    "--measurements",
    "-m",
    "measurements_file",
    required=True,
    type=click.Path(path_type=Path),
    help="A file written by `brainall-ops survey`.",
)
@click.option(
    "--rolemap",
    type=click.Path(path_type=Path),
    help="Role map to compare with (and --write to) [the one the measurements name, else the built-in].",
)
@click.option("--write", is_flag=True, help="Update the role map's measured: blocks (shows the diff first).")
@click.option("--yes", "-y", is_flag=True, help="Write without asking.")
@click.option(
    "--allow-non-production",
    is_flag=True,
    help="Write measurements taken in another environment (e.g. the lab) into the role map.",
)
def roles(measurements_file: Path, rolemap: Path | None, write: bool, yes: bool, allow_non_production: bool) -> None:
    """Propose the fleet's roles from measurements, with the reasons and the input that decided each."""
    from brainall_ops.rolemap.environment import PRODUCTION
    from brainall_ops.rolemap.loader import BUILTIN_ROLEMAP, REPO_ROOT, load_rolemap
    from brainall_ops.survey.display import proposal_view
    from brainall_ops.survey.measurements import load_survey
    from brainall_ops.survey.rolemap_edit import prepare_update, write_update
    from brainall_ops.survey.roles import check_proposal, propose_roles

    measured = load_survey(measurements_file)
    if rolemap is None:
        if measured.rolemap:
            named = Path(measured.rolemap)
            rolemap = named if named.is_absolute() else REPO_ROOT / named
        else:
            rolemap = BUILTIN_ROLEMAP
    rm = load_rolemap(rolemap)
    proposal = propose_roles(measured, rm)
    console = _console()
    console.print(proposal_view(proposal))
    problems = check_proposal(proposal, measured, rm)
    if problems:
        raise BrainallError("the proposal breaks its own rules: " + "; ".join(problems))
    if not write:
        return
    if measured.environment not in (None, PRODUCTION) and not allow_non_production:
        raise BrainallError(
            f"{measurements_file} was measured in the {measured.environment!r} environment; the role map's "
            "measured: blocks describe production (--allow-non-production to write them anyway)"
        )
    update = prepare_update(rolemap, measured)
    if not update.changed:
        console.print(f"{rolemap}: the measured: blocks already hold these numbers; nothing to write")
        return
    sys.stdout.write(update.diff())
    sys.stdout.flush()
    if not yes and not click.confirm(f"Write these measured: values to {rolemap}?", default=False):
        raise click.exceptions.Abort()
    write_update(update)
    console.print(f"{rolemap}: measured: blocks updated ({len(update.updates)} hosts)")
