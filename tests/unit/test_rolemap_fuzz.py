"""A fuzzer over the built-in map: bytes and structure mutated, each result run through
`plan --json` in-process. Every outcome is a valid plan (exit 0 or 2, JSON on stdout; exit 1
when a concern refuses, still JSON) or exit 1 with lines `file:line: field: message`; never a
traceback, never unbounded time or memory. Derandomized, so CI sees the same examples each run."""

from __future__ import annotations

import atexit
import copy
import json
import re
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from brainall_ops.errors import BrainallError, RoleMapError
from brainall_ops.rolemap import BUILTIN_ROLEMAP

BASE_TEXT = BUILTIN_ROLEMAP.read_text()
BASE_BYTES = BASE_TEXT.encode()
BASE_DATA = yaml.safe_load(BASE_TEXT)
LINE = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+): (?P<path>\S+|\(top level\)): (?P<msg>.+)$")
SECONDS_PER_EXAMPLE = 10
SCRATCH = Path(tempfile.mkdtemp(prefix="rolemap-fuzz-"))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)
FUZZ = settings(
    max_examples=200,
    deadline=None,  # time is asserted per example below, with room for a loaded CI machine
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def _paths(node: Any, here: tuple = ()) -> list[tuple]:
    out = [here]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*here, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*here, i))
    return out


PATHS = _paths(BASE_DATA)[1:]


def _value_at(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


# Values that have broken loaders before: wrong types, edge numbers, bad addresses, big and deep things.
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "0.4",
            "1e3",
            "-0",
            "0x1F",
            "24",
            "true",
            "yes",
            "off",
            "null",
            "~",
            "",
            " ",
            "x" * 5000,
            "0.0.0.0",
            "255.255.255.255",
            "127.0.0.1",
            "224.0.0.1",
            "192.168.100.0",
            "192.168.100.255",
            "10.77.1.255",
            "10.77.0.0",
            "192.168.101.7",
            "::1",
            "10.0.0.0/8",
            "prox-106",
            "prox-102",
            "prox-101",
            "gpu",
            "bastion",
            "app_vms",
            "db_vms",
            "vm-brainall-db",
            "lab",
            "production",
            "2025-11-15",
            "../../etc",
            "/etc/passwd",
            "*-*-* 03:15:00",
            "ssh",
            "8000-7000",
            "€",
            "\u202e",
        ]
    ),
    st.lists(st.integers(-5, 70000), max_size=3),
    st.dictionaries(st.sampled_from(["name", "x", "host", "vms", "port"]), st.integers(-1, 10), max_size=2),
    st.integers(0, 60).map(lambda n: _nest(n)),
)


def _nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def structural_mutants(draw: st.DrawFn) -> str:
    data = copy.deepcopy(BASE_DATA)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(PATHS))
        try:
            parent = _value_at(data, path[:-1])
            current = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced it
        op = draw(st.sampled_from(["odd", "odd", "sibling", "delete", "duplicate", "unknown-key", "scale"]))
        if op == "odd":
            parent[path[-1]] = draw(ODD_VALUES)
        elif op == "sibling":  # a value of the right shape from elsewhere in the map
            parent[path[-1]] = copy.deepcopy(_value_at(BASE_DATA, draw(st.sampled_from(PATHS))))
        elif op == "delete":
            del parent[path[-1]]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(path[-1], copy.deepcopy(current))
        elif op == "unknown-key" and isinstance(current, dict):
            current[draw(st.sampled_from(["colour", "name", "anti_affinity", "strategy"]))] = draw(ODD_VALUES)
        elif op == "scale" and isinstance(current, int | float) and not isinstance(current, bool):
            parent[path[-1]] = current * draw(st.sampled_from([0, -1, 0.5, 2, 10, 1000, 1e6]))
    if draw(st.booleans()):  # placement's own knobs, which the built-in map barely uses
        vm_names = [vm["name"] for vm in BASE_DATA["vms"]] + ["app_vms", "db_vms", "nginx", "nope"]
        data["placement"]["strategy"] = draw(st.sampled_from(["pack", "spread", "random"]))
        data["placement"]["anti_affinity"] = [
            {
                "name": f"rule-{i}",
                "vms": draw(st.lists(st.sampled_from(vm_names), min_size=1, max_size=3)),
                **(
                    {"apart_from": draw(st.lists(st.sampled_from(vm_names), max_size=2))} if draw(st.booleans()) else {}
                ),
            }
            for i in range(draw(st.integers(0, 3)))
        ]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


SPECIAL_BYTES = st.sampled_from(
    [
        b"\xff",
        b"\xfe\xff",
        b"\x00",
        b"\x1b",
        b"&a ",
        b"*a",
        b"&a [*a, *a]",
        b"[",
        b"]",
        b"{",
        b": ",
        b"- ",
        b"\n",
        b"\t",
        b"'",
        b'"',
        b"!!python/name:os.system ",
        b"!!binary ",
        b"#",
        b"---\n",
        b"...\n",
        b"? ",
        b"<<: ",
        b"\\",
        b"\xc3\x28",
        b"\xef\xbb\xbf",
        b"9" * 400,
        b" " * 40,
    ]
)


PRINTABLE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=6).map(str.encode)


@st.composite
def byte_mutants(draw: st.DrawFn) -> bytes:
    data = BASE_BYTES
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(data)))
        cut = draw(st.integers(0, 12))
        insert = draw(st.one_of(SPECIAL_BYTES, PRINTABLE, PRINTABLE, st.binary(max_size=4)))
        data = data[:at] + insert + data[at + cut :]
    return data


@st.composite
def placement_mutants(draw: st.DrawFn) -> str:
    """Well-typed changes to what placement reads (sizes, free capacity, latency, pins, rules):
    most outcomes are plans or placement refusals, which must name their place too."""
    data = copy.deepcopy(BASE_DATA)
    proxmox_hosts = [h for h in data["hosts"] if "proxmox" in h]
    for vm in data["vms"]:
        if draw(st.booleans()):
            vm["memory_gb"] = draw(st.sampled_from([1, 8, 16, 32, 48, 64, 100, 500]))
            vm["disk_gb"] = draw(st.sampled_from([10, 50, 200, 1000, 1500]))
            vm["vcpu"] = draw(st.integers(1, 40))
        if draw(st.integers(0, 4)) == 0:
            vm["host"] = draw(st.sampled_from([h["name"] for h in proxmox_hosts]))
        if draw(st.integers(0, 4)) == 0:
            vm["latency_sensitive"] = draw(st.booleans())
    for host in proxmox_hosts:
        if draw(st.booleans()):
            total = host["hardware"]["ram_gb"]
            host["measured"]["ram_free_gb"] = draw(st.floats(0, total)) // 1
            host["measured"].pop("ram_used_gb", None)
            host["measured"]["latency_from_gpu_ms"] = draw(st.sampled_from([0.3, 0.9, 1.99, 2.0, 2.01, 25.7]))
    data["placement"]["strategy"] = draw(st.sampled_from(["pack", "spread"]))
    names = [vm["name"] for vm in data["vms"]] + ["app_vms", "db_vms", "nginx"]
    data["placement"]["anti_affinity"] = [
        {"name": f"r{i}", "vms": draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))}
        | (
            {"apart_from": draw(st.lists(st.sampled_from(names), min_size=1, max_size=2))}
            if draw(st.booleans())
            else {}
        )
        for i in range(draw(st.integers(0, 2)))
    ]
    return yaml.safe_dump(data, sort_keys=False)


def run_plan(content: bytes) -> tuple[int, str, str]:
    """`brainall-ops plan --json --rolemap FILE` in-process, reporting what main() would."""
    from brainall_ops.cli import cli

    path = SCRATCH / "mutant.yaml"
    path.write_bytes(content)
    result = CliRunner().invoke(cli, ["plan", "--json", "--rolemap", str(path)], catch_exceptions=True)
    error = result.exception
    if isinstance(error, BrainallError):  # main() prints these as plain lines and exits 1
        return 1, result.stdout, str(error) if isinstance(error, RoleMapError) else f"error: {error}"
    if error is not None and not isinstance(error, SystemExit):
        raise error  # a traceback: the fuzzer found a bug
    return result.exit_code, result.stdout, result.stderr


def check_outcome(content: bytes) -> None:
    start = time.perf_counter()
    code, out, err = run_plan(content)
    elapsed = time.perf_counter() - start
    assert elapsed < SECONDS_PER_EXAMPLE, f"{elapsed:.1f} s"
    assert "Traceback" not in out + err
    if code in (0, 2) or (code == 1 and out.strip().startswith("{")):
        plan = json.loads(out, parse_constant=lambda name: (_ for _ in ()).throw(AssertionError(name)))
        assert isinstance(plan["placements"], list)
        if code == 1:  # a concern refused: the refusals are in the plan and on stderr
            assert plan["refusals"], out
            assert all(line.startswith("refused: ") for line in err.strip().splitlines()), err
        event(f"plan, exit {code}")
        return
    assert code == 1, (code, out, err)
    lines = err.strip().splitlines()
    assert lines, "exit 1 without a message"
    for line in lines:
        match = LINE.match(line)
        assert match, f"not file:line: field: message: {line[:500]!r}"
        assert match["file"].endswith("mutant.yaml"), line[:300]
        assert len(line) <= 2100, f"{len(line)} characters"
    event(f"refused: {LINE.match(lines[0])['path'].split('[')[0].split('.')[0]}")


MEMORY_START = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@FUZZ
@given(structural_mutants())
def test_structural_mutants_plan_or_refuse_cleanly(text: str) -> None:
    check_outcome(text.encode())


@settings(FUZZ, max_examples=300)
@given(byte_mutants())
def test_byte_mutants_plan_or_refuse_cleanly(content: bytes) -> None:
    check_outcome(content)


@settings(FUZZ, max_examples=120)
@given(placement_mutants())
def test_placement_mutants_plan_or_refuse_cleanly(text: str) -> None:
    check_outcome(text.encode())


def test_the_fuzzing_stayed_within_bounded_memory() -> None:
    # ru_maxrss is in KiB on Linux: the whole fuzz run grew the process by less than 512 MiB
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - MEMORY_START
    assert grown < 512 * 1024, f"{grown / 1024:.0f} MiB"


def test_the_unmutated_map_is_a_valid_plan() -> None:
    code, out, _ = run_plan(BASE_BYTES)
    assert code == 2 and json.loads(out)["placements"]
