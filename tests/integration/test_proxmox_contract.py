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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException
from proxmoxer.tools import Tasks

from brainall_ops.lab.pve_simulator.harness import ENVIRONMENT, Fleet, write_cloud_image, write_rolemap_copy
from brainall_ops.lab.pve_simulator.schema import SCHEMA_FILE, SCHEMA_SHA256
from brainall_ops.lab.pve_simulator.server import Simulator
from brainall_ops.planning.fleet import place_rolemap
from brainall_ops.planning.plan import PlanContext
from brainall_ops.proxmox.client import ENDPOINTS, ConnectionSettings, ProxmoxClient, ProxmoxError
from brainall_ops.proxmox.operations import Converger, TemplateBuilder
from brainall_ops.proxmox.plan import plan_changes
from brainall_ops.proxmox.spec import read_ssh_keys, template_specs, vm_specs
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


IMAGE_URL = (
    "https://cloud.debian.org/images/cloud/bookworm/20251117-2299/debian-12-genericcloud-amd64-20251117-2299.qcow2"
)


@pytest.fixture(scope="module")
def exercised(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The request log of the toolkit's code driving every path it has."""
    tmp = tmp_path_factory.mktemp("exercised")
    image, _, sha512 = write_cloud_image(tmp / "image.qcow2")
    rolemap = write_rolemap_copy(
        tmp / "rolemap.yaml", lambda data: data["proxmox"].update(template_image={"url": IMAGE_URL, "checksum": sha512})
    )
    with Fleet(rolemap=rolemap, image_sources={IMAGE_URL: image}) as fleet:
        client = ProxmoxClient(
            ConnectionSettings(
                url=fleet.simulator.url, token_id=fleet.token_id, verify=str(fleet.simulator.ca_file), task_timeout_s=10
            ),
            Secret(fleet.secret),
        )
        env = fleet.env()
        vm_hosts = {p.vm: p.host for p in place_rolemap(fleet.rm).placements}
        specs = vm_specs(fleet.rm, ENVIRONMENT, vm_hosts, read_ssh_keys(fleet.rm, ENVIRONMENT, env))
        # one node's template missing: the toolkit builds it (download-url, create with import-from, template)
        (template,) = [vm for vm in fleet.vms_named("debian-12-cloudinit") if vm.node == specs[0].node]
        del fleet.cluster.vms[template.vmid]
        (template_spec,) = template_specs(fleet.rm, [specs[0].node])
        TemplateBuilder(client, template_spec).run()
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


# --------------------------------------------------------------------------- PVE's behaviour, endpoint by endpoint
# Each test below drives the simulator with proxmoxer alone (no toolkit code) and names the PVE
# function whose behaviour it checks: which checks answer at once (HTTP 400/500, no task) and
# which fail the task, with PVE's texts.

SIM_TOKEN = "brainall-ops@pve!contract"
SIM_SECRET = "c0ntract-5ecret-never-shown"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    from brainall_ops.lab.pve_simulator import Cluster, Settings, seed_from_rolemap
    from brainall_ops.rolemap.loader import load_rolemap

    cluster = seed_from_rolemap(Cluster(Settings(task_seconds=0.01, lock_wait_s=0.3)), load_rolemap())
    cluster.add_token(SIM_TOKEN, SIM_SECRET)
    with Simulator(cluster, tls_dir=tmp_path_factory.mktemp("tls")) as simulator:
        yield simulator


def px_for(sim: Simulator, token: str = SIM_TOKEN, secret: str = SIM_SECRET) -> ProxmoxAPI:
    host, port = sim.url.removeprefix("https://").split(":")
    user, name = token.split("!")
    return ProxmoxAPI(host, port=int(port), user=user, token_name=name, token_value=secret, verify_ssl=str(sim.ca_file))


@pytest.fixture
def px(sim: Simulator) -> ProxmoxAPI:
    return px_for(sim)


def done(px: ProxmoxAPI, upid: str) -> dict[str, Any]:
    status = Tasks.blocking_status(px, upid, timeout=10, polling_interval=0.01)
    assert status is not None, f"{upid} did not finish"
    return status


def refused(call: Any) -> ResourceException:
    with pytest.raises(ResourceException) as info:
        call()
    return info.value


def fresh_vm(px: ProxmoxAPI, name: str, node: str = "prox-106", template: int = 9001) -> Any:
    vmid = int(px.cluster.nextid.get())
    assert done(px, px.nodes(node).qemu(template).clone.post(newid=vmid, name=name, full=1))["exitstatus"] == "OK"
    return px.nodes(node).qemu(vmid)


def test_booleans_are_0_or_1_only(px: ProxmoxAPI) -> None:
    """pve-common src/PVE/JSONSchema.pm check_type: a boolean parameter is '1' or '0', anything else
    "type check ('boolean') failed - got 'true'" (parse_boolean's true/on/yes only in property strings)."""
    vm = px.nodes("prox-106").qemu(9001)
    for value in ("true", "True", "yes", "on", "2"):
        error = refused(lambda value=value: vm.config.post(onboot=value))
        assert error.status_code == 400 and error.content == "Parameter verification failed."
        assert error.errors == {"onboot": f"type check ('boolean') failed - got '{value}'"}
    assert refused(lambda: px.nodes("prox-106").qemu(9001).clone.post(newid=990, full="true")).errors == {
        "full": "type check ('boolean') failed - got 'true'"
    }


def test_config_update_refusals_before_any_task(sim: Simulator, px: ProxmoxAPI) -> None:
    """qemu-server src/PVE/API2/Qemu.pm $update_vm_api: skiplock only for root@pam, "no options
    specified", set and delete of one key, unknown options (PVE::QemuServer::option_exists), then
    $load_and_check_config before fork_worker: "checksum mismatch" and check_lock, all at once."""
    vm = fresh_vm(px, "vm-config-refusals")
    bad = {
        "skiplock": ({"skiplock": 1, "cores": 2}, {"skiplock": "Only root may use this option."}),
        "both": (
            {"cores": 2, "delete": "cores"},
            {"delete": "you can't use '-cores' and -delete cores' at the same time"},
        ),
        "unknown": ({"delete": "bogus"}, {"delete": "unknown option 'bogus'"}),
        "revert": ({"revert": "nope"}, {"revert": "unknown option 'nope'"}),
    }
    for call in (vm.config.post, vm.config.put):
        for params, errors in bad.values():
            error = refused(lambda call=call, params=params: call(**params))
            assert (error.status_code, error.errors) == (400, errors), params
        nothing = refused(lambda call=call: call())
        assert (nothing.status_code, nothing.content) == (500, "no options specified")
        stale = refused(lambda call=call: call(cores=3, digest="0" * 40))
        assert (stale.status_code, stale.content) == (500, "checksum mismatch (file change by other user?)")
    tasks_before = len(sim.cluster.tasks)
    sim.edit_vm(_vmid(vm), set={"lock": "backup"})
    locked = refused(lambda: vm.config.post(cores=3))
    assert (locked.status_code, locked.content) == (500, "VM is locked (backup)")
    assert len(sim.cluster.tasks) == tasks_before  # refused before fork_worker: no task
    sim.edit_vm(_vmid(vm), delete=["lock"])
    upid = vm.config.post(delete="balloon")
    assert done(px, upid)["exitstatus"] == "OK"
    log = Tasks.decode_log(px.nodes("prox-106").tasks(upid).log.get())
    assert "cannot delete 'balloon' - not set in current configuration!" in log and log.endswith("TASK OK")


def _vmid(vm: Any) -> int:
    return int(str(vm._store["base_url"]).rstrip("/").rsplit("/", 1)[-1])


def test_cipassword_is_masked_in_config_and_pending_and_goes_to_the_config(sim: Simulator, px: ProxmoxAPI) -> None:
    """qemu-server src/PVE/API2/Qemu.pm vm_config ('**********') and vm_pending ('********** ' for a
    pending one); $update_vm_api writes cipassword to the config itself, crypt()ed (encrypt_pw)."""
    vm = fresh_vm(px, "vm-cipassword")
    done(px, vm.status.start.post())
    done(px, vm.config.post(cipassword="Hunter2-clear"))
    assert vm.config.get()["cipassword"] == "**********"
    assert vm.config.get(current=1)["cipassword"] == "**********"
    (entry,) = [e for e in vm.pending.get() if e["key"] == "cipassword"]
    assert entry == {"key": "cipassword", "value": "**********"}  # never pending
    stored = sim.cluster.vms[_vmid(vm)].config["cipassword"]
    assert stored.startswith("$5$") and "Hunter2-clear" not in stored
    assert "Hunter2-clear" not in json.dumps(sim.requests())
    both = refused(lambda: vm.config.get(current=1, snapshot="s1"))
    assert both.status_code == 400 and set(both.errors) == {"snapshot", "current"}


def test_vm_lists_are_filtered_by_privilege(sim: Simulator) -> None:
    """pve-manager PVE/API2/Cluster.pm resources and qemu-server PVE/API2/Qemu.pm vmlist: a VM only with
    VM.Audit on /vms/<vmid>, a storage only with Datastore.Audit, node stats only with Sys.Audit
    (PVE::API2Tools::extract_node_stats); pve-storage Status.pm index: Audit or AllocateSpace."""
    sim.add_token("auditor@pve!one", "one-secret", {"/vms/9000": ["VM.Audit"], "/storage/local": ["Datastore.Audit"]})
    one = px_for(sim, "auditor@pve!one", "one-secret")
    vms = [r for r in one.cluster.resources.get() if r["type"] == "qemu"]
    assert [v["vmid"] for v in vms] == [9000]
    assert {r["storage"] for r in one.cluster.resources.get(type="storage")} == {"local"}
    nodes = one.cluster.resources.get(type="node")
    assert nodes and all(set(n) == {"id", "node", "type", "status", "level", "cgroup-mode"} for n in nodes)
    assert [v["vmid"] for v in one.nodes("prox-101").qemu.get()] == [9000]
    assert one.nodes("prox-106").qemu.get() == []
    assert [s["storage"] for s in one.nodes("prox-101").storage.get()] == ["local"]
    assert [s["storage"] for s in one.storage.get()] == ["local"]


def test_stop_and_shutdown_write_pending_and_accept_a_stopped_vm(sim: Simulator, px: ProxmoxAPI) -> None:
    """qemu-server src/PVE/QemuServer.pm _do_vm_stop: a VM that is not running ends the task OK
    (before any lock check); else check_lock, and vm_stop_cleanup applies pending changes."""
    vm = fresh_vm(px, "vm-stop")
    assert done(px, vm.status.shutdown.post())["exitstatus"] == "OK"
    assert done(px, vm.status.stop.post())["exitstatus"] == "OK"
    done(px, vm.status.start.post())
    done(px, vm.config.post(cores=5, memory=3072))
    assert {e["key"] for e in vm.pending.get() if "pending" in e} == {"cores", "memory"}
    sim.edit_vm(_vmid(vm), set={"lock": "backup"})
    assert done(px, vm.status.shutdown.post())["exitstatus"] == "VM is locked (backup)"
    sim.edit_vm(_vmid(vm), delete=["lock"])
    assert done(px, vm.status.shutdown.post())["exitstatus"] == "OK"
    assert [e for e in vm.pending.get() if "pending" in e] == []
    assert vm.config.get(current=1)["cores"] == 5
    assert refused(lambda: vm.status.stop.post(skiplock=1)).errors == {"skiplock": "Only root may use this option."}


def test_reboot_of_a_stopped_vm_is_refused_at_once(px: ProxmoxAPI) -> None:
    """qemu-server src/PVE/API2/Qemu.pm vm_reboot: die "VM N not running" before fork_worker."""
    vm = fresh_vm(px, "vm-reboot")
    error = refused(vm.status.reboot.post)
    assert (error.status_code, error.content) == (500, f"VM {_vmid(vm)} not running")


def test_start_checks_run_in_the_task(sim: Simulator, px: ProxmoxAPI) -> None:
    """qemu-server src/PVE/QemuServer.pm vm_start: template, then check_lock, then "already running",
    all in the qmstart task."""
    assert done(px, px.nodes("prox-106").qemu(9001).status.start.post())["exitstatus"] == (
        "you can't start a vm if it's a template"
    )
    vm = fresh_vm(px, "vm-start")
    sim.edit_vm(_vmid(vm), set={"lock": "migrate"})
    assert done(px, vm.status.start.post())["exitstatus"] == "VM is locked (migrate)"
    sim.edit_vm(_vmid(vm), delete=["lock"])
    done(px, vm.status.start.post())
    assert done(px, vm.status.start.post())["exitstatus"] == f"VM {_vmid(vm)} already running"


def test_resize_checks_fail_the_task(sim: Simulator, px: ProxmoxAPI) -> None:
    """qemu-server src/PVE/API2/Qemu.pm resize_vm: only skiplock is refused at once; digest, lock,
    "disk 'X' does not exist", "you can't resize a cdrom" and "shrinking disks is not supported"
    end the resize task; the same size is a no-op that ends OK."""
    vm = fresh_vm(px, "vm-resize")
    assert refused(lambda: vm.resize.put(disk="scsi0", size="+1G", skiplock=1)).status_code == 400
    for params, exitstatus in (
        ({"disk": "scsi0", "size": "1G"}, "shrinking disks is not supported"),
        ({"disk": "scsi7", "size": "+1G"}, "disk 'scsi7' does not exist"),
        ({"disk": "ide2", "size": "+1G"}, "you can't resize a cdrom"),
        ({"disk": "scsi0", "size": "+1G", "digest": "0" * 40}, "checksum mismatch (file change by other user?)"),
        ({"disk": "scsi0", "size": "3G"}, "OK"),
    ):
        assert done(px, vm.resize.put(**params))["exitstatus"] == exitstatus, params
    assert done(px, vm.resize.put(disk="scsi0", size="+2G"))["exitstatus"] == "OK"
    assert "size=5G" in vm.config.get()["scsi0"]


def test_clone_refusals_and_the_vmid_race(sim: Simulator, px: ProxmoxAPI) -> None:
    """qemu-server src/PVE/API2/Qemu.pm clone_vm: $load_and_check before fork_worker (storage content
    400, "can't clone to non-shared storage", check_lock of the source, "unable to create VM N: config
    file already exists" for this node's config); from another node the VMID is only refused when
    pmxcfs renames the new config into place (pve-common PVE::File::file_set_contents)."""
    template = px.nodes("prox-101").qemu(9000)
    no_images = refused(lambda: template.clone.post(newid=991, full=1, storage="local"))
    assert no_images.errors == {"storage": "storage 'local' does not support vm images"}
    non_shared = refused(lambda: template.clone.post(newid=991, full=1, target="prox-106", storage="local-lvm"))
    assert non_shared.content == "can't clone to non-shared storage 'local-lvm'"
    local = refused(lambda: template.clone.post(newid=991, full=1, target="prox-106"))
    assert local.content == "can't clone VM to node 'prox-106' (VM uses local storage)"
    mine = fresh_vm(px, "vm-clone-source", node="prox-101", template=9000)
    same = refused(lambda: template.clone.post(newid=_vmid(mine), full=1))
    assert (same.status_code, same.content) == (500, f"unable to create VM {_vmid(mine)}: config file already exists")
    # 9001 is prox-106's template: this node's early check does not see it, the task fails
    upid = template.clone.post(newid=9001, full=1, name="vm-loser")
    status = done(px, upid)
    assert status["exitstatus"] == (
        "close (rename) atomic file '/etc/pve/nodes/prox-101/qemu-server/9001.conf' failed: File exists"
    )
    assert sim.cluster.vms[9001].node == "prox-106" and sim.cluster.vms[9001].template
    sim.edit_vm(_vmid(mine), set={"lock": "backup"})
    locked = refused(lambda: mine.clone.post(newid=992, full=1))
    assert locked.content == "VM is locked (backup)"
    sim.edit_vm(_vmid(mine), delete=["lock"])


def test_clone_placeholder_has_no_name_until_the_disks_are_copied(sim: Simulator, px: ProxmoxAPI) -> None:
    """clone_vm's worker writes "# qmclone temporary file\\nlock: clone\\n" first; the name comes with
    the copied disks (write_config after clone_disk)."""
    sim.add_fault(kind="task_slow", task_type="qmclone", seconds=0.4)
    vmid = int(px.cluster.nextid.get())
    upid = px.nodes("prox-106").qemu(9001).clone.post(newid=vmid, name="vm-slow", full=1)
    deadline = time.monotonic() + 5
    while vmid not in sim.cluster.vms and time.monotonic() < deadline:
        time.sleep(0.01)
    (placeholder,) = [r for r in px.cluster.resources.get(type="vm") if r["vmid"] == vmid]
    assert placeholder["lock"] == "clone" and placeholder["name"] == f"VM {vmid}"
    done(px, upid)
    (cloned,) = [r for r in px.cluster.resources.get(type="vm") if r["vmid"] == vmid]
    assert cloned["name"] == "vm-slow" and "lock" not in cloned


def test_destroy_early_checks(sim: Simulator, px: ProxmoxAPI) -> None:
    """qemu-server src/PVE/API2/Qemu.pm destroy_vm: $early_checks (check_protection, then running)
    before fork_worker and again in the task."""
    vm = fresh_vm(px, "vm-destroy")
    sim.edit_vm(_vmid(vm), set={"protection": "1"})
    assert refused(vm.delete).content == f"can't remove VM {_vmid(vm)} - protection mode enabled"
    sim.edit_vm(_vmid(vm), delete=["protection"])
    done(px, vm.status.start.post())
    assert refused(vm.delete).content == f"VM {_vmid(vm)} is running - destroy failed"
    done(px, vm.status.stop.post())
    assert done(px, vm.delete())["exitstatus"] == "OK"


def test_task_api_errors_are_400_and_tokens_are_split(px: ProxmoxAPI) -> None:
    """pve-manager PVE/API2/Tasks.pm read_task_status / read_task_log: raise_param_exc "unable to parse
    worker upid" / "no such task" (400); a log of a missing file is dump_logfile's one line;
    $convert_token_task sends user and tokenid apart."""
    tasks = px.nodes("prox-101").tasks
    bad = refused(lambda: tasks("not-a-upid").status.get())
    assert (bad.status_code, bad.errors) == (400, {"upid": "unable to parse worker upid"})
    ghost = "UPID:prox-101:00001234:00005678:6A000000:qmstart:100:root@pam:"
    assert refused(lambda: tasks(ghost).status.get()).errors == {"upid": "no such task"}
    assert tasks(ghost).log.get() == [{"n": 1, "t": "unable to open file - No such file or directory"}]
    status = done(px, px.nodes("prox-101").qemu(9000).status.start.post())
    assert (status["user"], status["tokenid"]) == ("brainall-ops@pve", "contract")


def test_storage_answers_as_storage_info_builds_them(sim: Simulator, px: ProxmoxAPI) -> None:
    """pve-storage src/PVE/Storage.pm storage_info and API2/Storage/Status.pm index/read_status: every
    storage of storage.cfg (zeros and enabled 0 where it is not on the node), "No such storage." (400);
    API2/Storage/Config.pm index: each whole section with storage.cfg's digest."""
    from brainall_ops.lab.pve_simulator.cluster import GIB, Storage

    sim.cluster.add_storage(Storage("nfs-only-101", "dir", shared=False, total=10 * GIB, nodes=["prox-101"]))
    try:
        (elsewhere,) = [s for s in px.nodes("prox-106").storage.get() if s["storage"] == "nfs-only-101"]
        assert elsewhere == {
            "storage": "nfs-only-101", "type": "dir", "total": 0, "avail": 0, "used": 0, "shared": 0,
            "content": "images,rootdir", "active": 0, "enabled": 0,
        }  # fmt: skip
        status = px.nodes("prox-101").storage("local").status.get()
        assert set(status) == {"type", "total", "avail", "used", "shared", "content", "active", "enabled"}
        assert status["active"] == 1 and status["total"] > 0
        missing = refused(lambda: px.nodes("prox-101").storage("nope").status.get())
        assert (missing.status_code, missing.errors) == (400, {"storage": "No such storage."})
        assert refused(lambda: px.nodes("prox-101").storage.get(storage="nope")).errors == {
            "storage": "No such storage."
        }
        sections = {s["storage"]: s for s in px.storage.get()}
        assert sections["local-lvm"]["thinpool"] == "data" and sections["local"]["path"] == "/var/lib/vz"
        assert len({s["digest"] for s in sections.values()}) == 1
    finally:
        del sim.cluster.storages["nfs-only-101"]


def test_nextid_and_version(px: ProxmoxAPI) -> None:
    """pve-manager PVE/API2/Cluster.pm nextid: a taken `vmid` is raise_param_exc "VM N already exists";
    PVE/API2.pm version: version, release, repoid (console only where datacenter.cfg has one)."""
    assert refused(lambda: px.cluster.nextid.get(vmid=9000)).errors == {"vmid": "VM 9000 already exists"}
    assert set(px.version.get()) == {"version", "release", "repoid"}


@pytest.fixture
def image_sim(sim: Simulator, tmp_path: Path) -> Iterator[tuple[Simulator, str, str]]:
    image, _, sha512 = write_cloud_image(tmp_path / "image.qcow2", virtual_size=2 * 1024**3)
    sim.cluster.image_sources[IMAGE_URL] = image
    yield sim, IMAGE_URL, sha512
    sim.cluster.image_sources.clear()
    sim.cluster.volumes.clear()


def test_download_url_checks_and_its_task(image_sim: tuple[Simulator, str, str], px: ProxmoxAPI) -> None:
    """pve-storage src/PVE/API2/Storage/Status.pm download_url: a file storage ("can't upload to storage
    type 'lvmthin', not a file based storage!"), the content type, the import file name, at once; then
    pve-common PVE::Tools::download_file_from_url in the `download` task: "checksum mismatch: got 'X' !=
    expect 'Y'", an existing file kept when its checksum matches, refused (", aborting") when not, and
    "refusing to override existing file" without a checksum. The simulator never fetches: an unmapped
    URL fails as wget without a network does."""
    sim, url, sha512 = image_sim
    storage = px.nodes("prox-101").storage
    name = url.rsplit("/", 1)[-1]
    common = {"url": url, "content": "import", "filename": name}
    lvm = refused(lambda: storage("local-lvm")("download-url").post(**common))
    assert lvm.content == "can't upload to storage type 'lvmthin', not a file based storage!"
    wrong_name = refused(lambda: storage("local")("download-url").post(**{**common, "filename": "x.iso"}))
    assert wrong_name.errors == {"filename": "invalid filename or wrong extension"}
    sim.cluster.storages["local"].content = "backup,iso,vztmpl"
    try:
        no_import = refused(lambda: storage("local")("download-url").post(**common))
        assert no_import.content == "storage 'local' is not configured for content-type 'import'"
    finally:
        sim.cluster.storages["local"].content = "backup,import,iso,snippets,vztmpl"
    bad = done(
        px, storage("local")("download-url").post(**common, checksum="0" * 128, **{"checksum-algorithm": "sha512"})
    )
    assert bad["exitstatus"] == f"checksum mismatch: got '{sha512}' != expect '{'0' * 128}'"
    assert bad["type"] == "download" and bad["id"] == name
    ok = done(px, storage("local")("download-url").post(**common, checksum=sha512, **{"checksum-algorithm": "sha512"}))
    assert ok["exitstatus"] == "OK"
    again = storage("local")("download-url").post(**common, checksum=sha512.upper(), **{"checksum-algorithm": "sha512"})
    assert done(px, again)["exitstatus"] == "OK"
    assert "OK, got correct file already, no need to download" in Tasks.decode_log(
        px.nodes("prox-101").tasks(again).log.get()
    )
    other = "1" * 128
    assert (
        done(px, storage("local")("download-url").post(**common, checksum=other, **{"checksum-algorithm": "sha512"}))[
            "exitstatus"
        ]
        == f"checksum mismatch: got '{sha512}' != expect '{other}', aborting"
    )
    assert done(px, storage("local")("download-url").post(**common))["exitstatus"] == (
        f"refusing to override existing file '/var/lib/vz/import/{name}'"
    )
    unmapped = "https://example.invalid/other.qcow2"
    failed = done(px, storage("local")("download-url").post(url=unmapped, content="import", filename="other.qcow2"))
    assert failed["exitstatus"].startswith("download failed: command 'wget") and failed["exitstatus"].endswith(
        "failed: exit code 4"
    )


def test_create_with_import_from_and_convert_to_template(image_sim: tuple[Simulator, str, str], px: ProxmoxAPI) -> None:
    """qemu-server src/PVE/API2/Qemu.pm create_vm: create_and_lock_config refuses a taken VMID at once
    ("unable to create VM N - VM N already exists on node 'X'"); the qmcreate task imports the image
    (its virtual size) and writes the config; template: $load_and_check at once ("you can't convert a
    template to a template"), the qmtemplate task renames the disks base-N-disk-K."""
    sim, url, sha512 = image_sim
    name = url.rsplit("/", 1)[-1]
    node = px.nodes("prox-101")
    done(
        px,
        node.storage("local")("download-url").post(
            url=url, content="import", filename=name, checksum=sha512, **{"checksum-algorithm": "sha512"}
        ),
    )
    params = {
        "name": "tpl-contract",
        "scsi0": f"local-lvm:0,import-from=local:import/{name}",
        "ide2": "local-lvm:cloudinit",
        "serial0": "socket",
        "vga": "serial0",
    }
    taken = refused(lambda: node.qemu.post(vmid=9000, **params))
    assert taken.content == "unable to create VM 9000 - VM 9000 already exists on node 'prox-101'"
    vmid = int(px.cluster.nextid.get())
    assert done(px, node.qemu.post(vmid=vmid, **params))["exitstatus"] == "OK"
    config = node.qemu(vmid).config.get()
    assert config["scsi0"] == f"local-lvm:vm-{vmid}-disk-0,size=2G"
    assert config["ide2"] == f"local-lvm:vm-{vmid}-cloudinit,media=cdrom" and config["serial0"] == "socket"
    missing = done(px, node.qemu.post(vmid=vmid + 1, name="x", scsi0="local-lvm:0,import-from=local:import/none.qcow2"))
    assert missing["exitstatus"] == f"unable to create VM {vmid + 1} - volume 'local:import/none.qcow2' does not exist"
    assert vmid + 1 not in sim.cluster.vms  # a failed create removes its config
    assert done(px, node.qemu(vmid).template.post())["exitstatus"] == "OK"
    assert node.qemu(vmid).config.get()["scsi0"].startswith(f"local-lvm:base-{vmid}-disk-0,")
    assert refused(node.qemu(vmid).template.post).content == "you can't convert a template to a template"
