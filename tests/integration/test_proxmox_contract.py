"""The contract with the real Proxmox VE API: every endpoint the toolkit uses exists in PVE
9.1.3's official schema, with the parameters the toolkit sends.

The schema is read here with plain JSON walking, independently of the simulator's validator, so
a mistake shared by the simulator and the client cannot hide. The toolkit's calls are the real
ones: the converger and the live plan drive the simulator through every path (create, update,
reboot, a failing task's log), and the simulator's request log says what was sent.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from brainall_ops.lab.pve_simulator.harness import ENVIRONMENT, Fleet
from brainall_ops.lab.pve_simulator.schema import SCHEMA_FILE, SCHEMA_SHA256
from brainall_ops.planning.fleet import place_rolemap
from brainall_ops.planning.plan import PlanContext
from brainall_ops.proxmox.client import ENDPOINTS, ConnectionSettings, ProxmoxClient, ProxmoxError
from brainall_ops.proxmox.operations import Converger
from brainall_ops.proxmox.plan import plan_changes
from brainall_ops.proxmox.spec import read_ssh_keys, vm_specs
from brainall_ops.proxmox.vzdump import StorageConverger, converge_job_with
from brainall_ops.proxmox.vzdump_spec import vzdump_spec
from brainall_ops.shared.secrets import Secret

# ../shared beside the checkout, as on the build machines and in CI
OFFICIAL = Path(__file__).resolve().parents[3] / "shared" / "pve-api" / "pve-api-9.1.3.json"


def official_methods() -> dict[tuple[str, str], dict[str, Any]]:
    def walk(nodes: list[dict[str, Any]]) -> Any:
        for node in nodes:
            yield node
            yield from walk(node.get("children") or [])

    tree = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return {(m, n["path"]): info for n in walk(tree) for m, info in (n.get("info") or {}).items()}


def template_of(methods: dict[tuple[str, str], Any], method: str, path: str) -> str:
    parts = path.strip("/").split("/")
    found = []
    for http_method, template in methods:
        want = template.strip("/").split("/")
        if (
            http_method == method
            and len(want) == len(parts)
            and all(w.startswith("{") or w == p for w, p in zip(want, parts, strict=True))
        ):
            found.append(template)
    assert found, f"{method} {path} is not an API method of PVE 9.1.3"
    return min(found, key=lambda t: t.count("{"))  # literal segments win, as in PVE's router


def declared(info: dict[str, Any], name: str) -> bool:
    props = info.get("parameters", {}).get("properties", {})
    if name in props:
        return True
    return any(k.endswith("[n]") and re.fullmatch(re.escape(k[:-3]) + r"\d+", name) for k in props)


def test_the_packaged_schema_is_the_official_pve_9_1_3_apidata() -> None:
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256
    if OFFICIAL.exists():  # on the build machines: byte for byte the file published with the task
        assert OFFICIAL.read_bytes() == SCHEMA_FILE.read_bytes()


def test_every_endpoint_the_toolkit_declares_is_in_the_schema() -> None:
    methods = official_methods()
    for method, template in ENDPOINTS:
        assert (method, template) in methods, f"{method} {template} is not in PVE 9.1.3's API"
        assert methods[(method, template)].get("allowtoken", 1), f"{method} {template} refuses API tokens"


@pytest.fixture(scope="module")
def exercised() -> list[dict[str, Any]]:
    """The request log of the toolkit's code driving every path it has."""
    with Fleet() as fleet:
        client = ProxmoxClient(
            ConnectionSettings(
                url=fleet.simulator.url, token_id=fleet.token_id, verify=str(fleet.simulator.ca_file), task_timeout_s=10
            ),
            Secret(fleet.secret),
        )
        env = fleet.env()
        vm_hosts = {p.vm: p.host for p in place_rolemap(fleet.rm).placements}
        specs = vm_specs(fleet.rm, ENVIRONMENT, vm_hosts, read_ssh_keys(fleet.rm, ENVIRONMENT, env))
        fleet.simulator.add_fault(kind="task_fail", task_type="qmstart", message="start failed: injected")
        with pytest.raises(ProxmoxError, match="start failed: injected"):
            Converger(client, specs[0], allow_reboot=False).run()  # reads the failed task's log
        for spec in specs:
            Converger(client, spec, allow_reboot=False).run()
        (api,) = fleet.vms_named(specs[0].name)
        fleet.simulator.edit_vm(api.vmid, set={"cores": "2"})
        Converger(client, specs[0], allow_reboot=True).run()  # config while running, pending, reboot
        vzdump = vzdump_spec(fleet.rm, ENVIRONMENT)
        assert vzdump is not None
        StorageConverger(client, vzdump, rotate_password=False, password=Secret(fleet.box_password)).run()
        converge_job_with(client, vzdump)  # created
        client.request("PUT", f"/cluster/backup/{vzdump.job_id}", schedule="sat 03:00")
        converge_job_with(client, vzdump)  # updated
        StorageConverger(client, vzdump, rotate_password=True, password=Secret(fleet.box_password)).run()
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                if key.startswith("BRAINALL_"):
                    patch.setenv(key, value)
            context = PlanContext(place_rolemap(fleet.rm), live=True, options={"environment": ENVIRONMENT})
            plan_changes(fleet.rm, context)
        return fleet.simulator.requests()


def test_every_call_made_is_a_declared_endpoint_with_declared_parameters(exercised: list[dict[str, Any]]) -> None:
    methods = official_methods()
    used: set[tuple[str, str]] = set()
    for call in exercised:
        template = template_of(methods, call["method"], call["path"])
        used.add((call["method"], template))
        assert (call["method"], template) in ENDPOINTS, f"{call['method']} {template} is used but not declared"
        info = methods[(call["method"], template)]
        sent = set(call["params"]) | {p[1:-1] for p in template.split("/") if p.startswith("{")}
        for name in sent:
            assert declared(info, name), f"{call['method']} {template}: parameter {name!r} is not in the schema"
        required = {
            k
            for k, v in info.get("parameters", {}).get("properties", {}).items()
            if not v.get("optional") and "[n]" not in k
        }
        assert required <= sent, f"{call['method']} {template}: required {required - sent} not sent"
    assert used == set(ENDPOINTS), f"declared but never exercised: {set(ENDPOINTS) - used}"


def test_the_simulator_accepted_every_call(exercised: list[dict[str, Any]]) -> None:
    # the simulator answers 400 to an unknown or malformed parameter and 500 to an answer that
    # would not match the schema: every call went through
    # ... except the read of the vzdump storage before it exists: PVE answers that with 500
    # "storage 'ID' does not exist", and the toolkit reads it so
    missing = [c for c in exercised if (c["method"], c["status"]) == ("GET", 500) and c["path"].startswith("/storage/")]
    assert len(missing) == 1
    assert [c for c in exercised if c["status"] != 200 and c not in missing] == []
