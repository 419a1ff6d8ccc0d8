"""Desired VM state, drift and the steps to converge: pure logic, no cluster."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from urllib.parse import quote

import pytest

from brainall_ops.errors import BrainallError
from brainall_ops.planning.fleet import place_rolemap
from brainall_ops.proxmox.spec import (
    GIB,
    MIB,
    ObservedVM,
    ProxmoxRefusal,
    VMDetail,
    VMSpec,
    boot_disk,
    config_changes,
    desired_net0,
    expand_path,
    locate,
    needs_detail,
    plan_vm,
    quick_drift,
    read_ssh_keys,
    split_property_string,
    steps_for,
    vm_specs,
)
from brainall_ops.rolemap.loader import load_rolemap

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBrainallOpsTestKeyOnlyForUnitTests test@brainall"


def spec(**changes: object) -> VMSpec:
    base = VMSpec(
        name="vm-brainall-api",
        host="prox-106",
        node="prox-106",
        vmid=None,
        template="debian-12-cloudinit",
        storage="local-lvm",
        cores=16,
        memory_mib=32768,
        disk_gib=100,
        bridge="vmbr1",
        address=IPv4Address("192.168.100.61"),
        prefix_length=24,
        gateway=IPv4Address("192.168.100.1"),
        ci_user="brainall",
        ssh_keys=(KEY,),
        tags=("brainall", "app"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def observed(s: VMSpec, **changes: object) -> ObservedVM:
    base = ObservedVM(
        vmid=106,
        name=s.name,
        node=s.node,
        status="running",
        maxcpu=s.cores,
        maxmem=s.memory_mib * MIB,
        maxdisk=s.disk_gib * GIB,
        tags=frozenset(s.all_tags),
        template=False,
        lock=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def matching_config(s: VMSpec) -> dict[str, object]:
    config: dict[str, object] = {
        **s.desired_config(net0_now="virtio=BC:24:11:00:00:01,bridge=vmbr1"),
        "cores": s.cores,
        "onboot": 1,
        "scsi0": f"local-lvm:vm-106-disk-0,size={s.disk_gib}G",
        "ide2": "local-lvm:vm-106-cloudinit,media=cdrom",
        "boot": "order=scsi0",
        "digest": "0" * 40,
    }
    return config


def test_desired_config_is_what_the_api_takes() -> None:
    s = spec()
    config = s.desired_config()
    assert config["memory"] == "32768" and config["cores"] == "16" and config["sockets"] == "1"
    assert config["net0"] == "virtio,bridge=vmbr1"
    assert config["ipconfig0"] == "ip=192.168.100.61/24,gw=192.168.100.1"
    assert config["sshkeys"] == quote(KEY, safe="")  # URL-encoded, as PVE wants (no '+', ' ' or '/')
    assert " " not in config["sshkeys"] and "+" not in config["sshkeys"]
    assert config["tags"].split(";") == sorted(["app", "brainall", s.spec_tag])
    assert config["onboot"] == "1"


def test_spec_tag_follows_the_settings_cluster_resources_cannot_show() -> None:
    s = spec()
    assert s.spec_tag.startswith("bo-") and len(s.spec_tag) == 13
    assert spec(cores=2, memory_mib=1024, disk_gib=10).spec_tag == s.spec_tag  # those it can show
    for other in (
        spec(bridge="vmbr0"),
        spec(address=IPv4Address("192.168.100.62")),
        spec(ci_user="root"),
        spec(ssh_keys=()),
        spec(onboot=False),
        spec(gateway=None),
    ):
        assert other.spec_tag != s.spec_tag


def test_net0_keeps_its_mac_and_options() -> None:
    assert desired_net0("vmbr1", "e1000=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1") == (
        "virtio=BC:24:11:AA:BB:CC,bridge=vmbr1,firewall=1"
    )
    assert split_property_string("virtio=BC:24:11:AA:BB:CC,bridge=vmbr1", "model") == {
        "model": "virtio",
        "macaddr": "BC:24:11:AA:BB:CC",
        "bridge": "vmbr1",
    }


def test_boot_disk_follows_the_boot_order_and_skips_cdroms() -> None:
    config = {
        "ide2": "local-lvm:vm-1-cloudinit,media=cdrom",
        "scsi0": "local-lvm:vm-1-disk-0,size=3G",
        "virtio0": "local-lvm:vm-1-disk-1,size=50G",
        "boot": "order=virtio0;scsi0",
    }
    assert boot_disk(config) == ("virtio0", 50 * GIB)
    del config["boot"]
    assert boot_disk(config) == ("scsi0", 3 * GIB)
    assert boot_disk({"ide2": "none,media=cdrom"}) is None


def test_a_matching_vm_is_unchanged_from_cluster_resources_alone() -> None:
    s = spec()
    vm = observed(s)
    assert quick_drift(s, vm) == []
    assert needs_detail(s, [vm]) is None
    plan = plan_vm(s, [vm])
    assert plan.action == "unchanged" and plan.symbol == "="


def test_quick_drift_names_what_differs() -> None:
    s = spec()
    vm = observed(s, maxcpu=4, maxmem=16 * GIB, maxdisk=3 * GIB, status="stopped", tags=frozenset({"brainall"}))
    assert quick_drift(s, vm) == [
        "cores 4 → 16",
        "memory 16 → 32 GiB",
        "disk 3 → 100 GiB",
        "network/cloud-init settings",
        "tags",
        "start (it is stopped)",
    ]
    plan = plan_vm(s, [vm])
    assert plan.action == "update" and plan.symbol == "~"
    assert plan.line().startswith("~ update vm-brainall-api (VMID 106) on prox-106: cores 4 → 16")


def test_missing_vm_is_created() -> None:
    plan = plan_vm(spec(), [])
    assert plan.action == "create"
    assert plan.line() == (
        "+ create vm-brainall-api on prox-106 (VMID from /cluster/nextid): 16 vCPU, 32 GiB RAM, 100 GiB disk, "
        "192.168.100.61/24 on vmbr1"
    )


@pytest.mark.parametrize(
    ("vms", "message"),
    [
        ([("vm-brainall-api", 106, "prox-101")], "it exists on prox-101 (VMID 106) but placement puts it on prox-106"),
        ([("vm-brainall-api", 106, "prox-106"), ("vm-brainall-api", 107, "prox-106")], "2 VMs have this name"),
    ],
)
def test_ambiguous_or_misplaced_vms_are_refused(vms: list[tuple[str, int, str]], message: str) -> None:
    s = spec()
    found = [observed(s, name=name, vmid=vmid, node=node) for name, vmid, node in vms]
    with pytest.raises(ProxmoxRefusal) as refused:
        locate(s, found)
    assert message in str(refused.value)


def test_a_pinned_vmid_held_by_another_vm_is_refused() -> None:
    s = spec(vmid=150)
    with pytest.raises(ProxmoxRefusal, match="pins VMID 150, which is 'vm-other' on prox-106"):
        locate(s, [observed(s, name="vm-other", vmid=150)])
    with pytest.raises(ProxmoxRefusal, match="exists as VMID 106, but the role map pins VMID 150"):
        locate(s, [observed(s)])


def test_templates_of_the_same_name_are_not_the_vm() -> None:
    s = spec()
    assert locate(s, [observed(s, template=True)]) is None


def test_config_changes_name_each_key_and_keep_the_rest() -> None:
    s = spec()
    config = matching_config(s)
    assert config_changes(s, config) == ({}, [], [])
    config.update(
        cores=8,
        memory="16384",
        net0="virtio=BC:24:11:00:00:01,bridge=vmbr0",
        ciuser="debian",
        ipconfig0="ip=dhcp",
        sshkeys="",
        onboot=0,
        vcpus=4,
    )
    changes, deletes, reasons = config_changes(s, config)
    assert changes == {
        "cores": "16",
        "memory": "32768",
        "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr1",
        "ipconfig0": "ip=192.168.100.61/24,gw=192.168.100.1",
        "ciuser": "brainall",
        "sshkeys": quote(KEY, safe=""),
        "onboot": "1",
    }
    assert deletes == ["vcpus"]
    assert "net0 virtio on vmbr0 → virtio on vmbr1" in reasons


def test_steps_for_a_fresh_clone() -> None:
    s = spec()
    clone_config = {
        "name": s.name,
        "cores": 2,
        "memory": "2048",
        "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
        "ipconfig0": "ip=dhcp",
        "scsi0": "local-lvm:vm-106-disk-0,size=3G",
        "boot": "order=scsi0",
    }
    vm = observed(s, status="stopped", maxcpu=2, maxmem=2048 * MIB, maxdisk=3 * GIB, tags=frozenset())
    steps = steps_for(s, vm, VMDetail(clone_config, frozenset()), allow_reboot=False)
    assert set(steps.config) == {"cores", "memory", "net0", "ipconfig0", "ciuser", "sshkeys", "tags", "onboot"}
    assert steps.grow_to_gib == 100 and steps.disk_key == "scsi0"
    assert steps.start and not steps.reboot and steps.pending_left == ()


def test_running_vm_changes_wait_for_a_reboot_unless_allowed() -> None:
    s = spec()
    config = {**matching_config(s), "cores": 4}
    vm = observed(s, maxcpu=4)
    held = steps_for(s, vm, VMDetail(config, frozenset()), allow_reboot=False)
    assert held.config == {"cores": "16"} and not held.reboot and held.pending_left == ("cores",)
    assert "rerun with --data brainall_proxmox_allow_reboot=true" in held.warnings[0]
    allowed = steps_for(s, vm, VMDetail(config, frozenset()), allow_reboot=True)
    assert allowed.reboot and allowed.pending_left == ()
    # already pending from an earlier run: nothing to set, only the reboot (or the reminder)
    pending = VMDetail(matching_config(s), frozenset({"cores"}))
    assert steps_for(s, vm, pending, allow_reboot=False).empty
    assert plan_vm(s, [vm], pending).action == "unchanged"
    assert plan_vm(s, [vm], pending, allow_reboot=True).reasons == ("reboot to apply cores",)
    # hot-pluggable keys apply at once: no reboot for a tag
    tags_only = steps_for(s, vm, VMDetail({**matching_config(s), "tags": "brainall"}, frozenset()), False)
    assert tags_only.config.keys() == {"tags"} and tags_only.pending_left == ()


def test_the_spec_tag_waits_with_the_changes_it_stands_for() -> None:
    # a running VM whose address changes: cloud-init goes pending; if the new spec tag applied at
    # once (tags are hot), the fast path would stop looking and never remind anyone
    old = spec(address=IPv4Address("192.168.100.99"))
    new = spec()
    config = matching_config(old)
    vm = observed(old)
    assert quick_drift(new, vm) == ["network/cloud-init settings"]
    held = steps_for(new, vm, VMDetail(config, frozenset()), allow_reboot=False)
    assert set(held.config) == {"ipconfig0"} and held.pending_left == ("ipconfig0",)
    # next run: the change is pending, the old tag still there: nothing to send, a reminder
    pending = VMDetail({**config, "ipconfig0": new.ipconfig0}, frozenset({"ipconfig0"}))
    again = steps_for(new, vm, pending, allow_reboot=False)
    assert again.empty and "ipconfig0 pending until it reboots" in again.warnings[0]
    # when the reboot is allowed, the new tag goes with it
    allowed = steps_for(new, vm, pending, allow_reboot=True)
    assert allowed.config == {"tags": ";".join(new.all_tags)} and allowed.reboot


def test_disks_are_never_shrunk() -> None:
    s = spec()
    config = {**matching_config(s), "scsi0": "local-lvm:vm-106-disk-0,size=120G"}
    steps = steps_for(s, observed(s, maxdisk=120 * GIB), VMDetail(config, frozenset()), False)
    assert steps.empty and "disks are never shrunk" in steps.warnings[0]


def test_vm_specs_from_the_built_in_rolemap(tmp_path: Path) -> None:
    rm = load_rolemap()
    vm_hosts = {p.vm: p.host for p in place_rolemap(rm).placements}
    production = {s.name: s for s in vm_specs(rm, "production", vm_hosts, [KEY])}
    lab = {s.name: s for s in vm_specs(rm, "lab", vm_hosts, [KEY])}
    db = production["vm-brainall-db"]
    assert (db.node, db.cores, db.memory_mib, db.disk_gib) == ("prox-101", 8, 16384, 200)
    assert db.ipconfig0 == "ip=192.168.100.71/24,gw=192.168.100.1"
    assert lab["vm-brainall-db"].ipconfig0 == "ip=10.77.1.71/16,gw=10.77.0.1"
    assert {s.node for s in production.values()} == {"prox-101", "prox-106"}


def test_ssh_keys_come_from_the_rolemap_and_key_files(tmp_path: Path) -> None:
    rm = load_rolemap()
    key_file = tmp_path / "id_ed25519.pub"
    key_file.write_text(KEY + "\n")
    assert read_ssh_keys(rm, "lab", {"BRAINALL_LAB_DIR": str(tmp_path)}) == (KEY,)
    with pytest.raises(BrainallError, match=r"proxmox.ssh_key_files: .*/nohome/.ssh/id_ed25519.pub: No such file"):
        read_ssh_keys(rm, "production", {"HOME": str(tmp_path / "nohome")})
    private = tmp_path / "id_ed25519"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nxxx\n-----END OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(BrainallError, match="not a public key file"):
        read_ssh_keys(
            rm.model_copy(
                update={
                    "proxmox": rm.proxmox.model_copy(  # type: ignore[union-attr]
                        update={"ssh_key_files": [str(private)]}
                    )
                }
            ),
            "production",
            {},
        )


def test_expand_path() -> None:
    env = {"HOME": "/home/op", "LAB": "/srv/lab"}
    assert expand_path("~/.ssh/k.pub", env) == "/home/op/.ssh/k.pub"
    assert expand_path("${LAB}/k.pub", env) == "/srv/lab/k.pub"
    assert expand_path("${NOPE:-/var/lib/x}/k.pub", env) == "/var/lib/x/k.pub"
    with pytest.raises(BrainallError, match=r"uses \$NOPE, which is not set"):
        expand_path("$NOPE/k.pub", env)
