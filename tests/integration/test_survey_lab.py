"""`brainall-ops survey` and `roles` against the real lab hosts, through the installed console script.

- the survey measures every lab host of the fleet (CPU, RAM, disk, a bounded dd, the latency
  matrix, Storage Box reachability) and writes the measurements file; GPU and Proxmox probes
  report "absent" (the lab hosts have neither); every figure is checked against what the host
  itself says (testinfra) or against a connection made from that host right after;
- a host that stops answering mid-survey (its SSH session frozen, TCP still up: a hung host) is
  cut at the survey's bound and reported, its remaining probes are not run, and the survey goes on;
  a host that never answers (an unused lab address) is reported with the reason, not fatal;
- `roles` on the lab's measurements gives a valid proposal; `--write` refuses lab numbers for the
  production map unless told, and then edits only the measured: blocks of a copy.

Every Storage Box answer is made known by the test: a listener the test starts on the gpu host
(the box's own port 23 may or may not be configured by the storage task at this moment; the
default target is compared with a direct connection from the host instead).
Wall time: about 1-2 minutes (three surveys of the lab's hosts with a 16 MiB disk test).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from brainall_ops.rolemap import BUILTIN_ROLEMAP, REPO_ROOT, load_rolemap, parse_rolemap
from brainall_ops.survey.measurements import Survey, load_survey
from brainall_ops.survey.rolemap_edit import RoleMapEditError, edit_measured, measured_updates, validate_text
from brainall_ops.survey.roles import check_proposal, propose_roles
from tests.integration import lab_fixture
from tests.integration.lab_fixture import Lab

pytestmark = pytest.mark.lab
lab = lab_fixture.lab  # the session fixture (one lab for the whole session)

CLI = Path(sys.executable).with_name("brainall-ops")
INVENTORY = "inventories/lab.py"
PROBE_TIMEOUT = 20
HANG_PROBE_TIMEOUT = 4
GRACE = 5  # the survey's SSH-level bound is the probe's bound plus this (Bounds.grace_s)
FROZEN_HOST = "prox-102"
GHOST_ADDRESS = "10.77.1.199"  # on the lab bridge, and no lab host has it
LISTENER_PIDFILE = "/run/brainall-survey-test-listener.pid"
LISTENER = """
import os, socket, time
open({pidfile!r}, "w").write(str(os.getpid()))
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {port})); s.listen(64); s.settimeout(1)
end = time.monotonic() + 900  # never outlives the test run, even if its teardown never comes
while time.monotonic() < end:
    try:
        c, _ = s.accept(); c.close()
    except OSError:
        pass
"""


def fleet_hosts(lab: Lab) -> list[str]:
    """The lab hosts the survey measures by default: the role map's hosts (not the Storage Box)."""
    known = {h.name for h in load_rolemap().hosts}
    return [name for name in lab.names if name in known]


def env(lab: Lab) -> dict[str, str]:
    return {**os.environ, "BRAINALL_LAB_DIR": str(lab.state_dir), "COLUMNS": "200"}


def survey_cli(lab: Lab, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CLI.exists(), f"console script not installed next to {sys.executable}"
    command = [str(CLI), "survey", "-i", INVENTORY, "-o", str(out), "--disk-test-mb", "16", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env(lab), timeout=400)


def connects(lab: Lab, source: str, address: str, port: int) -> tuple[bool, str]:
    """A TCP connection from `source` to address:port, made now: (connected, bash's error if not)."""
    result = lab.host(source).run(f"timeout 5 bash -c 'exec 3<>/dev/tcp/{address}/{port}' 2>&1; echo rc=$?")
    out = result.stdout.strip()
    return out.endswith("rc=0"), out


# One echo request, one reply awaited (an independent check of the survey's python3 ICMP).
ONE_ECHO = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(2)
body = struct.pack("!BBHHH", 8, 0, 0, 4242, 1)
c = sum(struct.unpack("!4H", body)); c = (c >> 16) + (c & 0xFFFF); c = ~(c + (c >> 16)) & 0xFFFF
s.sendto(struct.pack("!BBHHH", 8, 0, c, 4242, 1), (sys.argv[1], 0))
try:
    while True:
        data, (src, _) = s.recvfrom(1024)
        if src == sys.argv[1] and data[(data[0] & 15) * 4] == 0:
            sys.exit(0)
except OSError:
    sys.exit(1)
"""


def expected_method(lab: Lab, source: str) -> str:
    """The latency method the survey's auto choice makes on `source`."""
    host = lab.host(source)
    if host.exists("ping"):
        return "icmp"
    return "icmp/python3" if host.exists("python3") else "tcp/22"


def answering(lab: Lab, source: str, addresses: list[str], method: str) -> dict[str, bool]:
    """Which of `addresses` answer `source` now, checked the survey's way: ping, one ICMP echo
    from python3, or one TCP connect to port 22."""
    probe = {
        "icmp": 'ping -n -c 1 -W 1 "$t" >/dev/null 2>&1',
        "icmp/python3": f'python3 -c {shlex.quote(ONE_ECHO)} "$t"',
    }.get(method, "timeout 3 bash -c 'exec 3<>/dev/tcp/'\"$t\"'/22' 2>/dev/null")
    script = f'for t in {" ".join(addresses)}; do if {probe}; then echo "$t yes"; else echo "$t no"; fi; done'
    out = lab.host(source).check_output(script)
    return {line.split()[0]: line.split()[1] == "yes" for line in out.splitlines()}


@dataclass(frozen=True)
class Listener:
    host: str
    address: str
    port: int  # accepts connections
    closed_port: int  # nothing listens


@pytest.fixture(scope="module")
def listener(lab: Lab) -> Iterator[Listener]:
    """A TCP listener the test starts on the gpu host (a Python process it stops by its pid)."""
    host = lab.host("gpu")
    busy = {int(p) for p in re.findall(r":(\d+)\s", host.check_output("ss -Htln"))}
    port = next(p for p in range(23230, 23300) if p not in busy and p + 1 not in busy)
    code = LISTENER.format(port=port, pidfile=LISTENER_PIDFILE)
    host.check_output(f"rm -f {LISTENER_PIDFILE}; python3 -c {shlex.quote(code)} </dev/null >/dev/null 2>&1 &")
    try:
        deadline = time.monotonic() + 20
        while f":{port} " not in host.check_output("ss -Htln") + " ":
            assert time.monotonic() < deadline, f"the test listener on gpu:{port} did not start"
            time.sleep(0.2)
        yield Listener("gpu", lab.address("gpu"), port, port + 1)
    finally:
        host.run(f"kill $(cat {LISTENER_PIDFILE}) && rm -f {LISTENER_PIDFILE}")


@pytest.fixture(scope="module")
def measured(lab: Lab, listener: Listener, tmp_path_factory: pytest.TempPathFactory) -> tuple[Survey, str, Path]:
    # The generated lab inventory must address the hosts where the lab runs them.
    import runpy

    inventory = dict(runpy.run_path(str(REPO_ROOT / INVENTORY))["all"])
    for name in fleet_hosts(lab):
        assert inventory[name]["ssh_hostname"] == lab.address(name), (
            f"{INVENTORY} addresses {name} at {inventory[name]['ssh_hostname']}, the lab runs it at "
            f"{lab.address(name)}: regenerate the inventory or fix the lab's host list"
        )
    out = tmp_path_factory.mktemp("survey") / "lab.yaml"
    result = survey_cli(
        lab, out, "--probe-timeout", str(PROBE_TIMEOUT), "--storagebox", f"{listener.address}:{listener.port}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return load_survey(out), result.stdout, out


def expected_problems(lab: Lab, name: str, survey: Survey) -> dict[str, str]:
    """The errors a host's measurements may carry on this lab at this moment: only Ceph's, where a
    Ceph CLI and cluster config exist (another task's cluster may be down), and only if `ceph
    status` fails when the test runs it too."""
    h = survey.hosts[name]
    if "ceph" not in h.errors:
        return {}
    host = lab.host(name)
    configured = host.exists("ceph") and host.file("/etc/ceph/ceph.conf").exists
    direct = host.run("timeout 25 ceph status --connect-timeout 17 -f json") if configured else None
    return {"ceph": h.errors["ceph"]} if direct is not None and direct.rc != 0 else {}


def test_survey_measures_every_lab_host_and_writes_the_file(lab: Lab, measured) -> None:
    survey, stdout, out = measured
    names = fleet_hosts(lab)
    assert list(survey.hosts) == names
    assert (survey.environment, survey.reference_host, survey.rolemap) == (
        "lab",
        "gpu",
        "inventories/brainall-v2.yaml",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", survey.measured_at)
    problems = 0
    for name in names:
        h = survey.hosts[name]
        host = lab.host(name)
        assert h.answered and h.errors == expected_problems(lab, name, survey), (name, h.errors)
        problems += len(h.errors)
        assert h.address == lab.address(name)
        assert h.system is not None and h.system.hostname == host.check_output("hostname")
        assert h.system.virtualization == host.check_output("systemd-detect-virt || true")
        assert h.cpu is not None and h.cpu.threads == int(host.check_output("nproc --all"))
        meminfo = dict(re.findall(r"^(\w+):\s+(\d+) kB", host.file("/proc/meminfo").content_string, re.M))
        assert h.memory is not None
        assert h.memory.total_gb == pytest.approx(int(meminfo["MemTotal"]) / 1024**2, abs=0.01)
        df_total_kib = int(host.check_output("df -P -k / | awk 'NR==2 {print $2}'"))
        assert h.disk is not None and h.disk.path == "/"
        assert h.disk.total_gb == pytest.approx(df_total_kib / 1024**2, abs=0.01)
        assert h.disk_speed is not None and h.disk_speed.size_mb == 16
        assert h.disk_speed.method == ("fio" if host.exists("fio") else "dd")
        assert h.disk_speed.write_gbps > 0 and h.disk_speed.read_gbps > 0
        # The lab hosts have no GPU and are no Proxmox nodes: "absent", with the reason, never an
        # error (unless another task put a stand-in nvidia-smi there: then it is measured).
        if host.exists("nvidia-smi"):
            names_seen = host.check_output("nvidia-smi --query-gpu=name --format=csv,noheader").splitlines()
            assert h.gpu is not None and [card.model for card in h.gpu] == names_seen
        else:
            assert h.gpu is None and "nvidia-smi" in h.absent["gpu"]
        assert h.proxmox is None and "pvesh" in h.absent["proxmox"]
        assert h.vm_storage is None and "pvesm" in h.absent["vm_storage"]
        assert h.identity is not None and h.identity.machine_id == host.check_output("cat /etc/machine-id")
        assert lab.address(name) in h.identity.addresses
        if not host.exists("ceph"):
            assert h.absent["ceph"] == "no ceph command"
        # the disk test's file and the latency probe's directory are gone
        leftovers = host.run("ls -d /var/tmp/.brainall-survey-* /tmp/.brainall-survey-* 2>/dev/null").stdout
        assert leftovers.strip() == ""
    assert f"measurements written to {out} ({len(names)} hosts, {problems} problems" in stdout


def test_the_latency_matrix_covers_every_pair_as_the_hosts_see_each_other(lab: Lab, measured) -> None:
    survey, stdout, _ = measured
    names = fleet_hosts(lab)
    count = survey.bounds.ping_count
    for source in names:
        method = expected_method(lab, source)
        assert set(survey.latency[source]) == set(names) - {source}
        targets = [t for t in names if t != source]
        answers = answering(lab, source, [lab.address(t) for t in targets], method)
        for target in targets:
            sample = survey.latency[source][target]
            assert sample.method == method
            if answers[lab.address(target)]:
                assert (sample.sent, sample.received, sample.loss_pct) == (count, count, 0), (source, target)
                assert sample.min_ms is not None and 0 <= sample.min_ms <= sample.avg_ms <= sample.max_ms
                assert sample.median_ms is not None and sample.min_ms <= sample.median_ms <= sample.max_ms
            else:
                assert sample.received == 0 and sample.loss_pct == 100 and sample.reason, (source, target)
    assert "Latency, ms (loss %)" in stdout and "latency method: " in stdout


def test_storage_box_reachability_is_what_each_host_sees(lab: Lab, listener: Listener, measured) -> None:
    survey, _, _ = measured
    assert survey.storagebox is not None
    assert (survey.storagebox.address, survey.storagebox.port) == (listener.address, listener.port)
    for name, h in survey.hosts.items():
        assert h.storagebox is not None
        reachable, said = connects(lab, name, listener.address, listener.port)
        assert h.storagebox.reachable is reachable, (name, said)
        if reachable:
            assert h.storagebox.connect_ms is not None and h.storagebox.connect_ms >= 0
        else:
            assert h.storagebox.reason


def test_default_storage_box_target_reports_reachable_or_why_not(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "gpu.yaml"
    result = survey_cli(lab, out, "--limit", "gpu", "--disk-test-mb", "0", "--probe-timeout", str(PROBE_TIMEOUT))
    assert result.returncode == 0, result.stdout + result.stderr
    survey = load_survey(out)
    box = lab.spec("storagebox")
    assert survey.storagebox is not None
    assert (survey.storagebox.address, survey.storagebox.port) == (box.address, 23)
    reach = survey.hosts["gpu"].storagebox
    reachable, said = connects(lab, "gpu", box.address, 23)
    assert reach is not None and reach.reachable is reachable, said
    if not reachable:
        assert reach.reason in said.lower() or reach.reason.startswith("timed out"), (reach.reason, said)
    assert survey.hosts["gpu"].errors == {} and "disk_speed" not in survey.hosts["gpu"].errors


def test_roles_on_the_lab_measurements_is_a_valid_proposal(lab: Lab, measured, tmp_path: Path) -> None:
    survey, _, out = measured
    rm = load_rolemap()
    proposal = propose_roles(survey, rm)
    assert check_proposal(proposal, survey, rm) == []
    assert {r.host for r in proposal.roles} == {*survey.hosts, "storagebox"}
    for r in proposal.roles:
        # derived from the numbers, or the role map's role kept, saying which number was missing
        assert r.reasons and (r.derived or r.reasons[-1].text == f"the role map's role {r.role!r} is kept"), r
    # the lab has no GPU and no Proxmox: the proposal says so instead of pretending
    if not any(h.gpu for h in survey.hosts.values()):
        assert "no host has a GPU: no host gets inference" in proposal.warnings
    for name in ("prox-101", "prox-106", "prox-102"):
        assert f"{name}: the role map says Proxmox node, the survey found none (no pvesh (not a Proxmox VE node))" in (
            proposal.warnings
        )
        # the lab's latencies are real, and a loaded machine can push one past the budget
        latency = survey.latency["gpu"][name].typical_ms
        if latency is None:
            expected: tuple[str, ...] = (rm.host(name).role,)  # unmeasured: kept
        elif latency > rm.placement.latency_budget_ms:
            expected = ("backup",)
        else:
            # roles follow from where the VMs land (issue 23): a near node with none is spare
            expected = ("application", "data", "spare")
        assert proposal.role_of(name).role in expected, (name, latency)
        assert proposal.role_of(name).vms == tuple(p.vm for p in proposal.plan if p.host == name)

    result = subprocess.run(
        [str(CLI), "roles", "-m", str(out)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Role proposal (latency budget 2 ms from gpu)" in result.stdout

    # --write: lab numbers never land in the production map by accident; told to, only measured: changes
    copy = tmp_path / "fleet.yaml"
    copy.write_text(BUILTIN_ROLEMAP.read_text())
    refused = subprocess.run(
        [str(CLI), "roles", "-m", str(out), "--rolemap", str(copy), "--write", "--yes"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1 and "measured in the 'lab' environment" in refused.stderr
    assert copy.read_text() == BUILTIN_ROLEMAP.read_text()
    written = subprocess.run(
        [str(CLI), "roles", "-m", str(out), "--rolemap", str(copy), "--write", "--yes", "--allow-non-production"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    # --write never writes a map `validate` refuses (issue 23): the lab's numbers (this machine's RAM,
    # shared by every lab host) may leave the VMs nowhere; then it says so and writes nothing
    try:
        validate_text(edit_measured(BUILTIN_ROLEMAP.read_text(), measured_updates(survey, rm)), "fleet.yaml")
    except RoleMapEditError:
        assert written.returncode == 1 and "would fail validate" in written.stderr, written.stderr
        assert copy.read_text() == BUILTIN_ROLEMAP.read_text()
        return
    assert written.returncode == 0, written.stderr
    new = parse_rolemap(copy.read_text(), "fleet.yaml")
    bastion = survey.hosts["bastion"]
    assert new.host("bastion").measured.ram_free_gb == round(bastion.memory.available_gb, 1)
    assert new.host("bastion").measured.disk_free_gb == round(bastion.disk.free_gb, 1)
    old_lines = set(BUILTIN_ROLEMAP.read_text().splitlines())
    changed = [line for line in copy.read_text().splitlines() if line not in old_lines]
    assert changed and all(
        re.fullmatch(r"      (latency_from_gpu_ms|packet_loss_pct|disk_\w+_gb(ps)?|ram_\w+_gb): [0-9.]+", line)
        for line in changed
    ), changed


# --------------------------------------------------------------------------- a host that stops answering
def _survey_connection_port(survey_pid: int, address: str) -> int:
    """The local port of the survey process's SSH connection to address:22 (from ss, by pid)."""
    ss = subprocess.run(
        ["ss", "-Htnp", "state", "established", "dst", f"{address}:22"], capture_output=True, text=True, check=True
    ).stdout
    for line in ss.splitlines():
        if f"pid={survey_pid}," in line:
            return int(line.split()[2].rpartition(":")[2])
    raise AssertionError(f"no SSH connection of the survey (pid {survey_pid}) to {address}: {ss!r}")


def _freeze_ssh_session(lab: Lab, host: str, client_port: int) -> list[int]:
    """SIGSTOP the sshd processes that serve one connection (the survey's) on `host`: the host
    stops answering on it while TCP stays up, as a hung machine does. Returns their pids."""
    ss = lab.host(host).check_output(f"ss -Htnp state established sport = :22 dport = :{client_port}")
    pids = sorted({int(p) for p in re.findall(r"pid=(\d+)", ss)})
    assert pids, f"no sshd serving port {client_port} on {host}: {ss!r}"
    lab.host(host).check_output("kill -STOP " + " ".join(map(str, pids)))
    return pids


def test_a_host_that_stops_answering_mid_survey_is_cut_at_its_bound_and_reported(
    lab: Lab,
    listener: Listener,
    tmp_path: Path,
) -> None:
    # The lab inventory plus a host nobody runs (an unused lab address on the bridge): it never answers.
    assert GHOST_ADDRESS not in {address for host in lab.hosts for address in host.addresses}
    inventory = tmp_path / "lab-and-ghost.py"
    inventory.write_text(
        (REPO_ROOT / INVENTORY).read_text()
        + f"\nall.append(('ghost', {{**_LAB_SSH, 'ssh_hostname': '{GHOST_ADDRESS}', 'ssh_port': 22}}))\n"
    )
    out = tmp_path / "hang.yaml"
    command = [
        str(CLI),
        "survey",
        "-i",
        str(inventory),
        "-o",
        str(out),
        "--disk-test-mb",
        "8",
        "--ping-count",
        "2",
        "--probe-timeout",
        str(HANG_PROBE_TIMEOUT),
        "--storagebox",
        f"{listener.address}:{listener.port}",
    ]
    survey = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT, env=env(lab)
    )
    frozen: list[int] = []
    lines: list[str] = []
    watchdog = threading.Timer(300, survey.kill)  # the read loop below ends even if the survey never does
    watchdog.start()
    try:
        assert survey.stdout is not None
        for line in survey.stdout:
            lines.append(line)
            if line.startswith(f"{FROZEN_HOST} connect: ok"):
                # Hold the survey still while its session on the host is frozen, so the host
                # stops answering before any of its probes can finish.
                os.kill(survey.pid, signal.SIGSTOP)
                try:
                    port = _survey_connection_port(survey.pid, lab.address(FROZEN_HOST))
                    frozen = _freeze_ssh_session(lab, FROZEN_HOST, port)
                finally:
                    os.kill(survey.pid, signal.SIGCONT)
        survey.wait(timeout=300)
    finally:
        watchdog.cancel()
        if survey.poll() is None:
            survey.kill()
            survey.wait()
        if frozen:
            lab.host(FROZEN_HOST).run("kill -CONT " + " ".join(map(str, frozen)))
    output = "".join(lines)
    assert frozen, f"{FROZEN_HOST} never connected:\n{output}"
    assert survey.returncode == 0, output

    measured = load_survey(out)
    h = measured.hosts[FROZEN_HOST]
    bound = HANG_PROBE_TIMEOUT + GRACE
    cut = {p: e for p, e in h.errors.items() if e == f"no answer within {bound} s: cut at the survey's bound"}
    assert len(cut) == 1, h.errors
    (stopped_at,) = cut
    not_run = {p for p, e in h.errors.items() if e == f"not run: the host stopped answering during {stopped_at}"}
    assert not_run and set(h.errors) == {stopped_at, *not_run}
    assert f"{FROZEN_HOST} {stopped_at}: timeout no answer within {bound} s" in output
    # every other host was measured in full, and the run went on to write the file
    for name, other in measured.hosts.items():
        if name not in (FROZEN_HOST, "ghost"):
            assert other.answered and other.errors == expected_problems(lab, name, measured), (name, other.errors)
    assert f"measurements written to {out}" in output
    # the host that never answered is reported with why, not fatal either
    ghost = measured.hosts["ghost"]
    assert not ghost.answered and ghost.reason and ghost.errors == {}
    assert f"ghost connect: error {ghost.reason}" in output
    assert check_proposal(propose_roles(measured, load_rolemap()), measured, load_rolemap()) == []
