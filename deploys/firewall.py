"""Phase 2 firewall on every host and VM of the inventory (the Storage Box is skipped):
`pyinfra -y inventories/lab.py deploys/firewall.py --limit HOST`."""

from brainall_ops.firewall.deploy import firewall

firewall()
