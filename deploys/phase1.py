"""Phase 1, preparation: the base system on every existing host (VMs get it after phase 2:
`pyinfra INVENTORY deploys/base.py --limit vms`), then the Storage Box
(and configs to Git)."""

from pyinfra import host

from brainall_ops.base.deploy import base_system
from brainall_ops.storage.deploy import config_git_backup, storage_clients

if "vms" not in host.groups and "storagebox" not in host.groups:
    base_system()
    storage_clients()  # a no-op on hosts the role map's storage section does not name
    config_git_backup()  # /etc to Git on the hosts with a box key (storage.config_git)
