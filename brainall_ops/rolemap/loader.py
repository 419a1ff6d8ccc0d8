"""Load a role map from YAML, reporting every problem as `file:line: field.path: message`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from brainall_ops.errors import RoleMapError
from brainall_ops.rolemap.models import RoleMap

try:  # libyaml is ~10x faster; pure Python works the same
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

Loc = tuple[str | int, ...]

ROLEMAP_FILE = "brainall-v2.yaml"


def find_fleet_root(start: Path | None = None) -> Path | None:
    """The fleet repository the toolkit runs in: the nearest directory, from `start` (default the
    working directory) up, that holds both `inventories/` and `deploys/` (this checkout, or a
    repository `brainall-ops init` wrote). pyinfra runs from that root, and the inventories name
    the role map relative to it. None outside any fleet repository."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / "inventories").is_dir() and (directory / "deploys").is_dir():
            return directory
    return None


def _builtin_rolemap() -> Path:
    """The BrainAll V2 role map shipped with the package (the wheel's build copies
    inventories/brainall-v2.yaml into brainall_ops/rolemap/, see setup.py). A source checkout
    (an editable install) has no copy: there the file is the one the operator edits, in the
    checkout's inventories/ next to the package."""
    from importlib.resources import files

    packaged = files("brainall_ops.rolemap").joinpath(ROLEMAP_FILE)
    if packaged.is_file():
        return Path(str(packaged))
    package_dir = Path(str(files("brainall_ops")))
    return package_dir.parent / "inventories" / ROLEMAP_FILE


# The fleet repository (None outside one) and the directory relative paths of the inventories and
# the CLI resolve against: the fleet repository, or else the working directory.
FLEET_ROOT = find_fleet_root()
REPO_ROOT = FLEET_ROOT or Path.cwd()
BUILTIN_ROLEMAP = _builtin_rolemap()


def format_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class LineIndex:
    """Maps a field path to the line it starts on, and reports duplicate keys."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.lines: dict[Loc, int] = {}
        self.duplicates: list[tuple[Loc, int]] = []
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: yaml.Node, loc: Loc) -> None:
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = key_node.value
                child = (*loc, key)
                if key in seen:
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                    continue
                seen.add(key)
                self.lines[child] = key_node.start_mark.line + 1
                self._walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, (*loc, index))

    def line_of(self, loc: Loc) -> int:
        """The line of the deepest part of `loc` that exists in the file."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1


def _message(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key {error['loc'][-1]!r}"
    if kind == "missing":
        return "required field is missing"
    got = error.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
    return f"{error['msg']}{shown}"


def _clean_loc(loc: Loc, index: LineIndex) -> Loc:
    # pydantic adds the name of the union member or validator to the path
    # ("port", "int", "function-after[...]"); keep only parts that are real keys.
    clean: list[str | int] = []
    for part in loc:
        candidate = (*clean, part)
        if candidate in index.lines or isinstance(part, int) or part.isidentifier():
            clean.append(part)
    return tuple(clean)


class _DuplicateKey(Exception):
    pass


class _StrictLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """Safe loader that refuses duplicate keys instead of keeping the last one silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [key.value for key, _ in node.value if isinstance(key, yaml.ScalarNode)]
        if len(keys) != len(set(keys)):
            raise _DuplicateKey
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    lambda loader, node: loader.construct_mapping(node),
)


def _line_index(text: str) -> LineIndex:
    """Field path -> line. Only built when there is something to report: composing twice is
    cheaper than walking every node of a large valid map."""
    loader = _SafeLoader(text)
    try:
        return LineIndex(loader.get_single_node())
    finally:
        loader.dispose()


def parse_rolemap(text: str, source: str) -> RoleMap:
    """Validate role-map text; raises RoleMapError listing every problem, one line each."""
    duplicate = False
    try:
        loader = _StrictLoader(text)
        try:
            data = loader.get_single_data()
        except _DuplicateKey:
            data, duplicate = None, True
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise RoleMapError([f"{source}:{line}: (yaml): {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise RoleMapError([f"{source}:1: (yaml): {exc}"]) from None

    if duplicate:
        index = _line_index(text)
        raise RoleMapError(
            [f"{source}:{line}: {format_path(loc)}: duplicate key" for loc, line in index.duplicates]
        )
    if not isinstance(data, dict):
        raise RoleMapError([f"{source}:1: (top level): the role map must be a mapping"])

    try:
        rolemap = RoleMap.model_validate(data)
    except ValidationError as exc:
        index = _line_index(text)
        problems = []
        for error in exc.errors(include_url=False):
            loc = _clean_loc(tuple(error["loc"]), index)
            problems.append(f"{source}:{index.line_of(loc)}: {format_path(loc)}: {_message(error)}")
        raise RoleMapError(problems) from None

    from brainall_ops.rolemap.references import check_references

    references = check_references(rolemap)
    if references:
        index = _line_index(text)
        raise RoleMapError(
            [f"{source}:{index.line_of(loc)}: {format_path(loc)}: {message}" for loc, message in references]
        )
    return rolemap


def load_rolemap(path: Path | str | None = None) -> RoleMap:
    """Load and validate a role map file (the built-in BrainAll V2 map by default)."""
    file = Path(path) if path is not None else BUILTIN_ROLEMAP
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoleMapError([f"{file}: cannot read role map: {exc.strerror}"]) from None
    return parse_rolemap(text, display_path(file))


def display_path(file: Path) -> str:
    """The path as an operator would type it: relative to the working directory when inside it."""
    try:
        return str(file.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(file)
