"""Human output of a plan: rich tables, phase by phase.

Everything that comes from the role map or the hosts is printed as plain text (rich.text.Text,
rich.markup.escape), never parsed as markup: an apt line's `[signed-by=...]` is data.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from brainall_ops.planning.changes import PHASES
from brainall_ops.planning.plan import Plan

STYLES = {"create": "green", "update": "yellow", "delete": "red", "unchanged": "dim", "run": "cyan"}


def render_plan(plan: Plan, console: Console | None = None) -> None:
    # Piped output (logs, grep, CI) gets a fixed wide layout instead of rich's 80 columns.
    console = console or Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    console.print(f"[bold]Plan for {escape(plan.rolemap_name)}[/bold] ({escape(str(plan.source))})\n")

    if plan.placement.placements:
        table = Table(title="Placement", title_justify="left", show_lines=False)
        for column in ("VM", "host", "vCPU", "RAM GB", "disk GB", "why"):
            table.add_column(column, overflow="fold")
        for p in plan.placement.placements:
            why = p.reason + "".join(f"\n  ✗ {host}: {reason}" for host, reason in p.rejected)
            table.add_row(Text(p.vm), Text(p.host), str(p.vcpu), f"{p.memory_gb:g}", f"{p.disk_gb:g}", Text(why))
        console.print(table)

    if plan.budgets:
        table = Table(title="Proxmox budgets after the plan", title_justify="left")
        for column in ("host", "new VMs", "new RAM of free", "host RAM after", "vCPU planned"):
            table.add_column(column)
        for b in plan.budgets:
            table.add_row(
                Text(b.host),
                Text(", ".join(b.vms) or "-"),
                f"{b.planned_gb:g} of {b.ram_free_gb:g} GB ({b.planned_pct_of_free:.0f} %)",
                f"{b.used_after_gb:g} of {b.ram_total_gb:g} GB ({b.used_after_pct:.0f} %)",
                str(b.vcpu_planned),
            )
        console.print(table)

    for phase, title in PHASES.items():
        changes = [c for c in plan.changes if c.phase == phase]
        if not changes:
            continue
        table = Table(title=f"Phase {title}", title_justify="left")
        table.add_column("", width=1)
        table.add_column("concern")
        table.add_column("target")
        table.add_column("change", overflow="fold")
        for c in changes:
            style = STYLES.get(c.action, "")
            table.add_row(Text(c.symbol, style=style), Text(c.concern), Text(c.target), Text(c.summary))
        console.print(table)

    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    for refusal in plan.refusals:
        console.print(f"[red]refused:[/red] {escape(refusal)}")
    counts = {a: sum(1 for c in plan.changes if c.action == a) for a in ("create", "update", "delete", "run")}
    console.print(
        f"\nPlan: {counts['create']} to create, {counts['update']} to update, {counts['delete']} to delete, "
        f"{counts['run']} to run."
    )
