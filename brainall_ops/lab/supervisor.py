"""Per-host supervisor: what systemd-nspawn@.service does on a machine that has systemd.

Run as a standalone script (stdlib only, so it needs nothing from the venv or the checkout once
started):

    python3 supervisor.py --cgroup-procs FILE [--cgroup-procs FILE ...] -- systemd-nspawn ARGS...

- joins the host's own cgroups first, so nspawn and everything the container's systemd starts
  land there (with --keep-unit nspawn stays in its caller's cgroup; hosts sharing one cgroup
  trample each other's unit cgroups);
- runs nspawn and starts it again when the container reboots (nspawn exits with 133);
- on SIGTERM or SIGINT passes SIGTERM to nspawn, which powers the container off cleanly, and
  exits once nspawn has.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

EXIT_REBOOT = 133
# A container rebooting in a tight loop (broken boot) should not spin forever.
MAX_REBOOTS_PER_MINUTE = 10


def _say(message: str) -> None:
    print(f"=== supervisor {time.strftime('%H:%M:%S')}: {message}", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cgroup-procs", action="append", default=[], type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command after --")

    for procs in args.cgroup_procs:
        procs.write_text(f"{os.getpid()}\n")

    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    reboots: list[float] = []
    while True:
        _say(f"starting: {' '.join(command)}")
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        if stopping:  # the stop signal came before `child` was set
            child.send_signal(signal.SIGTERM)
        returncode = child.wait()
        if stopping or returncode != EXIT_REBOOT:
            _say(f"container exited with {returncode}")
            return 0 if stopping else returncode
        now = time.monotonic()
        reboots = [t for t in reboots if now - t < 60] + [now]
        if len(reboots) > MAX_REBOOTS_PER_MINUTE:
            _say(f"container rebooted {len(reboots)} times within a minute; giving up")
            return 1
        _say("container rebooted (exit 133); starting it again")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
