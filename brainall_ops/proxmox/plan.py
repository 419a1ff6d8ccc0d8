"""Phase 2 plan: the VMs to create, from the placement (offline) or the live cluster (`--live`).

Offline, everything comes from the role map. With `--live` the cluster is read through the
Proxmox API, with read-only calls only: one `GET /cluster/resources` for every node and VM, and
`GET .../config` (plus `.../pending` for a running VM) only for a VM that differs. Each VM is then
`+ create`, `~ update` (with what differs) or `= unchanged`, and each node's memory budget comes
from its live numbers. The environment (whose addresses the VMs get) is the plan option
`environment` (default production), as for the other concerns.

This module is imported by every `brainall-ops plan`: the client, proxmoxer and requests are
imported only for `--live`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from brainall_ops.planning.changes import Change, Contribution
from brainall_ops.planning.fleet import existing_vm_hosts
from brainall_ops.rolemap.models import RoleMap

if TYPE_CHECKING:
    from brainall_ops.planning.plan import PlanContext

GIB = 1024**3


def plan_changes(rm: RoleMap, context: PlanContext) -> Contribution:
    out = live_changes(rm, context) if context.live and rm.vms else offline_changes(rm, context)
    vzdump_changes(rm, context, out)
    return out


def vzdump_changes(rm: RoleMap, context: PlanContext, out: Contribution) -> None:
    """The vzdump storage and job of `data.vzdump` (phase 2 applies them on `proxmox.api_host`):
    `+ create` offline; with `--live`, what `GET /storage/ID` and `GET /cluster/backup` show."""
    from brainall_ops.errors import BrainallError
    from brainall_ops.proxmox.vzdump_spec import VzdumpPlan, VzdumpRefusal, plan_job, plan_storage, vzdump_spec

    if rm.proxmox is None or rm.data is None or rm.data.vzdump is None:
        return
    environment = str(context.options.get("environment") or "production")
    target = rm.proxmox.api_host
    try:
        spec = vzdump_spec(rm, environment)
    except BrainallError as exc:
        out.refusals.append(f"proxmox vzdump: {exc}")
        return
    assert spec is not None
    plans: list[VzdumpPlan] = []
    if context.live:
        from brainall_ops.proxmox.client import ProxmoxClient, ProxmoxError, connection_settings
        from brainall_ops.proxmox.facts import read_backup_job, read_storage

        client = ProxmoxClient(connection_settings(rm, environment))
        try:
            storage = read_storage(client, spec.storage_id)
            job = read_backup_job(client, spec.job_id)
        except ProxmoxError as exc:
            raise ProxmoxError(f"proxmox (live plan): {exc}") from None
        try:
            plans.append(plan_storage(spec, storage))
        except VzdumpRefusal as exc:
            out.refusals.append(f"proxmox: {exc}")
            out.changes.append(Change("phase2", "proxmox", "refuse", target, str(exc), {"storage": spec.storage_id}))
        plans.append(plan_job(spec, job))
    else:
        plans = [plan_storage(spec, None), plan_job(spec, None)]
    for plan in plans:
        detail = {
            "host": target,
            "environment": environment,
            "live": context.live,
            "reasons": list(plan.update.reasons) if plan.update else [],
        }
        if plan.kind == "storage":
            detail.update({"storage": spec.storage_id, "type": "cifs", "unc": spec.unc, "username": spec.username})
        else:
            detail.update(
                {"job": spec.job_id, "schedule": spec.schedule, "vmids": list(spec.vmids), "storage": spec.storage_id}
            )
        out.changes.append(Change("phase2", "proxmox", plan.action, target, plan.summary, detail))


def template_changes(rm: RoleMap, nodes: list[str], vms: object, out: Contribution) -> None:
    """`--live`: the template on each node phase 2 puts VMs on (= there, + built, ~ converted, or refused)."""
    from brainall_ops.proxmox.spec import plan_template, template_specs

    for spec in template_specs(rm, nodes):
        plan = plan_template(spec, vms)  # type: ignore[arg-type]
        action = {"unchanged": "unchanged", "create": "create", "convert": "update", "refuse": "refuse"}[plan.action]
        detail = {"node": spec.node, "url": spec.url, "storage": spec.storage, "live": True, "template": True}
        target = f"template {spec.name} on {spec.node}"
        out.changes.append(Change("phase2", "proxmox", action, target, plan.reason, detail))  # type: ignore[arg-type]
        if plan.action == "refuse":
            out.refusals.append(f"proxmox: {target}: {plan.reason}")


def offline_changes(rm: RoleMap, context: PlanContext) -> Contribution:
    out = Contribution()
    image = rm.proxmox.template_image if rm.proxmox else None
    if rm.proxmox is not None and image is not None and rm.vms:
        nodes = sorted({context.placement.by_vm()[vm.name].host for vm in rm.vms})
        out.changes.append(
            Change(
                "phase2",
                "proxmox",
                "unchanged",
                f"template {rm.proxmox.template}",
                f"on {', '.join(nodes)}: built where missing from {image.url} ({image.checksum_algorithm} checked)",
                {"hosts": nodes, "url": image.url, "template": True},
            )
        )
    already = existing_vm_hosts(rm)
    placements = context.placement.by_vm()
    for vm in rm.vms:
        p = placements[vm.name]
        spec = f"{vm.vcpu} vCPU, {vm.memory_gb:g} GB RAM, {vm.disk_gb:g} GB disk, {vm.address}"
        detail = {
            "host": p.host,
            "vcpu": vm.vcpu,
            "memory_gb": vm.memory_gb,
            "disk_gb": vm.disk_gb,
            "address": str(vm.address),
            "vmid": vm.vmid,
            "reason": p.reason,
        }
        if vm.name in already:
            out.changes.append(Change("phase2", "proxmox", "unchanged", vm.name, f"on {p.host} ({spec})", detail))
        else:
            out.changes.append(Change("phase2", "proxmox", "create", vm.name, f"on {p.host}: {spec}", detail))
    return out


def live_changes(rm: RoleMap, context: PlanContext) -> Contribution:
    from brainall_ops.proxmox.client import ProxmoxClient, ProxmoxError, connection_settings
    from brainall_ops.proxmox.facts import read_cluster, read_vm_detail
    from brainall_ops.proxmox.spec import MIB, ProxmoxRefusal, fmt_gib, needs_detail, plan_vm, read_ssh_keys, vm_specs

    environment = str(context.options.get("environment") or "production")
    allow_reboot = bool(context.options.get("allow_reboot", False))
    out = Contribution()
    vm_hosts = {p.vm: p.host for p in context.placement.placements}
    specs = vm_specs(rm, environment, vm_hosts, read_ssh_keys(rm, environment, os.environ))
    client = ProxmoxClient(connection_settings(rm, environment))
    try:
        cluster = read_cluster(client)
        plans = []
        for spec in specs:
            try:
                candidate = needs_detail(spec, cluster.vms)
                detail = read_vm_detail(client, candidate) if candidate else None
                plans.append(plan_vm(spec, cluster.vms, detail, allow_reboot))
            except ProxmoxRefusal as exc:
                out.refusals.append(f"proxmox: {exc}")
                out.changes.append(Change("phase2", "proxmox", "refuse", spec.name, str(exc), {"host": spec.host}))
    except ProxmoxError as exc:
        raise ProxmoxError(f"proxmox (live plan): {exc}") from None

    template_changes(rm, [spec.node for spec in specs], cluster.vms, out)
    for plan in plans:
        spec, vm = plan.spec, plan.vm
        detail = {
            "host": spec.host,
            "node": spec.node,
            "vmid": vm.vmid if vm else spec.vmid,
            "vcpu": spec.cores,
            "memory_gb": spec.memory_mib / 1024,
            "disk_gb": spec.disk_gib,
            "address": str(spec.address),
            "environment": environment,
            "reasons": list(plan.reasons),
            "live": True,
        }
        summary = plan.line()[2:]  # without the symbol, which the renderer prints
        out.changes.append(Change("phase2", "proxmox", plan.action, spec.name, summary, detail))
        out.warnings.extend(plan.warnings)

    # Each node's memory budget from its live numbers: what runs now plus what this plan adds.
    headroom_pct = rm.placement.headroom.ram_pct
    nodes = {h.proxmox.node: h.name for h in rm.proxmox_hosts if h.proxmox}
    for node, host in nodes.items():
        usage = cluster.nodes.get(node)
        if usage is None:
            out.refusals.append(f"proxmox: node {node} ({host}) is not in the cluster")
            continue
        adds = 0
        for plan in plans:
            if plan.spec.node != node:
                continue
            wanted = plan.spec.memory_mib * MIB
            if plan.action == "create":
                adds += wanted
            elif plan.vm is not None and plan.vm.maxmem < wanted:
                adds += wanted - plan.vm.maxmem
        after = usage.mem + adds
        limit = usage.maxmem * (1 - headroom_pct / 100)
        summary = (
            f"memory (live): {fmt_gib(usage.mem)} of {fmt_gib(usage.maxmem)} GiB used "
            f"({100 * usage.mem / usage.maxmem:.0f} %); the plan adds {fmt_gib(adds)} GiB "
            f"→ {fmt_gib(after)} GiB ({100 * after / usage.maxmem:.0f} %)"
        )
        budget = {
            "budget": True,
            "node": node,
            "maxmem": usage.maxmem,
            "mem": usage.mem,
            "adds": adds,
            "after": after,
            "live": True,
        }
        out.changes.append(Change("phase2", "proxmox", "unchanged", f"{host} budget", summary, budget))
        if adds and after > limit:
            out.refusals.append(
                f"proxmox: {host} would use {fmt_gib(after)} of {fmt_gib(usage.maxmem)} GiB of RAM, "
                f"over the {100 - headroom_pct:g} % the headroom allows"
            )
    return out
