"""Phase 2, infrastructure: the VMs of the role map on their Proxmox hosts.

pyinfra inventories/hel1.py deploys/phase2.py --limit proxmox
"""

from brainall_ops.proxmox.deploy import proxmox_vms

proxmox_vms()
