"""The host-side steps of a commit-confirmed apply: valid shell, and a rollback file that restores.

The timer itself needs systemd (the lab test exercises it); here the rollback file is built the
way `arm_rollback` builds it and loaded in a private network namespace.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest

from brainall_ops.firewall import remote
from brainall_ops.firewall.diff import diff
from brainall_ops.firewall.operations import confirm_timeouts
from brainall_ops.firewall.policy import compile_policy
from brainall_ops.firewall.render import render_ruleset
from brainall_ops.rolemap import load_rolemap

RM = load_rolemap()
SCRIPTS = {
    "state": remote.STATE_SCRIPT,
    "live": remote.LIVE_SCRIPT,
    "validate": remote.validate_staged(),
    "arm": remote.arm_rollback(20),
    "apply": remote.apply_staged(),
    "confirm": remote.confirm(),
}
SAVE = (
    "{ echo 'table inet brainall'; echo 'delete table inet brainall'; "
    "nft list table inet brainall 2>/dev/null || true; }"
)


def netns(script: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    if shutil.which("unshare") is None:
        pytest.fail("unshare is missing: apt-get install -y util-linux")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run(["unshare", "-rn", "sh", "-c", script], input=stdin, text=True, capture_output=True, env=env)


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_scripts_are_valid_posix_sh(name: str) -> None:
    result = subprocess.run(["sh", "-n"], input=SCRIPTS[name], text=True, capture_output=True)
    assert result.returncode == 0, result.stderr


def test_the_save_step_in_arm_is_the_one_tested_here() -> None:
    assert SAVE in SCRIPTS["arm"].replace(" \\\n", " ")


def test_arm_sets_a_precise_timer_guarded_by_the_confirmation_lock() -> None:
    arm = SCRIPTS["arm"]
    assert "--on-active=20s" in arm and "--timer-property=AccuracySec=1s" in arm  # default accuracy: 1 min
    assert f"/usr/bin/flock {remote.LOCK}" in arm and f"[ -e {remote.CONFIRMED} ] ||" in arm
    assert f"nft -c -f {remote.ROLLBACK}.tmp" in arm  # an unloadable rollback file stops everything
    confirm = SCRIPTS["confirm"]
    assert f"/usr/bin/flock {remote.LOCK}" in confirm and f"[ ! -e {remote.ROLLED_BACK} ]" in confirm
    assert confirm.index("flock") < confirm.index(f"mv {remote.STAGED} ")  # installed for boot only once confirmed


def test_rollback_file_restores_the_previous_table_exactly() -> None:
    previous = render_ruleset(compile_policy(RM, "lab")["vm-brainall-db"])
    wrong = previous.replace("10.77.0.1", "10.77.9.9")
    script = (
        "set -e; d=$(mktemp -d); cat > $d/previous; "
        f"printf '%s' {shlex.quote(wrong)} > $d/wrong; "
        f"nft -f $d/previous; nft -s list table inet brainall > $d/before; {SAVE} > $d/rollback; "
        "nft -c -f $d/rollback; nft -f $d/wrong; nft -s list table inet brainall > $d/during; "
        "nft -f $d/rollback; nft -s list table inet brainall > $d/after; "
        "cmp $d/before $d/after && ! cmp -s $d/before $d/during && echo restored"
    )
    result = netns(script, previous)
    assert result.returncode == 0 and result.stdout.strip() == "restored", result.stderr


def test_rollback_without_a_previous_table_removes_ours() -> None:
    text = render_ruleset(compile_policy(RM, "lab")["gpu"])
    script = (
        "set -e; d=$(mktemp -d); cat > $d/new; "
        f"{SAVE} > $d/rollback; nft -f $d/new; nft list table inet brainall >/dev/null; "
        "nft -f $d/rollback; if nft list table inet brainall >/dev/null 2>&1; then echo still; else echo gone; fi"
    )
    result = netns(script, text)
    assert result.returncode == 0 and result.stdout.strip() == "gone", result.stderr


def test_live_script_output_parses() -> None:
    text = render_ruleset(compile_policy(RM, "lab")["bastion"])
    # the state lines need systemctl; leave them out here and check the listing part
    script = "set -e; nft -f /dev/stdin; " + remote.LIVE_SCRIPT.split('echo "#state"')[0] + 'echo "#state"; echo live=x'
    result = netns(script, text)
    assert result.returncode == 0, result.stderr
    from brainall_ops.firewall.live import parse_live

    live = parse_live(result.stdout)
    assert live.error is None and live.state == {"live": "x"}
    assert live.listing is not None and not diff(live.listing, text).changed
    absent = parse_live("#absent\n#state\ninstalled=-\nlive=-\n")
    assert absent.listing is None and absent.state["live"] == "-"


def test_confirmation_fits_well_inside_the_timer() -> None:
    for rollback_after_s in (10, 20, 60, 600):
        for paths in (1, 2):
            connect, limit = confirm_timeouts(rollback_after_s, paths)
            assert connect >= 2 and limit >= 2 * connect
            assert paths * limit <= max(0.6 * rollback_after_s, 8.0)


def test_state_lines_parse() -> None:
    state = remote.parse_state(["installed=abc", "live=-", "junk", "pending=no"])
    assert state == {"installed": "abc", "live": "-", "pending": "no"}
    assert re.search(r"live=\$\(nft -s list table inet brainall \| sha256sum", remote.STATE_SCRIPT)
