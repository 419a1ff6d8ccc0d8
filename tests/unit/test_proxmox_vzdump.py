"""The vzdump storage and job of `data.vzdump`: API parameters from the role map, and what differs
between them and what the Proxmox API reports (pure logic; no API, no pyinfra)."""

from __future__ import annotations

import dataclasses

import pytest

from brainall_ops.errors import BrainallError
from brainall_ops.lab.pve_simulator.schema import check_format
from brainall_ops.proxmox.vzdump_spec import (
    JOB_COMMENT,
    VzdumpRefusal,
    parse_prune,
    plan_job,
    plan_storage,
    vzdump_spec,
    vzdump_vmids,
)
from brainall_ops.rolemap import load_rolemap
from brainall_ops.rolemap.models import VzdumpBackup

RM = load_rolemap()
SPEC = vzdump_spec(RM, "lab")
assert SPEC is not None


def observed_storage(**changes: object) -> dict[str, object]:
    """`GET /storage/storagebox` of a storage as phase 2 creates it."""
    entry: dict[str, object] = {
        "storage": "storagebox",
        "type": "cifs",
        "server": "10.77.1.50",
        "share": "backup",
        "subdir": "/vzdump",
        "username": SPEC.username,
        "content": "backup",
        "smbversion": "3.0",
        "prune-backups": "keep-daily=7,keep-weekly=4",
        "path": "/mnt/pve/storagebox",
        "digest": "0" * 40,
    }
    entry.update(changes)
    return entry


def observed_job(**changes: object) -> dict[str, object]:
    """The job's entry in `GET /cluster/backup` (prune-backups comes back as an object)."""
    entry: dict[str, object] = {
        "id": "brainall-storagebox",
        "schedule": "01:00",
        "storage": "storagebox",
        "mode": "snapshot",
        "compress": "zstd",
        "enabled": 1,
        "all": 1,
        "prune-backups": {"keep-daily": 7, "keep-weekly": 4},
        "comment": JOB_COMMENT,
    }
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


def test_spec_from_the_role_map_per_environment() -> None:
    assert SPEC.server == "10.77.1.50" and SPEC.share == "backup" and SPEC.subdir == "/vzdump"
    assert SPEC.job_id == "brainall-storagebox" and SPEC.vmids == ()
    production = vzdump_spec(RM)
    assert production is not None and production.server == "u503462.your-storagebox.de"


def test_storage_params_never_carry_a_password() -> None:
    params = SPEC.storage_params()
    assert params["type"] == "cifs" and params["content"] == "backup"
    assert params["prune-backups"] == "keep-daily=7,keep-weekly=4"
    assert "password" not in params


def test_job_params_all_or_vmids() -> None:
    params = SPEC.job_params()
    assert params["all"] == "1" and "vmid" not in params
    assert (params["mode"], params["compress"], params["storage"]) == ("snapshot", "zstd", "storagebox")
    listed = dataclasses.replace(SPEC, vmids=(106, 101)).job_params()
    assert listed["vmid"] == "106,101" and "all" not in listed


def test_no_retention_counts_means_keep_all() -> None:
    assert dataclasses.replace(SPEC, prune={}).prune_backups == "keep-all=1"
    assert parse_prune("keep-daily=0") == {"keep-all": 1}
    assert parse_prune({"keep-weekly": 4, "keep-daily": 7}) == parse_prune("keep-daily=7,keep-weekly=4")


def test_vzdump_of_named_vms_needs_their_vmids() -> None:
    with pytest.raises(BrainallError, match="has no vmid"):
        vzdump_vmids(RM, VzdumpBackup(vms=["vm-brainall-db"]))
    with pytest.raises(BrainallError, match="not a VM"):
        vzdump_vmids(RM, VzdumpBackup(vms=["nope"]))


def test_storage_plan_create_unchanged_update() -> None:
    assert plan_storage(SPEC, None).action == "create"
    assert plan_storage(SPEC, observed_storage()).action == "unchanged"
    drift = plan_storage(SPEC, observed_storage(subdir="/old", content="backup,iso", disable=1))
    assert drift.action == "update" and drift.update is not None
    assert drift.update.params == {"subdir": "/vzdump", "content": "backup"}
    assert drift.update.delete == ("disable",)


def test_a_password_change_is_invisible_so_rotation_is_explicit() -> None:
    # GET never returns the password: without the option a matching storage is unchanged
    assert plan_storage(SPEC, observed_storage()).action == "unchanged"
    rotate = plan_storage(SPEC, observed_storage(), rotate_password=True)
    assert rotate.action == "update" and "rotation" in rotate.summary


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"type": "dir"}, "not cifs"),
        ({"server": "other.example"}, "cannot change a CIFS storage's server"),
        ({"share": "other"}, "cannot change a CIFS storage's share"),
    ],
)
def test_storage_that_the_api_cannot_converge_is_refused(changes: dict[str, str], message: str) -> None:
    with pytest.raises(VzdumpRefusal, match=message):
        plan_storage(SPEC, observed_storage(**changes))


def test_job_plan_create_unchanged_and_drift() -> None:
    assert plan_job(SPEC, None).action == "create"
    assert plan_job(SPEC, observed_job()).action == "unchanged"
    drift = plan_job(SPEC, observed_job(schedule="sat 03:00", compress=None, enabled=0))
    assert drift.action == "update" and drift.update is not None
    assert drift.update.params == {"schedule": "01:00", "compress": "zstd", "enabled": "1"}
    assert "schedule sat 03:00 → 01:00" in drift.summary


def test_job_guests_switch_between_all_and_a_list() -> None:
    to_all = plan_job(SPEC, observed_job(all=None, vmid="101,102"))
    assert to_all.update is not None
    assert to_all.update.params == {"all": "1"} and to_all.update.delete == ("vmid",)
    listed = dataclasses.replace(SPEC, vmids=(101, 102))
    to_list = plan_job(listed, observed_job())
    assert to_list.update is not None
    assert to_list.update.params == {"vmid": "101,102"} and to_list.update.delete == ("all",)
    assert plan_job(listed, observed_job(all=None, vmid="102,101")).action == "unchanged"


def test_simulator_formats_for_storage_and_jobs() -> None:
    check_format("prune-backups", "keep-daily=7,keep-weekly=4")
    check_format("pve-calendar-event", "sat 02:30")
    check_format("pve-storage-content-list", "backup,iso")
    check_format("pve-storage-path", "/vzdump")
    for fmt, value in [
        ("prune-backups", "keep-daily=-1"),
        ("prune-backups", "keep-all=1,keep-daily=3"),
        ("prune-backups", "keep-forever=1"),
        ("pve-calendar-event", "01:00; rm -rf /"),
        ("pve-storage-content-list", "backup,movies"),
        ("pve-storage-path", "vzdump"),
    ]:
        with pytest.raises(ValueError, match="invalid format"):
            check_format(fmt, value)
