"""Readiness of OpenAI-compatible servers (vLLM): `/health` answers 200 and `/v1/models` lists the
served name; with `--unit`, the systemd unit is also `active`.

Standard library only: the deploy copies this file to the inference host, where it is the units'
ExecStartPost (a unit is only "started" once its model is loaded and served) and the migration
gate (Ollama is only stopped once every service is ready).

    probe.py check --endpoint NAME=URL [--unit NAME=UNIT] ...         one pass; JSON line each; exit 0 if all ready
    probe.py wait  --endpoint NAME=URL ... --timeout S [--note TEXT]  poll until all ready; exit 1 with why if not
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

HTTP_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 1.0


@dataclass
class Status:
    name: str
    url: str
    unit: str | None
    ready: bool
    reason: str

    def to_json(self) -> str:
        return json.dumps(
            {"name": self.name, "url": self.url, "unit": self.unit, "ready": self.ready, "reason": self.reason}
        )


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, response.read(1_000_000)
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def _unit_state(unit: str) -> str:
    try:
        result = subprocess.run(
            ["systemctl", "show", "--property=ActiveState", "--value", unit],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return result.stdout.strip() or "unknown"


def check(name: str, url: str, unit: str | None) -> Status:
    """One look at one endpoint; never raises."""
    base = url.rstrip("/")
    try:
        status, _ = _get(f"{base}/health")
        if status != 200:
            return Status(name, url, unit, False, f"/health answered {status}")
        status, body = _get(f"{base}/v1/models")
        if status != 200:
            return Status(name, url, unit, False, f"/v1/models answered {status}")
        try:
            listed = [str(item.get("id")) for item in json.loads(body).get("data", [])]
        except (ValueError, AttributeError, TypeError):
            return Status(name, url, unit, False, "/v1/models did not answer an OpenAI model list")
        if name not in listed:
            return Status(name, url, unit, False, f"/v1/models lists {listed}, not {name!r}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Status(name, url, unit, False, f"no answer ({reason})")
    if unit is not None:
        state = _unit_state(unit)
        if state != "active":
            return Status(name, url, unit, False, f"{unit} is {state}")
    return Status(name, url, unit, True, "ready")


def check_all(endpoints: list[tuple[str, str]], units: dict[str, str]) -> list[Status]:
    return [check(name, url, units.get(name)) for name, url in endpoints]


def wait_all(
    endpoints: list[tuple[str, str]], units: dict[str, str], timeout_s: float, interval_s: float = POLL_INTERVAL_S
) -> tuple[bool, list[Status], float]:
    """Poll until every endpoint is ready or `timeout_s` passes: (all ready, last statuses, seconds)."""
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        statuses = check_all(endpoints, units)
        if all(s.ready for s in statuses):
            return True, statuses, time.monotonic() - started
        if time.monotonic() >= deadline:
            return False, statuses, time.monotonic() - started
        time.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))


def _pairs(values: list[str], what: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name or not target:
            raise SystemExit(f"probe: {what} {value!r}: expected NAME=VALUE")
        pairs.append((name, target))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inference_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["check", "wait"])
    parser.add_argument("--endpoint", action="append", default=[], help="SERVED_NAME=URL (repeatable)")
    parser.add_argument("--unit", action="append", default=[], help="SERVED_NAME=UNIT that must be active")
    parser.add_argument("--timeout", type=float, default=60.0, help="wait: seconds before giving up")
    parser.add_argument("--interval", type=float, default=POLL_INTERVAL_S)
    parser.add_argument("--note", default="", help="wait: appended to the failure message")
    args = parser.parse_args(argv)
    endpoints = _pairs(args.endpoint, "--endpoint")
    if not endpoints:
        parser.error("at least one --endpoint")
    units = dict(_pairs(args.unit, "--unit"))

    if args.mode == "check":
        statuses = check_all(endpoints, units)
        for status in statuses:
            print(status.to_json())
        return 0 if all(s.ready for s in statuses) else 1

    ready, statuses, took = wait_all(endpoints, units, args.timeout, args.interval)
    if ready:
        print(f"ready after {took:.1f} s: {', '.join(s.name for s in statuses)}")
        return 0
    waiting = "; ".join(f"{s.name} at {s.url}: {s.reason}" for s in statuses if not s.ready)
    note = f"; {args.note}" if args.note else ""
    print(f"not ready after {args.timeout:g} s: {waiting}{note}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
