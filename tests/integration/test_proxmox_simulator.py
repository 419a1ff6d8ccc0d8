"""The Proxmox VE API simulator itself, through proxmoxer unchanged: what PVE does, it does.

Auth and permissions, PVE's parameter verification, schema-valid answers, UPIDs proxmoxer can
decode, task logs, the VM lock, the VMID race, pending changes, the checks PVE makes before a
clone/resize/destroy, persistence, and running as its own process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException
from proxmoxer.tools import Tasks

from brainall_ops.lab.pve_simulator import Cluster, Settings, Simulator, seed_from_rolemap
from brainall_ops.lab.pve_simulator.hooks import LabHook, RecordingHook
from brainall_ops.rolemap.loader import REPO_ROOT, load_rolemap

TOKEN = "brainall-ops@pve!deploy"
SECRET = "5f0c5a5e-6f3e-4d1b-9a4c-2d7f3b1e8c90"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    cluster = seed_from_rolemap(
        Cluster(Settings(task_seconds=0.02, lock_wait_s=0.3), hook=RecordingHook(tmp_path / "events.jsonl")),
        load_rolemap(),
    )
    cluster.add_token(TOKEN, SECRET)
    with Simulator(cluster, tls_dir=tmp_path / "tls") as simulator:
        yield simulator


def api(sim: Simulator, secret: str = SECRET) -> ProxmoxAPI:
    host, port = sim.url.removeprefix("https://").split(":")
    user, name = TOKEN.split("!")
    return ProxmoxAPI(host, port=int(port), user=user, token_name=name, token_value=secret, verify_ssl=str(sim.ca_file))


def wait(px: ProxmoxAPI, upid: str) -> dict:
    status = Tasks.blocking_status(px, upid, timeout=10, polling_interval=0.02)
    assert status is not None, f"{upid} did not finish"
    return status


def clone(px: ProxmoxAPI, name: str, node: str = "prox-106", template: int = 9001) -> int:
    vmid = int(px.cluster.nextid.get())
    status = wait(px, px.nodes(node).qemu(template).clone.post(newid=vmid, name=name, full=1, storage="local-lvm"))
    assert status["exitstatus"] == "OK", status
    return vmid


def error_of(call) -> ResourceException:
    with pytest.raises(ResourceException) as info:
        call()
    return info.value


def test_token_auth_and_permission_checks(sim: Simulator) -> None:
    assert requests.get(f"{sim.url}/api2/json/version", verify=sim.ca_file, timeout=10).status_code == 401
    assert error_of(lambda: api(sim, "wrong").version.get()).status_code == 401
    sim.add_token("auditor@pve!ro", "ro-secret", {"/": ["VM.Audit", "Sys.Audit"]})
    host, port = sim.url.removeprefix("https://").split(":")
    auditor = ProxmoxAPI(
        host, port=int(port), user="auditor@pve", token_name="ro", token_value="ro-secret", verify_ssl=str(sim.ca_file)
    )
    assert auditor.nodes("prox-106").qemu(9001).config.get()["template"] == 1
    denied = error_of(lambda: auditor.nodes("prox-106").qemu(9001).clone.post(newid=700, name="x"))
    assert denied.status_code == 403 and "Permission check failed (/vms/9001, VM.Clone)" in str(denied)


def test_parameters_are_verified_as_pve_does(sim: Simulator) -> None:
    px = api(sim)
    unknown = error_of(lambda: px.nodes("prox-106").qemu(9001).config.post(bogus=1))
    assert unknown.status_code == 400 and unknown.content == "Parameter verification failed."
    assert "bogus" in unknown.errors and "not defined in schema" in unknown.errors["bogus"]
    missing = error_of(lambda: px.nodes("prox-106").qemu(9001).clone.post(name="x"))
    assert missing.errors == {"newid": "property is missing and it is not optional"}
    not_encoded = error_of(lambda: px.nodes("prox-106").qemu(9001).config.put(sshkeys="ssh-ed25519 AAAA x"))
    assert "invalid urlencoded string" in not_encoded.errors["sshkeys"]
    bad_net = error_of(lambda: px.nodes("prox-106").qemu(9001).config.put(net0="virtio,bridge=vmbr1,speed=9"))
    assert "net0" in bad_net.errors
    assert error_of(lambda: px.nodes("prox-106").qemu(9001).foo.get()).status_code == 501


def test_answers_match_the_schema_and_upids_decode(sim: Simulator) -> None:
    px = api(sim)
    for call in (
        px.version.get,
        px.nodes.get,
        px.cluster.resources.get,
        px.nodes("prox-101").status.get,
        px.nodes("prox-101").qemu.get,
        px.nodes("prox-101").storage.get,
        px.nodes("prox-101").qemu(9000).config.get,
        px.nodes("prox-101").qemu(9000).status.current.get,
        px.nodes("prox-101").tasks.get,
    ):
        call()  # an answer off the declared shape would be a 500 "simulator bug"
    vmid = clone(px, "vm-test")
    assert px.nodes("prox-106").qemu(vmid).config.get()["name"] == "vm-test"
    upids = [t["upid"] for t in px.nodes("prox-106").tasks.get(vmid=9001)]
    decoded = Tasks.decode_upid(upids[0])
    assert decoded["node"] == "prox-106" and decoded["type"] == "qmclone" and decoded["user"] == "brainall-ops@pve"
    log = Tasks.decode_log(px.nodes("prox-106").tasks(upids[0]).log.get())
    assert "create full clone of drive scsi0" in log and log.endswith("TASK OK")
    assert all(r["status"] == 200 for r in sim.requests())


def test_a_task_holds_the_vm_lock(sim: Simulator) -> None:
    px = api(sim)
    vmid = clone(px, "vm-locked")
    sim.add_fault(kind="task_slow", task_type="resize", seconds=1.0)
    upid = px.nodes("prox-106").qemu(vmid).resize.put(disk="scsi0", size="10G")
    time.sleep(0.1)
    blocked = error_of(lambda: px.nodes("prox-106").qemu(vmid).config.put(cores=4))
    assert blocked.status_code == 500 and "can't lock file '/var/lock/qemu-server/lock-" in blocked.content
    assert wait(px, upid)["exitstatus"] == "OK"
    px.nodes("prox-106").qemu(vmid).config.put(cores=4)
    assert px.nodes("prox-106").qemu(vmid).config.get()["cores"] == 4


def test_the_vmid_race_between_two_clones(sim: Simulator) -> None:
    px = api(sim)
    sim.add_fault(kind="task_slow", task_type="qmclone", seconds=0.5)
    vmid = int(px.cluster.nextid.get())
    assert int(px.cluster.nextid.get()) == vmid  # nothing reserved: both clients get the same id
    first = px.nodes("prox-106").qemu(9001).clone.post(newid=vmid, name="vm-a", full=1)
    time.sleep(0.1)  # its task has written the placeholder config
    # the same node: clone_vm's early check sees the config file (HTTP 500, no task)
    same = error_of(lambda: px.nodes("prox-106").qemu(9001).clone.post(newid=vmid, name="vm-c", full=1))
    assert same.status_code == 500 and f"unable to create VM {vmid}: config file already exists" in same.content
    # another node: its check sees nothing there; pmxcfs refuses the rename, and the task fails
    second = wait(px, px.nodes("prox-101").qemu(9000).clone.post(newid=vmid, name="vm-b", full=1))
    assert second["exitstatus"] == (
        f"close (rename) atomic file '/etc/pve/nodes/prox-101/qemu-server/{vmid}.conf' failed: File exists"
    )
    (placeholder,) = [r for r in px.cluster.resources.get(type="vm") if r["vmid"] == vmid]
    assert placeholder["lock"] == "clone" and placeholder["name"] == f"VM {vmid}"  # no name before its disks
    wait(px, first)
    (done,) = [r for r in px.cluster.resources.get(type="vm") if r["vmid"] == vmid]
    assert "lock" not in done
    assert int(px.cluster.nextid.get()) == vmid + 1


def test_running_vm_changes_go_pending_until_reboot(sim: Simulator, tmp_path: Path) -> None:
    px = api(sim)
    vmid = clone(px, "vm-pending")
    vm = px.nodes("prox-106").qemu(vmid)
    wait(px, vm.config.post(ipconfig0="ip=10.77.1.90/16,gw=10.77.0.1", sshkeys=quote("ssh-ed25519 AAAA t", safe="")))
    wait(px, vm.status.start.post())
    wait(px, vm.config.post(cores=6, tags="b;a;b", onboot=1))
    assert vm.config.get()["cores"] == 6 and vm.config.get(current=1)["cores"] == 2
    assert vm.config.get(current=1)["tags"] == "a;b"  # tags apply at once, deduplicated and sorted
    assert {p["key"]: p.get("pending") for p in vm.pending.get() if "pending" in p} == {"cores": "6"}
    (entry,) = [r for r in px.cluster.resources.get(type="vm") if r["vmid"] == vmid]
    assert entry["maxcpu"] == 2  # /cluster/resources shows what runs
    wait(px, vm.status.reboot.post())
    assert vm.config.get(current=1)["cores"] == 6 and not [p for p in vm.pending.get() if "pending" in p]
    events = RecordingHook(tmp_path / "events.jsonl").events()
    assert [e["event"] for e in events] == ["started", "stopped", "started"]
    assert events[0]["address"] == "10.77.1.90" and events[0]["ssh_keys"] == ["ssh-ed25519 AAAA t"]


def test_pve_refusals_of_clone_resize_destroy(sim: Simulator) -> None:
    px = api(sim)
    cross = error_of(lambda: px.nodes("prox-101").qemu(9000).clone.post(newid=800, target="prox-106", full=1))
    assert "uses local storage" in cross.content
    template_start = wait(px, px.nodes("prox-101").qemu(9000).status.start.post())
    assert template_start["exitstatus"] == "you can't start a vm if it's a template"
    vmid = clone(px, "vm-refusals")
    vm = px.nodes("prox-106").qemu(vmid)
    assert wait(px, vm.resize.put(disk="scsi0", size="1G"))["exitstatus"] == "shrinking disks is not supported"
    wait(px, vm.status.start.post())
    assert "is running - destroy failed" in error_of(vm.delete).content
    wait(px, vm.status.stop.post())
    assert wait(px, vm.delete())["exitstatus"] == "OK"
    assert vmid not in [r["vmid"] for r in px.cluster.resources.get(type="vm")]


def test_start_fails_when_the_node_lacks_memory(sim: Simulator) -> None:
    px = api(sim)
    vmid = clone(px, "vm-huge", node="prox-101", template=9000)
    vm = px.nodes("prox-101").qemu(vmid)
    wait(px, vm.config.post(memory="120000"))
    failed = wait(px, vm.status.start.post())
    assert failed["exitstatus"] == "start failed: QEMU exited with code 1"
    log = Tasks.decode_log(px.nodes("prox-101").tasks(failed["upid"]).log.get())
    assert "Cannot allocate memory" in log


def test_lab_hook_finds_the_lab_api(tmp_path: Path) -> None:
    hook = LabHook(tmp_path / "lab")  # constructing it checks LabHost, add_host, start_host, stop_host, status
    assert callable(hook.lab.add_host) and hook.lab.LabHost("vm-x", "vm-x", "10.77.1.99").address == "10.77.1.99"


def test_runs_as_a_process_and_keeps_its_state(tmp_path: Path) -> None:
    state = tmp_path / "cluster.json"

    def start() -> tuple[subprocess.Popen[str], str, str, str]:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "brainall_ops.lab.pve_simulator",
                "--port",
                "0",
                "--state",
                str(state),
                "--task-seconds",
                "0.02",
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("BRAINALL_")},
        )
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        ca = process.stdout.readline().strip().removeprefix("ca_file=")
        token = process.stdout.readline().strip()
        secret_file = Path(process.stdout.readline().strip().removeprefix("token_secret_file="))
        assert url.startswith("https://127.0.0.1:") and token == f"token_id={TOKEN}"
        assert secret_file.stat().st_mode & 0o077 == 0
        return process, url, ca, secret_file.read_text().strip()

    def stop(process: subprocess.Popen[str]) -> None:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0

    process, url, ca, secret = start()
    try:
        assert Path(ca) == state.parent / (state.name + ".tls") / "ca.pem"
        host, port = url.removeprefix("https://").split(":")
        px = ProxmoxAPI(
            host, port=int(port), user="brainall-ops@pve", token_name="deploy", token_value=secret, verify_ssl=ca
        )
        vmid = int(px.cluster.nextid.get())
        wait(px, px.nodes("prox-106").qemu(9001).clone.post(newid=vmid, name="vm-kept", full=1))
    finally:
        stop(process)
    assert process.stdout is not None and secret not in process.stdout.read()

    process, url, ca, secret = start()
    try:
        host, port = url.removeprefix("https://").split(":")
        px = ProxmoxAPI(
            host, port=int(port), user="brainall-ops@pve", token_name="deploy", token_value=secret, verify_ssl=ca
        )
        assert [r["name"] for r in px.cluster.resources.get(type="vm") if r["vmid"] == vmid] == ["vm-kept"]
    finally:
        stop(process)
