"""What the operator sees: the survey's progress (host x probe), its summary, and the role proposal."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from brainall_ops.survey.measurements import HostMeasurements, Survey
from brainall_ops.survey.roles import Proposal
from brainall_ops.survey.runner import CONNECT, Event

STYLES = {
    "running": ("…", "yellow"),
    "ok": ("✓", "green"),
    "absent": ("–", "dim"),
    "skipped": ("·", "dim"),
    "timeout": ("⏱", "bold red"),
    "error": ("✗", "bold red"),
}


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "?"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"


class Progress:
    """Every host's probes as they run; `render()` for a live display, `line()` for a log."""

    def __init__(self, hosts: Sequence[str], probes: Sequence[str]) -> None:
        self.hosts = list(hosts)
        self.columns = [CONNECT, *probes]
        self.cells: dict[tuple[str, str], Event] = {}
        self.started = time.monotonic()
        self.running_since: dict[tuple[str, str], float] = {}

    def handle(self, event: Event) -> None:
        key = (event.host, event.probe)
        if event.state == "running":
            self.running_since[key] = time.monotonic()
        self.cells[key] = event

    def render(self) -> RenderableType:
        elapsed = time.monotonic() - self.started
        table = Table(title=f"survey: {len(self.hosts)} hosts, {elapsed:.0f} s", title_justify="left", box=None)
        table.add_column("host", style="bold")
        for column in self.columns:
            table.add_column(column.replace("_", " "), justify="center")
        table.add_column("last problem", style="red", max_width=60, no_wrap=True)
        for host in self.hosts:
            row = []
            for column in self.columns:
                event = self.cells.get((host, column))
                if event is None:
                    row.append(Text(" "))
                    continue
                symbol, style = STYLES.get(event.state, ("?", ""))
                if event.state == "running":
                    since = self.running_since.get((host, column), time.monotonic())
                    row.append(Text(f"{symbol}{time.monotonic() - since:.0f}s", style=style))
                else:
                    row.append(Text(symbol, style=style))
            problems = [
                f"{column}: {event.detail}"
                for column in self.columns
                if (event := self.cells.get((host, column))) is not None and event.state in ("timeout", "error")
            ]
            table.add_row(host, *row, problems[-1] if problems else "")
        return table

    @staticmethod
    def line(event: Event) -> str | None:
        """A plain log line for a finished step (none for starts)."""
        if event.state == "running":
            return None
        took = f" ({event.seconds:.1f} s)" if event.seconds is not None else ""
        detail = f" {event.detail}" if event.detail else ""
        return f"{event.host} {event.probe}: {event.state}{detail}{took}"


# --------------------------------------------------------------------------- survey summary
def _cpu(h: HostMeasurements) -> str:
    return f"{h.cpu.model} {h.cpu.cores}c/{h.cpu.threads}t" if h.cpu else "?"


def _ram(h: HostMeasurements) -> str:
    return f"{_num(h.memory.available_gb)} / {_num(h.memory.total_gb)}" if h.memory else "?"


def _disk(h: HostMeasurements) -> str:
    return f"{_num(h.disk.free_gb)} / {_num(h.disk.total_gb)}" if h.disk else "?"


def _speed(h: HostMeasurements) -> str:
    if h.disk_speed is None:
        return "failed" if "disk_speed" in h.errors else "–"
    return f"{_num(h.disk_speed.write_gbps, 2)} / {_num(h.disk_speed.read_gbps, 2)}"


def _gpu(h: HostMeasurements) -> str:
    if h.gpu:
        return ", ".join(f"{c.model} {_num(c.vram_gb)} GB" for c in h.gpu)
    return "absent" if "gpu" in h.absent else ("failed" if "gpu" in h.errors else "?")


def _vms(h: HostMeasurements) -> str:
    if h.proxmox is not None:
        running = h.proxmox.running
        memory = sum(vm.memory_gb or 0 for vm in running)
        return f"{h.proxmox.running_count} running, {_num(memory)} GB"
    return "absent" if "proxmox" in h.absent else ("failed" if "proxmox" in h.errors else "?")


def _ceph(h: HostMeasurements) -> str:
    if h.ceph is not None:
        return h.ceph.status + (f" ({', '.join(c.name for c in h.ceph.checks)})" if h.ceph.checks else "")
    return "absent" if "ceph" in h.absent else ("failed" if "ceph" in h.errors else "?")


def _box(h: HostMeasurements) -> Text:
    if h.storagebox is None:
        return Text("failed" if "storagebox" in h.errors else "–", style="dim")
    if h.storagebox.reachable:
        return Text(f"reachable {_num(h.storagebox.connect_ms, 3)} ms", style="green")
    return Text(f"unreachable: {h.storagebox.reason}", style="red")


def survey_summary(survey: Survey) -> RenderableType:
    ref = survey.reference_host
    hosts = Table(title=f"Measured {survey.measured_at}", title_justify="left")
    for column in (
        "host",
        "CPU",
        "RAM avail/total GB",
        "disk free/total GB",
        "write/read GB/s",
        f"from {ref or '?'} ms",  # the median where kept, as the roles use it
        "GPU",
        "VMs",
        "Ceph",
        "Storage Box",
        "problems",
    ):
        hosts.add_column(column, overflow="fold")
    for name, h in survey.hosts.items():
        if not h.answered:
            hosts.add_row(name, Text(f"did not answer: {h.reason}", style="bold red"), *[""] * 9)
            continue
        sample = survey.latency_between(ref, name) if ref else None
        if name == ref:
            latency = "0 (reference)"
        elif sample is not None and sample.typical_ms is not None:
            latency = f"{_num(sample.typical_ms, 3)} ({_num(sample.loss_pct)} % loss)"
        else:
            latency = sample.reason if sample is not None else "?"
        problems = Text("; ".join(f"{p}: {e}" for p, e in h.errors.items()), style="red")
        hosts.add_row(
            name, _cpu(h), _ram(h), _disk(h), _speed(h), latency, _gpu(h), _vms(h), _ceph(h), _box(h), problems
        )
    matrix = Table(
        title="Latency, ms (loss %): row measures to column; the median where every reply was kept",
        title_justify="left",
    )
    names = list(survey.hosts)
    matrix.add_column("from \\ to", style="bold")
    for name in names:
        matrix.add_column(name, justify="right")
    for source in names:
        row = []
        for target in names:
            sample = survey.latency_between(source, target)
            if source == target:
                row.append(Text("—", style="dim"))
            elif sample is None:
                row.append(Text("?", style="dim"))
            elif sample.typical_ms is None:
                row.append(Text(sample.reason or "lost", style="red"))
            else:
                loss = f" ({_num(sample.loss_pct)} %)" if sample.loss_pct else ""
                row.append(Text(f"{_num(sample.typical_ms, 3)}{loss}", style="red" if sample.loss_pct else ""))
        matrix.add_row(source, *row)
    methods = sorted({s.method for row in survey.latency.values() for s in row.values()})
    note = Text(f"latency method: {', '.join(methods) or 'none'}", style="dim")
    return Group(hosts, matrix, note)


# --------------------------------------------------------------------------- roles
def proposal_view(proposal: Proposal) -> RenderableType:
    table = Table(
        title=f"Role proposal (latency budget {proposal.budget_ms:g} ms from {proposal.reference_host})",
        title_justify="left",
    )
    table.add_column("host", style="bold")
    table.add_column("proposed role")
    table.add_column("serves")
    table.add_column("role map now")
    for r in proposal.roles:
        same = r.current_role == r.role
        current = Text(r.current_role or "—", style="" if same or r.current_role is None else "bold red")
        if not (same or r.current_role is None):
            current.append("  (differs)")
        role = Text(f"{r.label} ({r.role})", style="green" if r.derived else "yellow")
        if not r.derived:
            role.append("  kept")
        table.add_row(r.host, role, ", ".join(r.serves), current)
    reasons: list[RenderableType] = [Text("Why (the input that decided it in brackets):", style="bold")]
    for r in proposal.roles:
        reasons.append(Text(f"  {r.host} → {r.label}", style="bold"))
        reasons.extend(Text(f"    • {reason}") for reason in r.reasons)
        reasons.extend(Text(f"    does: {duty}", style="cyan") for duty in r.duties)
    parts: list[RenderableType] = [table, *reasons]
    if proposal.storage_plan:
        parts.append(Text("Storage Box plan (from this proposal):", style="bold"))
        parts.extend(Text(f"  - {line}") for line in proposal.storage_plan)
    if proposal.plan:
        plan = Table(title="The role map's VMs placed on this proposal", title_justify="left")
        plan.add_column("VM")
        plan.add_column("host")
        plan.add_column("vCPU", justify="right")
        plan.add_column("RAM GB", justify="right")
        for p in proposal.plan:
            plan.add_row(p.vm, p.host, str(p.vcpu), _num(p.memory_gb))
        parts.append(plan)
    if proposal.warnings:
        parts.append(Text("Warnings:", style="bold yellow"))
        parts.extend(Text(f"  ! {w}", style="yellow") for w in proposal.warnings)
    return Group(*parts)
