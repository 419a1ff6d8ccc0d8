"""The lab runtime against the real machine: hosts boot, talk, stay fenced in, and go away cleanly.

Runs as root on the CI machine with the session `lab` fixture (tests/integration/lab_fixture.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from brainall_ops.lab import BRIDGE_NAME, NFT_TABLE, LabHost, add_host, down, lab_hosts, start_host, status, stop_host
from brainall_ops.lab.system import mounts_under, processes_owned_by_lab
from tests.integration import lab_fixture
from tests.integration.lab_fixture import Lab, resets_lab

pytestmark = pytest.mark.lab
lab = lab_fixture.lab  # the session fixture (one lab for the whole session, however it is loaded)

HOST_NAMES = [host.name for host in lab_hosts(None)]
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _bridge_exists() -> bool:
    return Path("/sys/class/net", BRIDGE_NAME).exists()


def _nft_table_exists() -> bool:
    return subprocess.run(["nft", "list", "table", "inet", NFT_TABLE], capture_output=True).returncode == 0


def _lab_cgroups() -> list[Path]:
    return [h / "brainall-lab" for h in CGROUP_ROOT.iterdir() if (h / "brainall-lab").exists()]


def _recorded_state(lab: Lab) -> dict:
    return json.loads((lab.state_dir / "state.json").read_text())


def _parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _assert_only_recorded_processes(lab: Lab) -> None:
    """Every process carrying the lab's mark is one this lab recorded (or its supervisors' nspawn)."""
    state = _recorded_state(lab)
    supervisors = {h["supervisor"]["pid"] for h in state["hosts"].values()}
    recorded = supervisors | {state["apt_proxy"]["pid"], state["lxcfs"]["pid"]}
    owned = dict(processes_owned_by_lab())
    assert set(owned.values()) == {str(lab.state_dir)}
    strays = {pid for pid in owned if pid not in recorded and _parent_pid(pid) not in supervisors}
    assert not strays, f"lab processes nobody recorded: {strays}"
    assert recorded <= set(owned)


def _assert_lab_answers(lab: Lab) -> None:
    for name in lab.names:
        host = lab.host(name)
        assert host.check_output("hostname") == lab.spec(name).hostname
        assert host.run("systemctl is-system-running").stdout.strip() == "running", name


# --- a running lab ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOST_NAMES)
def test_host_answers_ssh_with_its_hostname_and_running_systemd(lab: Lab, name: str) -> None:
    host = lab.host(name)
    spec = lab.spec(name)
    assert host.check_output("hostname") == spec.hostname
    assert host.run("systemctl is-system-running").stdout.strip() == "running"
    assert f"{spec.address}/16" in host.check_output("ip -brief -4 address show dev host0")
    hosts_file = host.file("/etc/hosts").content_string
    for other in lab.hosts:
        assert f"{other.address} {other.hostname}" in hosts_file
    # lxcfs gives each host its own uptime (pyinfra's reboot check depends on it)
    assert float(host.check_output("cut -d' ' -f1 /proc/uptime")) < float(Path("/proc/uptime").read_text().split()[0])
    assert host.user("root").exists


def test_hosts_have_distinct_machine_ids_and_host_keys(lab: Lab) -> None:
    machine_ids = {lab.host(name).check_output("cat /etc/machine-id") for name in lab.names}
    host_keys = {lab.host(name).check_output("cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1] for name in lab.names}
    assert len(machine_ids) == len(lab.names)
    assert len(host_keys) == len(lab.names)


def test_hosts_reach_each_other_by_name_over_the_bridge(lab: Lab) -> None:
    for name in lab.names:
        others = " ".join(other for other in lab.names if other != name)
        probe = lab.host(name).run(
            f'for h in {others}; do timeout 3 bash -c "</dev/tcp/$h/22" || echo "unreachable: $h"; done'
        )
        assert probe.rc == 0 and "unreachable" not in probe.stdout, f"{name}: {probe.stdout}{probe.stderr}"


def test_traffic_off_the_lab_is_dropped_by_the_guard(lab: Lab) -> None:
    drops_before = status(lab.state_dir).guard_drops["lab to outside the lab"]
    # 192.0.2.1 is TEST-NET-1: never a real peer, and the guard drops the SYN on arrival anyway
    attempt = lab.host(lab.names[0]).run("timeout 3 bash -c '</dev/tcp/192.0.2.1/80'")
    assert attempt.rc != 0
    assert status(lab.state_dir).guard_drops["lab to outside the lab"] > drops_before


def test_lab_reaches_only_the_apt_proxy_on_this_machine(lab: Lab) -> None:
    # a service of this machine listening on the bridge address, other than the proxy
    with socket.create_server(("10.77.0.1", 0)) as server:
        port = server.getsockname()[1]
        attempt = lab.host(lab.names[0]).run(f"timeout 3 bash -c '</dev/tcp/10.77.0.1/{port}'")
    assert attempt.rc != 0
    assert lab.host(lab.names[0]).run("timeout 3 bash -c '</dev/tcp/10.77.0.1/3142'").rc == 0


def test_apt_works_through_the_proxy_and_only_for_debian(lab: Lab) -> None:
    host = lab.host(lab.names[0])
    update = host.run("timeout 180 apt-get update")
    assert update.rc == 0, update.stderr
    assert "http://deb.debian.org/debian bookworm InRelease" in update.stdout
    # the proxy refuses anything but Debian's archives, so it is no way out of the lab
    refused = host.run(
        "http_proxy=http://10.77.0.1:3142 timeout 20 python3 -c "
        "\"import urllib.request; urllib.request.urlopen('http://example.com/')\""
    )
    assert refused.rc != 0 and "403" in refused.stderr


def test_stop_host_and_start_host_keep_its_disk(lab: Lab) -> None:
    name, witness = lab.names[-1], lab.names[0]
    lab.host(name).run_expect([0], "echo kept > /root/stop-start-marker")

    stop_host(lab.state_dir, name)
    stopped = {h.name: h for h in status(lab.state_dir).hosts}
    assert not stopped[name].running and not stopped[name].ssh_port_open
    assert all(h.running for n, h in stopped.items() if n != name)
    assert lab.host(witness).run(f"timeout 3 bash -c '</dev/tcp/{name}/22'").rc != 0

    boot = start_host(lab.state_dir, name)
    assert boot.system_state == "running"
    host = lab.host(name)
    assert host.check_output("cat /root/stop-start-marker") == "kept"
    assert host.check_output("hostname") == lab.spec(name).hostname
    assert lab.host(witness).run(f"timeout 3 bash -c '</dev/tcp/{name}/22'").rc == 0


def test_reboot_inside_a_host_brings_it_back(lab: Lab) -> None:
    name = lab.names[1]
    host = lab.host(name)
    supervisor_before = _recorded_state(lab)["hosts"][name]["supervisor"]["pid"]
    machine_id = host.check_output("cat /etc/machine-id")
    uptime_before = float(host.check_output("cut -d' ' -f1 /proc/uptime"))
    # detached, so the SSH session ends before the host goes down (as pyinfra's server.reboot does)
    host.run_expect([0], "(sleep 1 && systemctl reboot) </dev/null >/dev/null 2>&1 &")

    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, f"{name} did not come back from a reboot within 60s"
        time.sleep(0.5)
        try:
            uptime = float(host.check_output("cut -d' ' -f1 /proc/uptime"))
        except (RuntimeError, AssertionError, ValueError):  # down or still booting
            continue
        if uptime < uptime_before:
            break
    assert host.run("systemctl is-system-running --wait").stdout.strip() == "running"
    assert host.check_output("cat /etc/machine-id") == machine_id
    # nspawn exited 133 and the same supervisor started it again
    assert _recorded_state(lab)["hosts"][name]["supervisor"]["pid"] == supervisor_before
    assert "container rebooted (exit 133)" in Path(lab.state_dir, "hosts", name, "console.log").read_text()
    assert {h.name: h.running for h in status(lab.state_dir).hosts}[name]


# --- changing or rebuilding the lab (these run last: see lab_fixture) ---------------------------


@resets_lab
def test_add_host_joins_a_running_lab(lab: Lab) -> None:
    new = LabHost(
        name="vm-lab-test",
        hostname="vm-lab-test.lab",
        address="10.77.1.99",
        ssh_port=23,
        extra_addresses=("10.77.201.99",),  # not the firewall tests' outside address (.200.99)
    )
    boot = add_host(lab.state_dir, new)
    assert boot.system_state == "running"

    host = lab.host(new.name)  # through ssh_config: port 23, strict host key checking
    assert host.check_output("hostname") == new.hostname
    assert "10.77.201.99/16" in host.check_output("ip -brief -4 address show dev host0")
    witness = lab.host(lab.names[0])
    assert new.address in witness.file("/etc/hosts").content_string
    assert witness.run(f"timeout 3 bash -c '</dev/tcp/{new.name}/22'").rc == 0
    assert witness.run("timeout 10 bash -c '</dev/tcp/10.77.201.99/23'").rc == 0


@resets_lab
def test_down_removes_everything_up_made_and_is_repeatable(lab: Lab) -> None:
    recorded = _recorded_state(lab)
    result = down(lab.state_dir)
    assert result.guard_drops.get("routed out of the lab") == 0

    assert not _bridge_exists()
    assert not _nft_table_exists()
    assert _lab_cgroups() == []
    assert mounts_under(lab.state_dir) == []
    assert not list(processes_owned_by_lab())
    assert not (lab.state_dir / "state.json").exists()
    for name, record in recorded["hosts"].items():
        assert not Path(record["dir"]).exists(), name
    # the rootfs and the SSH key are kept for the next up
    assert Path(recorded["rootfs"], "usr/bin/python3").exists()
    assert (lab.state_dir / "id_ed25519").exists()

    again = down(lab.state_dir)
    assert again.removed == ()

    lab.reset()
    _assert_lab_answers(lab)


@resets_lab
def test_up_over_a_running_lab_gives_a_fresh_lab(lab: Lab) -> None:
    lab.host(lab.names[0]).run_expect([0], "touch /root/from-before")
    first = _recorded_state(lab)
    lab.reset()
    second = _recorded_state(lab)
    assert first["lab_id"] != second["lab_id"]
    assert not lab.host(lab.names[0]).file("/root/from-before").exists
    _assert_lab_answers(lab)
    _assert_only_recorded_processes(lab)


@resets_lab
@pytest.mark.parametrize("lose_the_record", [False, True], ids=["record-kept", "record-lost"])
def test_up_recovers_after_a_killed_run(lab: Lab, lose_the_record: bool) -> None:
    recorded = _recorded_state(lab)
    # what a killed CI job leaves: supervisors, proxy and lxcfs SIGKILLed; containers (now
    # orphaned), mounts, cgroups, bridge and nft table all still there
    for pid in [h["supervisor"]["pid"] for h in recorded["hosts"].values()] + [
        recorded["apt_proxy"]["pid"],
        recorded["lxcfs"]["pid"],
    ]:
        os.kill(pid, signal.SIGKILL)
    if lose_the_record:  # killed before it could write state.json, or run with another state dir
        (lab.state_dir / "state.json").unlink()
    assert mounts_under(lab.state_dir / "hosts")
    assert _bridge_exists() and _nft_table_exists() and _lab_cgroups()

    lab.reset()

    _assert_lab_answers(lab)
    _assert_only_recorded_processes(lab)
    current = _recorded_state(lab)
    live_mounts = {str(m.mount_point) for m in mounts_under(lab.state_dir)}
    assert live_mounts == {h["mount"] for h in current["hosts"].values()} | {current["lxcfs"]["mount_point"]}
    cgroups = sorted(p.name for top in _lab_cgroups() for p in top.iterdir() if p.is_dir())
    assert cgroups == sorted(lab.names * len(_lab_cgroups()))
    lab_status = status(lab.state_dir)
    assert lab_status.apt_proxy and lab_status.lxcfs and lab_status.bridge and lab_status.nft_table
    assert all(h.running for h in lab_status.hosts)
