"""Load a role map from YAML, reporting every problem as `file:line: field.path: message`.

No file can crash or stall the loader: before any of it is turned into Python objects, a map is
held to the limits below, each of which names itself when it is exceeded. Reading, decoding and
YAML errors are one line each, like schema errors; where a problem has no field, the field part
says what kind of problem it is: `(file)`, `(yaml)` or `(limits)`.
"""

from __future__ import annotations

import json
import re
import stat
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Limits:
    """What one role map may cost. The built-in map uses a tiny part of each; the benchmark's
    generated fleet of 1,000 hosts and 10,000 VMs (1.5 MB, ~240,000 nodes, depth 6) fits too."""

    max_bytes: int = 4 * 1024 * 1024
    # Depth of the YAML tree (the deepest real field, e.g. hosts[0].hardware.gpu.model, is 5).
    max_depth: int = 32
    # Nodes of the tree as the map is read, an alias counted once for each place it is used:
    # this is what bounds "billion laughs" (a few KB of nested aliases expanding exponentially).
    max_nodes: int = 1_000_000
    # Uses of an alias (`*name`): plenty for shared blocks, far fewer than a bomb needs.
    max_aliases: int = 10_000


LIMITS = Limits()
# A value echoed in a message is cut to this many characters.
SHOWN_CHARS = 80
# A message line is cut to this many characters (a name list of a huge map, say).
LINE_CHARS = 2000


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` cut in the middle to about `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    keep = max(limit // 2 - 10, 8)
    return f"{text[:keep]}…[{len(text) - 2 * keep:,} characters]…{text[-keep:]}"


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]{0,79}$")


def format_path(loc: Loc) -> str:
    """hosts[2].measured.ram_free_gb; a key with spaces, colons or other odd characters is shown
    quoted, with its spaces escaped, so the path stays one word of the `file:line: field: message` line."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += "[" + shorten(json.dumps(str(part)), 60).replace(" ", "\\u0020") + "]"
    return out or "(top level)"


def _key_text(node: yaml.Node) -> str | None:
    """The key as a field path names it (None for keys that are themselves collections)."""
    return node.value if isinstance(node, yaml.ScalarNode) else None


class LineIndex:
    """Maps a field path to the line it starts on, and reports duplicate keys.

    Walks iteratively (no recursion limit) and enters a node reached through an alias only
    once: paths below a second use of an alias resolve to the line of the alias's key."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.lines: dict[Loc, int] = {}
        self.duplicates: list[tuple[Loc, int]] = []
        if root is not None:
            self._walk(root)

    def _walk(self, root: yaml.Node) -> None:
        entered: set[int] = set()
        stack: list[tuple[yaml.Node, Loc]] = [(root, ())]
        while stack:
            node, loc = stack.pop()
            self.lines.setdefault(loc, node.start_mark.line + 1)
            if id(node) in entered:
                continue
            entered.add(id(node))
            children: list[tuple[yaml.Node, Loc]] = []
            if isinstance(node, yaml.MappingNode):
                seen: set[str] = set()
                for key_node, value_node in node.value:
                    key = _key_text(key_node)
                    if key is None:
                        continue
                    child = (*loc, key)
                    if key in seen:
                        self.duplicates.append((child, key_node.start_mark.line + 1))
                        continue
                    seen.add(key)
                    self.lines.setdefault(child, key_node.start_mark.line + 1)
                    children.append((value_node, child))
            elif isinstance(node, yaml.SequenceNode):
                children = [(item, (*loc, i)) for i, item in enumerate(node.value)]
            stack.extend(reversed(children))

    def line_of(self, loc: Loc) -> int:
        """The line of the deepest part of `loc` that exists in the file."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1


def _shown(value: Any) -> str:
    return shorten(repr(value))


def _message(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key {shorten(repr(error['loc'][-1]))}"
    if kind == "missing":
        return "required field is missing"
    got = error.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {_shown(got)})"
    message = error["msg"].removeprefix("Value error, ")
    return f"{shorten(message, 300)}{shown}"


def _clean_loc(loc: Loc, index: LineIndex) -> Loc:
    # pydantic adds the name of the union member or validator to the path
    # ("port", "int", "function-after[...]"); keep only parts that are real keys.
    clean: list[str | int] = []
    for part in loc:
        candidate = (*clean, part)
        if candidate in index.lines or isinstance(part, int) or (isinstance(part, str) and part.isidentifier()):
            clean.append(part if isinstance(part, int | str) else str(part))
    return tuple(clean)


class _Refused(Exception):
    """One problem found while measuring the node graph: its line and message."""

    def __init__(self, line: int, where: str, message: str) -> None:
        self.line, self.where, self.message = line, where, message


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _measure_tree(root: yaml.Node, limits: Limits) -> bool:
    """_measure for a map without anchors (so without aliases: a tree), in one cheap pass that
    also looks for duplicate keys. Returns whether some mapping repeats a key."""
    mapping, sequence, scalar = yaml.MappingNode, yaml.SequenceNode, yaml.ScalarNode
    count = 0
    duplicate = False
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, level = stack.pop()
        count += 1
        if level > limits.max_depth:
            raise _Refused(
                node.start_mark.line + 1, "(limits)", f"nested deeper than {limits.max_depth} levels (limit max_depth)"
            )
        kind = type(node)
        if kind is mapping:
            keys = []
            for key, value in node.value:
                if type(key) is scalar:
                    keys.append(key.value)
                    count += 1
                else:
                    stack.append((key, level + 1))
                if type(value) is scalar:
                    count += 1
                else:
                    stack.append((value, level + 1))
            if not duplicate and len(keys) != len(set(keys)):
                duplicate = True
        elif kind is sequence:
            for item in node.value:
                if type(item) is scalar:
                    count += 1
                else:
                    stack.append((item, level + 1))
        if count > limits.max_nodes:
            raise _Refused(
                node.start_mark.line + 1,
                "(limits)",
                f"the map has more than {limits.max_nodes:,} nodes (limit max_nodes={limits.max_nodes:,})",
            )
    return duplicate


def _measure(root: yaml.Node, limits: Limits) -> None:
    """Hold the composed node graph to the limits, without expanding any alias.

    Composing does not expand aliases (a second use is the same node object), so the graph is
    small; what the tree would expand to is summed over it bottom-up, each node once."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    references = 0
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, closing = stack.pop()
        key = id(node)
        if closing:
            kids = _children(node)
            total = 1 + sum(size[id(k)] for k in kids)
            deepest = 1 + max((depth[id(k)] for k in kids), default=0)
            open_nodes.discard(key)
            size[key], depth[key] = total, deepest
            line = node.start_mark.line + 1
            if total > limits.max_nodes:
                raise _Refused(
                    line,
                    "(limits)",
                    f"the map expands to more than {limits.max_nodes:,} nodes here (aliases counted each time "
                    f"they are used; limit max_nodes={limits.max_nodes:,})",
                )
            if deepest > limits.max_depth:
                raise _Refused(line, "(limits)", f"nested deeper than {limits.max_depth} levels (limit max_depth)")
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise _Refused(node.start_mark.line + 1, "(yaml)", "an alias refers to a node that contains it")
        open_nodes.add(key)
        stack.append((node, True))
        for kid in _children(node):
            references += 1
            if id(kid) in open_nodes:
                raise _Refused(kid.start_mark.line + 1, "(yaml)", "an alias refers to a node that contains it")
            stack.append((kid, False))
    aliases = references - (len(size) - 1)
    if aliases > limits.max_aliases:
        raise _Refused(
            1, "(limits)", f"{aliases:,} uses of aliases, more than {limits.max_aliases:,} (limit max_aliases)"
        )


def _duplicate_keys(root: yaml.Node) -> LineIndex | None:
    """The line index when some mapping repeats a key (its `duplicates` say where), else None."""
    stack = [root]
    entered: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in entered:
            continue
        entered.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
            if len(keys) != len(set(keys)):
                return LineIndex(root)
        stack.extend(_children(node))
    return None


def _line_of_position(text: str, position: int) -> int:
    return text.count("\n", 0, max(position, 0)) + 1


def _yaml_problem(exc: yaml.YAMLError, text: str, source: str) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = " ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        return f"{source}:{line}: (yaml): {shorten(what, 300)}"
    if isinstance(exc, yaml.reader.ReaderError):
        return (
            f"{source}:{_line_of_position(text, exc.position)}: (yaml): character {exc.character!r} is not allowed"
            f" in YAML ({exc.reason})"
        )
    return f"{source}:1: (yaml): {shorten(str(exc), 300)}"


def _compose(text: str, source: str) -> yaml.Node | None:
    loader = _SafeLoader(text)
    try:
        return loader.get_single_node()
    except yaml.YAMLError as exc:
        raise RoleMapError([_yaml_problem(exc, text, source)]) from None
    except RecursionError:  # the pure-Python composer, without libyaml's own depth limit
        raise RoleMapError([f"{source}:1: (limits): nested too deeply to read"]) from None
    finally:
        loader.dispose()


def _line_index(text: str) -> LineIndex:
    """Field path -> line. Only built when there is something to report: composing twice is
    cheaper than walking every node of a large valid map."""
    return LineIndex(_compose(text, "role map"))


def _limited(lines: list[str]) -> list[str]:
    return [shorten(line, LINE_CHARS) for line in lines]


def parse_rolemap(text: str, source: str, limits: Limits = LIMITS) -> RoleMap:
    """Validate role-map text; raises RoleMapError listing every problem, one line each."""
    if len(text) > limits.max_bytes:
        raise RoleMapError(
            [f"{source}:1: (limits): {len(text):,} characters, more than {limits.max_bytes:,} (limit max_bytes)"]
        )
    root = _compose(text, source)
    if root is None:
        raise RoleMapError([f"{source}:1: (top level): the role map is empty"])
    try:
        if "&" in text:  # anchors, so perhaps aliases: measure the graph node by node, each once
            _measure(root, limits)
            duplicates = _duplicate_keys(root)
        else:
            duplicates = LineIndex(root) if _measure_tree(root, limits) else None
    except _Refused as refused:
        raise RoleMapError([f"{source}:{refused.line}: {refused.where}: {refused.message}"]) from None
    if duplicates is not None:
        raise RoleMapError(
            _limited([f"{source}:{line}: {format_path(loc)}: duplicate key" for loc, line in duplicates.duplicates])
        )
    try:
        data = yaml.constructor.SafeConstructor().construct_document(root)
    except yaml.YAMLError as exc:  # an unknown tag, a key that is a list, a bad timestamp ...
        raise RoleMapError([_yaml_problem(exc, text, source)]) from None
    except (ValueError, OverflowError) as exc:  # a scalar the constructor cannot convert
        raise RoleMapError([f"{source}:1: (yaml): {shorten(str(exc), 300)}"]) from None
    if not isinstance(data, dict):
        raise RoleMapError([f"{source}:1: (top level): the role map must be a mapping"])

    try:
        rolemap = RoleMap.model_validate(data)
    except ValidationError as exc:
        index = LineIndex(root)
        problems = []
        for error in exc.errors(include_url=False):
            loc = _clean_loc(tuple(error["loc"]), index)
            problems.append(f"{source}:{index.line_of(loc)}: {format_path(loc)}: {_message(error)}")
        raise RoleMapError(_limited(problems)) from None

    from brainall_ops.rolemap.references import check_references

    references = check_references(rolemap)
    if references:
        index = LineIndex(root)
        raise RoleMapError(
            _limited([f"{source}:{index.line_of(loc)}: {format_path(loc)}: {message}" for loc, message in references])
        )
    rolemap._origin = (source, text)
    return rolemap


def locate(rm: RoleMap, loc: Loc) -> str:
    """`file:line: field.path` of a field of a loaded role map (for problems found after loading)."""
    origin = rm._origin
    if origin is None:
        return f"(role map):1: {format_path(loc)}"
    source, text = origin
    return f"{source}:{_line_index(text).line_of(loc)}: {format_path(loc)}"


def read_rolemap_text(file: Path, limits: Limits = LIMITS) -> str:
    """The file's text, or RoleMapError: not a file, unreadable, too large, not UTF-8."""
    shown = display_path(file)

    def refuse(message: str, line: int = 1) -> RoleMapError:
        return RoleMapError([f"{shown}:{line}: (file): {message}"])

    try:
        info = file.stat()
    except OSError as exc:
        raise refuse(f"cannot read role map: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise refuse("cannot read role map: it is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise refuse("cannot read role map: not a regular file")
    if info.st_size > limits.max_bytes:
        raise refuse(f"{info.st_size:,} bytes, more than {limits.max_bytes:,} (limit max_bytes)")
    try:
        with file.open("rb") as stream:
            data = stream.read(limits.max_bytes + 1)
    except OSError as exc:
        raise refuse(f"cannot read role map: {exc.strerror or exc}") from None
    if len(data) > limits.max_bytes:  # grew since stat
        raise refuse(f"more than {limits.max_bytes:,} bytes (limit max_bytes)")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise refuse(f"not UTF-8: byte 0x{data[exc.start]:02x} at column {column}", line) from None


def load_rolemap(path: Path | str | None = None) -> RoleMap:
    """Load and validate a role map file (the built-in BrainAll V2 map by default)."""
    file = Path(path) if path is not None else BUILTIN_ROLEMAP
    return parse_rolemap(read_rolemap_text(file), display_path(file))


def display_path(file: Path) -> str:
    """The path as an operator would type it: relative to the working directory when inside it."""
    try:
        return str(file.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(file)
