"""The role map: the built-in map is valid, and every kind of bad input gets one precise line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from brainall_ops.errors import RoleMapError
from brainall_ops.rolemap import BUILTIN_ROLEMAP, load_rolemap, parse_rolemap

BUILTIN_TEXT = BUILTIN_ROLEMAP.read_text()
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<path>\S+): (?P<msg>.+)$")


def problems_of(text: str) -> list[str]:
    with pytest.raises(RoleMapError) as info:
        parse_rolemap(text, "fleet.yaml")
    return info.value.problems


def line_no(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line containing `needle`."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return hits[occurrence - 1]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


def test_builtin_map_encodes_the_fleet() -> None:
    rm = load_rolemap()
    assert [h.name for h in rm.hosts] == ["gpu", "prox-101", "prox-106", "prox-102", "bastion"]
    assert rm.host("prox-102").measured.latency_from_gpu_ms == pytest.approx(25.673)
    assert rm.host("prox-106").measured.ram_free_gb == 118
    assert rm.host("gpu").hardware.gpu is not None and rm.host("gpu").hardware.gpu.vram_gb == 49
    assert rm.host("bastion").public_ssh_port == 2220 and rm.host("bastion").vm_of == "prox-101"
    assert rm.storage is not None and rm.storage.box.ssh_port == 23 and rm.storage.box.capacity_tb == 5
    assert {v.name: (v.vcpu, v.memory_gb, v.disk_gb) for v in rm.vms} == {
        "vm-brainall-api": (16, 32, 100),
        "vm-brainall-workers": (8, 16, 50),
        "vm-brainall-nginx": (4, 8, 50),
        "vm-brainall-db": (8, 16, 200),
    }
    assert rm.ceph is not None and rm.ceph.health_checks == ["POOL_TOO_MANY_PGS"]
    assert rm.ceph.osd_hosts == ["prox-101", "prox-102", "prox-106"]
    assert rm.firewall is not None and rm.firewall.closed_ports == [54321]
    assert rm.backends is not None and [i.port for i in rm.backends.instances] == [8000, 8080, 3001]
    assert (rm.backends.production.backends, rm.backends.production.workers) == (3, 1)
    assert (rm.backends.validation.backends, rm.backends.validation.workers) == (2, 2)
    existing = rm.host("prox-101").proxmox
    assert existing is not None and existing.running_vms == 9
    assert existing.existing_vms[0].vmid == 9020


@pytest.mark.parametrize(
    ("old", "new", "needle", "path", "message"),
    [
        (
            "    role: inference\n",
            "    role: inference\n    colour: blue\n",
            "colour: blue",
            "hosts[0].colour",
            "unknown key 'colour'",
        ),
        ("      cores: 24\n", "      cores: lots\n", "cores: lots", "hosts[0].hardware.cores", "valid integer"),
        (
            "    address: 192.168.100.6\n",
            "    address: 192.168.100.666\n",
            "192.168.100.666",
            "hosts[2].address",
            "IPv4",
        ),
        (
            "  api_port: 8006\n",
            "  api_port: 80060\n",
            "api_port: 80060",
            "proxmox.api_port",
            "less than or equal to 65535",
        ),
    ],
)
def test_schema_errors_name_file_line_and_field(old: str, new: str, needle: str, path: str, message: str) -> None:
    text = replace_once(BUILTIN_TEXT, old, new)
    [problem] = problems_of(text)
    match = LINE.match(problem)
    assert match, problem
    assert match["file"] == "fleet.yaml"
    assert int(match["line"]) == line_no(text, needle)
    assert match["path"] == path
    assert message in match["msg"]


def test_missing_field_points_at_its_parent() -> None:
    text = replace_once(BUILTIN_TEXT, "    tier: data\n", "")
    [problem] = problems_of(text)
    assert problem == f"fleet.yaml:{line_no(text, '- name: vm-brainall-db')}: vms[3].tier: required field is missing"


def test_duplicate_host_name() -> None:
    text = replace_once(BUILTIN_TEXT, "  - name: prox-102\n", "  - name: prox-106\n")
    problems = problems_of(text)
    assert any(
        p.startswith(f"fleet.yaml:{line_no(text, '- name: prox-106', 2)}: hosts[3].name: duplicate name 'prox-106'")
        for p in problems
    ), problems


def test_duplicate_address() -> None:
    text = replace_once(BUILTIN_TEXT, "    address: 192.168.100.62\n", "    address: 192.168.100.61\n")
    [problem] = problems_of(text)
    assert problem == (
        f"fleet.yaml:{line_no(text, 'address: 192.168.100.61', 2)}: vms[1].address: "
        "duplicate address '192.168.100.61' (first at vms[0].address)"
    )


def test_duplicate_vmid() -> None:
    text = replace_once(BUILTIN_TEXT, "    tier: data\n", "    tier: data\n    vmid: 9020\n")
    [problem] = problems_of(text)
    assert problem.startswith(f"fleet.yaml:{line_no(text, 'vmid: 9020', 3)}: vms[3].vmid: duplicate VMID '9020'")


def test_vm_pinned_to_unknown_host() -> None:
    text = replace_once(BUILTIN_TEXT, "    tier: data\n", "    tier: data\n    host: prox-107\n")
    [problem] = problems_of(text)
    assert problem.startswith(f"fleet.yaml:{line_no(text, 'host: prox-107')}: vms[3].host: VM pinned to 'prox-107'")
    assert "prox-101, prox-102, prox-106" in problem


def test_duplicate_yaml_key() -> None:
    text = replace_once(BUILTIN_TEXT, "  api_port: 8006\n", "  api_port: 8006\n  api_port: 8007\n")
    [problem] = problems_of(text)
    assert problem == f"fleet.yaml:{line_no(text, 'api_port: 8007')}: proxmox.api_port: duplicate key"


def test_yaml_syntax_error_has_a_line() -> None:
    text = replace_once(BUILTIN_TEXT, "  - name: fsn1\n", "  - name: [fsn1\n")
    [problem] = problems_of(text)
    assert re.match(r"fleet\.yaml:\d+: \(yaml\): ", problem), problem


def test_malformed_firewall_policy_is_refused_at_load() -> None:
    text = replace_once(BUILTIN_TEXT, "sources: [app_vms]}", "sources: [app_vm]}")
    [problem] = problems_of(text)
    assert problem.startswith(f"fleet.yaml:{line_no(text, '[app_vm]}')}: firewall.rules[2].sources[0]: unknown source")
    text = replace_once(BUILTIN_TEXT, 'ports: ["5432"]', 'ports: ["54321"]')
    [problem] = problems_of(text)
    assert "opens a port the policy closes (54321)" in problem


def test_lab_address_outside_the_lab_network() -> None:
    text = replace_once(BUILTIN_TEXT, "prox-102: {address: 10.77.1.2}", "prox-102: {address: 10.78.1.2}")
    [problem] = problems_of(text)
    assert "environments.lab.hosts.prox-102.address: 10.78.1.2 is outside" in problem


def test_every_problem_is_one_line(tmp_path: Path) -> None:
    text = replace_once(BUILTIN_TEXT, "      cores: 24\n", "      cores: lots\n      fans: 3\n")
    problems = problems_of(text)
    assert len(problems) == 2
    assert all("\n" not in p and LINE.match(p) for p in problems)
