"""`roles --write`: bring the role map's `measured:` blocks up to date with a survey, and nothing else.

The role map is hand-kept (comments, flow mappings, chosen values), so it is edited as text, not
re-dumped: the positions of each host's `measured:` values come from PyYAML's node marks, and
only those values change. A value that changes loses its trailing comment (it described the old,
hand-typed figure); an unchanged value keeps it; a field the survey measured that the block lacks
is added in the schema's order, unless it equals the schema default. The result is validated with
the role-map loader and placement (what `validate` checks) and read back before it is shown and written
(atomically), so a map `validate` refuses is never written. On a Proxmox node the disk figures are the VM
storage's (local-lvm), not the root filesystem's.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap.loader import parse_rolemap
from brainall_ops.rolemap.models import Measured, RoleMap
from brainall_ops.survey.measurements import HostMeasurements, Survey

MEASURED_FIELDS = list(Measured.model_fields)
# Rounding of what is written: the survey's precision is finer than a role map needs.
DIGITS = {
    "latency_from_gpu_ms": 3,
    "packet_loss_pct": 1,
    "disk_write_gbps": 2,
    "disk_read_gbps": 2,
}
DEFAULT_DIGITS = 1


class RoleMapEditError(BrainallError):
    pass


def number(value: float) -> str:
    """A figure as the role map writes it: no trailing zeros, integers without a point."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def measured_updates(survey: Survey, rm: RoleMap) -> dict[str, dict[str, float]]:
    """Host -> measured field -> the survey's value, for every role-map host the survey measured."""
    reference = rm.placement.reference_host
    known = {h.name for h in rm.hosts}
    out: dict[str, dict[str, float]] = {}
    for name, measured in survey.hosts.items():
        if name not in known or not measured.answered:
            continue
        values: dict[str, float] = {}
        if name == reference:
            values["latency_from_gpu_ms"] = 0
        else:
            sample = survey.latency_between(reference, name)
            if sample is not None and sample.typical_ms is not None:
                values["latency_from_gpu_ms"] = sample.typical_ms  # what the roles were decided on
                values["packet_loss_pct"] = sample.loss_pct
        if measured.disk_speed is not None:
            if measured.disk_speed.write_gbps is not None:
                values["disk_write_gbps"] = measured.disk_speed.write_gbps
            if measured.disk_speed.read_gbps is not None:
                values["disk_read_gbps"] = measured.disk_speed.read_gbps
        if measured.memory is not None:
            if measured.memory.used_gb is not None:
                values["ram_used_gb"] = measured.memory.used_gb
            values["ram_free_gb"] = measured.memory.available_gb
        values.update(_disk_values(measured, rm, name))
        out[name] = {k: round(float(v), DIGITS.get(k, DEFAULT_DIGITS)) for k, v in values.items()}
    return out


def _disk_values(measured: HostMeasurements, rm: RoleMap, name: str) -> dict[str, float]:
    """disk_*_gb as placement reads them: on a Proxmox node the VM storage's (proxmox.storage, e.g.
    local-lvm, from pvesm or the thin pool), never a small root filesystem's; elsewhere `/`'s. A
    Proxmox node whose VM storage the survey saw without the named one keeps its figures."""
    proxmox = rm.host(name).proxmox is not None or measured.proxmox is not None
    area, _ = measured.vm_disk(rm.proxmox.storage if rm.proxmox else None)
    if proxmox and area is not None:
        return {"disk_used_gb": area.used_gb, "disk_free_gb": area.free_gb}
    seen_storage = measured.vm_storage is not None or bool(measured.proxmox and measured.proxmox.storages)
    if proxmox and seen_storage:
        return {}
    out: dict[str, float] = {}
    if measured.disk is not None:
        if measured.disk.used_gb is not None:
            out["disk_used_gb"] = measured.disk.used_gb
        if measured.disk.free_gb is not None:
            out["disk_free_gb"] = measured.disk.free_gb
    return out


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str


def _mapping_get(node: yaml.Node, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return key_node, value_node
    return None


def _same(old: str, new: float) -> bool:
    try:
        return abs(float(old) - new) < 1e-9
    except ValueError:
        return False


def _block_edits(text: str, node: yaml.MappingNode, values: dict[str, float]) -> list[_Edit]:
    edits: list[_Edit] = []
    present = {}
    for key_node, value_node in node.value:
        present[key_node.value] = (key_node, value_node)
        if key_node.value not in values or not isinstance(value_node, yaml.ScalarNode):
            continue
        new = values[key_node.value]
        if _same(value_node.value, new):
            continue
        end = value_node.end_mark.index
        line_end = text.find("\n", end)
        line_end = len(text) if line_end < 0 else line_end
        comment = re.match(r"[ \t]*#[^\n]*", text[end:line_end])
        edits.append(_Edit(value_node.start_mark.index, end + (comment.end() if comment else 0), number(new)))
    indent = node.value[0][0].start_mark.column if node.value else 0
    for field in MEASURED_FIELDS:
        if field in present or field not in values:
            continue
        default = Measured.model_fields[field].default
        if isinstance(default, int | float) and _same(str(default), values[field]):
            continue
        line = " " * indent + f"{field}: {number(values[field])}\n"
        later = [f for f in MEASURED_FIELDS[MEASURED_FIELDS.index(field) + 1 :] if f in present]
        if later:
            key_node = present[later[0]][0]
            at = key_node.start_mark.index - key_node.start_mark.column
        else:
            last_value = node.value[-1][1]
            newline = text.find("\n", last_value.end_mark.index)
            at = len(text) if newline < 0 else newline + 1
        edits.append(_Edit(at, at, line))
    return edits


def _flow_edit(node: yaml.MappingNode, values: dict[str, float]) -> _Edit | None:
    pairs: list[tuple[str, str]] = []
    changed = False
    seen = set()
    for key_node, value_node in node.value:
        seen.add(key_node.value)
        old = value_node.value if isinstance(value_node, yaml.ScalarNode) else None
        if key_node.value in values and old is not None and not _same(old, values[key_node.value]):
            pairs.append((key_node.value, number(values[key_node.value])))
            changed = True
        else:
            pairs.append((key_node.value, str(old)))
    for field in MEASURED_FIELDS:
        if field in values and field not in seen:
            default = Measured.model_fields[field].default
            if isinstance(default, int | float) and _same(str(default), values[field]):
                continue
            pairs.append((field, number(values[field])))
            changed = True
    if not changed:
        return None
    text = "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    return _Edit(node.start_mark.index, node.end_mark.index, text)


def edit_measured(text: str, updates: dict[str, dict[str, float]], source: str = "role map") -> str:
    """The role map text with the `measured:` blocks of `updates`' hosts set to their values."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    hosts = _mapping_get(root, "hosts") if root is not None else None
    if hosts is None or not isinstance(hosts[1], yaml.SequenceNode):
        raise RoleMapEditError(f"{source}: no `hosts:` list to update")
    edits: list[_Edit] = []
    for item in hosts[1].value:
        name = _mapping_get(item, "name")
        if name is None or name[1].value not in updates:
            continue
        measured = _mapping_get(item, "measured")
        if measured is None or not isinstance(measured[1], yaml.MappingNode):
            raise RoleMapEditError(
                f"{source}:{item.start_mark.line + 1}: host {name[1].value} has no measured: mapping"
            )
        node = measured[1]
        if node.flow_style:
            edit = _flow_edit(node, updates[name[1].value])
            edits.extend([edit] if edit else [])
        else:
            edits.extend(_block_edits(text, node, updates[name[1].value]))
    out = text
    for edit in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
        out = out[: edit.start] + edit.text + out[edit.end :]
    return out


@dataclass(frozen=True)
class RoleMapUpdate:
    path: Path
    old_text: str
    new_text: str
    updates: dict[str, dict[str, float]]

    @property
    def changed(self) -> bool:
        return self.old_text != self.new_text

    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.old_text.splitlines(keepends=True),
                self.new_text.splitlines(keepends=True),
                fromfile=f"{self.path} (now)",
                tofile=f"{self.path} (measured)",
            )
        )


def prepare_update(path: Path, survey: Survey) -> RoleMapUpdate:
    """Compute (and check) the new role map text; writes nothing."""
    try:
        old = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoleMapEditError(f"{path}: cannot read the role map: {exc.strerror}") from None
    rm = parse_rolemap(old, str(path))
    updates = measured_updates(survey, rm)
    new = edit_measured(old, updates, str(path))
    if new != old:
        _verify(new, updates, str(path))
    return RoleMapUpdate(path, old, new, updates)


def validate_text(text: str, source: str) -> RoleMap:
    """What `brainall-ops validate` checks (schema, references, placement of every VM), on text."""
    from brainall_ops.errors import RoleMapError
    from brainall_ops.planning.fleet import place_rolemap
    from brainall_ops.planning.placement import PlacementError

    try:
        rm = parse_rolemap(text, source)
    except RoleMapError as exc:
        # e.g. a measured free RAM above the map's hardware total (lab hosts all see this machine's RAM)
        raise RoleMapEditError(
            f"{source}: with these measured: values the role map would fail validate ({exc}); nothing written"
        ) from None
    try:
        place_rolemap(rm)
    except PlacementError as exc:
        raise RoleMapEditError(
            f"{source}: with these measured: values the role map would fail validate ({exc}); nothing written"
        ) from None
    return rm


def _verify(new: str, updates: dict[str, dict[str, float]], source: str) -> None:
    rm = validate_text(new, source)  # RoleMapError (file:line) if the edit broke the map; placement too
    for host, values in updates.items():
        measured = rm.host(host).measured
        for field, value in values.items():
            got = getattr(measured, field)
            default = Measured.model_fields[field].default
            if got is None or abs(float(got) - value) > 1e-9:
                if got == default and abs(float(default) - value) < 1e-9:
                    continue
                raise RoleMapEditError(f"{source}: {host}.measured.{field} reads {got!r} after the edit, not {value}")


def write_update(update: RoleMapUpdate) -> None:
    """Replace the file atomically, keeping its mode, after checking it did not change meanwhile."""
    if update.path.read_text(encoding="utf-8") != update.old_text:
        raise RoleMapEditError(f"{update.path} changed while the update was prepared; run roles --write again")
    mode = update.path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(dir=update.path.parent, prefix=f".{update.path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(update.new_text)
        os.chmod(tmp, mode)
        os.replace(tmp, update.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if update.path.read_text(encoding="utf-8") != update.new_text:
        raise RoleMapEditError(f"{update.path}: the written file does not read back as written")
