"""Drift: a VM changed behind the toolkit's back is put back, and only what differs is touched.

One fleet for the module, created once; each test edits the cluster the way an operator in the
GUI would (the simulator's admin API writes the VM's config as if applied), runs phase 2, and
leaves the fleet converged again (checked by the deploy's own logic from a full read).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from brainall_ops.lab.pve_simulator.cluster import GIB
from brainall_ops.lab.pve_simulator.harness import Fleet, PyinfraRun, write_rolemap_copy

API = "vm-brainall-api"
WORKERS = "vm-brainall-workers"
MUTATING = ("POST", "PUT", "DELETE")


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet() as fleet:
        run = fleet.pyinfra()
        assert run.returncode == 0, run.output
        yield fleet


def vm(fleet: Fleet, name: str):
    (found,) = fleet.vms_named(name)
    return found


def assert_noop(fleet: Fleet) -> PyinfraRun:
    mark = fleet.simulator.mark()
    run = fleet.pyinfra()
    assert run.returncode == 0 and run.changed == 0, run.output
    assert [c for c in fleet.requests_since(mark) if c["method"] in MUTATING] == []
    return run


def mutations(fleet: Fleet, mark: int) -> list[tuple[str, str]]:
    return [
        (c["method"], c["path"].rsplit("/", 2)[-2] + "/" + c["path"].rsplit("/", 1)[-1])
        for c in fleet.requests_since(mark)
        if c["method"] in MUTATING
    ]


def test_cores_of_a_running_vm_wait_for_an_allowed_reboot(fleet: Fleet) -> None:
    api = vm(fleet, API)
    fleet.simulator.edit_vm(api.vmid, set={"cores": "4"})

    dry = fleet.pyinfra(dry=True)
    assert f"~ update {API} (VMID {api.vmid}) on prox-106: cores 4 → 16" in dry.stderr
    assert "pending until it reboots" in dry.stderr

    mark = fleet.simulator.mark()
    run = fleet.pyinfra()
    assert run.returncode == 0 and run.changed == 1, run.output
    assert mutations(fleet, mark) == [("POST", f"{api.vmid}/config")]  # no reboot unless allowed
    assert api.pending == {"cores": "16"} and api.config["cores"] == "4"
    assert "brainall_proxmox_allow_reboot=true" in run.stderr

    waiting = fleet.pyinfra()  # nothing more to do without a reboot: no change, and it says why
    assert waiting.changed == 0 and "cores pending until it reboots" in waiting.stderr

    mark = fleet.simulator.mark()
    reboot = fleet.pyinfra("--data", "brainall_proxmox_allow_reboot=true")
    assert reboot.returncode == 0 and reboot.changed == 1, reboot.output
    assert mutations(fleet, mark) == [("POST", "status/reboot")]
    assert api.config["cores"] == "16" and not api.pending
    assert fleet.left_to_do() == []


def test_memory_and_power_of_a_stopped_vm_are_corrected_without_reboot(fleet: Fleet) -> None:
    workers = vm(fleet, WORKERS)
    fleet.simulator.set_vm_status(workers.vmid, "stopped")
    fleet.simulator.edit_vm(workers.vmid, set={"memory": "4096"})
    mark = fleet.simulator.mark()
    run = fleet.pyinfra()
    assert run.returncode == 0 and run.changed == 1, run.output
    assert (
        f"~ update {WORKERS} (VMID {workers.vmid}) on prox-106: memory 4 → 16 GiB; start (it is stopped)" in run.stderr
    )
    assert mutations(fleet, mark) == [("POST", f"{workers.vmid}/config"), ("POST", "status/start")]
    assert workers.memory_bytes() == 16 * GIB and workers.status == "running"
    assert fleet.left_to_do() == []


def test_settings_outside_cluster_resources_are_found_by_the_deep_check(fleet: Fleet) -> None:
    api = vm(fleet, API)
    fleet.simulator.edit_vm(api.vmid, set={"ipconfig0": "ip=10.77.9.9/16,gw=10.77.0.1"})
    # the fast path trusts the spec tag: one read, nothing seen (the documented trade-off)
    assert_noop(fleet)
    mark = fleet.simulator.mark()
    deep = fleet.pyinfra("--data", "brainall_proxmox_deep_check=true")
    assert deep.returncode == 0 and deep.changed == 1, deep.output
    assert "ipconfig0 ip=10.77.9.9/16,gw=10.77.0.1 → ip=10.77.1.61/16,gw=10.77.0.1" in deep.stderr
    assert mutations(fleet, mark) == [("POST", f"{api.vmid}/config")]
    assert api.pending == {"ipconfig0": "ip=10.77.1.61/16,gw=10.77.0.1"}  # cloud-init: applies at next boot
    fleet.pyinfra("--data", "brainall_proxmox_allow_reboot=true", "--data", "brainall_proxmox_deep_check=true")
    assert api.config["ipconfig0"] == "ip=10.77.1.61/16,gw=10.77.0.1"
    assert fleet.left_to_do() == []


def test_a_bigger_disk_is_never_shrunk(fleet: Fleet) -> None:
    api = vm(fleet, API)
    volume = api.config["scsi0"].split(",")[0]
    fleet.simulator.edit_vm(api.vmid, set={"scsi0": f"{volume},size=120G"})
    run = assert_noop(fleet)
    assert "disks are never shrunk" in run.stderr
    assert api.boot_disk_size() == 120 * GIB


def test_a_vm_on_the_wrong_node_is_refused_before_any_change(fleet: Fleet, tmp_path: Path) -> None:
    # pin the DB to prox-106 in a copy of the role map: it already runs on prox-101
    rolemap = write_rolemap_copy(
        tmp_path / "rolemap.yaml",
        lambda data: next(v for v in data["vms"] if v["name"] == "vm-brainall-db").update(host="prox-106"),
    )
    fleet.write_inventory(rolemap)
    try:
        mark = fleet.simulator.mark()
        run = fleet.pyinfra()
        assert run.returncode == 1
        assert "vm-brainall-db: it exists on prox-101" in run.stderr and "placement puts it on prox-106" in run.stderr
        assert "Traceback" not in run.output
        assert [c for c in fleet.requests_since(mark) if c["method"] in MUTATING] == []
    finally:
        fleet.write_inventory()
