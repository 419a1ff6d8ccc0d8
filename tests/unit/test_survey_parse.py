"""The probes' parsers on real command output, and the probe scripts run for real on this machine."""

from __future__ import annotations

import json
import selectors
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from brainall_ops.survey import facts, parse
from brainall_ops.survey.parse import Outcome, ProbeOutputError

FIXTURES = Path(__file__).parent / "fixtures" / "survey"

PING_OK = """PING 10.77.1.1 (10.77.1.1) 56(84) bytes of data.

--- 10.77.1.1 ping statistics ---
5 packets transmitted, 5 received, 0% packet loss, time 820ms
rtt min/avg/max/mdev = 0.038/0.042/0.046/0.003 ms
"""
PING_REPLIES = """PING 10.77.1.6 (10.77.1.6) 56(84) bytes of data.
64 bytes from 10.77.1.6: icmp_seq=1 ttl=64 time=0.844 ms
64 bytes from 10.77.1.6: icmp_seq=2 ttl=64 time=0.812 ms
64 bytes from 10.77.1.6: icmp_seq=3 ttl=64 time=14.9 ms
64 bytes from 10.77.1.6: icmp_seq=4 ttl=64 time=0.851 ms
64 bytes from 10.77.1.6: icmp_seq=5 ttl=64 time=0.833 ms

--- 10.77.1.6 ping statistics ---
5 packets transmitted, 5 received, 0% packet loss, time 820ms
rtt min/avg/max/mdev = 0.812/3.648/14.900/5.626 ms
"""
PING_LOST = """PING 10.77.1.2 (10.77.1.2) 56(84) bytes of data.

--- 10.77.1.2 ping statistics ---
5 packets transmitted, 0 received, +5 errors, 100% packet loss, time 4090ms
"""
PING_PARTIAL = """--- 192.168.100.2 ping statistics ---
5 packets transmitted, 4 received, 20% packet loss, time 4006ms
rtt min/avg/max/mdev = 25.601/25.673/25.790/0.070 ms
"""
LSCPU = """Architecture:                            x86_64
CPU(s):                                  48
On-line CPU(s) list:                     0-47
Vendor ID:                               GenuineIntel
Model name:                              Intel(R) Xeon(R) Gold 5412U
Thread(s) per core:                      2
Core(s) per socket:                      24
Socket(s):                               1
"""
MEMINFO = """MemTotal:       131811908 kB
MemFree:        62914560 kB
MemAvailable:   125829120 kB
Buffers:          524288 kB
Cached:         61865984 kB
SwapCached:            0 kB
SReclaimable:     262144 kB
"""


def test_ping_summaries_to_latency_and_loss() -> None:
    ok = parse.parse_ping(PING_OK.splitlines(), 5)
    assert ok == {
        "method": "icmp",
        "sent": 5,
        "received": 5,
        "loss_pct": 0.0,
        "min_ms": 0.038,
        "avg_ms": 0.042,
        "max_ms": 0.046,
    }
    # one slow reply moves the mean past a 2 ms budget, not the median
    replies = parse.parse_ping(PING_REPLIES.splitlines(), 5)
    assert (replies["avg_ms"], replies["median_ms"], replies["max_ms"]) == (3.648, 0.844, 14.9)
    partial = parse.parse_ping(PING_PARTIAL.splitlines(), 5)
    assert (partial["avg_ms"], partial["loss_pct"]) == (25.673, 20.0)
    lost = parse.parse_ping(PING_LOST.splitlines(), 5)
    assert lost["received"] == 0 and lost["loss_pct"] == 100.0 and "avg_ms" not in lost and lost["reason"]
    unreachable = parse.parse_ping(["ping: connect: Network is unreachable"], 5)
    assert unreachable["loss_pct"] == 100.0 and unreachable["reason"] == "network unreachable"


def test_tcp_attempts_use_bash_stamps_and_count_failures_as_lost() -> None:
    lines = [
        "@try 0 1795388298.336024 1795388298.336524",
        "@tryrc=0",
        "@try 0 1795388298.340000 1795388298.341000",
        "@tryrc=0",
        "@tryrc=124",
    ]
    sample = parse.parse_timed_attempts(lines, 3, "tcp/22")
    assert sample["method"] == "tcp/22" and (sample["sent"], sample["received"]) == (3, 2)
    assert sample["min_ms"] == pytest.approx(0.5) and sample["max_ms"] == pytest.approx(1.0)
    assert sample["median_ms"] == pytest.approx(0.75)
    assert sample["loss_pct"] == pytest.approx(33.3)
    refused = parse.parse_timed_attempts(
        ["bash: connect: Connection refused", "@try 1 1.0 1.0001", "@tryrc=0"], 1, "tcp/22"
    )
    assert refused["received"] == 0 and refused["reason"] == "connection refused"


def test_lscpu_and_meminfo() -> None:
    cpu = parse.parse_cpu([*LSCPU.splitlines(), "@nproc=48"])
    assert cpu == {"model": "Intel(R) Xeon(R) Gold 5412U", "sockets": 1, "cores": 24, "threads": 48}
    # no lscpu: /proc/cpuinfo's model name and nproc
    assert parse.parse_cpu(["model name\t: AMD Ryzen 9 7950X3D 16-Core Processor", "@nproc=32"])["threads"] == 32
    with pytest.raises(ProbeOutputError):
        parse.parse_cpu(["@nproc=4"])
    memory = parse.parse_meminfo(MEMINFO.splitlines())
    assert memory["total_gb"] == pytest.approx(125.7, abs=0.1)
    assert memory["available_gb"] == 120.0 and memory["free_gb"] == 60.0
    assert memory["used_gb"] == pytest.approx(memory["total_gb"] - 120.0, abs=0.01)


def test_df_dd_and_fio() -> None:
    df = parse.parse_df(
        [
            "Filesystem     1024-blocks     Used Available Capacity Mounted on",
            "/dev/vda2 52428800 25165824 7025459 79% /",
        ]
    )
    assert df == [{"path": "/", "filesystem": "/dev/vda2", "total_gb": 50.0, "used_gb": 24.0, "free_gb": 6.7}]
    assert parse.parse_dd("268435456 bytes (268 MB, 256 MiB) copied, 0.223696 s, 1.2 GB/s") == pytest.approx(
        1.2, abs=0.01
    )
    with pytest.raises(ProbeOutputError):
        parse.parse_dd("dd: error writing '/var/tmp/x': No space left on device")
    write = parse.parse_fio((FIXTURES / "fio-write.json").read_text(), "write")
    read = parse.parse_fio((FIXTURES / "fio-read.json").read_text(), "read")
    assert write == pytest.approx(163281907 / 1e9) and read == pytest.approx(645277538 / 1e9)


def test_nvidia_pvesh_and_ceph() -> None:
    cards = parse.parse_nvidia(["NVIDIA RTX 6000 Ada Generation, 49140, 610, 570.195.03", "@cuda=CUDA Version: 12.8"])
    assert cards == [
        {
            "model": "NVIDIA RTX 6000 Ada Generation",
            "vram_mib": 49140,
            "vram_gb": 48.0,
            "vram_used_mib": 610,
            "driver": "570.195.03",
            "cuda": "12.8",
        }
    ]
    qemu = [
        {"vmid": 9020, "name": "bastion-lab", "status": "running", "maxmem": 17179869184, "mem": 2147483648, "cpus": 8},
        {"vmid": 101, "name": "VM-MX01", "status": "running", "maxmem": 4294967296, "cpus": 2},
        {"vmid": 150, "name": "old", "status": "stopped", "maxmem": 2147483648, "cpus": 1},
    ]
    storage = [
        {
            "storage": "local-lvm",
            "type": "lvmthin",
            "total": 1932735283200,
            "used": 40802189312,
            "avail": 1891933093888,
            "active": 1,
        },
        {"storage": "cephfs", "type": "cephfs", "active": 0},
    ]
    px = parse.parse_proxmox({"node": ["prox-101"], "qemu": [json.dumps(qemu)], "storage": [json.dumps(storage)]})
    assert [vm["name"] for vm in px["vms"]] == ["VM-MX01", "old", "bastion-lab"]  # by VMID
    assert px["vms"][2] == {"vmid": 9020, "name": "bastion-lab", "status": "running", "memory_gb": 16.0, "vcpu": 8}
    assert px["storages"] == [
        {"name": "local-lvm", "type": "lvmthin", "total_gb": 1800.0, "used_gb": 38.0, "free_gb": 1762.0}
    ]
    ceph = parse.parse_ceph_status((FIXTURES / "ceph-status-warn.json").read_text())
    assert ceph["status"] == "HEALTH_WARN"
    assert ceph["checks"] == [
        {"name": "POOL_TOO_MANY_PGS", "severity": "HEALTH_WARN", "message": "1 pools have too many placement groups"}
    ]
    assert ceph["osds"] == 3


def test_common_outcomes_absent_cut_and_failed() -> None:
    assert parse.common_outcome({"absent": ["no pvesh"]}, [], 20) == Outcome("absent", reason="no pvesh")
    cut = parse.common_outcome({"rc": ["124"]}, [], 20)
    assert cut is not None and cut.status == "timeout" and "20 s" in cut.reason
    failed = parse.common_outcome({"rc": ["1"]}, ["cat: /proc/meminfo: No such file"], 20)
    assert failed is not None and failed.status == "error" and "No such file" in failed.reason
    assert parse.common_outcome({"rc": ["0"]}, [], 20) is None
    assert parse.common_outcome({}, [], 20) == Outcome(
        "error", reason="the probe's output ended early (no exit status)"
    )


# --------------------------------------------------------------------------- the scripts, run here for real
def run_fact(fact: facts.SurveyFact, **kwargs: object) -> Outcome:
    """What pyinfra does with a fact, minus SSH: run its command with sh, hand stdout to process."""
    command = fact.command(**kwargs)  # type: ignore[attr-defined]
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr  # the scripts always exit 0: the status is in the output
    return fact.process(done.stdout.splitlines())


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 and 127.0.0.2 that accepts connections (and closes them)."""
    servers = []
    for address in ("127.0.0.1", "127.0.0.2"):
        server = socket.socket()
        server.bind((address, servers[0].getsockname()[1] if servers else 0))
        server.listen(64)
        server.setblocking(False)
        servers.append(server)
    stop = threading.Event()

    def serve() -> None:
        with selectors.DefaultSelector() as selector:
            for server in servers:
                selector.register(server, selectors.EVENT_READ)
            while not stop.is_set():
                for key, _ in selector.select(timeout=0.2):
                    try:
                        conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                        conn.close()
                    except OSError:
                        continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield servers[0].getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for server in servers:
        server.close()


def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # bound, never listened, now released: connecting is refused
    return port


def test_local_probes_measure_this_machine() -> None:
    system = run_fact(facts.System(), bound_s=10)
    assert system.ok and system.value["hostname"] == socket.gethostname()
    cpu = run_fact(facts.CPU(), bound_s=10)
    assert cpu.ok and cpu.value["threads"] >= 1 and cpu.value["model"]
    memory = run_fact(facts.Memory(), bound_s=10)
    assert memory.ok and 0 < memory.value["available_gb"] <= memory.value["total_gb"]
    disk = run_fact(facts.DiskSpace(), bound_s=10, path="/")
    assert disk.ok and disk.value["total_gb"] > 0


def test_missing_tools_are_absent_not_errors() -> None:
    expected = {
        facts.GPU(): "nvidia-smi",
        facts.Proxmox(): "pvesh",
    }
    for fact, tool in expected.items():
        if shutil.which(tool):
            pytest.fail(f"{tool} is installed on this machine: this test expects a plain Debian host")
        outcome = run_fact(fact, bound_s=10)
        assert outcome.status == "absent" and tool in outcome.reason


def test_disk_speed_measures_and_always_removes_its_file(tmp_path: Path) -> None:
    outcome = run_fact(facts.DiskSpeed(), bound_s=60, directory=str(tmp_path), size_mb=8)
    assert outcome.ok, outcome.reason
    assert outcome.value["write_gbps"] > 0 and outcome.value["read_gbps"] > 0 and outcome.value["size_mb"] == 8
    assert outcome.value["method"] in ("dd", "fio")
    assert list(tmp_path.iterdir()) == []
    missing = run_fact(facts.DiskSpeed(), bound_s=60, directory=str(tmp_path / "nope"), size_mb=8)
    assert missing.status == "skipped" and "no directory" in missing.reason


def test_a_command_that_hangs_is_cut_at_its_bound_on_the_host() -> None:
    script = f'echo "@bound=1"; {facts.bounded(1, "echo started; sleep 30")}'
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=20, check=False)
    markers, other = parse.split_markers(done.stdout.splitlines())
    assert other == ["started"]
    outcome = parse.common_outcome(markers, other, 1)
    assert outcome is not None and outcome.status == "timeout" and "1 s bound" in outcome.reason


def test_storage_box_reachability_reachable_and_refused(listener: int) -> None:
    reachable = run_fact(facts.StorageBoxReach(), bound_s=20, address="127.0.0.1", port=listener, tries=2, connect_s=3)
    assert reachable.ok and reachable.value["reachable"] is True and reachable.value["connect_ms"] >= 0
    port = closed_port()
    refused = run_fact(facts.StorageBoxReach(), bound_s=20, address="127.0.0.1", port=port, tries=2, connect_s=3)
    assert refused.ok and refused.value == {"port": port, "reachable": False, "reason": "connection refused"}


def raw_icmp_allowed() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    except PermissionError:
        return False
    return True


def test_icmp_echo_without_ping_measures_every_reply() -> None:
    if not raw_icmp_allowed():
        pytest.fail("the unit tests run as root (as CI does): raw ICMP sockets must be allowed")
    done = subprocess.run(
        [sys.executable, "-c", facts.ICMP_ECHO.read_text(), "3", "127.0.0.1", "127.0.0.2"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    _, blocks = parse.split_targets(done.stdout.splitlines())
    assert list(blocks) == ["127.0.0.1", "127.0.0.2"]
    for target in ("127.0.0.1", "127.0.0.2"):
        sample = parse.parse_timed_attempts(blocks[target], 3, "icmp/python3")
        assert (sample["sent"], sample["received"], sample["loss_pct"]) == (3, 3, 0.0)
        assert 0 <= sample["min_ms"] <= sample["median_ms"] <= sample["max_ms"] < 1000
    # what it prints for a name that does not resolve (not tried here: no DNS traffic from tests)
    unknown = parse.parse_timed_attempts(
        ["gpu.example: Name or service not known", "@try 1 0 0", "@try 1 0 0"], 2, "icmp/python3"
    )
    assert unknown["received"] == 0 and unknown["reason"] == "name does not resolve"


def test_latency_to_loopback_targets(listener: int) -> None:
    auto = run_fact(facts.Latency(), bound_s=20, targets=["127.0.0.1", "127.0.0.2"], count=3, port=listener)
    tcp = run_fact(facts.Latency(), bound_s=20, targets=["127.0.0.1"], count=3, port=listener, method="tcp")
    assert auto.ok and tcp.ok, (auto.reason, tcp.reason)
    # auto: ICMP with ping where installed, else with python3's raw socket (root), else a TCP
    # connect to the port; whichever this machine allows, every probe answers
    expected = "icmp" if shutil.which("ping") else ("icmp/python3" if raw_icmp_allowed() else f"tcp/{listener}")
    samples = [(auto, "127.0.0.1", expected), (auto, "127.0.0.2", expected), (tcp, "127.0.0.1", f"tcp/{listener}")]
    for outcome, target, method in samples:
        sample = outcome.value["targets"][target]
        assert sample["method"] == method
        assert (sample["sent"], sample["received"], sample["loss_pct"]) == (3, 3, 0.0)
        assert 0 <= sample["min_ms"] <= sample["avg_ms"] <= sample["max_ms"]
        assert sample["min_ms"] <= sample["median_ms"] <= sample["max_ms"]
    refused = run_fact(facts.Latency(), bound_s=20, targets=["127.0.0.1"], count=2, port=closed_port(), method="tcp")
    lost = refused.value["targets"]["127.0.0.1"]
    assert (lost["received"], lost["loss_pct"], lost["reason"]) == (0, 100.0, "connection refused")


# --------------------------------------------------------------------------- issue 23: what placement uses
def test_pvesm_status_and_lvs_thin_pools() -> None:
    storages = parse.parse_pvesm_status((FIXTURES / "pvesm-status.txt").read_text().splitlines())
    by_name = {s["name"]: s for s in storages}
    assert by_name["local-lvm"] == {
        "name": "local-lvm",
        "type": "lvmthin",
        "status": "active",
        "source": "pvesm",
        "total_gb": 1632.0,
        "used_gb": 64.0,
        "free_gb": 1568.0,
    }
    assert by_name["local"]["total_gb"] == 93.93 and by_name["box-vzdump"]["status"] == "inactive"
    with pytest.raises(ProbeOutputError, match="no header"):
        parse.parse_pvesm_status(["local dir active 1 2 3 1%"])
    pools = parse.parse_lvs_thin_pools((FIXTURES / "lvs-thin.txt").read_text().splitlines())
    assert pools == [
        {
            "name": "pve/data",
            "type": "lvmthin",
            "status": "active",
            "source": "lvs",
            "total_gb": 1632.0,
            "used_gb": 63.97,
            "free_gb": 1568.03,
        }
    ]
    with pytest.raises(ProbeOutputError, match="not a percentage"):
        parse.parse_lvs_thin_pools(["  pve|data|twi-aotz--|1752346656768|130.0"])


def test_vm_storage_fact_reads_pvesm_and_lvs_sections_and_says_when_pvesm_hung() -> None:
    pvesm = (FIXTURES / "pvesm-status.txt").read_text().splitlines()
    lvs = (FIXTURES / "lvs-thin.txt").read_text().splitlines()
    both = facts.VMStorage().process(
        ["@bound=20", "@@pvesm@@", *pvesm, "@pvesm_rc=0", "@@lvs@@", *lvs, "@lvs_rc=0", "@rc=0"]
    )
    assert both.ok and [s["name"] for s in both.value["storages"]] == ["box-vzdump", "local", "local-lvm", "pve/data"]
    hung = facts.VMStorage().process(["@bound=20", "@@pvesm@@", "@pvesm_rc=124", "@@lvs@@", *lvs, "@lvs_rc=0", "@rc=0"])
    assert hung.ok and hung.value["problems"] == ["pvesm status hung (cut)"]
    assert [s["name"] for s in hung.value["storages"]] == ["pve/data"]
    neither = facts.VMStorage().process(["@bound=20", "@@pvesm@@", "@pvesm_rc=2", "@rc=0"])
    assert neither.status == "error" and "pvesm status failed (rc 2)" in neither.reason
    absent = run_fact(facts.VMStorage(), bound_s=10)  # this machine is no Proxmox node
    assert absent.status == "absent" and "pvesm" in absent.reason


def test_lspci_shows_nvidia_cards_without_their_driver() -> None:
    lines = (FIXTURES / "lspci-k-a100.txt").read_text().splitlines()
    cards = parse.parse_lspci_gpus(lines)
    assert cards == [
        {
            "model": "NVIDIA GA100 [A100 PCIe 40GB]",
            "vram_gb": 40.0,
            "driver": None,
            "cuda": None,
            "source": "lspci",
            "pci_slot": "41:00.0",
            "kernel_driver": "nouveau",
        },
        {
            "model": "NVIDIA TU117 [GeForce GTX 1650]",
            "vram_gb": None,
            "driver": None,
            "cuda": None,
            "source": "lspci",
            "pci_slot": "c1:00.0",
            "kernel_driver": None,
        },
    ]
    outcome = facts.GPU().process(["@bound=20", "@source=lspci", *lines, "@rc=0"])
    assert outcome.ok and [c["model"] for c in outcome.value["cards"]] == [c["model"] for c in cards]
    none = facts.GPU().process(
        ["@bound=20", "@absent=no nvidia-smi (no NVIDIA GPU driver); lspci lists no NVIDIA device", "@rc=0"]
    )
    assert none.status == "absent" and "lspci lists no NVIDIA device" in none.reason


def test_identity_machine_id_and_global_addresses() -> None:
    lines = (FIXTURES / "ip-o-addr.txt").read_text().splitlines()
    identity = parse.parse_identity({"machine_id": ["0A1B2C3D4E5F40718293A4B5C6D7E8F9"]}, lines)
    # loopback, link-local and docker0 (172.17.0.1 on every Docker host) are no evidence of identity
    assert identity == {
        "machine_id": "0a1b2c3d4e5f40718293a4b5c6d7e8f9",
        "addresses": ["95.216.10.6", "2a01:4f9:3a:1234::2", "10.20.0.11"],
    }
    assert parse.parse_identity({"hostname_i": ["10.20.0.12 172.17.0.1 "]}, []) == {
        "machine_id": None,
        "addresses": ["10.20.0.12"],
    }
    with pytest.raises(ProbeOutputError, match="32 hex digits"):
        parse.parse_identity({"machine_id": ["uninitialized"]}, [])
    here = run_fact(facts.Identity(), bound_s=10)
    assert here.ok and here.value["machine_id"] == Path("/etc/machine-id").read_text().strip()
