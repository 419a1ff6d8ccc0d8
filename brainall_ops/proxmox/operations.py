"""pyinfra operations for Proxmox VMs.

`vm` is declarative: it reads the cluster (the cached `ClusterResources` fact, plus the VM's
config only when it differs), yields nothing when the VM matches, and otherwise yields one
`FunctionCommand` that converges the VM on the controller at execute time. So `--dry` reads
and prints, and changes nothing. The operation is targeted at the Proxmox host the VM is placed
on: pyinfra runs hosts in parallel and a host's operations one after another, which is what
Proxmox wants (parallel across nodes, serial on a node: a node's VM lock and storage are shared).

Converging a VM, from what the cluster says at that moment:

1. missing → full-clone the template named in the role map (the one on the VM's node, else one
   on shared storage elsewhere), with the pinned VMID or one from `/cluster/nextid` (retried
   with a fresh id when a parallel clone took it first: PVE says so at once on the same node,
   in the clone task's failure from another node); a clone still copying on that node (its
   placeholder config has no name yet) is waited for first, so that it is not cloned twice;
2. locked by a task still running (a clone that outlived the last run's timeout) → wait;
3. config → set the managed keys that differ (one POST, guarded by the config digest; when PVE
   refuses it because the config changed meanwhile or a task locked the VM, read it again, wait
   for the lock, and decide again);
4. boot disk smaller than the role map → grow it (never shrunk);
5. stopped → start; running with changes pending → reboot if allowed, else say so;
6. read it back and check it is what the role map says.

Every step is decided from the cluster's state, so a run that failed half-way is simply picked
up by the next one; nothing is ever deleted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pyinfra import logger
from pyinfra.api import FunctionCommand, OperationError, operation
from pyinfra.api.host import Host
from pyinfra.api.state import State
from pyinfra.context import host as current_host
from pyinfra.context import state as current_state

from brainall_ops.errors import BrainallError
from brainall_ops.proxmox.client import ConnectionSettings, ProxmoxClient, ProxmoxError
from brainall_ops.proxmox.facts import (
    ClusterResources,
    ClusterState,
    VMConfig,
    client_for,
    get_api_fact,
    read_cluster,
    read_vm_detail,
)
from brainall_ops.proxmox.spec import (
    ObservedVM,
    Steps,
    TemplateSpec,
    VMSpec,
    locate,
    needs_detail,
    plan_template,
    plan_vm,
    quick_drift,
    steps_for,
)

NEXTID_ATTEMPTS = 5
CONFIG_ATTEMPTS = 3
_said: set[tuple[str, str]] = set()


def warn_once(host: Host, warning: str) -> None:
    if (host.name, warning) not in _said:
        _said.add((host.name, warning))
        host.log_styled(f"warning: {warning}", fg="yellow", log_func=logger.warning)


@operation()
def vm(
    spec: VMSpec,
    connection: ConnectionSettings,
    allow_reboot: bool = False,
    deep_check: bool = False,
) -> Iterator[FunctionCommand]:
    """
    Ensure a VM exists on its Proxmox node as the role map says: cloned from the cloud-init
    template, configured (cores, memory, disk, net on the vSwitch bridge, cloud-init user, SSH
    keys, static ipconfig, tags, onboot) and running.

    + spec: the VM's desired state (`brainall_ops.proxmox.spec.VMSpec`)
    + connection: how to reach the Proxmox API
    + allow_reboot: reboot a running VM to apply changes PVE holds pending (cores, memory, cloud-init)
    + deep_check: read the VM's config even when `/cluster/resources` shows no difference
    """
    try:
        cluster = get_api_fact(ClusterResources, connection)
        detail = None
        candidate = needs_detail(spec, cluster.vms)
        if candidate is None and deep_check:
            candidate = locate(spec, cluster.vms)
        if candidate is not None:
            detail = get_api_fact(VMConfig, connection, candidate)
        plan = plan_vm(spec, cluster.vms, detail, allow_reboot)
    except BrainallError as exc:
        if not current_state.is_executing:
            raise OperationError(f"proxmox: {exc}") from None
        # With -y pyinfra first runs this body while executing, where an exception would end
        # in a greenlet traceback: fail the operation with the message instead.
        yield FunctionCommand(report_failure, (f"{spec.name}: {exc}",), {})
        return

    # pyinfra runs this body when it plans (not with -y) and again when it executes: say it once.
    for warning in plan.warnings:
        warn_once(current_host, warning)
    if plan.action != "unchanged" and (current_host.name, plan.line()) not in _said:
        _said.add((current_host.name, plan.line()))
        current_host.log(plan.line())
    if plan.action == "unchanged":
        current_host.noop(plan.line())
        return
    yield FunctionCommand(converge_vm, (spec, connection, allow_reboot), {})


@operation()
def template(spec: TemplateSpec, connection: ConnectionSettings) -> Iterator[FunctionCommand]:
    """
    Ensure the cloud-init template `proxmox.template` is on this node: when missing, the node
    downloads the cloud image itself (download-url, checksum verified), a VM is created with the
    image imported as its disk, a cloud-init drive and a serial console, and it becomes a template.

    + spec: the template on this node (`brainall_ops.proxmox.spec.TemplateSpec`)
    + connection: how to reach the Proxmox API
    """
    try:
        plan = plan_template(spec, get_api_fact(ClusterResources, connection).vms)
    except BrainallError as exc:
        if not current_state.is_executing:
            raise OperationError(f"proxmox: {exc}") from None
        yield FunctionCommand(report_failure, (f"template {spec.name}: {exc}",), {})
        return
    if plan.action == "unchanged":
        current_host.noop(plan.line())
        return
    if (current_host.name, plan.line()) not in _said:
        _said.add((current_host.name, plan.line()))
        current_host.log(plan.line())
    if plan.action == "refuse":
        if not current_state.is_executing:
            raise OperationError(f"proxmox: template {spec.name} on {spec.node}: {plan.reason}")
        yield FunctionCommand(report_failure, (f"template {spec.name} on {spec.node}: {plan.reason}",), {})
        return
    yield FunctionCommand(build_template, (spec, connection), {})


def build_template(state: State, host: Host, spec: TemplateSpec, connection: ConnectionSettings) -> bool:
    """Execute-time body of `template` (on the controller). False, with the reason logged, on failure."""
    try:
        client = client_for(connection, owner=f"host:{host.name}")
        done = TemplateBuilder(client, spec, host).run()
    except BrainallError as exc:
        host.log_styled(f"template {spec.name}: {exc}", fg="red", log_func=logger.error)
        return False
    host.log_styled(f"template {spec.name}: {done}", fg="green")
    return True


class TemplateBuilder:
    """Builds the template on one node, each step decided from what the cluster says at that moment,
    so a run that failed half-way is picked up: the download is kept by PVE when its checksum
    matches, and a VM of the template's name left by a failed run is converted, not made again."""

    def __init__(self, client: ProxmoxClient, spec: TemplateSpec, host: Host | None = None) -> None:
        self.client = client
        self.spec = spec
        self.host = host

    def say(self, message: str) -> None:
        if self.host is not None:
            self.host.log(f"template {self.spec.name}: {message}")

    def run(self) -> str:
        spec = self.spec
        plan = plan_template(spec, read_cluster(self.client).vms)
        if plan.action == "unchanged":
            return f"on {spec.node} already ({plan.reason})"
        if plan.action == "refuse":
            raise ProxmoxError(f"on {spec.node}: {plan.reason}")
        done = []
        if plan.action == "create":
            self.download()
            done.append(f"{spec.filename} downloaded to {spec.download_storage} ({spec.checksum_algorithm} verified)")
            vmid = self.create()
            done.append(f"VMID {vmid} created with the image as scsi0, a cloud-init drive and a serial console")
        current = [v for v in read_cluster(self.client).vms if v.name == spec.name and v.node == spec.node]
        if not current:
            raise ProxmoxError(f"on {spec.node}: the VM to convert is gone; rerun")
        vmid = current[0].vmid
        if not current[0].template:
            self.client.run(
                "POST", f"/nodes/{spec.node}/qemu/{vmid}/template", f"convert VMID {vmid} to template {spec.name}"
            )
        done.append(f"VMID {vmid} converted to a template")
        return "; ".join(done)

    def download(self) -> None:
        spec = self.spec
        assert spec.url is not None and spec.checksum is not None
        self.client.run(
            "POST",
            f"/nodes/{spec.node}/storage/{spec.download_storage}/download-url",
            f"download {spec.url} to {spec.download_storage} on {spec.node}",
            url=spec.url,
            content="import",
            filename=spec.filename,
            checksum=spec.checksum,
            **{"checksum-algorithm": spec.checksum_algorithm},
        )

    def create(self) -> int:
        spec = self.spec
        for attempt in range(1, NEXTID_ATTEMPTS + 1):
            vmid = spec.vmid if spec.vmid is not None else int(self.client.get("/cluster/nextid"))
            try:
                self.client.run(
                    "POST",
                    f"/nodes/{spec.node}/qemu",
                    f"create VMID {vmid} for template {spec.name} on {spec.node}",
                    **spec.create_params(vmid),
                )
                return vmid
            except ProxmoxError as exc:
                if spec.vmid is None and exc.taken_vmid() == vmid and attempt < NEXTID_ATTEMPTS:
                    self.say(f"VMID {vmid} was taken meanwhile; asking for the next one")
                    continue
                raise
        raise AssertionError("unreachable")


def report_failure(state: State, host: Host, message: str) -> bool:
    host.log_styled(message, fg="red", log_func=logger.error)
    return False


def converge_vm(state: State, host: Host, spec: VMSpec, connection: ConnectionSettings, allow_reboot: bool) -> bool:
    """Execute-time body of `vm` (runs on the controller). False, with the reason logged, on failure."""
    try:
        client = client_for(connection, owner=f"host:{host.name}")
        done = Converger(client, spec, allow_reboot, host).run()
    except BrainallError as exc:  # ProxmoxError, or a refusal met at execute time
        host.log_styled(f"{spec.name}: {exc}", fg="red", log_func=logger.error)
        return False
    host.log_styled(f"{spec.name}: {done}", fg="green")
    return True


class Converger:
    """Brings one VM to its spec, step by step, each step decided from the cluster's state."""

    def __init__(self, client: ProxmoxClient, spec: VMSpec, allow_reboot: bool, host: Host | None = None) -> None:
        self.client = client
        self.spec = spec
        self.allow_reboot = allow_reboot
        self.host = host
        self.done: list[str] = []

    def say(self, message: str) -> None:
        if self.host is not None:
            self.host.log(f"{self.spec.name}: {message}")

    def warn(self, message: str) -> None:
        if self.host is not None:
            warn_once(self.host, message)

    @property
    def base(self) -> str:
        return f"/nodes/{self.spec.node}/qemu"

    def run(self) -> str:
        spec = self.spec
        cluster = read_cluster(self.client)
        vm = locate(spec, cluster.vms)
        if vm is None:
            vm = self.create(cluster)
        if vm.lock:
            vm = self.wait_unlocked(vm)
        vm, steps = self.configure(vm)
        vm_path = f"{self.base}/{vm.vmid}"
        if steps.grow_to_gib and steps.disk_key:
            self.client.run(
                "PUT",
                f"{vm_path}/resize",
                f"grow {steps.disk_key} of {spec.name}",
                disk=steps.disk_key,
                size=f"{steps.grow_to_gib}G",
            )
            self.done.append(f"{steps.disk_key} grown to {steps.grow_to_gib} GiB")
        if steps.start:
            self.client.run("POST", f"{vm_path}/status/start", f"start {spec.name} (VMID {vm.vmid})")
            self.done.append("started")
        elif steps.reboot:
            self.client.run("POST", f"{vm_path}/status/reboot", f"reboot {spec.name} (VMID {vm.vmid})")
            self.done.append("rebooted to apply pending changes")
        for warning in steps.warnings:
            self.warn(warning)
        self.verify(vm.vmid, steps.pending_left)
        return "; ".join(self.done) or "nothing left to do"

    # ----------------------------------------------------------------------- steps
    def configure(self, vm: ObservedVM) -> tuple[ObservedVM, Steps]:
        """Step 3, with the config's digest: a refusal because the config changed since it was read
        ("checksum mismatch") or a task locked the VM ("VM is locked (backup)") is met by reading
        it again (waiting for the lock) and deciding again, a few times; then a clear line."""
        spec = self.spec
        for attempt in range(1, CONFIG_ATTEMPTS + 1):
            detail = read_vm_detail(self.client, vm)
            steps = steps_for(spec, vm, detail, self.allow_reboot)
            if not (steps.config or steps.delete):
                return vm, steps
            params: dict[str, Any] = dict(steps.config)
            if steps.delete:
                params["delete"] = ",".join(steps.delete)
            params["digest"] = detail.config.get("digest")
            try:
                self.client.run(
                    "POST", f"{self.base}/{vm.vmid}/config", f"configure {spec.name} (VMID {vm.vmid})", **params
                )
            except ProxmoxError as exc:
                if not (exc.is_stale_digest or exc.vm_lock):
                    raise
                if attempt == CONFIG_ATTEMPTS:
                    why = f"locked ({exc.vm_lock})" if exc.vm_lock else "changed by someone else each time"
                    raise ProxmoxError(
                        f"VMID {vm.vmid}: its config was {why} while this run configured it "
                        f"({CONFIG_ATTEMPTS} attempts); rerun when nothing else is changing it"
                    ) from None
                self.say(f"VMID {vm.vmid}: {exc.pve_text.strip()}; reading its config again")
                current = locate(spec, read_cluster(self.client).vms)
                if current is None:
                    raise ProxmoxError(f"VMID {vm.vmid} went away while this run configured it; rerun") from None
                vm = self.wait_unlocked(current) if current.lock else current
                continue
            self.done.append("configured (" + ", ".join(sorted([*steps.config, *steps.delete])) + ")")
            return vm, steps
        raise AssertionError("unreachable")

    def wait_for_copying_clones(self, nodes: set[str]) -> ObservedVM | None:
        """A clone still copying shows as a nameless VM locked `clone` (PVE writes the name with the
        disks): wait for those on `nodes`, then look for the VM again (it may be one of them)."""
        timeout = self.client.settings.task_timeout_s
        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            cluster = read_cluster(self.client)
            found = locate(self.spec, cluster.vms)
            copying = [v for v in cluster.vms if v.node in nodes and v.lock == "clone" and _unnamed(v)]
            if found is not None or not copying:
                return found
            if time.monotonic() >= deadline:
                vmids = ", ".join(str(v.vmid) for v in copying)
                raise ProxmoxError(
                    f"a clone (VMID {vmids}) is still copying after {timeout:g} s; "
                    "rerun when it has finished, so that this VM is not cloned twice"
                )
            self.client.sleep(delay)
            delay = min(delay * 2, 1.0)

    def create(self, cluster: ClusterState) -> ObservedVM:
        spec = self.spec
        templates = cluster.templates(spec.template)
        if not templates:
            raise ProxmoxError(f"no template named {spec.template!r} on the cluster (proxmox.template)")
        local = [t for t in templates if t.node == spec.node]
        source = local[0] if local else templates[0]
        if any(v.lock == "clone" and _unnamed(v) and v.node in (source.node, spec.node) for v in cluster.vms):
            found = self.wait_for_copying_clones({source.node, spec.node})
            if found is not None:
                return found
        params: dict[str, Any] = {"name": spec.name, "full": 1, "storage": spec.storage}
        if source.node != spec.node:
            params["target"] = spec.node  # PVE refuses unless the template is on shared storage
        path = f"/nodes/{source.node}/qemu/{source.vmid}/clone"
        for attempt in range(1, NEXTID_ATTEMPTS + 1):
            vmid = spec.vmid if spec.vmid is not None else int(self.client.get("/cluster/nextid"))
            try:
                self.client.run(
                    "POST",
                    path,
                    f"clone {spec.template} (VMID {source.vmid}) to {spec.name} (VMID {vmid})",
                    newid=vmid,
                    **params,
                )
                break
            except ProxmoxError as exc:
                # Another clone took this VMID between nextid and clone: take the next one.
                if spec.vmid is None and exc.taken_vmid() == vmid and attempt < NEXTID_ATTEMPTS:
                    self.say(f"VMID {vmid} was taken by another clone meanwhile; asking for the next one")
                    continue
                raise
        self.done.append(f"cloned from {spec.template} (VMID {source.vmid} on {source.node}) as VMID {vmid}")
        created = locate(spec, read_cluster(self.client).vms)
        if created is None:
            raise ProxmoxError(f"the clone task ended OK but no VM named {spec.name} is on the cluster")
        return created

    def wait_unlocked(self, vm: ObservedVM) -> ObservedVM:
        """A task still holds the VM (a clone the last run gave up waiting for): wait for it."""
        timeout = self.client.settings.task_timeout_s
        deadline = time.monotonic() + timeout
        self.say(f"VMID {vm.vmid} is locked ({vm.lock}); waiting up to {timeout:g} s for the task holding it")
        delay = 0.1
        while True:
            current = locate(self.spec, read_cluster(self.client).vms)
            if current is None:
                raise ProxmoxError(f"VMID {vm.vmid} went away while locked ({vm.lock}): the task removed it; rerun")
            if not current.lock:
                return current
            if time.monotonic() >= deadline:
                raise ProxmoxError(
                    f"VMID {vm.vmid} is still locked ({current.lock}) after {timeout:g} s; "
                    "a task is running on it: rerun when it has finished"
                )
            self.client.sleep(delay)
            delay = min(delay * 2, 1.0)

    def verify(self, vmid: int, pending_left: tuple[str, ...]) -> None:
        """Read the VM back: everything `/cluster/resources` shows must now match."""
        vm = locate(self.spec, read_cluster(self.client).vms)
        if vm is None or vm.vmid != vmid:
            raise ProxmoxError(f"VMID {vmid} is gone after converging it")
        drift = quick_drift(self.spec, vm)
        if pending_left:  # told the operator already: these apply at the next reboot
            drift = [d for d in drift if not d.startswith(("cores", "memory"))]
        if drift:
            raise ProxmoxError(f"VMID {vmid} still differs after converging: {'; '.join(drift)}")


def _unnamed(vm: ObservedVM) -> bool:
    return vm.name in ("", f"VM {vm.vmid}")
