"""The role proposal: the seed's numbers give the seed's table; changed numbers move the roles, with reasons."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from brainall_ops.rolemap import load_rolemap
from brainall_ops.survey.measurements import Survey, load_survey
from brainall_ops.survey.roles import ROLES, Proposal, check_proposal, propose_roles

SEED = Path(__file__).parent / "fixtures" / "survey" / "seed-measurements.yaml"

# FLEET.md's "role" column, host by host (the Storage Box included).
SEED_TABLE = {
    "gpu": ("inference", "AI inference"),
    "prox-101": ("data", "data & mail"),
    "prox-106": ("application", "application server"),
    "prox-102": ("backup", "backups & batch only"),
    "bastion": ("bastion", "dev sandbox"),
    "storagebox": ("storage", "central storage"),
}


@pytest.fixture(scope="module")
def rm():
    return load_rolemap()


def seed_data() -> dict:
    return yaml.safe_load(SEED.read_text())


def survey_of(data: dict) -> Survey:
    return Survey.model_validate(data)


def propose(data: dict, rm) -> Proposal:
    survey = survey_of(data)
    proposal = propose_roles(survey, rm)
    assert check_proposal(proposal, survey, rm) == []
    return proposal


def sources(proposal: Proposal, host: str) -> dict[str, str]:
    return {reason.text: reason.source for reason in proposal.role_of(host).reasons}


def test_the_seeds_numbers_give_exactly_the_seeds_role_table(rm) -> None:
    proposal = propose_roles(load_survey(SEED), rm)
    assert {r.host: (r.role, r.label) for r in proposal.roles} == SEED_TABLE
    # ... which is also the role map's, serves included (nothing differs)
    for r in proposal.roles:
        if r.host != "storagebox":
            assert not r.differs and r.serves == tuple(rm.host(r.host).serves), r.host
    assert check_proposal(proposal, load_survey(SEED), rm) == []
    # and the role map's VMs land where the seed put them
    assert {p.vm: p.host for p in proposal.plan} == {
        "vm-brainall-api": "prox-106",
        "vm-brainall-workers": "prox-106",
        "vm-brainall-nginx": "prox-106",
        "vm-brainall-db": "prox-101",
    }


def test_each_role_names_the_input_that_decided_it(rm) -> None:
    proposal = propose_roles(load_survey(SEED), rm)
    gpu = sources(proposal, "gpu")
    assert gpu["GPU NVIDIA RTX 6000 Ada Generation 49 GB VRAM"] == "measured"
    prox102 = sources(proposal, "prox-102")
    assert prox102["25.673 ms from gpu (icmp, 0 % loss)"] == "measured"
    app = proposal.role_of("prox-106").reasons
    placed = next(r for r in app if r.source == "placement")
    assert "most free RAM" in placed.text and "prox-106: 105.6 GB RAM" in placed.text
    data = sources(proposal, "prox-101")
    assert data["mail: VM-MX01 (mail server, role-map note)"] == "measured"
    assert any("less free RAM (43.5 GB)" in text for text in data)
    bastion = sources(proposal, "bastion")
    assert bastion["a VM 9020 on prox-101"] == "role map"
    assert any(text.startswith("runs docker") and src == "role map" for text, src in bastion.items())
    box = sources(proposal, "storagebox")
    assert box["port 23 reachable from gpu"] == "measured" and box["connect 0.483 ms from gpu"] == "measured"


def test_warnings_for_the_bastions_disk_and_ceph(rm) -> None:
    warnings = propose_roles(load_survey(SEED), rm).warnings
    assert "bastion: disk nearly full: 6.7 GB free of 50 GB (13 %) on /" in warnings
    assert (
        "Ceph HEALTH_WARN: POOL_TOO_MANY_PGS (1 pools have too many placement groups) (seen from prox-101)" in warnings
    )
    assert len(warnings) == 2


def test_more_free_ram_on_prox101_moves_the_app_vms_there_as_far_as_its_vcpus_go(rm) -> None:
    data = seed_data()
    data["hosts"]["prox-101"]["memory"]["available_gb"] = 110
    data["hosts"]["prox-106"]["memory"]["available_gb"] = 30
    proposal = propose(data, rm)
    placed = {p.vm: p for p in proposal.app_placements}
    assert {vm: p.host for vm, p in placed.items()} == {
        "vm-brainall-api": "prox-101",
        "vm-brainall-workers": "prox-101",
        # 32 threads - 8 (bastion-lab) - 16 - 8: no vCPU left on prox-101 for nginx
        "vm-brainall-nginx": "prox-106",
    }
    assert dict(placed["vm-brainall-nginx"].rejected)["prox-101"] == "only 0 vCPU free (needs 4)"
    assert proposal.table()["prox-101"] == "application" and proposal.role_of("prox-101").differs


def test_app_vms_that_fit_on_no_single_node_spread_and_say_so(rm) -> None:
    # issue 23: roles follow from where the VMs land; the data VM that fits nowhere is a warning,
    # not a data role handed to a node that cannot hold it
    data = seed_data()
    data["hosts"]["prox-106"]["memory"]["available_gb"] = 30  # 17.6 GB after headroom
    proposal = propose(data, rm)
    assert {p.vm: p.host for p in proposal.app_placements} == {
        "vm-brainall-api": "prox-101",  # 32 GB: only prox-101 (43.5 GB) has room
        "vm-brainall-workers": "prox-106",
        "vm-brainall-nginx": "prox-101",
    }
    for host in ("prox-101", "prox-106"):
        role = proposal.role_of(host)
        assert role.role == "application" and role.serves == ("app",)
    assert any(
        w.startswith("the app tier (vm-brainall-api, vm-brainall-workers, vm-brainall-nginx: 28 vCPU, 56 GB RAM")
        and w.endswith("fits on no single node: spread over prox-101, prox-106")
        for w in proposal.warnings
    )
    assert any(
        w.startswith("the data VMs fit on no Proxmox node within the budget: vm-brainall-db fits on no")
        for w in proposal.warnings
    )
    assert not any(r.role == "data" for r in proposal.roles)


def test_app_vms_that_fit_nowhere_are_a_warning_not_a_crash(rm) -> None:
    data = seed_data()
    for host in ("prox-101", "prox-106"):
        data["hosts"][host]["memory"]["available_gb"] = 20
    proposal = propose(data, rm)
    assert not any(r.role == "application" for r in proposal.roles)
    assert any(w.startswith("the app VMs fit on no Proxmox node within the budget") for w in proposal.warnings)


def test_a_close_frankfurt_is_no_longer_the_backup_site(rm) -> None:
    data = seed_data()
    data["latency"]["gpu"]["prox-102"]["avg_ms"] = 0.9
    proposal = propose(data, rm)
    # issue 23: the data VM goes to prox-101 (more free RAM); nothing lands on prox-102: spare, said so
    assert proposal.table()["prox-101"] == "data" and proposal.table()["prox-102"] == "spare"
    assert "no planned VM lands here: spare Proxmox capacity within the budget" in sources(proposal, "prox-102")
    assert "no host lies beyond the 2 ms budget: no far site for backups & batch" in proposal.warnings


def test_roles_judge_latency_by_the_median_where_the_replies_were_kept(rm) -> None:
    data = seed_data()
    # one slow reply: the mean is past the budget, the median is not
    data["latency"]["gpu"]["prox-106"].update(avg_ms=3.648, median_ms=0.844, max_ms=14.9)
    proposal = propose(data, rm)
    assert proposal.table()["prox-106"] == "application"
    assert "0.844 ms from gpu (median, mean 3.648, icmp, 0 % loss): within the 2 ms budget" in sources(
        proposal, "prox-106"
    )


def test_a_slow_hel1_host_gets_backups_and_never_app_vms(rm) -> None:
    data = seed_data()
    data["latency"]["gpu"]["prox-106"]["avg_ms"] = 12.5
    proposal = propose(data, rm)
    assert proposal.table()["prox-106"] == "backup"
    assert "prox-106" not in {p.host for p in proposal.app_placements}
    assert "prox-106" not in {p.host for p in proposal.plan}


def test_a_host_that_did_not_answer_keeps_its_role_map_role(rm) -> None:
    data = seed_data()
    data["hosts"]["prox-102"] = {"address": "192.168.100.2", "answered": False, "reason": "no SSH answer within 15 s"}
    del data["latency"]["gpu"]["prox-102"]
    proposal = propose(data, rm)
    kept = proposal.role_of("prox-102")
    assert (kept.role, kept.derived) == ("backup", False)
    assert "did not answer the survey: no SSH answer within 15 s" in sources(proposal, "prox-102")
    assert "prox-102: did not answer: no SSH answer within 15 s" in proposal.warnings


def test_unknown_latency_keeps_the_role_and_says_so(rm) -> None:
    data = seed_data()
    data["latency"]["gpu"]["bastion"] = {
        "method": "tcp/22",
        "sent": 5,
        "received": 0,
        "loss_pct": 100,
        "reason": "timed out",
    }
    proposal = propose(data, rm)
    assert proposal.role_of("bastion").derived is False
    assert "no latency from gpu: timed out" in sources(proposal, "bastion")


def test_survey_and_role_map_disagreeing_on_the_gpu_is_a_warning(rm) -> None:
    data = seed_data()
    del data["hosts"]["gpu"]["gpu"]
    data["hosts"]["gpu"]["absent"]["gpu"] = "no nvidia-smi (no NVIDIA GPU driver)"
    proposal = propose(data, rm)
    # issue 23: the role map's card without nvidia-smi is "GPU present, driver missing", not a sandbox
    assert proposal.table()["gpu"] == "gpu-driver-missing"
    assert proposal.role_of("gpu").label == "GPU present, driver missing"
    assert any(
        w.startswith("no GPU can serve the role map's models: no host gets inference") for w in proposal.warnings
    )
    assert any(w.startswith("gpu: the role map lists a NVIDIA RTX 6000 Ada") for w in proposal.warnings)
    # and with lspci saying there is no NVIDIA device at all, it is no GPU host: spare, not a sandbox
    data["hosts"]["gpu"]["absent"]["gpu"] = "no nvidia-smi (no NVIDIA GPU driver); lspci lists no NVIDIA device"
    proposal = propose(data, rm)
    assert proposal.table()["gpu"] == "spare"
    assert "no host has a GPU: no host gets inference" in proposal.warnings


def test_running_vms_seen_by_the_survey_decide_mail(rm) -> None:
    data = seed_data()
    data["hosts"]["prox-101"]["proxmox"]["vms"] = [{"vmid": 120, "name": "vm-postgis"}]
    data["hosts"]["prox-101"]["proxmox"]["running_vms"] = 1
    proposal = propose(data, rm)
    assert proposal.role_of("prox-101").label == "data" and proposal.role_of("prox-101").serves == ("data",)
    data["hosts"]["prox-101"]["proxmox"]["vms"].append({"vmid": 121, "name": "mail-relay"})
    assert propose(data, rm).role_of("prox-101").label == "data & mail"


def test_every_role_used_is_in_the_catalogue(rm) -> None:
    proposal = propose_roles(load_survey(SEED), rm)
    assert {r.role for r in proposal.roles} <= set(ROLES)
