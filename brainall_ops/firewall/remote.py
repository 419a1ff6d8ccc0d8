"""What runs on a host: the files of its firewall and the shell steps of a "commit confirmed" apply.

Commit confirmed, step by step (each a separate command, so pyinfra stops at the first failure):
  1. stage the new ruleset and check it with `nft -c -f` (nothing applied if it is refused);
  2. save the live table as a rollback file (checked with `nft -c` too) and arm a systemd timer
     that loads it after `rollback_after_s` seconds;
  3. load the new ruleset with `nft -f` (one transaction: all of it or none of it);
  4. (on the controller) open fresh SSH connections along the production path;
  5. confirm: under a lock shared with the timer's job, mark the attempt confirmed (unless the
     timer won), stop the timer, install the ruleset for boot and record its live listing.
If step 4 fails, nothing confirms: the host restores the previous table by itself.
"""

from __future__ import annotations

import shlex

from brainall_ops.firewall.policy import TABLE
from brainall_ops.firewall.render import REMOTE_DIR, RULESET

STAGED = f"{REMOTE_DIR}/brainall.nft.new"
ROLLBACK = f"{REMOTE_DIR}/rollback.nft"
LISTING = f"{REMOTE_DIR}/applied.listing"  # `nft -s list table` as confirmed: live drift shows against it
ROLLED_BACK = f"{REMOTE_DIR}/rolled-back"  # the timer's job restored the previous table
CONFIRMED = f"{REMOTE_DIR}/confirmed"  # this attempt was confirmed: the timer's job must do nothing
LOCK = f"{REMOTE_DIR}/.lock"
ROLLBACK_UNIT = "brainall-firewall-rollback"

LIST_TABLE = f"nft -s list table inet {TABLE}"

# Fact: one `key=value` per line. "-" where there is nothing.
STATE_SCRIPT = f"""\
digest() {{ if [ -f "$1" ]; then sha256sum < "$1" | cut -c1-64; else echo -; fi; }}
echo "installed=$(digest {RULESET})"
echo "recorded=$(digest {LISTING})"
if nft list table inet {TABLE} >/dev/null 2>&1; then
  echo "live=$({LIST_TABLE} | sha256sum | cut -c1-64)"
else
  echo "live=-"
fi
if systemctl is-active --quiet {ROLLBACK_UNIT}.timer; then echo "pending=yes"; else echo "pending=no"; fi
if [ -e {ROLLED_BACK} ]; then echo "rolled_back=yes"; else echo "rolled_back=no"; fi
"""

# `plan --live`: the live table as nft lists it (or a marker), then the state lines.
LIVE_SCRIPT = f"""\
if nft list table inet {TABLE} >/dev/null 2>&1; then {LIST_TABLE}; else echo "#absent"; fi
echo "#state"
{STATE_SCRIPT}"""


def validate_staged() -> str:
    return f"chmod 0600 {STAGED} && nft -c -f {STAGED}"


def arm_rollback(rollback_after_s: int) -> str:
    """Save what to go back to, then arm the timer. If an earlier attempt is still unconfirmed
    (its timer pending), the live table is not a confirmed one: keep that attempt's rollback file."""
    job = (
        f"[ -e {CONFIRMED} ] || {{ touch {ROLLED_BACK}; nft -f {ROLLBACK} && "
        f"logger -t brainall-firewall 'ruleset not confirmed within {rollback_after_s} s: previous table restored'; }}"
    )
    return f"""\
set -e
pending=no
if systemctl is-active --quiet {ROLLBACK_UNIT}.timer; then pending=yes; fi
systemctl stop {ROLLBACK_UNIT}.timer >/dev/null 2>&1 || true
systemctl reset-failed {ROLLBACK_UNIT}.timer {ROLLBACK_UNIT}.service >/dev/null 2>&1 || true
if [ "$pending" = no ] || [ ! -f {ROLLBACK} ]; then
  {{ echo 'table inet {TABLE}'; echo 'delete table inet {TABLE}'; nft list table inet {TABLE} 2>/dev/null || true; }} \
> {ROLLBACK}.tmp
  nft -c -f {ROLLBACK}.tmp
  mv {ROLLBACK}.tmp {ROLLBACK}
fi
rm -f {ROLLED_BACK} {CONFIRMED}
systemd-run --quiet --unit={ROLLBACK_UNIT} --description='BrainAll firewall: restore the previous ruleset' \
--on-active={rollback_after_s}s --timer-property=AccuracySec=1s \
/usr/bin/flock {LOCK} /bin/sh -c {shlex.quote(job)}
"""


def apply_staged() -> str:
    # nft -f is one transaction: if it fails, the live table is unchanged; go back to the last
    # confirmed one now (the rollback file) rather than leave the timer to do it later.
    return (
        f"nft -f {STAGED} || {{ status=$?; nft -f {ROLLBACK}; systemctl stop {ROLLBACK_UNIT}.timer; "
        f"echo 'nft -f refused the ruleset: the last confirmed one is in place' >&2; exit $status; }}"
    )


def confirm() -> str:
    return f"""\
if ! /usr/bin/flock {LOCK} /bin/sh -c '[ ! -e {ROLLED_BACK} ] && touch {CONFIRMED}'; then
  echo 'too late: the rollback timer already restored the previous ruleset (raise firewall.rollback_after_s?)' >&2
  exit 1
fi
systemctl stop {ROLLBACK_UNIT}.timer >/dev/null 2>&1 || true
mv {STAGED} {RULESET}
{LIST_TABLE} > {LISTING}.tmp && mv {LISTING}.tmp {LISTING}
"""


def parse_state(lines: list[str]) -> dict[str, str]:
    state: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.strip().partition("=")
        if sep:
            state[key] = value
    return state
