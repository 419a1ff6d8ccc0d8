"""The official Proxmox VE API schema (PVE 9.1.3's apidata) and a validator in PVE's own dialect.

The simulator checks every request and every response against it: parameters arrive as strings
(query or form body) and are checked the way PVE::JSONSchema checks them (types, ranges, enums,
patterns, named formats and property strings like `virtio=AA:BB:..,bridge=vmbr1`); an unknown
parameter is refused with PVE's "Parameter verification failed." and the same per-parameter message.
Responses are checked against the declared `returns` shape, so a simulator that drifts from the
real API fails loudly instead of teaching the client something PVE would never say.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).with_name("pve-api-9.1.3.json")
# The official file as published, for the contract test (sha256 of pve-api-9.1.3.json).
SCHEMA_SHA256 = "1ec4166e67a5a3fff111107f534c47c7e923274f1b4675f8e407adaa024238e9"

# "[n]" parameters whose description does not say "(n is 0 to N)" (PVE's own limits).
_INDEX_LIMITS = {"net": 31, "ipconfig": 31, "hostpci": 15, "numa": 7, "unused": 255, "virtiofs": 9}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ParameterError(Exception):
    """PVE's "Parameter verification failed." with one message per parameter."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in sorted(errors.items())))


class NoSuchMethod(Exception):
    """PVE answers 501 "Method 'GET /foo' not implemented" for paths or methods it does not have."""


@dataclass(frozen=True)
class Method:
    """One API method: its path template, HTTP method and apidata `info` entry."""

    path: str
    http_method: str
    info: dict[str, Any] = field(repr=False, hash=False, compare=False)

    @property
    def parameters(self) -> dict[str, Any]:
        return self.info.get("parameters", {}).get("properties", {}) or {}

    @property
    def returns(self) -> dict[str, Any]:
        return self.info.get("returns", {}) or {}

    @property
    def permissions(self) -> dict[str, Any]:
        return self.info.get("permissions", {}) or {}

    @property
    def protected(self) -> bool:
        return bool(self.info.get("protected"))


# --------------------------------------------------------------------------- schema loading
class ApiSchema:
    def __init__(self, path: Path | str | None = None) -> None:
        file = Path(path or os.environ.get("BRAINALL_PVE_SCHEMA") or SCHEMA_FILE)
        with file.open(encoding="utf-8") as f:
            tree = json.load(f)
        self.methods: dict[tuple[str, str], Method] = {}
        self._by_depth: dict[int, list[tuple[tuple[str, ...], str]]] = {}
        for node in _walk(tree):
            template = node["path"]
            for http_method, info in (node.get("info") or {}).items():
                self.methods[(http_method, template)] = Method(template, http_method, info)
            parts = tuple(template.strip("/").split("/"))
            self._by_depth.setdefault(len(parts), []).append((parts, template))
        for candidates in self._by_depth.values():
            # literal segments beat {params}: /nodes/{node}/qemu/{vmid}/status/current before .../{x}
            candidates.sort(key=lambda item: sum(p.startswith("{") for p in item[0]))

    def templates(self) -> set[str]:
        return {template for _, template in self.methods}

    def match(self, http_method: str, path: str) -> tuple[Method, dict[str, str]]:
        """The method for a concrete path, and the path's {params}; NoSuchMethod otherwise."""
        parts = tuple(path.strip("/").split("/"))
        for candidate, template in self._by_depth.get(len(parts), []):
            params: dict[str, str] = {}
            for want, got in zip(candidate, parts, strict=True):
                if want.startswith("{"):
                    if not got:
                        break
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                method = self.methods.get((http_method, template))
                if method is None:
                    continue
                return method, params
        raise NoSuchMethod(f"Method '{http_method} {path}' not implemented")

    def method(self, http_method: str, template: str) -> Method:
        return self.methods[(http_method, template)]

    # ----------------------------------------------------------------------- requests
    def check_parameters(self, method: Method, params: dict[str, str]) -> dict[str, Any]:
        """Coerce string parameters; raise ParameterError as PVE would."""
        spec = method.info.get("parameters", {}) or {}
        props = spec.get("properties", {}) or {}
        errors: dict[str, str] = {}
        out: dict[str, Any] = {}
        for name, value in params.items():
            schema = property_schema(props, name)
            if schema is None:
                if not spec.get("additionalProperties", 0):
                    errors[name] = (
                        "property is not defined in schema and the schema does not allow additional properties"
                    )
                    continue
                out[name] = value
                continue
            try:
                if schema.get("type") == "boolean" and value not in ("0", "1"):
                    # PVE::JSONSchema::check_type: a parameter's boolean is '0' or '1', nothing
                    # else (property strings, parsed by parse_boolean, also take true/on/yes).
                    raise ValueError(f"type check ('boolean') failed - got {_show(value)}")
                out[name] = check_value(schema, value, from_string=True)
            except ValueError as exc:
                errors[name] = str(exc)
        for name, schema in props.items():
            if "[n]" in name or schema.get("optional") or name in params:
                continue
            errors[name] = "property is missing and it is not optional"
        if errors:
            raise ParameterError(errors)
        return out

    # ----------------------------------------------------------------------- responses
    def check_return(self, method: Method, data: Any) -> list[str]:
        """Problems of a response body's `data` against the declared return schema."""
        returns = method.returns
        if not returns:
            return []
        return list(_check_return(returns, data, "data"))


def _walk(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in nodes:
        yield node
        yield from _walk(node.get("children") or [])


@cache
def _index_pattern(name: str, description: str) -> re.Pattern[str]:
    base = name[: -len("[n]")]
    found = re.search(r"n is 0 to (\d+)", description)
    limit = int(found.group(1)) if found else _INDEX_LIMITS.get(base, 255)
    digits = "|".join(str(i) for i in range(limit + 1))
    return re.compile(rf"^{re.escape(base)}(?:{digits})$")


def property_schema(props: dict[str, Any], name: str) -> dict[str, Any] | None:
    if name in props:
        return props[name]
    for candidate, schema in props.items():
        if candidate.endswith("[n]") and _index_pattern(candidate, schema.get("description", "")).match(name):
            return schema
    return None


# --------------------------------------------------------------------------- values
def check_value(schema: dict[str, Any], value: Any, from_string: bool) -> Any:
    """One value against one property schema; returns the coerced value or raises ValueError."""
    kind = schema.get("type", "string")
    if kind == "boolean":
        return _check_boolean(value)
    if kind == "integer":
        number: int | float = _check_integer(value, from_string)
        _check_range(schema, number)
        return number
    if kind == "number":
        number = _check_number(value, from_string)
        _check_range(schema, number)
        return number
    if kind == "string":
        if not isinstance(value, str):
            if from_string:
                value = str(value)
            else:
                raise ValueError(f"type check ('string') failed - got {_show(value)}")
        _check_string(schema, value)
        return value
    if kind == "null":
        if value is not None:
            raise ValueError(f"type check ('null') failed - got {_show(value)}")
        return None
    if kind in ("object", "array"):
        if from_string:
            raise ValueError(f"type check ('{kind}') failed - got a string")
        problems = list(_check_return(schema, value, "value"))
        if problems:
            raise ValueError(problems[0])
        return value
    return value


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f"'{value}'"


def _check_boolean(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    text = str(value).lower()
    if text in _TRUE:
        return 1
    if text in _FALSE:
        return 0
    raise ValueError(f"type check ('boolean') failed - got {_show(value)}")


def _check_integer(value: Any, from_string: bool) -> int:
    if isinstance(value, bool):
        raise ValueError(f"type check ('integer') failed - got {_show(value)}")
    if isinstance(value, int):
        return value
    if from_string and isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value):
        return int(value)
    raise ValueError(f"type check ('integer') failed - got {_show(value)}")


def _check_number(value: Any, from_string: bool) -> float:
    if isinstance(value, bool):
        raise ValueError(f"type check ('number') failed - got {_show(value)}")
    if isinstance(value, int | float):
        return value
    if from_string and isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", value):
        return float(value)
    raise ValueError(f"type check ('number') failed - got {_show(value)}")


def _check_range(schema: dict[str, Any], number: float) -> None:
    if "minimum" in schema and number < float(schema["minimum"]):
        raise ValueError(f"value must have a minimum value of {schema['minimum']}")
    if "maximum" in schema and number > float(schema["maximum"]):
        raise ValueError(f"value must have a maximum value of {schema['maximum']}")


def perl_regex(pattern: str) -> re.Pattern[str]:
    """PVE patterns are Perl regexes, sometimes stringified as `(?^:...)`; PVE anchors them."""
    return _compiled(pattern.replace("(?^:", "(?:"))


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"^(?:{pattern})$")


def _check_string(schema: dict[str, Any], value: str) -> None:
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"value '{value}' does not have a value in the enumeration '{', '.join(schema['enum'])}'")
    if "maxLength" in schema and len(value) > int(schema["maxLength"]):
        raise ValueError(f"value may only be {schema['maxLength']} characters long")
    if "minLength" in schema and len(value) < int(schema["minLength"]):
        raise ValueError(f"value must be at least {schema['minLength']} characters long")
    if "pattern" in schema and not perl_regex(schema["pattern"]).match(value):
        raise ValueError("value does not match the regex pattern")
    fmt = schema.get("format")
    if isinstance(fmt, dict):
        parse_property_string(fmt, value)
    elif isinstance(fmt, str):
        check_format(fmt, value)


# --------------------------------------------------------------------------- formats
def _dns_label_name(value: str) -> bool:
    label = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])"
    return re.fullmatch(rf"(?:{label}\.)*{label}", value) is not None


def _ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def _ipv6(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def _cidr(value: str, version: int | None = None) -> bool:
    if "/" not in value:
        return False
    try:
        network = ipaddress.ip_interface(value)
    except ValueError:
        return False
    return version is None or network.version == version


def _mac(value: str) -> bool:
    if not re.fullmatch(r"[a-fA-F0-9]{2}(?::[a-fA-F0-9]{2}){5}", value):
        return False
    return int(value[:2], 16) & 1 == 0  # the I/G bit: a unicast address


def _volume_id(value: str) -> bool:
    return re.fullmatch(r"(?i:[a-z][a-z0-9\-_.]*[a-z0-9]):.+", value) is not None


def _volume_or_qm_path(value: str) -> bool:
    return value in ("none", "cdrom") or value.startswith("/") or _volume_id(value)


def _ipconfig(value: str) -> bool:
    parse_property_string(IPCONFIG_FORMAT, value)
    return True


def _boot(value: str) -> bool:
    for part in value.split(","):
        key, _, rest = part.partition("=")
        if not rest:  # legacy "cdn" form
            if not re.fullmatch(r"[acdn]{1,4}", key):
                return False
        elif key == "order":
            if not all(re.fullmatch(r"[a-z]+\d+", dev) for dev in rest.split(";")):
                return False
        elif key == "legacy":
            if not re.fullmatch(r"[acdn]{1,4}", rest):
                return False
        else:
            return False
    return True


def _prune_backups(value: str) -> bool:
    options = parse_property_string(PRUNE_BACKUPS_FORMAT, value)
    if options.get("keep-all") and len(options) > 1:
        raise ValueError("keep-all cannot be set together with other options.")
    return True


def _calendar_event(value: str) -> bool:
    # systemd-style calendar events as PVE parses them (a subset: days, times, ranges, repetitions)
    return re.fullmatch(r"[A-Za-z0-9*:,./~ -]+", value) is not None and not value.startswith((" ", ","))


IPCONFIG_FORMAT: dict[str, Any] = {
    "ip": {"type": "string", "optional": 1, "format": "pve-ipv4-config"},
    "gw": {"type": "string", "optional": 1, "format": "ipv4"},
    "ip6": {"type": "string", "optional": 1, "format": "pve-ipv6-config"},
    "gw6": {"type": "string", "optional": 1, "format": "ipv6"},
}

PRUNE_BACKUPS_FORMAT: dict[str, Any] = {
    "keep-all": {"type": "boolean", "optional": 1},
    **{
        f"keep-{period}": {"type": "integer", "minimum": 0, "optional": 1}
        for period in ("last", "hourly", "daily", "weekly", "monthly", "yearly")
    },
}
STORAGE_CONTENT = {"images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import", "none"}

FORMATS: dict[str, Callable[[str], bool]] = {
    "pve-node": _dns_label_name,
    "dns-name": _dns_label_name,
    "pve-storage-id": lambda v: re.fullmatch(r"(?i:[a-z][a-z0-9\-_.]*[a-z0-9])", v) is not None,
    "pve-configid": lambda v: re.fullmatch(r"(?i:[a-z][a-z0-9_-]+)", v) is not None,
    "pve-poolid": lambda v: re.fullmatch(r"[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+){0,2}", v) is not None,
    "pve-bridge-id": lambda v: re.fullmatch(r"[-_.\w\d]+", v) is not None,
    "pve-tag": lambda v: re.fullmatch(r"(?i:[a-z0-9_][a-z0-9_\-+.]*)", v) is not None,
    "mac-addr": _mac,
    "urlencoded": lambda v: re.fullmatch(r"[-%a-zA-Z0-9_.!~*'()]*", v) is not None,
    "ipv4": _ipv4,
    "ipv6": _ipv6,
    "ip": lambda v: _ipv4(v) or _ipv6(v),
    "address": lambda v: _ipv4(v) or _ipv6(v),
    "CIDR": lambda v: _cidr(v),
    "CIDRv4": lambda v: _cidr(v, 4),
    "CIDRv6": lambda v: _cidr(v, 6),
    "pve-ipv4-config": lambda v: v == "dhcp" or _cidr(v, 4),
    "pve-ipv6-config": lambda v: v in ("dhcp", "auto") or _cidr(v, 6),
    "pve-qm-ipconfig": _ipconfig,
    "disk-size": lambda v: re.fullmatch(r"\d+(?:\.\d+)?[KMGT]?", v) is not None,
    "pve-volume-id": _volume_id,
    "pve-volume-id-or-qm-path": _volume_or_qm_path,
    "pve-qm-boot": _boot,
    "pve-vmid": lambda v: re.fullmatch(r"[1-9]\d{2,8}", v) is not None,
    "pve-storage-content": lambda v: v in STORAGE_CONTENT,
    "pve-storage-server": lambda v: _ipv4(v) or _ipv6(v) or _dns_label_name(v),
    "pve-storage-path": lambda v: re.fullmatch(r"/[^;()]*", v) is not None,
    "prune-backups": _prune_backups,
    "pve-calendar-event": _calendar_event,
}

# PVE splits list formats on commas, semicolons, white space and NUL.
_LIST_SPLIT = re.compile(r"[;,\s\0]+")


def check_format(fmt: str, value: str) -> None:
    """A named format. Formats the toolkit never sends are accepted unchecked."""
    if fmt.endswith("-list") and fmt != "pve-configid-list" and fmt[: -len("-list")] in FORMATS:
        check = FORMATS[fmt[: -len("-list")]]
        for item in _LIST_SPLIT.split(value):
            if item and not check(item):
                raise ValueError(f"invalid format - value '{item}' does not look like a valid {fmt[:-5]}")
        return
    if fmt == "pve-configid-list":
        for item in _LIST_SPLIT.split(value):
            if item and not FORMATS["pve-configid"](item):
                raise ValueError(f"invalid format - invalid configuration ID '{item}'")
        return
    check = FORMATS.get(fmt)
    if check is None:
        return
    try:
        ok = check(value)
    except ValueError as exc:
        raise ValueError(f"invalid format - {exc}") from None
    if not ok:
        if fmt == "urlencoded":
            raise ValueError(f"invalid format - invalid urlencoded string: {value}")
        raise ValueError(f"invalid format - value does not look like a valid {fmt}")


def parse_property_string(fmt: dict[str, Any], value: str) -> dict[str, Any]:
    """PVE's parse_property_string: `key=value,...`, a bare default_key value, and key aliases."""
    result: dict[str, Any] = {}
    default_key = next((k for k, v in fmt.items() if isinstance(v, dict) and v.get("default_key")), None)
    for part in value.split(","):
        if part == "":
            continue
        key, eq, raw = part.partition("=")
        if eq:
            schema = fmt.get(key)
            if schema is None:
                raise ValueError(f"invalid format - format error: {key}: property is not defined in schema")
            if "alias" in schema:
                if "keyAlias" in schema:
                    if schema["keyAlias"] in result:
                        raise ValueError(f"invalid format - format error: duplicate key in comma-separated list: {key}")
                    result[schema["keyAlias"]] = key
                key = schema["alias"]
                schema = fmt[key]
            if key in result:
                raise ValueError(f"invalid format - format error: duplicate key in comma-separated list: {key}")
            result[key] = raw
        elif default_key is not None and default_key not in result:
            result[default_key] = part
        else:
            raise ValueError("invalid format - format error: missing key in comma-separated list property")
    for key, raw in list(result.items()):
        schema = fmt[key]
        try:
            result[key] = check_value(schema, raw, from_string=True)
        except ValueError as exc:
            raise ValueError(f"invalid format - format error: {key}: {exc}") from None
    for key, schema in fmt.items():
        required = isinstance(schema, dict) and "alias" not in schema and not schema.get("optional")
        if required and key not in result and (key == default_key or "default" not in schema):
            raise ValueError(f"invalid format - format error: {key}: property is missing and it is not optional")
    return result


# --------------------------------------------------------------------------- returns
def _check_return(schema: dict[str, Any], value: Any, where: str) -> Iterator[str]:
    kind = schema.get("type")
    if value is None:
        if kind in (None, "null") or schema.get("optional"):
            return
        yield f"{where}: null where {kind} is declared"
        return
    if kind == "object":
        if not isinstance(value, dict):
            yield f"{where}: expected an object, got {type(value).__name__}"
            return
        props = schema.get("properties") or {}
        for key, item in value.items():
            sub = property_schema(props, key)
            if sub is None:
                if props and not schema.get("additionalProperties"):
                    yield f"{where}.{key}: not declared in the return schema"
                continue
            yield from _check_return(sub, item, f"{where}.{key}")
        for key, sub in props.items():
            if "[n]" not in key and not sub.get("optional") and key not in value:
                yield f"{where}.{key}: missing, and it is not optional"
        return
    if kind == "array":
        if not isinstance(value, list):
            yield f"{where}: expected an array, got {type(value).__name__}"
            return
        items = schema.get("items")
        if items:
            for i, item in enumerate(value):
                yield from _check_return(items, item, f"{where}[{i}]")
        return
    if kind in ("string", "integer", "number", "boolean", "null"):
        try:
            check_value(schema, value, from_string=False)
        except ValueError as exc:
            yield f"{where}: {exc}"
