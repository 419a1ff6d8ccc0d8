"""`brainall-ops plan --live` for Proxmox: reads the cluster with GET requests only, and shows
`+ create / ~ update / = unchanged` per VM and each node's memory budget from live numbers.

The command line is run on a role map that holds only the Proxmox part of the fleet (and whose
production endpoint is loopback port 1): the other concerns' live readers would otherwise reach
the role map's production hosts, which tests must never do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from brainall_ops.lab.pve_simulator.cluster import GIB
from brainall_ops.lab.pve_simulator.harness import ENVIRONMENT, Fleet, write_rolemap_copy
from brainall_ops.planning.changes import Change
from brainall_ops.planning.fleet import place_rolemap
from brainall_ops.planning.plan import PlanContext
from brainall_ops.proxmox.plan import plan_changes

NAMES = {"vm-brainall-api", "vm-brainall-workers", "vm-brainall-nginx", "vm-brainall-db"}
# the vzdump storage and job of data.vzdump, read after the VMs (test_proxmox_vzdump.py)
VZDUMP_READS = ["/storage/storagebox", "/cluster/backup"]


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    with Fleet() as fleet:
        for key, value in fleet.env().items():
            if key.startswith("BRAINALL_"):
                monkeypatch.setenv(key, value)
        yield fleet


def live_plan(fleet: Fleet) -> tuple[list[Change], list[Change], list[str]]:
    """(VM changes, budget rows, refusals) of the Proxmox contribution to a live lab plan."""
    context = PlanContext(place_rolemap(fleet.rm), live=True, options={"environment": ENVIRONMENT})
    out = plan_changes(fleet.rm, context)
    vms = [c for c in out.changes if "vcpu" in c.detail]  # not the vzdump storage and job
    budgets = [c for c in out.changes if c.detail.get("budget")]
    return vms, budgets, out.refusals


def only_reads(fleet: Fleet, mark: int) -> list[str]:
    calls = fleet.requests_since(mark)
    assert calls, "the live plan read nothing"
    assert {c["method"] for c in calls} == {"GET"}
    return [c["path"] for c in calls]


def test_live_plan_of_an_empty_cluster_creates_everything_with_live_budgets(fleet: Fleet) -> None:
    mark = fleet.simulator.mark()
    vms, budgets, refusals = live_plan(fleet)
    assert only_reads(fleet, mark) == ["/cluster/resources", *VZDUMP_READS]
    assert refusals == []
    assert {c.target: c.action for c in vms} == dict.fromkeys(NAMES, "create")
    assert all(c.symbol == "+" and c.detail["live"] for c in vms)
    node = fleet.cluster.nodes["prox-106"]
    used = fleet.cluster.node_memory_used("prox-106")
    (b106,) = [b for b in budgets if b.detail["node"] == "prox-106"]
    assert b106.detail["mem"] == used and b106.detail["maxmem"] == node.memory_total
    assert b106.detail["adds"] == (32 + 16 + 8) * GIB
    assert "the plan adds 56 GiB" in b106.summary
    (b101,) = [b for b in budgets if b.detail["node"] == "prox-101"]
    assert b101.detail["adds"] == 16 * GIB


def test_live_plan_after_phase2_is_unchanged_then_shows_drift(fleet: Fleet) -> None:
    run = fleet.pyinfra()
    assert run.returncode == 0, run.output
    mark = fleet.simulator.mark()
    vms, budgets, _ = live_plan(fleet)
    assert only_reads(fleet, mark) == ["/cluster/resources", *VZDUMP_READS]
    assert {c.target: c.symbol for c in vms} == dict.fromkeys(NAMES, "=")
    assert all(b.detail["adds"] == 0 for b in budgets)

    (api,) = fleet.vms_named("vm-brainall-api")
    fleet.simulator.edit_vm(api.vmid, set={"cores": "4", "memory": "16384"})
    mark = fleet.simulator.mark()
    vms, budgets, _ = live_plan(fleet)
    paths = only_reads(fleet, mark)
    assert paths[0] == "/cluster/resources" and paths[-2:] == VZDUMP_READS
    assert all(f"/qemu/{api.vmid}/" in p for p in paths[1:-2])
    changed = {c.target: c for c in vms if c.action != "unchanged"}
    assert set(changed) == {"vm-brainall-api"}
    assert changed["vm-brainall-api"].symbol == "~"
    assert "cores 4 → 16" in changed["vm-brainall-api"].summary
    assert "memory 16 → 32 GiB" in changed["vm-brainall-api"].summary
    (b106,) = [b for b in budgets if b.detail["node"] == "prox-106"]
    assert b106.detail["adds"] == 16 * GIB


def proxmox_only(fleet: Fleet, tmp_path: Path) -> Path:
    key = str(fleet.lab_dir / "id_ed25519.pub")
    return write_rolemap_copy(
        tmp_path / "proxmox-only.yaml", lambda data: data["proxmox"].update(ssh_key_files=[key]), only_proxmox=True
    )


def test_brainall_ops_plan_live_on_the_command_line(fleet: Fleet, tmp_path: Path) -> None:
    rolemap = proxmox_only(fleet, tmp_path)
    mark = fleet.simulator.mark()
    done = fleet.brainall_ops("plan", "--live", "--json", "--rolemap", str(rolemap))
    assert done.returncode == 2, done.stderr  # changes to make
    plan = json.loads(done.stdout)
    proxmox = [c for c in plan["changes"] if c["concern"] == "proxmox" and not c["detail"].get("budget")]
    templates = {c["target"]: c["symbol"] for c in proxmox if c["target"].startswith("template ")}
    assert templates and set(templates.values()) == {"="}  # the seeded template, already there on each node
    vms = {c["target"]: c["symbol"] for c in proxmox if not c["target"].startswith("template ")}
    assert vms == dict.fromkeys(NAMES, "+")
    budgets = [c for c in plan["changes"] if c["detail"].get("budget")]
    assert {b["detail"]["node"] for b in budgets} == {"prox-101", "prox-102", "prox-106"}
    only_reads(fleet, mark)

    offline = fleet.brainall_ops("plan", "--json", "--rolemap", str(rolemap))
    assert offline.returncode == 2, offline.stderr
    assert {c["target"] for c in json.loads(offline.stdout)["changes"] if c["concern"] == "proxmox"} == NAMES
    assert fleet.requests_since(mark)[-1]["path"] == "/cluster/resources"  # the offline plan read nothing


def test_live_plan_that_cannot_reach_the_api_is_one_error_line(fleet: Fleet, tmp_path: Path) -> None:
    rolemap = proxmox_only(fleet, tmp_path)
    done = fleet.brainall_ops(
        "plan", "--live", "--rolemap", str(rolemap), env=fleet.env(BRAINALL_PROXMOX_URL="https://127.0.0.1:1")
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: proxmox (live plan): GET /cluster/resources:")
    assert fleet.secret not in done.stderr
