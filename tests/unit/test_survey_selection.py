"""Which hosts the survey measures and where it looks for the Storage Box, from the generated inventories."""

from __future__ import annotations

import runpy
from typing import Any

import pytest

from brainall_ops.rolemap import REPO_ROOT
from brainall_ops.survey.measurements import Target
from brainall_ops.survey.selection import SelectionError, parse_target, select


def inventory(name: str) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, list[str]]]:
    """A generated inventory's hosts and groups, read as the plain Python data it is."""
    module = runpy.run_path(str(REPO_ROOT / "inventories" / name))
    hosts = [(host, dict(data)) for host, data in module["all"]]
    groups = {k: v for k, v in module.items() if isinstance(v, list) and k != "all" and not k.startswith("_")}
    return hosts, groups


def test_lab_inventory_surveys_the_fleets_hosts_and_probes_the_storagebox_port() -> None:
    hosts, groups = inventory("lab.py")
    selection = select(hosts, groups)
    assert selection.names == ("gpu", "prox-101", "prox-106", "prox-102", "bastion")
    assert selection.addresses["gpu"] == "10.77.1.130" and selection.addresses["prox-102"] == "10.77.1.2"
    assert selection.storagebox == Target(name="storagebox", address="10.77.1.50", port=23)
    assert (selection.environment, selection.reference_host, selection.rolemap) == (
        "lab",
        "gpu",
        "inventories/brainall-v2.yaml",
    )
    assert selection.left_out["storagebox"].startswith("the Storage Box")
    assert selection.left_out["vm-brainall-db"].startswith("a VM the plan has yet to create")


def test_production_inventory_probes_the_storage_box_by_its_dns_name() -> None:
    hosts, groups = inventory("hel1.py")
    selection = select(hosts, groups)
    assert selection.storagebox == Target(name="storagebox", address="u503462.your-storagebox.de", port=23)
    assert "prox-102" not in selection.names  # Falkenstein is fsn1.py's
    assert selection.environment == "production"


def test_limit_by_host_and_group_and_the_storagebox_override() -> None:
    hosts, groups = inventory("lab.py")
    selection = select(hosts, groups, limit=["proxmox", "bastion"], storagebox=parse_target("10.77.1.130:2323"))
    assert selection.names == ("prox-101", "prox-106", "prox-102", "bastion")
    assert selection.storagebox == Target(name="storagebox", address="10.77.1.130", port=2323)
    assert selection.reference_host is None  # gpu is not surveyed: no latency "from the GPU box"
    with pytest.raises(SelectionError, match=r"^--limit nope: no such host or group \(known: "):
        select(hosts, groups, limit=["nope"])


@pytest.mark.parametrize("text", ["10.77.1.50", "10.77.1.50:", ":23", "10.77.1.50:99999", "host:port"])
def test_bad_storagebox_targets_are_refused(text: str) -> None:
    with pytest.raises(SelectionError, match="expected ADDRESS:PORT"):
        parse_target(text)
