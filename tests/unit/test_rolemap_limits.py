"""The loader on files it was never meant to read: each gets one line `file:line: field: message`
and exit 1, in bounded time and memory; numbers and addresses make physical sense."""

from __future__ import annotations

import json
import os
import re
import time
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from brainall_ops.errors import RoleMapError
from brainall_ops.rolemap import BUILTIN_ROLEMAP, load_rolemap, parse_rolemap
from brainall_ops.rolemap.loader import LIMITS, shorten

BUILTIN_TEXT = BUILTIN_ROLEMAP.read_text()
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<path>\S+): (?P<msg>.+)$")


def one_problem(text: str) -> re.Match[str]:
    with pytest.raises(RoleMapError) as info:
        parse_rolemap(text, "fleet.yaml")
    assert len(info.value.problems) == 1, info.value.problems
    match = LINE.match(info.value.problems[0])
    assert match, info.value.problems[0]
    return match


def problems(text: str) -> list[str]:
    with pytest.raises(RoleMapError) as info:
        parse_rolemap(text, "fleet.yaml")
    return info.value.problems


def line_no(text: str, needle: str) -> int:
    return next(i + 1 for i, line in enumerate(text.splitlines()) if needle in line)


def replace_once(old: str, new: str, text: str = BUILTIN_TEXT) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def cli(*args: str) -> tuple[int, str, str]:
    """The CLI in-process, as main() runs it (BrainallError -> one line, exit 1)."""
    from brainall_ops.cli import cli as group

    runner = CliRunner()
    result = runner.invoke(group, list(args), standalone_mode=True, catch_exceptions=True)
    if isinstance(result.exception, RoleMapError):
        return 1, result.stdout, str(result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def billion_laughs(levels: int = 12, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- item 1: the loader
def test_billion_laughs_is_refused_quickly_in_little_memory() -> None:
    bomb = billion_laughs()
    assert len(bomb) < 4096  # the 4 KB bomb: 9**12 nodes once expanded
    text = replace_once("version: 1\n", "version: 1\nx-bomb:\n  " + bomb.rstrip().replace("\n", "\n  ") + "\n")
    tracemalloc.start()
    start = time.perf_counter()
    match = one_problem(text)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert match["path"] == "(limits)"
    assert "more than 1,000,000 nodes" in match["msg"] and "limit max_nodes" in match["msg"]
    assert elapsed < 5 and peak < 64 * 1024 * 1024, (elapsed, peak)


def test_a_small_bomb_under_the_node_limit_is_cheap_to_refuse() -> None:
    # 9**6 = 531,441 nodes: under max_nodes; refused by the schema (unknown key) without expanding it
    text = replace_once(
        "version: 1\n", "version: 1\nx-bomb:\n  " + billion_laughs(6).rstrip().replace("\n", "\n  ") + "\n"
    )
    start = time.perf_counter()
    match = one_problem(text)
    assert match["path"] == "x-bomb" and "unknown key" in match["msg"]
    assert time.perf_counter() - start < 5


def test_too_many_aliases() -> None:
    block = "shared: &s {a: 1}\nuses: [" + ", ".join(["*s"] * (LIMITS.max_aliases + 1)) + "]\n"
    match = one_problem(block)
    assert match["path"] == "(limits)" and "limit max_aliases" in match["msg"]


def test_recursive_alias() -> None:
    match = one_problem("version: 1\nloop: &x [1, *x]\n")
    assert match["path"] == "(yaml)" and "contains it" in match["msg"]


@pytest.mark.parametrize("depth", [40, 990, 5000])
def test_deep_nesting_is_one_line(depth: int) -> None:
    text = replace_once('    notes: "AX102; the most free RAM of the fleet"', "    notes: " + "[" * depth + "]" * depth)
    match = one_problem(text)
    assert match["path"] in ("(limits)", "(yaml)")
    assert int(match["line"]) == line_no(text, "    notes: [[[")
    assert "max_depth" in match["msg"] or "nesting depth" in match["msg"]


def test_block_nesting_deeper_than_the_limit() -> None:
    nested = "".join(" " * (2 * i) + f"k{i}:\n" for i in range(1, 60)) + " " * 120 + "v: 1\n"
    match = one_problem("version: 1\nx:\n" + nested)
    assert match["path"] == "(limits)" and f"deeper than {LIMITS.max_depth} levels" in match["msg"]


def test_bytes_that_are_not_utf8_name_their_line(tmp_path: Path) -> None:
    data = BUILTIN_TEXT.encode().replace(b"role: inference", b"role: infer\xff\xfence", 1)
    path = tmp_path / "latin.yaml"
    path.write_bytes(data)
    with pytest.raises(RoleMapError) as info:
        load_rolemap(path)
    [problem] = info.value.problems
    assert problem == f"{path}:{line_no(BUILTIN_TEXT, 'role: inference')}: (file): not UTF-8: byte 0xff at column 16"


def test_control_characters_are_a_yaml_error_with_a_line() -> None:
    text = replace_once("role: inference", "role: infer\x00ence")
    match = one_problem(text)
    assert match["path"] == "(yaml)" and int(match["line"]) == line_no(text, "role: infer")


def test_a_50_mb_value_is_refused_before_parsing_and_never_echoed(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(
        replace_once('    notes: "AX102; the most free RAM of the fleet"', "    notes: " + "x" * 50_000_000)
    )
    start = time.perf_counter()
    with pytest.raises(RoleMapError) as info:
        load_rolemap(path)
    [problem] = info.value.problems
    assert problem.endswith(f": (file): {path.stat().st_size:,} bytes, more than 4,194,304 (limit max_bytes)")
    assert time.perf_counter() - start < 2


def test_a_long_value_is_shortened_in_its_message() -> None:
    text = replace_once("      cores: 24\n", "      cores: " + "z" * 1_000_000 + "\n")
    match = one_problem(text)
    assert match["path"] == "hosts[0].hardware.cores"
    assert len(match.group(0)) < 400 and "characters]" in match["msg"]
    assert shorten("a" * 10) == "a" * 10


def test_directory_as_rolemap_is_one_line_exit_1(tmp_path: Path) -> None:
    for command in ("plan", "validate"):
        code, out, err = cli(command, "--rolemap", str(tmp_path))
        assert code == 1, (command, code, out, err)
        assert err.strip() == f"{tmp_path}:1: (file): cannot read role map: it is a directory, not a file"


def test_usage_errors_of_plan_exit_1_not_2() -> None:
    code, _, _ = cli("plan", "--no-such-option")
    assert code == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_a_fifo_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(RoleMapError, match=r"pipe\.yaml:1: \(file\): cannot read role map: not a regular file"):
        load_rolemap(fifo)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("", "(top level)"),
        ("- a\n- b\n", "(top level)"),
        ("version: !!python/object:os.system 1\n", "(yaml)"),
        ("? [a, b]\n: 1\n", "(yaml)"),
        ("a: *nothing\n", "(yaml)"),
        ("a: 1\n---\nb: 2\n", "(yaml)"),
        ("measured_at: 2025-13-45\n", "(yaml)"),
    ],
)
def test_odd_yaml_is_one_line(text: str, path: str) -> None:
    [problem] = problems(text)
    assert problem.startswith(f"fleet.yaml:{problem.split(':')[1]}: {path}: "), problem


# --------------------------------------------------------------------------- item 2: physical sense
@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        ("      ram_free_gb: 118\n", "      ram_free_gb: .inf\n", "hosts[2].measured.ram_free_gb", "finite"),
        ("      ram_free_gb: 118\n", "      ram_free_gb: .nan\n", "hosts[2].measured.ram_free_gb", "finite"),
        ("    memory_gb: 32\n", "    memory_gb: 1.0e+400\n", "vms[0].memory_gb", "finite"),
        ("    memory_gb: 32\n", "    memory_gb: 1e3\n", "vms[0].memory_gb", "YAML reads 1e3 as text"),
        (
            "      ram_free_gb: 118\n",
            "      ram_free_gb: 1118\n",
            "hosts[2].measured.ram_free_gb",
            "1118 GB RAM free is more than the host's 124 GB",
        ),
        (
            "      disk_free_gb: 6.7\n",
            "      disk_free_gb: 67\n",
            "hosts[4].measured.disk_free_gb",
            "67 GB disk free is more than the host's 50 GB",
        ),
        (
            "      ram_used_gb: 69\n",
            "      ram_used_gb: 99\n",
            "hosts[1].measured.ram_used_gb",
            "99 GB used + 56 GB free RAM is more than",
        ),
        (
            "      ram_free_gb: 118\n",
            "      ram_free_gb: -1\n",
            "hosts[2].measured.ram_free_gb",
            "greater than or equal to 0",
        ),
        (
            "      latency_from_gpu_ms: 0.844\n",
            '      latency_from_gpu_ms: "0.844"\n',
            "hosts[2].measured.latency_from_gpu_ms",
            "a number in quotes is text",
        ),
        ("      cores: 24\n", "      cores: true\n", "hosts[0].hardware.cores", "true/false is not a number"),
        ("      cores: 24\n", '      cores: "24"\n', "hosts[0].hardware.cores", "a number in quotes is text"),
        ("  verify_ssl: true\n", '  verify_ssl: "true"\n', "proxmox.verify_ssl", "must be true or false"),
        ("  verify_ssl: true\n", "  verify_ssl: 1\n", "proxmox.verify_ssl", "must be true or false"),
        ("closed_ports: [54321]", 'closed_ports: ["54321"]', "firewall.closed_ports", "item 0: a number in quotes"),
        ("    address: 192.168.100.71\n", "    address: 255.255.255.255\n", "vms[3].address", "broadcast address"),
        ("    address: 192.168.100.6\n", "    address: 0.0.0.0\n", "hosts[2].address", "unspecified address"),
        ("    address: 192.168.100.6\n", "    address: 224.0.0.6\n", "hosts[2].address", "multicast"),
        ("    address: 192.168.100.6\n", "    address: 127.0.0.6\n", "hosts[2].address", "loopback"),
        (
            "    address: 192.168.100.6\n",
            "    address: 3232261126\n",
            "hosts[2].address",
            "an address is written as text",
        ),
        (
            "    address: 192.168.100.6\n",
            "    address: 192.168.100.255\n",
            "hosts[2].address",
            "broadcast address of the vSwitch 192.168.100.0/24",
        ),
        (
            "    address: 192.168.100.71\n",
            "    address: 192.168.100.0\n",
            "vms[3].address",
            "network address of the vSwitch",
        ),
        (
            "prox-106: {address: 10.77.1.6}",
            "prox-106: {address: 10.77.1.255}",
            "environments.lab.hosts.prox-106.address",
            "broadcast address of the vSwitch 10.77.1.0/24",
        ),
        ("    used_gb: 0\n", "    used_gb: 6000\n", "storage.box.used_gb", "more than the 5 TB box"),
        ("  used_gb: 432\n", "  used_gb: 4432000\n", "ceph.used_gb", "more than the raw 4.4 TB"),
    ],
)
def test_physical_nonsense_is_refused(old: str, new: str, path: str, message: str) -> None:
    text = replace_once(old, new)
    found = problems(text)
    ours = [p for p in found if f": {path}: " in p]
    assert ours, found
    assert message in ours[0], ours[0]
    assert all(LINE.match(p) for p in found)
    if "environments" not in path and "ceph" not in path and "box" not in path:
        assert int(LINE.match(ours[0])["line"]) == line_no(text, new.strip().split("\n")[0][:30])


def test_vm_outside_the_gateways_subnet() -> None:
    text = replace_once("    address: 192.168.100.71\n", "    address: 192.168.101.71\n")
    assert any(
        "vms[3].address: vm-brainall-db (production) gets 192.168.101.71/24 from cloud-init, outside the gateway "
        "192.168.100.1's subnet 192.168.100.0/24" in p
        for p in problems(text)
    )


def test_builtin_map_and_its_lab_environment_still_validate() -> None:
    rm = load_rolemap()
    from brainall_ops.rolemap.environment import endpoints

    lab = endpoints(rm, "lab")
    assert str(lab["vm-brainall-db"].address) == "10.77.1.71" and str(lab["prox-106"].address) == "10.77.1.6"


def test_plan_json_is_always_json() -> None:
    code, out, _ = cli("plan", "--json")
    assert code == 2
    json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in plan --json"))
