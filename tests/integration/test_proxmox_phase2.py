"""Phase 2 against the Proxmox VE API simulator: `pyinfra INVENTORY deploys/phase2.py`, for real.

The simulator runs in this process (loopback HTTPS, schema-validated); pyinfra runs as its own
process, as an operator runs it. Proxmox itself cannot run here; the simulator is the Proxmox.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from urllib.parse import unquote

import pytest

from brainall_ops.lab.pve_simulator.cluster import GIB, MIB
from brainall_ops.lab.pve_simulator.harness import Fleet, PyinfraRun
from brainall_ops.rolemap.loader import load_rolemap

EXPECTED = {
    # name: (node, cores, memory MiB, disk GiB, lab address, tags)
    "vm-brainall-api": ("prox-106", 16, 32768, 100, "10.77.1.61", {"brainall", "app"}),
    "vm-brainall-workers": ("prox-106", 8, 16384, 50, "10.77.1.62", {"brainall", "app"}),
    "vm-brainall-nginx": ("prox-106", 4, 8192, 50, "10.77.1.63", {"brainall", "edge"}),
    "vm-brainall-db": ("prox-101", 8, 16384, 200, "10.77.1.71", {"brainall", "data"}),
}
MUTATING = ("POST", "PUT", "DELETE")


@pytest.fixture(scope="module")
def created() -> Iterator[tuple[Fleet, PyinfraRun]]:
    with Fleet() as fleet:
        run = fleet.pyinfra()
        assert run.returncode == 0, run.output
        yield fleet, run


def test_creates_the_four_vms_on_their_nodes_with_their_specs(created: tuple[Fleet, PyinfraRun]) -> None:
    fleet, run = created
    assert run.changed == 6 and run.errors == 0  # the four VMs, and the vzdump storage and job
    for name, (node, cores, memory, disk, address, tags) in EXPECTED.items():
        (vm,) = fleet.vms_named(name)
        config = vm.config
        assert vm.node == node
        assert vm.status == "running"
        assert not vm.pending, f"{name} has pending changes: {vm.pending}"
        assert int(config["cores"]) == cores and config.get("sockets", "1") == "1"
        assert vm.memory_bytes() == memory * MIB
        assert vm.boot_disk_size() == disk * GIB
        assert "virtio=" in config["net0"] and "bridge=vmbr1" in config["net0"]
        assert config["ipconfig0"] == f"ip={address}/16,gw=10.77.0.1"
        assert config["ciuser"] == "brainall"
        assert unquote(config["sshkeys"]).splitlines() == [fleet.public_key]
        assert config["onboot"] == "1"
        user_tags = {t for t in config["tags"].split(";") if not t.startswith("bo-")}
        assert user_tags == tags
        assert "lock" not in config
    # cloned from the node's own template, never linked: every disk is the VM's own volume
    assert all("base-" not in vm.config["scsi0"] for name in EXPECTED for vm in fleet.vms_named(name))


def test_each_started_vm_reached_the_hook_with_its_cloud_init_address(created: tuple[Fleet, PyinfraRun]) -> None:
    fleet, _ = created
    started = {e["name"]: e for e in fleet.hook.events() if e["event"] == "started"}
    assert set(started) == set(EXPECTED)
    for name, event in started.items():
        assert event["address"] == EXPECTED[name][4]
        assert event["ssh_keys"] == [fleet.public_key]


def test_creation_is_parallel_across_nodes_and_serial_on_a_node(created: tuple[Fleet, PyinfraRun]) -> None:
    fleet, _ = created
    tasks = [t for t in fleet.cluster.tasks.values() if t.ended_mono is not None]
    by_node: dict[str, list[tuple[float, float]]] = {}
    for task in tasks:
        by_node.setdefault(task.node, []).append((task.started_mono, task.ended_mono))
    assert set(by_node) == {"prox-101", "prox-106"}
    on_106 = sorted(by_node["prox-106"])
    for (_, end), (start, _) in pairwise(on_106):
        assert start >= end, "two Proxmox tasks ran at once on prox-106"
    first_101 = min(start for start, _ in by_node["prox-101"])
    last_106 = max(end for _, end in by_node["prox-106"])
    assert first_101 < last_106, "prox-101 waited for prox-106: nodes were not worked in parallel"


def test_second_run_changes_nothing_with_one_read(created: tuple[Fleet, PyinfraRun]) -> None:
    fleet, _ = created
    mark = fleet.simulator.mark()
    again = fleet.pyinfra()
    assert again.returncode == 0, again.output
    assert again.changed == 0 and again.errors == 0
    calls = fleet.requests_since(mark)
    assert [c for c in calls if c["method"] in MUTATING] == []
    # one read of the VMs, and of the vzdump storage and job (test_proxmox_vzdump.py)
    assert sorted((c["method"], c["path"]) for c in calls) == [
        ("GET", "/cluster/backup"),
        ("GET", "/cluster/resources"),
        ("GET", "/storage/storagebox"),
    ]
    assert fleet.secret not in again.output


def test_the_deploy_runs_no_command_and_leaves_other_hosts_alone(created: tuple[Fleet, PyinfraRun]) -> None:
    _, run = created
    assert run.results is not None
    operations = run.results["results"]["operations"]
    touched = {host for op in operations for host in op["success"] + op["error"] + op["no_change"]}
    assert touched == {"@fake/prox-101", "@fake/prox-106"}  # not prox-102 (no VM placed), not gpu
    # the inventory's hosts fail every shell command: a clean run proves none was run
    assert run.results["results"]["failed_hosts"] == []


def test_dry_run_shows_the_plan_and_changes_nothing() -> None:
    with Fleet() as fleet:
        mark = fleet.simulator.mark()
        dry = fleet.pyinfra(dry=True)
        assert dry.returncode == 0, dry.output
        calls = fleet.requests_since(mark)
        assert calls and all(c["method"] == "GET" for c in calls)
        for name, (node, cores, *_rest) in EXPECTED.items():
            assert f"+ create {name} on {node}" in dry.stderr
            assert f"{cores} vCPU" in dry.stderr
        # the vzdump storage and job, op 1 (api and db, one per node), then workers, nginx
        assert len(dry.planned_changes) == 5
        assert fleet.vms_named("vm-brainall-api") == []


def test_built_in_rolemap_places_phase2_as_the_seed_says() -> None:
    # the placement the deploy uses is the planner's: the three app VMs on prox-106, the DB on prox-101
    from brainall_ops.planning.fleet import place_rolemap

    placement = {p.vm: p.host for p in place_rolemap(load_rolemap()).placements}
    assert placement == {name: node for name, (node, *_rest) in EXPECTED.items()}
