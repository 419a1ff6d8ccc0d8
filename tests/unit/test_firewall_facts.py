"""The firewall's pyinfra facts read what hosts print: the table's state, sshd's ports, pve-firewall."""

from __future__ import annotations

import pytest
from pyinfra.api.exceptions import FactProcessError

from brainall_ops.firewall.facts import FirewallTable, PveHostFirewall, SshdPorts, TableState


def test_table_state_and_when_a_host_runs_a_ruleset() -> None:
    state = FirewallTable().process(["installed=aaa", "recorded=bbb", "live=bbb", "pending=no", "rolled_back=yes"])
    assert state == TableState("aaa", "bbb", "bbb", pending=False, rolled_back=True)
    assert state.runs("aaa") and not state.runs("ccc")
    assert not TableState("aaa", "bbb", "ccc", False, False).runs("aaa")  # edited by hand since
    assert not TableState("aaa", "-", "-", False, False).runs("aaa")  # the table is gone
    assert not TableState("aaa", "bbb", "bbb", True, False).runs("aaa")  # an unconfirmed one is live
    with pytest.raises(FactProcessError, match="no 'live' line"):
        FirewallTable().process(["installed=aaa", "recorded=-", "pending=no", "rolled_back=no"])


def test_sshd_ports() -> None:
    assert SshdPorts().process(["22"]) == [22]
    assert SshdPorts().process(["2222", "22", "22", ""]) == [22, 2222]
    assert SshdPorts().default() == []


def test_pve_host_firewall_is_on_unless_turned_off() -> None:
    fact = PveHostFirewall()
    assert fact.process(["{}"]) is True  # Proxmox's default: the host firewall follows the cluster's
    assert fact.process(['{"enable": 1, "nftables": 0}']) is True
    assert fact.process(['{"enable": 0}']) is False
    assert fact.command(node="prox-101") == "pvesh get /nodes/prox-101/firewall/options --output-format json"
    with pytest.raises(FactProcessError):
        fact.process(["pvesh: no such command"])
