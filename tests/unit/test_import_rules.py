"""The house rules (README, "Rooms"): which part of brainall_ops may import which.

Read from the source with ast (every import, including the lazy ones inside functions), so a
rule is broken the moment the import is written, not when some test happens to run it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import brainall_ops

PACKAGE = Path(brainall_ops.__file__).parent
CONCERNS = frozenset(
    {"base", "storage", "data", "monitoring", "firewall", "inference", "backends", "ceph", "proxmox", "survey"}
)
# room -> the rooms it may import (besides itself); concerns may also import other concerns, see below
MAY_IMPORT: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "rolemap": frozenset({"errors"}),
    "planning": frozenset({"errors", "rolemap"}),
    "shared": frozenset({"errors", "rolemap", "planning"}),
    "concern": frozenset({"errors", "rolemap", "planning", "shared"}),
    "lab": frozenset({"errors", "rolemap", "planning", "shared", "concern"}),
    "cli": frozenset({"errors", "rolemap", "planning", "shared", "concern", "lab"}),
}


def room_of(module: str) -> tuple[str, str | None]:
    """(room, concern) of a dotted module name under brainall_ops. A concern's `cli` module is the
    CLI's subcommand filed next to its concern: it belongs to the CLI room."""
    parts = module.split(".")[1:]
    if not parts or parts == ["__init__"]:
        return "cli", None
    if parts[0] == "cli" or parts[-1] in ("cli", "__main__"):
        return "cli", None
    if parts[0] in CONCERNS:
        return "concern", parts[0]
    return parts[0], None


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import of brainall_ops in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("brainall_ops")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("brainall_ops"):
            found.append((node.lineno, node.module or "", [a.name for a in node.names]))
    return found


def all_imports() -> list[tuple[str, int, str, list[str]]]:
    return [
        (module_name(path), line, target, names)
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, target, names in imports_of(path)
    ]


def test_every_import_keeps_to_its_room() -> None:
    broken = []
    for source, line, target, names in all_imports():
        (room, concern), (target_room, target_concern) = room_of(source), room_of(target)
        if room == target_room and (room != "concern" or concern == target_concern):
            continue
        if target == "brainall_ops" and names:  # `from brainall_ops import x`: the submodule x
            target_room, target_concern = room_of(f"brainall_ops.{names[0]}")
        if target_room not in MAY_IMPORT[room] and not (room == target_room == "concern"):
            broken.append(f"{source}:{line}: the {room} room imports {target} ({target_room})")
        elif room == target_room == "concern" and target != f"brainall_ops.{target_concern}":
            broken.append(f"{source}:{line}: {target} reaches into {target_concern}; import its package API")
    assert broken == []


def test_a_concern_imports_another_only_through_its_public_api() -> None:
    broken = []
    for source, line, target, names in all_imports():
        room, concern = room_of(source)
        target_room, target_concern = room_of(target)
        if room == target_room == "concern" and concern != target_concern:
            api = set(getattr(__import__(target, fromlist=["__all__"]), "__all__", ()))
            broken += [f"{source}:{line}: {target}.{n} is not in its __all__" for n in names if n not in api]
    assert broken == []


def test_no_import_cycle_between_concerns() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for source, _line, target, _names in all_imports():
        (room, concern), (_, target_concern) = room_of(source), room_of(target)
        if room == "concern" and target_concern and target_concern != concern:
            edges[concern].add(target_concern)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges[start])

    cycles = sorted(f"{a} -> {b} -> ... -> {a}" for a in list(edges) for b in edges[a] if reaches(b, a, {b}))
    assert cycles == []


def test_nothing_below_the_cli_imports_the_lab() -> None:
    offenders = [
        f"{source}:{line}: imports {target}"
        for source, line, target, _names in all_imports()
        if room_of(target)[0] == "lab" and room_of(source)[0] not in ("lab", "cli")
    ]
    assert offenders == []


def test_the_rules_see_the_imports() -> None:
    """The scan is not vacuous: it finds the imports that are known to be there."""
    found = {(source, target) for source, _line, target, _names in all_imports()}
    assert ("brainall_ops.data.deploy", "brainall_ops.storage") in found
    assert ("brainall_ops.rolemap.loader", "brainall_ops.errors") in found
    assert room_of("brainall_ops.storage.cli") == ("cli", None)
    assert room_of("brainall_ops.lab.pve_simulator.api") == ("lab", None)
