"""The phase 2 VMs as a pyinfra deploy: every VM of the role map on the Proxmox host placement
chose for it.

Run on an inventory from `brainall-ops inventory`: a Proxmox host carries
`brainall_proxmox_node`, `brainall_rolemap` (the role map, relative to the repository or
absolute) and `brainall_environment`. Hosts without `brainall_proxmox_node` get nothing from
this deploy, and no operation here runs a command on any host: the VM operations talk to the
Proxmox API from the controller. So in production::

    pyinfra inventories/hel1.py deploys/phase2.py --limit proxmox

Options, as pyinfra data (`--data KEY=VALUE`):

- `brainall_proxmox_allow_reboot=true`: reboot running VMs whose cores, memory or cloud-init
  changes PVE holds pending (off by default: a reboot is the operator's call);
- `brainall_proxmox_deep_check=true`: read every VM's config, not only those whose
  `/cluster/resources` entry differs (catches edits made in the GUI to net0 or cloud-init);
- `brainall_proxmox_rotate_box_password=true`: send the Storage Box password to the vzdump
  storage again (PVE never returns it, so a changed password cannot be detected otherwise).

Before its VMs, each Proxmox host gets the cloud-init template `proxmox.template` when it has none
(`operations.template`: built from `proxmox.template_image` through the API; a node without one
and without an image to build it from is refused with one line).

Before the VMs, the host that is the role map's `proxmox.api_host` also gets the cluster-wide
vzdump backup of `data.vzdump` (`brainall_ops.proxmox.vzdump`: the CIFS storage on the Storage
Box, then the job), once per cluster; it needs the box password only to create the storage or
rotate its password. They come first so that a VM's failure does not hold the backups back.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from pyinfra.api import OperationError, deploy
from pyinfra.context import host

from brainall_ops.errors import BrainallError
from brainall_ops.proxmox import operations, vzdump
from brainall_ops.proxmox.client import ConnectionSettings, connection_settings
from brainall_ops.proxmox.spec import TemplateSpec, VMSpec, read_ssh_keys, template_specs, vm_specs
from brainall_ops.proxmox.vzdump_spec import VzdumpSpec, vzdump_spec
from brainall_ops.shared.deploy_context import environment_for, rolemap_for
from brainall_ops.shared.secrets import PROXMOX_TOKEN


@dataclass(frozen=True)
class DeployContext:
    environment: str
    connection: ConnectionSettings
    specs: tuple[VMSpec, ...]
    vzdump: VzdumpSpec | None = None
    api_node: str | None = None  # the node of proxmox.api_host: where cluster-wide objects are managed
    templates: tuple[TemplateSpec, ...] = ()

    def template_on(self, node: str) -> TemplateSpec | None:
        return next((t for t in self.templates if t.node == node), None)

    def specs_on(self, node: str) -> list[VMSpec]:
        return [spec for spec in self.specs if spec.node == node]

    def slot_name(self, index: int) -> str:
        """The name of the `index`-th operation of every node. pyinfra runs a node's VMs one
        operation after another and the nodes side by side, so operation N is the N-th VM of
        each node; its name lists them all, the same on every host (pyinfra shows one name)."""
        nodes = dict.fromkeys(spec.node for spec in self.specs)
        names = [f"{specs[index].name} on {node}" for node in nodes if len(specs := self.specs_on(node)) > index]
        return "Proxmox VM " + ", ".join(names)


_contexts: dict[tuple[str, str], DeployContext] = {}
_contexts_lock = threading.Lock()


def deploy_context(host_data: object) -> DeployContext:
    """Role map, placement, VM specs and API settings: computed once per run, shared by hosts."""
    environment = environment_for(host_data)
    key = (str(getattr(host_data, "brainall_rolemap", "")), environment)
    with _contexts_lock:
        if key not in _contexts:
            from brainall_ops.planning.fleet import place_rolemap

            rm = rolemap_for(host_data)
            vm_hosts = {p.vm: p.host for p in place_rolemap(rm).placements}
            specs = vm_specs(rm, environment, vm_hosts, read_ssh_keys(rm, environment, os.environ))
            connection = connection_settings(rm, environment)
            if connection.backend == "https":
                PROXMOX_TOKEN.require()  # fail here, before any operation, when there is none
            api_host = rm.host(rm.proxmox.api_host) if rm.proxmox else None
            api_node = api_host.proxmox.node if api_host and api_host.proxmox else None
            templates = template_specs(rm, [spec.node for spec in specs])
            _contexts[key] = DeployContext(
                environment, connection, tuple(specs), vzdump_spec(rm, environment), api_node, tuple(templates)
            )
        return _contexts[key]


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes", "on")


@deploy("Proxmox VMs")
def proxmox_vms() -> None:
    node = host.data.get("brainall_proxmox_node")
    if not node:
        return  # not a Proxmox host
    try:
        context = deploy_context(host.data)
    except BrainallError as exc:
        raise OperationError(f"proxmox: {exc}") from None
    allow_reboot = _flag(host.data.get("brainall_proxmox_allow_reboot"))
    deep_check = _flag(host.data.get("brainall_proxmox_deep_check"))
    if context.vzdump is not None and node == context.api_node:
        spec = context.vzdump
        vzdump.vzdump_storage(
            name=f"Proxmox storage {spec.storage_id} (CIFS on the Storage Box)",
            spec=spec,
            connection=context.connection,
            rotate_password=_flag(host.data.get(vzdump.ROTATE_OPTION)),
        )
        vzdump.vzdump_job(name=f"Proxmox vzdump job {spec.job_id}", spec=spec, connection=context.connection)
    template = context.template_on(node)
    if template is not None:
        operations.template(name=f"Proxmox template {template.name}", spec=template, connection=context.connection)
    for index, spec in enumerate(context.specs_on(node)):
        operations.vm(
            name=context.slot_name(index),
            spec=spec,
            connection=context.connection,
            allow_reboot=allow_reboot,
            deep_check=deep_check,
        )
