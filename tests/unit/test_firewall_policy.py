"""The role map's firewall policy, compiled per host: who may reach what, in each environment."""

from __future__ import annotations

import pytest

from brainall_ops.errors import BrainallError
from brainall_ops.firewall.policy import Allow, compile_host, compile_policy, members
from brainall_ops.firewall.render import render_fail2ban, render_ruleset
from brainall_ops.rolemap import BUILTIN_ROLEMAP, load_rolemap, parse_rolemap

BUILTIN_TEXT = BUILTIN_ROLEMAP.read_text()
FLEET = [
    "gpu",
    "prox-101",
    "prox-106",
    "prox-102",
    "bastion",
    "vm-brainall-api",
    "vm-brainall-workers",
    "vm-brainall-nginx",
    "vm-brainall-db",
]


@pytest.fixture(scope="module")
def rm():
    return load_rolemap()


def opened(fw, port: str, proto: str = "tcp") -> dict[str | None, tuple[str, ...]]:
    """source set (None: any) -> its elements, for every accept rule opening `port`."""
    elements = {s.name: s.elements for s in fw.sets}
    return {
        a.source_set: elements.get(a.source_set, ()) if a.source_set else ()
        for a in fw.allows
        if a.proto == proto and port in a.ports
    }


def test_every_host_and_vm_gets_a_firewall_but_not_the_storage_box(rm) -> None:
    assert members(rm) == FLEET
    assert list(compile_policy(rm)) == FLEET
    with pytest.raises(BrainallError, match=r"storagebox.*gets no firewall"):
        compile_host(rm, "storagebox", "lab")


def test_postgres_only_from_the_app_vms_and_54321_closed_everywhere(rm) -> None:
    lab = compile_policy(rm, "lab")
    assert opened(lab["vm-brainall-db"], "5432") == {"src_app_vms": ("10.77.1.61", "10.77.1.62")}
    prod = compile_policy(rm)
    assert opened(prod["vm-brainall-db"], "5432") == {"src_app_vms": ("192.168.100.61", "192.168.100.62")}
    for fw in [*lab.values(), *prod.values()]:
        assert fw.closed_ports == (54321,)
        assert not any("54321" in a.ports for a in fw.allows)
        if fw.name != "vm-brainall-db":
            assert opened(fw, "5432") == {}


def test_ssh_only_from_the_bastion_and_admins_on_the_one_port(rm) -> None:
    lab = compile_policy(rm, "lab")
    for name, fw in lab.items():
        ssh = opened(fw, "22")
        if name == "bastion":
            assert None in ssh  # the bastion answers SSH from anywhere
        elif name.startswith("prox-"):  # and a Proxmox cluster's nodes SSH to each other
            assert ssh == {
                "src_bastion": ("10.77.1.20",),
                "src_admins": ("10.77.0.1",),
                "src_proxmox": ("10.77.1.1", "10.77.1.2", "10.77.1.6"),
            }
        else:
            assert ssh == {"src_bastion": ("10.77.1.20",), "src_admins": ("10.77.0.1",)}
        assert {p for a in fw.allows for p in a.ports if p in {"2220", "2222"}} == set()
    assert opened(compile_policy(rm)["gpu"], "22") == {"src_bastion": ("192.168.100.20",), "src_admins": ()}


def test_redis_vllm_embeddings_nginx_and_proxmox(rm) -> None:
    lab = compile_policy(rm, "lab")
    gpu = lab["gpu"]
    assert opened(gpu, "6379") == {"src_app_vms": ("10.77.1.61", "10.77.1.62"), "src_gpu": ("10.77.1.130",)}
    assert opened(gpu, "8001-8004") == {"src_app_vms": ("10.77.1.61", "10.77.1.62")}
    assert opened(lab["vm-brainall-db"], "6379") == {"src_app_vms": ("10.77.1.61", "10.77.1.62")}
    nginx = lab["vm-brainall-nginx"]
    assert opened(nginx, "80") == {None: ()} and opened(nginx, "443") == {None: ()}
    assert opened(lab["vm-brainall-api"], "8000") == {"src_nginx": ("10.77.1.63",)}
    for name in ("prox-101", "prox-106", "prox-102"):
        fw = lab[name]
        assert opened(fw, "8006") == {"src_vswitch": ("10.77.1.0/24",)}
        assert opened(fw, "5404-5405", "udp") == {"src_vswitch": ("10.77.1.0/24",)}
        assert Allow("ceph", "tcp", ("3300", "6789", "6800-7300"), "src_vswitch") in fw.allows
    assert opened(compile_policy(rm)["prox-101"], "8006") == {"src_vswitch": ("192.168.100.0/24",)}


def test_fail2ban_where_ssh_faces_the_internet(rm) -> None:
    for environment in ("production", "lab"):
        policy = compile_policy(rm, environment)
        assert sorted(n for n, fw in policy.items() if fw.exposed) == ["bastion", "gpu"]
    jail = render_fail2ban(compile_policy(rm, "lab")["bastion"])
    assert "[sshd]\nenabled = true\nport = 22\n" in jail
    assert "ignoreip = 127.0.0.1/8 ::1 10.77.0.1\n" in jail


def test_lab_rulesets_hold_lab_addresses_only_and_production_the_real_ones(rm) -> None:
    for fw in compile_policy(rm, "lab").values():
        text = render_ruleset(fw)
        assert "192.168." not in text and "10.77." in text
    for fw in compile_policy(rm).values():
        text = render_ruleset(fw)
        assert "10.77." not in text and "192.168.100." in text


def test_the_consolidated_ssh_port_is_one_setting(tmp_path) -> None:
    text = BUILTIN_TEXT.replace("  ssh_port: 22 ", "  ssh_port: 2222 ", 1)
    rm = parse_rolemap(text, "fleet.yaml")
    for fw in compile_policy(rm, "lab").values():
        ruleset = render_ruleset(fw)
        assert "tcp dport 2222 accept" in ruleset and "dport 22 " not in ruleset
        assert fw.ssh_port == 2222
    assert "port = 2222\n" in render_fail2ban(compile_policy(rm, "lab")["gpu"])


def test_sources_any_and_overlapping_admin_cidrs(rm) -> None:
    text = BUILTIN_TEXT.replace(
        "  admin_sources: []", "  admin_sources: [203.0.113.0/24, 203.0.113.7/32, 198.51.100.9/32]", 1
    ).replace("sources: [bastion, admins]}", "sources: [bastion, admins, any]}", 1)
    rm2 = parse_rolemap(text, "fleet.yaml")
    db = compile_policy(rm2)["vm-brainall-db"]
    assert opened(db, "22") == {None: ()}  # "any" takes every address: no per-source rules left
    gpu = compile_policy(parse_rolemap(text.replace("admins, any]", "admins]"), "fleet.yaml"))["gpu"]
    assert opened(gpu, "22")["src_admins"] == ("198.51.100.9", "203.0.113.0/24")  # merged, sorted


def test_compiling_is_deterministic(rm) -> None:
    assert compile_policy(rm, "lab") == compile_policy(load_rolemap(), "lab")
    assert [render_ruleset(fw) for fw in compile_policy(rm).values()] == [
        render_ruleset(fw) for fw in compile_policy(rm).values()
    ]


def test_unknown_environment_is_one_clear_error(rm) -> None:
    with pytest.raises(BrainallError, match="unknown environment 'staging'"):
        compile_policy(rm, "staging")
