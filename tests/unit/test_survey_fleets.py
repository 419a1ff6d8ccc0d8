"""Fleets the toolkit has never seen (issue 23): each measurements fixture under fixtures/survey/fleets/
says in its header what an SRE would propose; these tests hold the proposal to it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from brainall_ops.planning.fleet import place_rolemap
from brainall_ops.planning.placement import PlacementError
from brainall_ops.rolemap import load_rolemap, parse_rolemap
from brainall_ops.survey.measurements import MeasurementsError, load_survey
from brainall_ops.survey.rolemap_edit import RoleMapEditError, edit_measured, measured_updates, prepare_update
from brainall_ops.survey.roles import Proposal, check_proposal, propose_roles

FLEETS = Path(__file__).parent / "fixtures" / "survey" / "fleets"
ROLEMAP = FLEETS / "rolemap-fleet-a.yaml"

# fleet-a-similar's expected table (the header of the fixture)
SIMILAR = {
    "gw": "inference",
    "pve-a1": "application",
    "pve-a2": "data",
    "pve-a3": "spare",
    "pve-far": "backup",
    "gpu-far": "backup",
    "dev": "bastion",
    "box": "storage",
}
PLAN = {"app-api": "pve-a1", "app-workers": "pve-a1", "app-nginx": "pve-a1", "db": "pve-a2"}


@pytest.fixture(scope="module")
def rm():
    return load_rolemap(ROLEMAP)


def propose(name: str, rm) -> Proposal:
    survey = load_survey(FLEETS / f"fleet-a-{name}.yaml")
    proposal = propose_roles(survey, rm)
    assert check_proposal(proposal, survey, rm) == []
    return proposal


def texts(proposal: Proposal, host: str) -> list[str]:
    return [reason.text for reason in proposal.role_of(host).reasons]


def test_similar_nodes_keep_each_tier_whole_and_the_data_tier_apart(rm) -> None:
    proposal = propose("similar", rm)
    assert proposal.table() == SIMILAR
    assert {p.vm: p.host for p in proposal.plan} == PLAN
    assert proposal.tiers == {"app": ("pve-a1",), "data": ("pve-a2",)}
    # the reasons come from the same result as the table: the app tier is named where it landed
    app = " ".join(texts(proposal, "pve-a1"))
    assert "the app tier (app-api, app-workers, app-nginx: 28 vCPU, 56 GB RAM, 200 GB disk) fits whole here" in app
    assert "1468.8 GB disk free after headroom" in app  # local-lvm (1632 GB), not the 94 GB root filesystem
    assert proposal.role_of("pve-a1").vms == ("app-api", "app-workers", "app-nginx")
    assert proposal.role_of("pve-a2").vms == ("db",)
    assert "not where the data tier goes: it holds the app tier (the data tier kept apart)" in texts(proposal, "pve-a1")
    assert "no planned VM lands here: spare Proxmox capacity within the budget" in texts(proposal, "pve-a3")
    # the far A100 is no inference host: the reason says why
    assert any("40.2 ms away, beyond the 2 ms budget of the application tier" in t for t in texts(proposal, "gpu-far"))
    # the sandbox is given for a reason
    assert "a virtual machine (kvm)" in texts(proposal, "dev") and "a VM 400 on pve-a3" in texts(proposal, "dev")
    # the Storage Box plan follows the roles, and matches the role map's storage section: no warning
    assert proposal.storage_plan == [
        "models: SSHFS mount on gw (the inference host)",
        "uploads: CIFS mount on pve-a1 (the application node)",
        "backups: rsync from pve-a2 to box (the data node)",
    ]
    assert proposal.warnings == []
    duties = proposal.role_of("pve-a2").duties
    assert "VM db: PostgreSQL, Redis" in duties and "keeps its Ceph OSD" in duties
    assert "backups: rsync from pve-a2 to box (the data node)" in duties
    assert any(d.startswith("PostgreSQL 15 and Redis here") for d in duties)


def test_small_root_filesystem_with_vm_disks_in_lvm(rm, tmp_path: Path) -> None:
    proposal = propose("small-root-lvm", rm)
    assert proposal.table() == SIMILAR and {p.vm: p.host for p in proposal.plan} == PLAN
    # pve-a2's pvesm hung: its thin pool pve/data (lvs) stands in for local-lvm
    assert "pve-a2: 105.6 GB RAM, 32 vCPU, 1436.2 GB disk free after headroom" in " ".join(texts(proposal, "pve-a2"))
    assert "pve-a1: disk nearly full: 3.2 GB free of 93.93 GB (3 %) on /" in proposal.warnings
    survey = load_survey(FLEETS / "fleet-a-small-root-lvm.yaml")
    updates = measured_updates(survey, rm)
    assert (updates["pve-a1"]["disk_free_gb"], updates["pve-a1"]["disk_used_gb"]) == (1632.0, 0.0)
    assert (updates["pve-a2"]["disk_free_gb"], updates["pve-a2"]["disk_used_gb"]) == (1599.4, 32.6)
    assert updates["dev"]["disk_free_gb"] == 38.1  # not a Proxmox node: its root filesystem
    # --write's new map validates ...
    copy = tmp_path / "fleet.yaml"
    shutil.copy(ROLEMAP, copy)
    update = prepare_update(copy, survey)
    assert update.changed and "+    measured: {latency_from_gpu_ms: 0.41" in update.diff()
    place_rolemap(parse_rolemap(update.new_text, "new.yaml"))
    # ... where the root filesystem's 3.2 GB would not have (the map the old survey wrote)
    root = {h: {**v, "disk_free_gb": 3.2, "disk_used_gb": 85.9} for h, v in updates.items() if h.startswith("pve-a")}
    with pytest.raises(PlacementError, match="GB disk free after headroom"):
        place_rolemap(parse_rolemap(edit_measured(ROLEMAP.read_text(), {**updates, **root}), "old.yaml"))


def test_write_never_writes_a_map_validate_refuses(rm, tmp_path: Path) -> None:
    survey = load_survey(FLEETS / "fleet-a-small-root-lvm.yaml")
    for host in ("pve-a1", "pve-a2", "pve-a3"):  # every node nearly out of RAM: the VMs fit nowhere
        memory = survey.hosts[host].memory
        assert memory is not None
        survey.hosts[host] = survey.hosts[host].model_copy(
            update={"memory": memory.model_copy(update={"available_gb": 20.0})}
        )
    copy = tmp_path / "fleet.yaml"
    shutil.copy(ROLEMAP, copy)
    with pytest.raises(
        RoleMapEditError, match=r"would fail validate \(app-api fits on no Proxmox host.*nothing written"
    ):
        prepare_update(copy, survey)
    assert copy.read_text() == ROLEMAP.read_text()


def test_a_small_gpu_is_no_inference_host_and_leaves_the_app_server_alone(rm) -> None:
    proposal = propose("small-gpu", rm)
    assert proposal.table() == {**SIMILAR, "gw": "spare"}
    assert "pve-a1" in proposal.tiers["app"]
    gw = texts(proposal, "gw")
    assert (
        "4 GB VRAM (3.8 GB usable at 0.95) cannot carry the role map's models: 32 GB (qwen-32b 24 + mistral-7b 8)" in gw
    )
    assert any(
        w.startswith("no GPU can serve the role map's models: no host gets inference (gw: 4 GB VRAM")
        for w in proposal.warnings
    )
    assert "GPU NVIDIA GeForce GTX 1650 4 GB VRAM" in texts(proposal, "pve-a1")


def test_a_far_gpu_gets_no_inference_and_the_budget_is_named(rm) -> None:
    proposal = propose("far-gpu", rm)
    assert proposal.table() == {**SIMILAR, "gw": "spare"}
    warning = next(w for w in proposal.warnings if w.startswith("no GPU can serve the role map's models"))
    assert "gpu-far: its GPU carries the models, but it is 40.2 ms away, beyond the 2 ms budget of the application" in (
        warning
    )
    assert "no GPU that carries the models, not a Proxmox node, neither a VM nor dev tools: spare" in texts(
        proposal, "gw"
    )
    assert proposal.storage_plan[0] == "models: SSHFS mount waits: this proposal has no inference host"


def test_a_gpu_without_its_driver_is_its_own_finding_not_a_sandbox(rm) -> None:
    proposal = propose("no-driver", rm)
    assert proposal.table() == {**SIMILAR, "gw": "gpu-driver-missing"}
    gw = proposal.role_of("gw")
    assert gw.label == "GPU present, driver missing" and gw.derived
    assert "GPU NVIDIA AD102GL [L40S] (lspci: no NVIDIA driver)" in texts(proposal, "gw")
    assert (
        "gw: GPU present, driver missing (NVIDIA AD102GL [L40S]): install the NVIDIA driver (CUDA >= 12.8) "
        "and survey again"
    ) in proposal.warnings


def test_implausible_and_duplicate_measurements_are_set_aside_one_line_each(rm) -> None:
    proposal = propose("implausible", rm)
    table = proposal.table()
    assert table["pve-a2"] == "data" and not proposal.role_of("pve-a2").derived  # kept, numbers unused
    assert table["pve-a3"] == "backup" and table["pve-a1"] == "application"
    assert (table["pve-a1.mgmt"], table["dev-nat"], table["pve-a1O"]) == ("duplicate", "duplicate", "unknown")
    assert {p.host for p in proposal.plan} == {"pve-a1"}  # nothing on the aliases, the unknown or the lossy host
    assert (
        "pve-a2: implausible measurements, not used: memory.available_gb: 689 GB > 124.9 GB total; "
        "it keeps its role-map role"
    ) in proposal.warnings
    assert "pve-a3: 40 % packet loss from gw (> 5 %): no latency-sensitive role" in proposal.warnings
    assert (
        "pve-a1.mgmt and pve-a1 are one machine (machine-id 0a1b2c3d4e5f40718293a4b5c6d7e8f9): counted once, as pve-a1"
    ) in proposal.warnings
    assert "dev-nat and dev are one machine (machine-id 5f60718293a4b5c6d7e8f90a1b2c3d4e): counted once, as dev" in (
        proposal.warnings
    )
    assert "pve-a1O: measured but not in the role map (a typo of pve-a1?): given no role, no VM planned on it" in (
        proposal.warnings
    )
    assert any(
        w.startswith("the data VMs fit on no Proxmox node within the budget: db fits on no") for w in proposal.warnings
    )
    assert "40 % packet loss, above the 5 % limit: no latency-sensitive role, so backups & batch" in texts(
        proposal, "pve-a3"
    )


def test_one_address_under_two_names_without_machine_ids(rm) -> None:
    survey = load_survey(FLEETS / "fleet-a-similar.yaml")
    alias = survey.hosts["pve-a1"].model_copy(update={"identity": None})
    hosts = {**survey.hosts, "pve-a1-old": alias}
    proposal = propose_roles(survey.model_copy(update={"hosts": hosts}), rm)
    assert proposal.table()["pve-a1-old"] == "duplicate"
    assert "pve-a1-old and pve-a1 are one machine (address 10.20.0.11): counted once, as pve-a1" in proposal.warnings


def test_a_host_measured_twice_in_one_file_is_refused_with_its_line() -> None:
    with pytest.raises(MeasurementsError) as exc:
        load_survey(FLEETS / "duplicate-key.yaml")
    assert str(exc.value) == (
        f"{FLEETS / 'duplicate-key.yaml'}:13: hosts.pve-a1: the same host twice (YAML would keep only the last): "
        "one name per host"
    )
