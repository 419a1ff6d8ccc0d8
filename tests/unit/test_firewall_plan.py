"""`brainall-ops plan` for the firewall: each host's rules added and removed, against the last
deploy recorded by this controller (offline), in the chosen environment's addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainall_ops.firewall.diff import diff, parse
from brainall_ops.firewall.policy import compile_policy
from brainall_ops.firewall.record import record_path, write_record
from brainall_ops.firewall.render import render_ruleset
from brainall_ops.firewall.sshpath import SshPath, SshTarget, ssh_argv
from brainall_ops.planning.plan import build_plan
from brainall_ops.rolemap import BUILTIN_ROLEMAP, load_rolemap, parse_rolemap


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BRAINALL_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def firewall_changes(rm, **options) -> dict[str, object]:
    plan = build_plan(rm, "fleet.yaml", **options)
    return {c.target: c for c in plan.changes if c.concern == "firewall"}


def test_without_a_record_every_host_is_created_with_all_its_rules() -> None:
    changes = firewall_changes(load_rolemap())
    assert len(changes) == 9 and {c.action for c in changes.values()} == {"create"}
    db = changes["vm-brainall-db"]
    assert "ssh-from-bastion, postgres, redis-db" in db.summary and "54321 closed" in db.summary
    assert 'chain input: ip saddr @src_app_vms tcp dport 5432 accept comment "postgres"' in db.detail["added"]
    assert db.detail["removed"] == [] and db.detail["compared_with"] is None
    assert "fail2ban on SSH 22" in changes["bastion"].summary
    assert "pve-firewall node rules off" in changes["prox-102"].summary


def test_recorded_deploy_gives_unchanged_then_a_rule_level_diff(state_dir: Path) -> None:
    rm = load_rolemap()
    for name, fw in compile_policy(rm, "lab").items():
        write_record("lab", name, render_ruleset(fw))
    assert record_path("lab", "gpu") == state_dir / "firewall" / "lab" / "gpu.nft"
    unchanged = firewall_changes(rm, environment="lab")
    assert {c.action for c in unchanged.values()} == {"unchanged"}
    # production has no record: the lab's deploys never show up in a production plan
    assert {c.action for c in firewall_changes(rm).values()} == {"create"}

    text = BUILTIN_ROLEMAP.read_text().replace(
        '{name: postgres, to: [db_vms], ports: ["5432"], sources: [app_vms]}',
        '{name: postgres, to: [db_vms], ports: ["5432"], sources: [app_vms, nginx]}',
    )
    changed = firewall_changes(parse_rolemap(text, "fleet.yaml"), environment="lab")
    db = changed["vm-brainall-db"]
    assert db.action == "update"
    assert db.detail["added"] == [
        "set src_nginx: type ipv4_addr",
        "set src_nginx: flags interval",
        "set src_nginx: element 10.77.1.63",
        'chain input: ip saddr @src_nginx tcp dport 5432 accept comment "postgres"',
    ]
    assert db.detail["removed"] == []
    assert db.summary.startswith("4 added, 0 removed vs the last deploy from this controller: + set src_nginx")
    assert {c.action for n, c in changed.items() if n != "vm-brainall-db"} == {"unchanged"}


def test_a_plan_changes_nothing(state_dir: Path) -> None:
    firewall_changes(load_rolemap(), environment="lab")
    assert not state_dir.exists()


def test_diff_reports_elements_and_rule_moves() -> None:
    rm = load_rolemap()
    gpu = render_ruleset(compile_policy(rm, "lab")["gpu"])
    assert not diff(gpu, gpu).changed
    fewer = gpu.replace("10.77.1.61, 10.77.1.62", "10.77.1.62")
    d = diff(gpu, fewer)
    assert d.lines() == ["- set src_app_vms: element 10.77.1.61"]
    lines = gpu.splitlines()
    vllm = next(i for i, line in enumerate(lines) if 'comment "vllm"' in line)
    moved = "\n".join([*lines[: vllm - 3], lines[vllm], *lines[vllm - 3 : vllm], *lines[vllm + 1 :]])
    d = diff(gpu, moved)
    assert ("chain input", 'ip saddr @src_app_vms tcp dport 8001-8004 accept comment "vllm"') in d.added
    assert ("chain input", 'ip saddr @src_app_vms tcp dport 8001-8004 accept comment "vllm"') in d.removed


def test_parse_reads_nfts_multiline_element_lists() -> None:
    listing = """table inet brainall {
\tset src_admins {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.0.0.10, 10.0.0.2,
\t\t\t     192.0.2.0/24 }
\t}
\tchain input {
\t\ttype filter hook input priority filter; policy drop;
\t}
}
"""
    assert parse(listing)["set src_admins"] == [
        "type ipv4_addr",
        "flags interval",
        "element 10.0.0.2",
        "element 10.0.0.10",
        "element 192.0.2.0/24",
    ]


def test_fresh_ssh_never_reuses_a_master_and_jumps_through_the_bastion() -> None:
    target = SshTarget("vm-brainall-db", "10.77.1.71", 22, "root", "/lab/id_ed25519", "/lab/known_hosts", "yes")
    bastion = SshTarget("bastion", "10.77.1.20", 22, "root", "/lab/id_ed25519", "/lab/known_hosts", "yes")
    argv = ssh_argv(SshPath(target, via=bastion), "true", 5)
    assert argv[-2:] == ["10.77.1.71", "true"]
    assert "ControlMaster=no" in argv and "ControlPath=none" in argv and "BatchMode=yes" in argv
    proxy = next(a for a in argv if a.startswith("ProxyCommand="))
    assert proxy.endswith("-W %h:%p 10.77.1.20") and "ControlPath=none" in proxy and "/lab/id_ed25519" in proxy
    odd = SshTarget("bastion", "10.77.1.20", key="/keys/100%/id")
    assert "/keys/100%%/id" in next(a for a in ssh_argv(SshPath(target, via=odd), "true") if "ProxyCommand" in a)


def test_protocols_compare_by_meaning_not_by_how_nft_names_them() -> None:
    """A host without /etc/protocols lists `{ 1, 58 }` where this machine lists `{ icmp, ipv6-icmp }`."""
    rendered = render_ruleset(compile_policy(load_rolemap(), "lab")["vm-brainall-db"])
    assert "meta l4proto { icmp, icmpv6 } accept" in rendered  # loads without /etc/protocols
    for listed in ("meta l4proto { 1, 58 } accept", "meta l4proto { icmp, ipv6-icmp } accept"):
        assert not diff(rendered.replace("meta l4proto { icmp, icmpv6 } accept", listed), rendered).changed
    assert diff(rendered.replace("{ icmp, icmpv6 }", "{ 1 }"), rendered).changed
