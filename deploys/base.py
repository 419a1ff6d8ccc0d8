"""The base system alone (admins, packages, time, sshd) — e.g. on the VMs once phase 2 made them."""

from pyinfra import host

from brainall_ops.base.deploy import base_system

if "storagebox" not in host.groups:
    base_system()
