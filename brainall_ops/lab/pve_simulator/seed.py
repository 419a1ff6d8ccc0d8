"""A simulated cluster shaped like the role map's fleet: its Proxmox nodes with their measured
RAM, a local-lvm thin pool per node, the cloud-init template on every node, and the VMs the
role map records as already running (so live budgets start from the measured numbers)."""

from __future__ import annotations

from brainall_ops.lab.pve_simulator.cluster import GIB, VM, Cluster, Node, Storage
from brainall_ops.rolemap.models import RoleMap

TEMPLATE_VMID_BASE = 9000
TEMPLATE_DISK = "3G"
# Existing VMs the role map names without sizes get these.
UNKNOWN_VM_VCPU = 2
UNKNOWN_VM_MEMORY_GB = 4


def template_config(cluster: Cluster, vmid: int, name: str, storage: str) -> dict[str, str]:
    return {
        "name": name,
        "template": "1",
        "ostype": "l26",
        "cores": "2",
        "sockets": "1",
        "memory": "2048",
        "cpu": "x86-64-v2-AES",
        "scsihw": "virtio-scsi-pci",
        "scsi0": f"{storage}:base-{vmid}-disk-0,size={TEMPLATE_DISK}",
        "ide2": f"{storage}:vm-{vmid}-cloudinit,media=cdrom",
        "boot": "order=scsi0",
        "serial0": "socket",
        "vga": "serial0",
        "agent": "1",
        "net0": f"virtio={cluster.random_mac()},bridge=vmbr0",
        "ipconfig0": "ip=dhcp",
        "smbios1": f"uuid={cluster.random_uuid()}",
        "vmgenid": cluster.random_uuid(),
        "meta": "creation-qemu=10.1.2,ctime=1763164800",
    }


def seed_from_rolemap(cluster: Cluster, rm: RoleMap, with_templates: bool = True) -> Cluster:
    """Fill `cluster` with the role map's Proxmox fleet (nodes, storage, templates, existing VMs)."""
    proxmox = rm.proxmox
    storage_name = proxmox.storage if proxmox else "local-lvm"
    bridge = proxmox.bridge if proxmox else "vmbr1"
    used_vmids = {vm.vmid for h in rm.proxmox_hosts for vm in (h.proxmox.existing_vms if h.proxmox else []) if vm.vmid}
    next_vmid = 100
    for index, host in enumerate(rm.proxmox_hosts):
        assert host.proxmox is not None
        node = host.proxmox.node
        existing: list[VM] = []
        for known in host.proxmox.existing_vms:
            vmid = known.vmid
            if vmid is None:
                while next_vmid in used_vmids:
                    next_vmid += 1
                vmid = next_vmid
                used_vmids.add(vmid)
            memory_mib = int((known.memory_gb or UNKNOWN_VM_MEMORY_GB) * 1024)
            existing.append(
                VM(
                    vmid=vmid,
                    node=node,
                    config={
                        "name": known.name,
                        "cores": str(known.vcpu or UNKNOWN_VM_VCPU),
                        "sockets": "1",
                        "memory": str(memory_mib),
                        "scsihw": "virtio-scsi-pci",
                        "scsi0": f"{storage_name}:vm-{vmid}-disk-0,size=32G",
                        "boot": "order=scsi0",
                        "net0": f"virtio={cluster.random_mac()},bridge={bridge}",
                        "onboot": "1",
                        "ostype": "l26",
                    },
                    status="running",
                    started_at=1763164800.0,
                )
            )
        used = host.measured.ram_used_gb
        if used is None:
            used = host.hardware.ram_gb - host.measured.ram_free_gb
        running_bytes = sum(vm.memory_bytes() for vm in existing)
        cluster.add_node(
            Node(
                name=node,
                cpus=host.hardware.threads,
                cores=host.hardware.cores,
                cpu_model=host.hardware.cpu_model,
                memory_total=int(host.hardware.ram_gb * GIB),
                memory_base_used=max(int(used * GIB) - running_bytes, 2 * GIB),
            )
        )
        for vm in existing:
            cluster.add_vm(vm)
        if with_templates and proxmox is not None:
            vmid = TEMPLATE_VMID_BASE + index
            cluster.add_vm(
                VM(vmid=vmid, node=node, config=template_config(cluster, vmid, proxmox.template, storage_name))
            )
        disk_used = host.measured.disk_used_gb or 0
        cluster.storages.setdefault(
            storage_name,
            Storage(
                storage_name,
                "lvmthin",
                shared=False,
                total=int(host.hardware.disk_gb * GIB),
                options={"thinpool": "data", "vgname": "pve"},  # the installer's local-lvm
            ),
        )
        # one thin pool per node, sized like the node's disk, its base use what the survey measured
        cluster.storages[storage_name].base_used = max(cluster.storages[storage_name].base_used, int(disk_used * GIB))
    # the installer's `local` (a directory on the root file system), with `import` for disk images
    cluster.add_storage(
        Storage(
            "local",
            "dir",
            shared=False,
            total=100 * GIB,
            content="backup,import,iso,snippets,vztmpl",
            options={"path": "/var/lib/vz"},
        )
    )
    return cluster
