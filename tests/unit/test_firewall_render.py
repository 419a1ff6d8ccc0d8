"""Rendered rulesets: every host of every environment passes `nft -c`, and nft lists them back as rendered.

nft runs in a private network namespace (`unshare -rn`: also works unprivileged), so nothing here
can touch this machine's own ruleset.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from brainall_ops.firewall.diff import diff
from brainall_ops.firewall.policy import compile_policy
from brainall_ops.firewall.render import render_ruleset, render_unit
from brainall_ops.rolemap import load_rolemap

RM = load_rolemap()
ENVIRONMENTS = ["production", *RM.environments]
CASES = [(env, name) for env in dict.fromkeys(ENVIRONMENTS) for name in compile_policy(RM, env)]


def in_private_netns(script: str, stdin: str) -> subprocess.CompletedProcess[str]:
    for tool in ("unshare", "nft"):
        if shutil.which(tool) is None and not shutil.which(tool, path="/usr/sbin:/sbin"):
            pytest.fail(f"{tool} is missing: apt-get install -y nftables util-linux")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run(["unshare", "-rn", "sh", "-c", script], input=stdin, text=True, capture_output=True, env=env)


def test_cases_cover_the_whole_fleet_in_both_environments() -> None:
    assert {env for env, _ in CASES} == {"production", "lab"}
    assert len(CASES) == 2 * 9


@pytest.mark.parametrize(("environment", "name"), CASES, ids=[f"{e}-{n}" for e, n in CASES])
def test_ruleset_passes_nft_check(environment: str, name: str) -> None:
    text = render_ruleset(compile_policy(RM, environment)[name])
    result = in_private_netns("nft -c -f -", text)
    assert result.returncode == 0, result.stderr
    assert text.startswith("#!/usr/sbin/nft -f\n")
    assert "table inet brainall {" in text and "policy drop;" in text


def test_nft_check_can_fail() -> None:
    text = render_ruleset(compile_policy(RM, "lab")["vm-brainall-db"]).replace("tcp dport 5432", "tcp dport 5432x")
    result = in_private_netns("nft -c -f -", text)
    assert result.returncode != 0 and "5432x" in result.stderr


@pytest.mark.parametrize("name", ["bastion", "vm-brainall-db", "prox-101"])
def test_loaded_ruleset_lists_back_as_rendered_and_replaces_atomically(name: str) -> None:
    """What `plan --live` relies on: nft's listing of a loaded ruleset diffs empty against the
    rendering. And loading twice replaces our table while another table stays untouched."""
    text = render_ruleset(compile_policy(RM, "lab")[name])
    script = (
        "set -e; f=$(mktemp); cat > $f; nft add table inet neighbour; nft add chain inet neighbour keep; "
        "nft -f $f; nft -f $f; nft -s list table inet brainall; echo '#neighbour'; "
        "nft list table inet neighbour; rm -f $f"
    )
    result = in_private_netns(script, text)
    assert result.returncode == 0, result.stderr
    listing, _, neighbour = result.stdout.partition("#neighbour\n")
    assert not diff(listing, text).changed, diff(listing, text).lines()
    assert "chain keep" in neighbour


def test_rendering_is_byte_identical_across_calls() -> None:
    first = [render_ruleset(fw) for fw in compile_policy(RM, "lab").values()]
    again = [render_ruleset(fw) for fw in compile_policy(load_rolemap(), "lab").values()]
    assert first == again


def test_boot_unit_never_flushes_the_whole_ruleset() -> None:
    unit = render_unit()
    assert "ExecStart=/usr/sbin/nft -f /etc/brainall/firewall/brainall.nft" in unit
    assert "flush" not in unit.split("[Service]")[1]
    assert "Before=network-pre.target" in unit
