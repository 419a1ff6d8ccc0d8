"""Rule-level diff of two rulesets of `table inet brainall`: what a deploy adds and removes.

Reads both our rendering and nft's own listing (`nft -s list table inet brainall`): the template
writes rules the way nft lists them, so a rendering and the live table compare line for line.
Comments, the header and layout are ignored; set elements compare one by one; the order of the
rules in a chain counts (a rule moved is removed and added), the order of set elements does not.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

Entry = tuple[str, str]  # (block, line): ("chain input", "tcp dport 80 accept"), ("set src_x", "element 10.0.0.1")

_BLOCK = re.compile(r"^(set|chain|map)\s+(\S+)\s*\{$")
_L4PROTO = re.compile(r"meta l4proto (\{[^}]*\}|\S+)")
# nft lists a protocol by its /etc/protocols name, or by number on a host without netbase
_PROTOCOLS = {"1": "icmp", "6": "tcp", "17": "udp", "58": "icmpv6", "ipv6-icmp": "icmpv6"}


def _normalize(line: str) -> str:
    def protocols(match: re.Match[str]) -> str:
        names = [_PROTOCOLS.get(p, p) for p in _items(match.group(1))]
        return "meta l4proto " + (names[0] if len(names) == 1 else "{ " + ", ".join(names) + " }")

    return _L4PROTO.sub(protocols, line)


_TABLE = re.compile(r"^(?:add\s+|delete\s+)?table\s+\S+\s+\S+\s*(\{)?$")


class RulesetParseError(ValueError):
    pass


def parse(text: str) -> dict[str, list[str]]:
    """Block ("set NAME", "chain NAME") -> its lines in order; set elements as "element X", sorted."""
    blocks: dict[str, list[str]] = {}
    block: str | None = None
    elements: list[str] | None = None  # collecting a multi-line `elements = { ... }`
    for number, raw in enumerate(text.splitlines(), 1):
        line = " ".join(raw.split())
        if not line or line.startswith("#"):
            continue
        if elements is not None:
            elements.extend(_items(line))
            if line.endswith("}"):
                assert block is not None
                blocks[block].extend(f"element {e}" for e in sorted(set(elements), key=_element_key))
                elements = None
            continue
        if _TABLE.match(line):
            continue
        match = _BLOCK.match(line)
        if match:
            block = f"{match.group(1)} {match.group(2)}"
            blocks.setdefault(block, [])
            continue
        if line == "}":
            block = None
            continue
        if block is None:
            raise RulesetParseError(f"line {number}: {line!r} is outside any set or chain")
        if line.startswith("elements = {"):
            elements = []
            elements.extend(_items(line[len("elements = ") :]))
            if line.endswith("}"):
                blocks[block].extend(f"element {e}" for e in sorted(set(elements), key=_element_key))
                elements = None
            continue
        blocks[block].append(_normalize(line))
    return blocks


def _items(fragment: str) -> list[str]:
    return [item for item in (part.strip(" {}") for part in fragment.split(",")) if item]


def _element_key(element: str) -> tuple[int, str, tuple[int, ...]]:
    """Addresses in numeric order (then the rest as text): 10.77.1.2 before 10.77.1.10."""
    address, _, prefix = element.split("-")[0].partition("/")
    parts = address.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        return 0, "", (*(int(p) for p in parts), int(prefix) if prefix.isdigit() else 32)
    return 1, element, ()


@dataclass
class RulesetDiff:
    added: list[Entry] = field(default_factory=list)
    removed: list[Entry] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)

    def lines(self) -> list[str]:
        """`- chain input: ...` then `+ ...`, block by block."""
        return [f"- {b}: {line}" for b, line in self.removed] + [f"+ {b}: {line}" for b, line in self.added]

    def summary(self, limit: int = 6) -> str:
        shown = self.lines()
        text = "; ".join(shown[:limit])
        return text + (f"; ... ({len(shown) - limit} more)" if len(shown) > limit else "")


def diff(old: str | None, new: str) -> RulesetDiff:
    """What loading `new` over `old` (None: no table yet) adds and removes."""
    before = parse(old) if old is not None else {}
    after = parse(new)
    result = RulesetDiff()
    for block in list(dict.fromkeys([*after, *before])):  # in the new ruleset's order
        a, b = before.get(block, []), after.get(block, [])
        matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag in ("replace", "delete"):
                result.removed.extend((block, line) for line in a[i1:i2])
            if tag in ("replace", "insert"):
                result.added.extend((block, line) for line in b[j1:j2])
    return result
