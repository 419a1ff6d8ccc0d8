"""vzdump of the VMs to the Storage Box, through the Proxmox API (phase 2, controller-side).

Two pyinfra operations, run once per cluster on the role map's `proxmox.api_host`, from the
role map's `data.vzdump` (values from `brainall_ops.proxmox.vzdump_spec`, one place for them):

- `vzdump_storage`: a `cifs` storage on the box's share (`POST /storage`, or `PUT` of what
  differs). The box password (`brainall_ops.shared.secrets.STORAGEBOX_PASSWORD`) travels only in that
  request's body: never in an operation's arguments, output, the plan or an exception. PVE keeps
  it in /etc/pve/priv/storage/ID.pw and never returns it, so a changed password cannot be
  detected: after rotating it on the box, run phase 2 with
  `--data brainall_proxmox_rotate_box_password=true` to send it again (that run always PUTs it);
- `vzdump_job`: the backup job (`POST /cluster/backup`, or `PUT` of what differs): schedule,
  guests (`vmid` list or `all`), mode, compression, retention (`prune-backups`).

Both read the object first (`GET /storage/ID`, `GET /cluster/backup`) and change nothing when it
matches, so a second run makes no mutating call. No systemd timer is needed on a Proxmox node:
Proxmox's own scheduler (pvescheduler) runs the job at its schedule, each run is a `vzdump` task
whose task log (GUI, `pvenode task list`, /var/log/pve/tasks) is the backup's log line, and the
lock is Proxmox's own: vzdump takes each guest's lock (`lock: backup`) while it backs it up, so a
run never overlaps another task on the same VM (the VM is then reported failed in that log).
"""

from __future__ import annotations

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
from brainall_ops.proxmox.facts import BackupJob, StorageConfig, client_for, get_api_fact, read_backup_job, read_storage
from brainall_ops.proxmox.operations import report_failure
from brainall_ops.proxmox.vzdump_spec import VzdumpPlan, VzdumpSpec, plan_job, plan_storage
from brainall_ops.shared.secrets import STORAGEBOX_PASSWORD, Secret, scrub

ROTATE_OPTION = "brainall_proxmox_rotate_box_password"
_said: set[tuple[str, str]] = set()


def needs_password(reason: str) -> Secret:
    return STORAGEBOX_PASSWORD.require(what=reason)


def _announce(plan: VzdumpPlan) -> bool:
    """Log the plan once (pyinfra runs an operation's body when planning and again when executing);
    True when there is something to do."""
    if plan.action == "unchanged":
        current_host.noop(plan.line())
        return False
    if (current_host.name, plan.line()) not in _said:
        _said.add((current_host.name, plan.line()))
        current_host.log(plan.line())
    return True


def _fail_in_plan(what: str, exc: BrainallError) -> Iterator[FunctionCommand]:
    if not current_state.is_executing:
        raise OperationError(f"proxmox: {what}: {exc}") from None
    # With -y pyinfra first runs the body while executing: fail the operation with the message.
    yield FunctionCommand(report_failure, (f"{what}: {exc}",), {})


@operation()
def vzdump_storage(
    spec: VzdumpSpec, connection: ConnectionSettings, rotate_password: bool = False
) -> Iterator[FunctionCommand]:
    """
    Ensure the CIFS storage vzdump writes to exists on the Storage Box's share, as the role map says.

    + spec: the storage and job (`brainall_ops.proxmox.vzdump_spec.VzdumpSpec`)
    + connection: how to reach the Proxmox API
    + rotate_password: send the box password again (PVE never shows it, so a change cannot be seen)
    """
    what = f"storage '{spec.storage_id}'"
    try:
        plan = plan_storage(spec, get_api_fact(StorageConfig, connection, spec.storage_id), rotate_password)
        if plan.action == "create" or rotate_password:
            needs_password(f"{'creating' if plan.action == 'create' else 'rotating the password of'} {what}")
    except BrainallError as exc:
        yield from _fail_in_plan(what, exc)
        return
    if _announce(plan):
        yield FunctionCommand(converge_storage, (spec, connection, rotate_password), {})


@operation()
def vzdump_job(spec: VzdumpSpec, connection: ConnectionSettings) -> Iterator[FunctionCommand]:
    """
    Ensure the vzdump job backs the VMs up to the Storage Box storage, as the role map says.

    + spec: the storage and job (`brainall_ops.proxmox.vzdump_spec.VzdumpSpec`)
    + connection: how to reach the Proxmox API
    """
    try:
        plan = plan_job(spec, get_api_fact(BackupJob, connection, spec.job_id))
    except BrainallError as exc:
        yield from _fail_in_plan(f"vzdump job '{spec.job_id}'", exc)
        return
    if _announce(plan):
        yield FunctionCommand(converge_job, (spec, connection), {})


# --------------------------------------------------------------------------- execute time
def converge_storage(
    state: State, host: Host, spec: VzdumpSpec, connection: ConnectionSettings, rotate_password: bool
) -> bool:
    """Execute-time body of `vzdump_storage`: decided again from what the API says now."""
    password: Secret | None = None
    try:
        client = client_for(connection, owner=f"host:{host.name}")
        password = STORAGEBOX_PASSWORD.read()
        done = StorageConverger(client, spec, rotate_password, password).run()
    except BrainallError as exc:
        # The client scrubs the token; the box password is scrubbed here, whatever the error says.
        host.log_styled(f"storage '{spec.storage_id}': {scrub(str(exc), password)}", fg="red", log_func=logger.error)
        return False
    host.log_styled(f"storage '{spec.storage_id}': {done}", fg="green")
    return True


def converge_job(state: State, host: Host, spec: VzdumpSpec, connection: ConnectionSettings) -> bool:
    """Execute-time body of `vzdump_job`."""
    try:
        client = client_for(connection, owner=f"host:{host.name}")
        done = converge_job_with(client, spec)
    except BrainallError as exc:
        host.log_styled(f"vzdump job '{spec.job_id}': {exc}", fg="red", log_func=logger.error)
        return False
    host.log_styled(f"vzdump job '{spec.job_id}': {done}", fg="green")
    return True


class StorageConverger:
    def __init__(self, client: ProxmoxClient, spec: VzdumpSpec, rotate_password: bool, password: Secret | None) -> None:
        self.client = client
        self.spec = spec
        self.rotate_password = rotate_password
        self.password = password

    def _password(self, reason: str) -> str:
        if self.password is None:
            self.password = needs_password(reason)
        return self.password.reveal()

    def run(self) -> str:
        spec = self.spec
        observed = read_storage(self.client, spec.storage_id)
        plan = plan_storage(spec, observed, self.rotate_password)
        if plan.action == "create":
            params: dict[str, Any] = spec.storage_params()
            params["password"] = self._password(f"creating storage '{spec.storage_id}'")
            self.client.run("POST", "/storage", f"create storage '{spec.storage_id}'", **params)
            done = f"created on {spec.unc}"
        elif plan.action == "update":
            assert plan.update is not None and observed is not None
            params = dict(plan.update.params)
            if plan.update.delete:
                params["delete"] = ",".join(plan.update.delete)
            if self.rotate_password:
                params["password"] = self._password(f"rotating the password of storage '{spec.storage_id}'")
            if observed.get("digest"):
                params["digest"] = observed["digest"]  # refused if someone changed it meanwhile
            self.client.run("PUT", f"/storage/{spec.storage_id}", f"update storage '{spec.storage_id}'", **params)
            done = plan.summary.replace(f"storage '{spec.storage_id}': ", "updated: ", 1)
        else:
            return "nothing left to do"
        check = plan_storage(spec, read_storage(self.client, spec.storage_id))
        if check.action != "unchanged":
            raise ProxmoxError(f"still differs after converging: {check.summary}")
        return done


def converge_job_with(client: ProxmoxClient, spec: VzdumpSpec) -> str:
    observed = read_backup_job(client, spec.job_id)
    plan = plan_job(spec, observed)
    if plan.action == "create":
        client.run("POST", "/cluster/backup", f"create vzdump job '{spec.job_id}'", **spec.job_params())
        done = f"created ({spec.which} at '{spec.schedule}')"
    elif plan.action == "update":
        assert plan.update is not None
        params: dict[str, Any] = dict(plan.update.params)
        if plan.update.delete:
            params["delete"] = ",".join(plan.update.delete)
        client.run("PUT", f"/cluster/backup/{spec.job_id}", f"update vzdump job '{spec.job_id}'", **params)
        done = "updated (" + "; ".join(plan.update.reasons) + ")"
    else:
        return "nothing left to do"
    check = plan_job(spec, read_backup_job(client, spec.job_id))
    if check.action != "unchanged":
        raise ProxmoxError(f"still differs after converging: {check.summary}")
    return done
