"""pyinfra facts of the firewall: the brainall table's state, sshd's ports, Proxmox's host firewall."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from brainall_ops.firewall.remote import STATE_SCRIPT, parse_state


@dataclass(frozen=True)
class TableState:
    """Digests ("-": none) of the confirmed ruleset file, of the live table's listing and of the
    listing recorded at confirmation; whether a rollback is pending or happened last time."""

    installed: str
    live: str
    recorded: str
    pending: bool
    rolled_back: bool

    def runs(self, digest: str) -> bool:
        """The host runs exactly this confirmed ruleset, unedited since."""
        return self.installed == digest and self.live != "-" and self.live == self.recorded and not self.pending


class FirewallTable(FactBase[TableState | None]):
    """The host's `table inet brainall`; None where nft is not installed."""

    def requires_command(self) -> str:
        return "nft"

    def command(self) -> str:
        return STATE_SCRIPT

    def process(self, output: list[str]) -> TableState:
        state = parse_state(output)
        try:
            return TableState(
                installed=state["installed"],
                live=state["live"],
                recorded=state["recorded"],
                pending=state["pending"] == "yes",
                rolled_back=state["rolled_back"] == "yes",
            )
        except KeyError as exc:
            raise FactProcessError(f"firewall state: no {exc.args[0]!r} line in {output!r}") from None


class SshdPorts(FactBase[list[int]]):
    """The ports sshd listens on, from its effective configuration (`sshd -T`)."""

    def requires_command(self) -> str:
        return "sshd"

    def command(self) -> str:
        # a connection spec, or `sshd -T` refuses a config with `Match LocalPort` blocks
        spec = "user=root,host=localhost,addr=127.0.0.1,laddr=127.0.0.1,lport=22"
        return f"sshd -T -C {spec} | awk '$1 == \"port\" {{print $2}}'"

    def default(self) -> list[int]:
        return []

    def process(self, output: list[str]) -> list[int]:
        return sorted({int(line) for line in output if line.strip().isdigit()})


class PveHostFirewall(FactBase[bool | None]):
    """Whether pve-firewall filters this Proxmox node's own traffic (`host.fw` option enable,
    default on); None where there is no Proxmox API (`pvesh`)."""

    def requires_command(self, node: str) -> str:
        return "pvesh"

    def command(self, node: str) -> str:
        return f"pvesh get /nodes/{node}/firewall/options --output-format json"

    def process(self, output: list[str]) -> bool:
        try:
            options: dict[str, Any] = json.loads("\n".join(output) or "{}")
        except json.JSONDecodeError as exc:
            raise FactProcessError(f"pvesh firewall options: not JSON ({exc})") from None
        return str(options.get("enable", 1)) == "1"
