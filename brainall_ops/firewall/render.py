"""Render a host's firewall (templates/firewall/*.j2): the nftables ruleset, fail2ban, the boot unit.

Deterministic: the same policy gives byte-identical text (sets and rules come in policy order,
set elements sorted), so a rendering can be compared with the one a host runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING

from brainall_ops.firewall.policy import TABLE, HostFirewall

if TYPE_CHECKING:
    import jinja2

# Where things live on a host.
REMOTE_DIR = "/etc/brainall/firewall"
RULESET = f"{REMOTE_DIR}/brainall.nft"  # the confirmed ruleset, loaded at boot
UNIT = "brainall-firewall.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
FAIL2BAN_JAIL = "/etc/fail2ban/jail.d/brainall-sshd.local"


def nft_ports(ports: Iterable[int | str]) -> str:
    """`22`, or `{ 80, 443 }` for several ports and ranges."""
    items = [str(p) for p in ports]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


@cache
def _environment() -> jinja2.Environment:
    from brainall_ops.shared.templating import environment

    env = environment("firewall", trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.globals.update(ports=nft_ports, table=TABLE, ruleset=RULESET)
    return env


def render_ruleset(fw: HostFirewall) -> str:
    return _environment().get_template("brainall.nft.j2").render(fw=fw)


def render_fail2ban(fw: HostFirewall) -> str:
    return _environment().get_template("fail2ban-sshd.local.j2").render(fw=fw)


def render_unit() -> str:
    return _environment().get_template("brainall-firewall.service.j2").render()


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
