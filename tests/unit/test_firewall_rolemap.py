"""A malformed firewall policy is refused when the role map loads: one line, file:line, field, why."""

from __future__ import annotations

import re

import pytest

from brainall_ops.errors import RoleMapError
from brainall_ops.rolemap import BUILTIN_ROLEMAP, parse_rolemap

BUILTIN_TEXT = BUILTIN_ROLEMAP.read_text()
LINE = re.compile(r"^fleet\.yaml:(?P<line>\d+): (?P<path>\S+): (?P<msg>.+)$")


def problems_of(text: str) -> list[str]:
    with pytest.raises(RoleMapError) as info:
        parse_rolemap(text, "fleet.yaml")
    for problem in info.value.problems:
        assert LINE.match(problem) and "\n" not in problem, problem
    return info.value.problems


def line_of(text: str, needle: str) -> int:
    return next(i + 1 for i, line in enumerate(text.splitlines()) if needle in line)


def swap(old: str, new: str) -> str:
    assert BUILTIN_TEXT.count(old) >= 1, old
    return BUILTIN_TEXT.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "needle", "path", "message"),
    [
        (
            "sources: [app_vms]}",
            "sources: [app_vm]}",
            "[app_vm]}",
            "firewall.rules[2].sources[0]",
            "unknown source 'app_vm' (use a host, a group, or one of admins, any, vswitch)",
        ),
        ("to: [db_vms], ports: [\"5432\"]", "to: [db_vm], ports: [\"5432\"]", "[db_vm]",
         "firewall.rules[2].to[0]", "unknown host or group 'db_vm'"),
        ('ports: ["5432"]', 'ports: ["54321"]', '["54321"]', "firewall.rules[2].ports[0]",
         "opens a port the policy closes (54321)"),
        ('ports: ["5404-5405"], proto: udp', 'ports: ["54000-55000"], proto: udp', "54000-55000",
         "firewall.rules[9].ports[0]", "opens a port the policy closes (54000-55000)"),
        ('ports: ["5432"]', 'ports: ["22"]', 'ports: ["22"]', "firewall.rules[2].ports[0]",
         "opens the SSH port 22: write 'ssh' (follows firewall.ssh_port)"),
        ('ports: ["5404-5405"], proto: udp', "ports: [ssh], proto: udp", "ports: [ssh], proto: udp",
         "firewall.rules[9].ports[0]", "'ssh' is a tcp port: this rule is udp"),
        ('ports: ["3300", "6789"', 'ports: ["3300", "7300-6800"', "7300-6800", "firewall.rules[10].ports[1]",
         "invalid port range '7300-6800'"),
        ('ports: ["5432"]', 'ports: ["5432/tcp"]', "5432/tcp", "firewall.rules[2].ports[0]", "String should match"),
        ("to: [db_vms], ports: [\"5432\"]", "to: [storagebox], ports: [\"5432\"]", "[storagebox]",
         "firewall.rules[2].to[0]", "'storagebox' is the Storage Box: its provider runs its firewall"),
        ("  admin_sources: []", "  admin_sources: [10.0.0.1/8]", "10.0.0.1/8", "firewall.admin_sources[0]",
         "IPv4 network"),
        ("  closed_ports: [54321]", "  closed_ports: [54321, 22]", "[54321, 22]", "firewall.closed_ports[1]",
         "closes the SSH port 22"),
        ("  ssh_via: bastion", "  ssh_via: bastian", "ssh_via: bastian", "firewall.ssh_via",
         "unknown host or VM 'bastian'"),
        ("  rollback_after_s: 60", "  rollback_after_s: 5", "rollback_after_s: 5", "firewall.rollback_after_s",
         "greater than or equal to 10"),
        ("    vswitch: 10.77.1.0/24 ", "    vswitch: 10.77.2.0/24 ", "vswitch: 10.77.2.0/24",
         "environments.lab.vswitch", "gpu (lab) has address 10.77.1.130, outside the vSwitch 10.77.2.0/24"),
        ("    outside: 10.77.200.0/24", "    outside: 10.77.0.0/23", "outside: 10.77.0.0/23",
         "environments.lab.outside", "10.77.0.0/23 overlaps the vSwitch 10.77.1.0/24"),
        ("    outside: 10.77.200.0/24", "    outside: 10.78.200.0/24", "outside: 10.78.200.0/24",
         "environments.lab.outside", "10.78.200.0/24 is outside the network 10.77.0.0/16"),
    ],
)  # fmt: skip
def test_malformed_policy(old: str, new: str, needle: str, path: str, message: str) -> None:
    text = swap(old, new)
    problems = problems_of(text)
    expected = f"fleet.yaml:{line_of(text, needle)}: {path}: "
    assert any(p.startswith(expected) and message in p for p in problems), problems


def test_a_host_left_without_ssh_is_refused() -> None:
    text = swap("    - {name: ssh-from-bastion, to: [all], ", "    - {name: ssh-from-bastion, to: [gpu], ")
    problems = problems_of(text)
    unreachable = [p for p in problems if "no rule opens SSH (22/tcp)" in p]
    assert len(unreachable) == 4  # the VMs: the bastion has its own rule, the Proxmox nodes theirs
    assert all(p.startswith(f"fleet.yaml:{line_of(text, '  rules:')}: firewall.rules: ") for p in unreachable)
    assert any("on vm-brainall-db: nothing could reach it to deploy again" in p for p in unreachable)


def test_a_lab_without_its_own_vswitch_is_refused() -> None:
    """Otherwise lab rulesets would carry the production vSwitch and lock the lab out."""
    text = swap("    vswitch: 10.77.1.0/24 ", "    # no vswitch ")
    problems = problems_of(text)
    assert any(
        "firewall.vswitch: vm-brainall-db (lab) has address 10.77.1.71, outside the vSwitch 192.168.100.0/24" in p
        for p in problems
    ), problems


def test_admins_must_not_include_the_outside() -> None:
    text = swap("firewall_admin_sources: [10.77.0.1/32]", "firewall_admin_sources: [10.77.200.0/25]")
    [problem] = problems_of(text)
    assert "environments.lab.outside: 10.77.200.0/24 overlaps the admin source 10.77.200.0/25" in problem


def test_the_builtin_policy_loads() -> None:
    rm = parse_rolemap(BUILTIN_TEXT, "fleet.yaml")
    assert rm.firewall is not None and rm.firewall.ssh_via == "bastion" and rm.firewall.rollback_after_s == 60
    lab = rm.environments["lab"]
    assert str(lab.vswitch) == "10.77.1.0/24" and str(lab.outside) == "10.77.200.0/24"
    assert [str(a) for a in lab.firewall_admin_sources or []] == ["10.77.0.1/32"]
