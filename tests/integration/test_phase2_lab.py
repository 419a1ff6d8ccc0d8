"""Phase 2 rehearsed on the lab: VMs created through the Proxmox API (the simulator) become real
lab hosts at their cloud-init addresses, and later phases reach them over SSH."""

from __future__ import annotations

import pytest

from brainall_ops.rolemap import load_rolemap
from brainall_ops.rolemap.environment import endpoints
from tests.integration.lab_fixture import Lab, phase2_through_simulator
from tests.integration.pyinfra_run import LAB_INVENTORY, PyinfraRun, run_pyinfra

VMS = ["vm-brainall-api", "vm-brainall-workers", "vm-brainall-nginx", "vm-brainall-db"]


@pytest.fixture(scope="module")
def second_run(lab: Lab) -> PyinfraRun:
    if lab.simulator is None:  # a reused lab: run phase 2 through a fresh simulator now
        phase2_through_simulator(lab)
    token = lab.state_dir / "proxmox" / "token-secret"
    return run_pyinfra(LAB_INVENTORY, "deploys/phase2.py", "--limit", "proxmox",
                       env={"BRAINALL_PROXMOX_TOKEN_FILE": str(token)})


def test_phase2_created_the_vms_through_the_api(lab: Lab, second_run: PyinfraRun) -> None:
    for vm in VMS:
        assert vm in lab.phase2_output, lab.phase2_output[-3000:]
    assert "Could not connect" not in lab.phase2_output


@pytest.mark.parametrize("vm", VMS)
def test_vm_answers_ssh_at_its_cloud_init_address(lab: Lab, second_run: PyinfraRun, vm: str) -> None:
    expected = str(endpoints(load_rolemap(), "lab")[vm].address)
    host = lab.host(vm)
    assert host.check_output("hostname") == vm
    assert f"inet {expected}/" in host.check_output("ip -4 -o addr show")
    assert host.run("systemctl is-system-running --wait").stdout.strip() in ("running", "degraded")


def test_second_phase2_run_changes_nothing(second_run: PyinfraRun) -> None:
    assert second_run.returncode == 0, second_run.output[-3000:]
    assert (second_run.changed, second_run.error) == (0, 0), second_run.output[-3000:]
    assert second_run.no_change > 0
