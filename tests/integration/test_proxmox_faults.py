"""Injected Proxmox faults: each gives a clear error, and leaves a state the next run cleans up.

Faults are aimed at one node's requests (mostly prox-101, where vm-brainall-db goes) while the
same run goes on with the other node. "Converged" is decided by the deploy's own logic from a
full read of the cluster: each VM of the role map once, on its node, nothing left to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from brainall_ops.lab.pve_simulator.cluster import DEFAULT_PRIVILEGES
from brainall_ops.lab.pve_simulator.harness import Fleet, PyinfraRun, write_cloud_image, write_rolemap_copy
from brainall_ops.proxmox.client import VMID_TAKEN

DB = "vm-brainall-db"
STALE = "checksum mismatch (file change by other user?)"
NAMES = ("vm-brainall-api", "vm-brainall-workers", "vm-brainall-nginx", DB)


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    with Fleet() as fleet:
        yield fleet


def rerun_converges(fleet: Fleet) -> PyinfraRun:
    """The next run, without faults, finishes the job: each VM once, nothing left to do."""
    fleet.simulator.clear_faults()
    assert fleet.simulator.wait_idle(30)
    again = fleet.pyinfra()
    assert again.returncode == 0, again.output
    assert all(len(fleet.vms_named(name)) == 1 for name in NAMES)
    assert fleet.left_to_do() == []
    return again


def failed_on_prox_101(run: PyinfraRun, *fragments: str) -> None:
    assert run.returncode == 1, run.output
    assert run.results is not None and run.results["results"]["failed_hosts"] == ["@fake/prox-101"], run.output
    for fragment in fragments:
        assert fragment in run.stderr, f"{fragment!r} not in the error output:\n{run.stderr}"
    assert "Traceback" not in run.output


def test_failing_task_is_reported_with_its_log_and_resumed(fleet: Fleet) -> None:
    fleet.simulator.add_fault(
        kind="task_fail",
        path="/nodes/prox-101/qemu/*/status/start",
        message="start failed: QEMU exited with code 1\nkvm: -drive file=/dev/pve/vm-106-disk-0: Could not open",
    )
    run = fleet.pyinfra()
    failed_on_prox_101(run, f"start {DB}", "failed: start failed: QEMU exited with code 1", "| kvm: -drive")
    (db,) = fleet.vms_named(DB)
    assert db.status == "stopped" and db.config["cores"] == "8"  # cloned and configured: picked up next
    again = rerun_converges(fleet)
    assert again.changed == 1  # only the DB: started


def test_slow_task_past_the_timeout_is_reported_and_picked_up(tmp_path: Path) -> None:
    rolemap = write_rolemap_copy(tmp_path / "rolemap.yaml", lambda data: data["proxmox"].update(task_timeout_s=1))
    with Fleet(rolemap=rolemap) as fleet:
        fleet.simulator.add_fault(kind="task_slow", path="/nodes/prox-101/qemu/*/clone", seconds=1.5)
        run = fleet.pyinfra()
        failed_on_prox_101(
            run, f"clone debian-12-cloudinit (VMID 9000) to {DB}", "still running after 1 s", "the next run picks up"
        )
        assert fleet.simulator.wait_idle(30)
        (clone,) = [t for t in fleet.cluster.tasks.values() if t.type == "qmclone" and t.node == "prox-101"]
        assert clone.exitstatus == "OK"  # Proxmox finished the clone on its own; the deploy gave up waiting
        (db,) = fleet.vms_named(DB)
        assert db.status == "stopped" and db.config["cores"] == "2"  # a bare clone: known, not half-configured
        again = rerun_converges(fleet)
        assert again.changed == 1


def test_lock_timeouts_and_dropped_reads_are_retried(fleet: Fleet) -> None:
    fleet.simulator.add_fault(kind="lock_timeout", method="POST", path="/nodes/prox-101/qemu/*/config", count=2)
    fleet.simulator.add_fault(kind="drop", when="before", method="GET", path="/cluster/resources", count=2)
    mark = fleet.simulator.mark()
    run = fleet.pyinfra()
    assert run.returncode == 0, run.output
    calls = fleet.requests_since(mark)
    config_posts = [
        c
        for c in calls
        if c["method"] == "POST" and c["path"].startswith("/nodes/prox-101/") and c["path"].endswith("/config")
    ]
    assert len(config_posts) == 3  # two tasks failed "can't lock file ... got timeout", the third went through
    assert [c["status"] for c in calls if c["path"] == "/cluster/resources"][:3] == ["dropped", "dropped", 200]
    assert fleet.left_to_do() == []


@pytest.fixture
def db_on_nextid(tmp_path: Path) -> Iterator[Fleet]:
    """The other VMs' VMIDs pinned: only the DB asks /cluster/nextid, so only the injected race hits it."""

    def pin(data: dict) -> None:
        for index, vm in enumerate(v for v in data["vms"] if v["name"] in NAMES and v["name"] != DB):
            vm["vmid"] = 200 + index

    with Fleet(rolemap=write_rolemap_copy(tmp_path / "rolemap.yaml", pin)) as fleet:
        yield fleet


def db_clones(fleet: Fleet, mark: int) -> list[dict]:
    return [
        c
        for c in fleet.requests_since(mark)
        if c["method"] == "POST" and c["path"] == "/nodes/prox-101/qemu/9000/clone"
    ]


def test_vmid_lost_to_a_clone_on_the_same_node_is_refused_at_once_and_the_next_one_taken(db_on_nextid: Fleet) -> None:
    """qemu-server PVE/API2/Qemu.pm clone_vm, $load_and_check before fork_worker: "unable to create
    VM N: config file already exists" (HTTP 500, no task) when N's config is on this node."""
    db_on_nextid.simulator.add_fault(kind="vmid_race", path="/nodes/prox-101/qemu/*/clone")
    mark = db_on_nextid.simulator.mark()
    run = db_on_nextid.pyinfra()
    assert run.returncode == 0, run.output
    lost, won = db_clones(db_on_nextid, mark)
    assert lost["status"] == 500 and won["status"] == 200
    (rival,) = db_on_nextid.vms_named(f"rival-{lost['params']['newid']}")
    (db,) = db_on_nextid.vms_named(DB)
    assert db.vmid != rival.vmid and str(db.vmid) == won["params"]["newid"]
    assert f"VMID {rival.vmid} was taken by another clone meanwhile" in run.stderr
    assert db_on_nextid.left_to_do() == []


def test_vmid_lost_to_a_clone_on_another_node_fails_the_task_and_the_next_one_is_taken(db_on_nextid: Fleet) -> None:
    """clone_vm's check only sees this node's qemu-server directory; pmxcfs (memdb_rename) then
    refuses the config of a VMID another node holds: the qmclone task fails "close (rename) atomic
    file '.../N.conf' failed: File exists" (PVE::File::file_set_contents)."""
    db_on_nextid.simulator.add_fault(kind="vmid_race", path="/nodes/prox-101/qemu/*/clone", message="prox-106")
    mark = db_on_nextid.simulator.mark()
    run = db_on_nextid.pyinfra()
    assert run.returncode == 0, run.output
    lost, won = db_clones(db_on_nextid, mark)
    assert lost["status"] == 200 and won["status"] == 200  # both started a task; the first one failed
    failed = [t for t in db_on_nextid.cluster.tasks.values() if t.type == "qmclone" and t.exitstatus != "OK"]
    assert [(t.node, t.exitstatus) for t in failed] == [
        (
            "prox-101",
            f"close (rename) atomic file '/etc/pve/nodes/prox-101/qemu-server/{lost['params']['newid']}.conf' "
            "failed: File exists",
        )
    ]
    assert VMID_TAKEN.search(failed[0].exitstatus or "")
    (rival,) = db_on_nextid.vms_named(f"rival-{lost['params']['newid']}")
    assert rival.node == "prox-106"
    (db,) = db_on_nextid.vms_named(DB)
    assert db.node == "prox-101" and str(db.vmid) == won["params"]["newid"]
    assert db_on_nextid.left_to_do() == []


def test_stale_digest_and_a_backup_lock_are_read_again_then_applied(fleet: Fleet) -> None:
    """update_vm_api's $load_and_check_config refuses at once (HTTP 500, before forking): "checksum
    mismatch (file change by other user?)" for a stale digest, "VM is locked (backup)"
    (PVE::AbstractConfig::check_lock) while vzdump holds the VM; the converger reads the config
    again and sends its change with the fresh digest."""
    config = "/nodes/prox-101/qemu/*/config"
    fleet.simulator.add_fault(kind="http_error", method="POST", path=config, message=STALE)
    fleet.simulator.add_fault(kind="http_error", method="POST", path=config, message="VM is locked (backup)")
    mark = fleet.simulator.mark()
    run = fleet.pyinfra()
    assert run.returncode == 0, run.output
    posts = [
        c for c in fleet.requests_since(mark) if c["method"] == "POST" and c["path"].startswith("/nodes/prox-101/")
    ]
    assert [c["status"] for c in posts if c["path"].endswith("/config")] == [500, 500, 200]
    assert f"{STALE}; reading its config again" in run.stderr and "VM is locked (backup); reading" in run.stderr
    assert fleet.left_to_do() == []


def test_a_lock_that_stays_is_one_clear_line(fleet: Fleet) -> None:
    fleet.simulator.add_fault(
        kind="http_error", method="POST", path="/nodes/prox-101/qemu/*/config", count=3, message="VM is locked (backup)"
    )
    run = fleet.pyinfra()
    failed_on_prox_101(run, f"{DB}: VMID ", "its config was locked (backup) while this run configured it (3 attempts)")
    rerun_converges(fleet)


def test_refused_and_dropped_requests_leave_nothing_half_made(fleet: Fleet) -> None:
    fleet.simulator.add_fault(
        kind="http_error",
        status=500,
        method="POST",
        path="/nodes/prox-101/qemu/*/clone",
        message="storage 'local-lvm' is not online",
    )
    fleet.simulator.add_fault(kind="drop", when="before", method="POST", path="/nodes/prox-106/qemu/*/clone")
    run = fleet.pyinfra()
    assert run.returncode == 1
    assert run.results is not None and run.results["results"]["failed_hosts"] == ["@fake/prox-101", "@fake/prox-106"]
    assert f"{DB}: POST /nodes/prox-101/qemu/9000/clone: HTTP 500: storage 'local-lvm' is not online" in run.stderr
    assert "vm-brainall-api: POST /nodes/prox-106/qemu/9001/clone: connection failed or dropped" in run.stderr
    assert "whether it was carried out is unknown until the next run reads the cluster" in run.stderr
    assert "Traceback" not in run.output
    assert fleet.vms_named(DB) == [] and fleet.vms_named("vm-brainall-api") == []
    rerun_converges(fleet)


def test_connection_dropped_after_the_clone_is_picked_up_without_a_duplicate(tmp_path: Path) -> None:
    # the DB's VMID pinned: the other node's parallel clones cannot race it for a nextid, so the
    # clone whose answer is lost is certain to have happened
    rolemap = write_rolemap_copy(
        tmp_path / "rolemap.yaml", lambda data: next(v for v in data["vms"] if v["name"] == DB).update(vmid=150)
    )
    with Fleet(rolemap=rolemap) as fleet:
        fleet.simulator.add_fault(kind="drop", when="after", method="POST", path="/nodes/prox-101/qemu/*/clone")
        run = fleet.pyinfra()
        failed_on_prox_101(run, "connection failed or dropped")
        assert fleet.simulator.wait_idle(30)
        assert len(fleet.vms_named(DB)) == 1  # the clone happened; its answer was lost
        again = rerun_converges(fleet)
        assert again.changed == 1


def test_wrong_token_secret_is_a_clear_401_and_never_shown(fleet: Fleet) -> None:
    wrong = "0123456789abcdef-not-the-secret"
    mark = fleet.simulator.mark()
    run = fleet.pyinfra(env=fleet.env(BRAINALL_PROXMOX_TOKEN_SECRET=wrong))
    assert run.returncode == 1
    assert "HTTP 401: authentication failure" in run.stderr
    assert wrong not in run.output and fleet.secret not in run.output
    assert "Traceback" not in run.output
    assert all(c["status"] == 401 for c in fleet.requests_since(mark))


def test_missing_privilege_is_a_clear_403_and_nothing_is_created(fleet: Fleet) -> None:
    fleet.simulator.add_token(fleet.token_id, fleet.secret, {"/": sorted(DEFAULT_PRIVILEGES - {"VM.Allocate"})})
    mark = fleet.simulator.mark()
    run = fleet.pyinfra()
    assert run.returncode == 1
    assert "HTTP 403: Permission check failed (/vms/" in run.stderr and ", VM.Allocate)" in run.stderr
    # the vzdump storage and job need no VM.Allocate: only the VM calls are refused
    assert not [
        c for c in fleet.requests_since(mark) if c["method"] != "GET" and c["status"] == 200 and "/qemu/" in c["path"]
    ]
    assert all(fleet.vms_named(name) == [] for name in NAMES)


def test_missing_token_secret_is_one_line() -> None:
    with Fleet() as fleet:
        env = fleet.env()
        del env["BRAINALL_PROXMOX_TOKEN_SECRET"]
        run = fleet.pyinfra(env=env)
        assert run.returncode == 1
        assert "no Proxmox API token secret: set BRAINALL_PROXMOX_TOKEN_SECRET" in run.stderr
        assert "Traceback" not in run.output
        assert fleet.simulator.requests() == []


IMAGE_URL = (
    "https://cloud.debian.org/images/cloud/bookworm/20251117-2299/debian-12-genericcloud-amd64-20251117-2299.qcow2"
)


def test_missing_templates_are_built_and_a_wrong_checksum_is_the_task_failure(tmp_path: Path) -> None:
    """No template on the cluster: phase 2 builds one per node from proxmox.template_image (pve-storage
    Status.pm download_url, qemu-server create_vm with import-from, template). A wrong checksum fails
    the download task with download_file_from_url's text, nothing else is made; with the right one the
    next run builds the templates and the VMs, and the one after changes nothing."""
    image, _, sha512 = write_cloud_image(tmp_path / "image.qcow2")
    wrong = "ab" * 64

    def with_image(checksum: str):
        return lambda data: data["proxmox"].update(template_image={"url": IMAGE_URL, "checksum": checksum})

    rolemap = write_rolemap_copy(tmp_path / "wrong.yaml", with_image(wrong))
    with Fleet(rolemap=rolemap, with_templates=False, image_sources={IMAGE_URL: image}) as fleet:
        dry = fleet.pyinfra(dry=True)
        assert "+ create template debian-12-cloudinit on prox-101: download debian-12-genericcloud" in dry.stderr
        run = fleet.pyinfra()
        assert run.returncode == 1, run.output
        assert f"checksum mismatch: got '{sha512}' != expect '{wrong}'" in run.stderr
        assert "Traceback" not in run.output
        assert fleet.vms_named("debian-12-cloudinit") == [] and all(fleet.vms_named(n) == [] for n in NAMES)

        fleet.write_inventory(write_rolemap_copy(tmp_path / "right.yaml", with_image(sha512)))
        built = fleet.pyinfra()
        assert built.returncode == 0, built.output
        templates = fleet.vms_named("debian-12-cloudinit")
        assert sorted(t.node for t in templates) == ["prox-101", "prox-106"] and all(t.template for t in templates)
        assert all(t.config["serial0"] == "socket" and "cloudinit" in t.config["ide2"] for t in templates)
        assert all(len(fleet.vms_named(name)) == 1 for name in NAMES)
        mark = fleet.simulator.mark()
        again = fleet.pyinfra()
        assert again.returncode == 0 and again.changed == 0, again.output
        assert [c for c in fleet.requests_since(mark) if c["method"] != "GET"] == []


def test_a_missing_template_without_an_image_is_one_clear_line() -> None:
    with Fleet(with_templates=False) as fleet:
        run = fleet.pyinfra()
        assert run.returncode == 1
        assert "template debian-12-cloudinit on prox-101: none on this node; set proxmox.template_image" in run.stderr
        assert "Traceback" not in run.output
