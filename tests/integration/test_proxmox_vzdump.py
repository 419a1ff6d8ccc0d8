"""vzdump to the Storage Box through the Proxmox API: the simulator's storage and backup-job
endpoints (PVE 9.1.3's schema, valid and invalid requests), then the real phase 2 deploy
creating, keeping and correcting the CIFS storage and the job, with the box password kept secret.

Every simulator here listens on 127.0.0.1 on a port the kernel picks (never the lab's 8006).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from brainall_ops.lab.pve_simulator import Cluster, Settings, Simulator, seed_from_rolemap
from brainall_ops.lab.pve_simulator.harness import ENVIRONMENT, Fleet, PyinfraRun
from brainall_ops.planning.fleet import place_rolemap
from brainall_ops.planning.plan import PlanContext
from brainall_ops.proxmox.plan import plan_changes
from brainall_ops.rolemap.loader import load_rolemap

TOKEN = "brainall-ops@pve!deploy"
SECRET = "0b7e1c2a-5d44-4f0e-8a31-6c2d9e7f1a55"
BOX_PASSWORD = "Sbx-contract-Pa55-9f3e1d"
JOB = "brainall-storagebox"
MUTATING = ("POST", "PUT", "DELETE")
CIFS = {
    "storage": "boxtest",
    "type": "cifs",
    "server": "10.77.1.50",
    "share": "backup",
    "subdir": "/vzdump",
    "username": "u503462",
    "content": "backup",
    "smbversion": "3.0",
    "prune-backups": "keep-daily=7,keep-weekly=4",
}


# --------------------------------------------------------------------------- the simulator's endpoints
@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    cluster = seed_from_rolemap(Cluster(Settings(task_seconds=0.02, lock_wait_s=0.3)), load_rolemap())
    cluster.add_token(TOKEN, SECRET)
    with Simulator(cluster, tls_dir=tmp_path / "tls") as simulator:
        yield simulator


def api(sim: Simulator) -> ProxmoxAPI:
    host, port = sim.url.removeprefix("https://").split(":")
    user, name = TOKEN.split("!")
    return ProxmoxAPI(host, port=int(port), user=user, token_name=name, token_value=SECRET, verify_ssl=str(sim.ca_file))


def refused(call) -> ResourceException:
    with pytest.raises(ResourceException) as info:
        call()
    return info.value


def test_cifs_storage_create_read_update_delete(sim: Simulator) -> None:
    px = api(sim)
    assert px.storage.post(**CIFS, password=BOX_PASSWORD) == {"storage": "boxtest", "type": "cifs"}
    config = px.storage("boxtest").get()
    assert "password" not in config  # write-only, as in PVE (/etc/pve/priv/storage/ID.pw)
    assert config["server"] == "10.77.1.50" and config["subdir"] == "/vzdump" and config["content"] == "backup"
    assert config["path"] == "/mnt/pve/boxtest" and config["digest"]
    # Config.pm index sends each whole section ($api_storage_config), as GET /storage/ID does
    assert px.storage.get(type="cifs") == [config]
    assert sim.cluster.storages["boxtest"].password_sha256 == hashlib.sha256(BOX_PASSWORD.encode()).hexdigest()

    px.storage("boxtest").put(subdir="/vzdump2", digest=config["digest"], password="rotated")
    assert px.storage("boxtest").get()["subdir"] == "/vzdump2"
    assert sim.cluster.storages["boxtest"].password_sha256 == hashlib.sha256(b"rotated").hexdigest()
    stale = refused(lambda: px.storage("boxtest").put(subdir="/x", digest=config["digest"]))
    assert stale.status_code == 500 and "detected modified configuration" in str(stale)
    fixed = refused(lambda: px.storage("boxtest").put(server="10.77.1.51"))
    assert fixed.status_code == 400 and "can't change value of fixed parameter 'server'" in str(fixed.errors)

    px.storage("boxtest").delete()
    gone = refused(lambda: px.storage("boxtest").get())
    assert gone.status_code == 500 and "storage 'boxtest' does not exist" in str(gone)
    # what was sent is logged; the password's value never
    assert BOX_PASSWORD not in json.dumps(sim.requests()) and "rotated" not in json.dumps(sim.requests())


@pytest.mark.parametrize(
    ("change", "status", "where"),
    [
        ({"server": None}, 400, "server"),  # CIFS needs a server and a share
        ({"pool": "rbd"}, 400, "pool"),  # an option of another storage type
        ({"prune-backups": "keep-daily=-1"}, 400, "prune-backups"),
        ({"content": "backup,movies"}, 400, "content"),
        ({"subdir": "relative"}, 400, "subdir"),
        ({"bogus": "1"}, 400, "bogus"),  # not in the schema at all
        ({"storage": "local-lvm"}, 500, None),  # the ID is taken
    ],
)
def test_invalid_storage_requests_are_refused(sim: Simulator, change: dict, status: int, where: str | None) -> None:
    params = {**CIFS, **change}
    params = {k: v for k, v in params.items() if v is not None}
    error = refused(lambda: api(sim).storage.post(**params))
    assert error.status_code == status, error
    if where:
        assert where in (error.errors or {}), error
    else:
        assert "already defined" in str(error)


def test_backup_job_create_read_update_delete(sim: Simulator) -> None:
    px = api(sim)
    px.storage.post(**CIFS, password=BOX_PASSWORD)
    px.cluster.backup.post(
        id="job1", schedule="01:00", storage="boxtest", all=1, mode="snapshot", compress="zstd", enabled=1,
        **{"prune-backups": "keep-daily=7,keep-weekly=4"},
    )  # fmt: skip
    job = px.cluster.backup("job1").get()
    assert job["schedule"] == "01:00" and job["all"] == 1 and job["storage"] == "boxtest"
    assert job["prune-backups"] == {"keep-daily": 7, "keep-weekly": 4}  # an object in GET, as in PVE 9
    assert [j["id"] for j in px.cluster.backup.get()] == ["job1"]
    px.cluster.backup("job1").put(schedule="sat 02:30", vmid="101,102", delete="all")
    job = px.cluster.backup("job1").get()
    assert job["schedule"] == "sat 02:30" and job["vmid"] == "101,102" and "all" not in job
    px.cluster.backup.post(schedule="02:00", storage="boxtest", vmid="101")  # the ID is generated
    assert len(px.cluster.backup.get()) == 2
    px.cluster.backup("job1").delete()
    assert refused(lambda: px.cluster.backup("job1").get()).status_code == 500


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"storage": "nosuch"}, 400, "storage 'nosuch' does not exist"),
        ({"storage": "local-lvm"}, 400, "does not support backups"),
        ({"vmid": "101"}, 400, "option conflicts with option 'vmid'"),
        ({"all": None}, 400, "property is missing"),
        ({"schedule": "01:00; reboot"}, 400, "invalid format"),
        ({"mode": "hot"}, 400, "enumeration"),
        ({"compress": "xz"}, 400, "enumeration"),
        ({"id": "x"}, 400, "invalid format"),  # PVE's configid needs two characters
        ({"id": "taken"}, 500, "Job 'taken' already exists"),
    ],
)
def test_invalid_backup_jobs_are_refused(sim: Simulator, params: dict, status: int, message: str) -> None:
    px = api(sim)
    px.storage.post(**CIFS, password=BOX_PASSWORD)
    px.cluster.backup.post(id="taken", schedule="01:00", storage="boxtest", all=1)
    body = {k: v for k, v in {"schedule": "01:00", "storage": "boxtest", "all": 1, **params}.items() if v is not None}
    error = refused(lambda: px.cluster.backup.post(**body))
    assert error.status_code == status
    assert message in f"{error} {error.errors}", error


def test_updating_a_job_to_an_unknown_storage_is_refused(sim: Simulator) -> None:
    px = api(sim)
    px.storage.post(**CIFS, password=BOX_PASSWORD)
    px.cluster.backup.post(id="job1", schedule="01:00", storage="boxtest", all=1)
    error = refused(lambda: px.cluster.backup("job1").put(storage="gone"))
    assert error.status_code == 400 and "storage 'gone' does not exist" in str(error.errors)
    assert px.cluster.backup("job1").get()["storage"] == "boxtest"


# --------------------------------------------------------------------------- the deploy
def mutations(fleet: Fleet, mark: int) -> list[tuple[str, str]]:
    return [(c["method"], c["path"]) for c in fleet.requests_since(mark) if c["method"] in MUTATING]


def vzdump_lines(run: PyinfraRun) -> list[str]:
    return [line.strip() for line in run.stderr.splitlines() if "storagebox" in line]


@pytest.fixture(scope="module")
def deployed() -> Iterator[tuple[Fleet, PyinfraRun]]:
    with Fleet() as fleet:
        run = fleet.pyinfra()
        assert run.returncode == 0, run.output
        yield fleet, run


def test_first_run_creates_the_storage_and_the_job(deployed: tuple[Fleet, PyinfraRun]) -> None:
    fleet, run = deployed
    storage = fleet.cluster.storages["storagebox"]
    assert storage.type == "cifs" and storage.content == "backup"
    assert storage.options["server"] == "10.77.1.50" and storage.options["share"] == "backup"
    assert storage.options["subdir"] == "/vzdump" and storage.options["prune-backups"] == "keep-daily=7,keep-weekly=4"
    assert storage.password_sha256 == hashlib.sha256(fleet.box_password.encode()).hexdigest()
    job = fleet.cluster.backup_jobs[JOB]
    assert job["schedule"] == "01:00" and job["all"] == "1" and job["storage"] == "storagebox"
    assert (job["mode"], job["compress"], job["enabled"]) == ("snapshot", "zstd", "1")
    assert job["prune-backups"] == "keep-daily=7,keep-weekly=4"
    # once per cluster, on proxmox.api_host (prox-101)
    creates = [(c["method"], c["path"]) for c in fleet.simulator.requests() if c["method"] == "POST"]
    assert creates.count(("POST", "/storage")) == 1 and creates.count(("POST", "/cluster/backup")) == 1
    assert any("[@fake/prox-101] + create CIFS storage 'storagebox'" in line for line in run.stderr.splitlines())
    assert fleet.box_password not in run.output


def test_second_run_makes_no_mutating_call(deployed: tuple[Fleet, PyinfraRun]) -> None:
    fleet, _ = deployed
    mark = fleet.simulator.mark()
    again = fleet.pyinfra()
    assert again.returncode == 0 and again.changed == 0, again.output
    calls = fleet.requests_since(mark)
    assert mutations(fleet, mark) == []
    assert sorted((c["method"], c["path"]) for c in calls) == [
        ("GET", "/cluster/backup"),
        ("GET", "/cluster/resources"),
        ("GET", "/storage/storagebox"),
    ]


def test_a_job_changed_behind_our_back_is_put_back(deployed: tuple[Fleet, PyinfraRun]) -> None:
    fleet, _ = deployed
    fleet.client().request("PUT", f"/cluster/backup/{JOB}", schedule="sat 04:00", compress="lzo")
    dry = fleet.pyinfra(dry=True)
    assert f"~ update vzdump job '{JOB}': schedule sat 04:00 → 01:00; compress lzo → zstd" in dry.stderr, dry.stderr
    mark = fleet.simulator.mark()
    run = fleet.pyinfra()
    assert run.returncode == 0 and run.changed == 1, run.output
    assert mutations(fleet, mark) == [("PUT", f"/cluster/backup/{JOB}")]
    job = fleet.cluster.backup_jobs[JOB]
    assert (job["schedule"], job["compress"]) == ("01:00", "zstd")
    mark = fleet.simulator.mark()
    assert fleet.pyinfra().changed == 0 and mutations(fleet, mark) == []


def test_storage_drift_is_corrected_without_sending_the_password(deployed: tuple[Fleet, PyinfraRun]) -> None:
    fleet, _ = deployed
    fleet.client().request("PUT", "/storage/storagebox", **{"prune-backups": "keep-last=1"})
    mark = fleet.simulator.mark()
    run = fleet.pyinfra()
    assert run.returncode == 0 and run.changed == 1, run.output
    (put,) = [c for c in fleet.requests_since(mark) if c["method"] in MUTATING]
    assert put["path"] == "/storage/storagebox" and put["params"]["prune-backups"] == "keep-daily=7,keep-weekly=4"
    assert "password" not in put["params"]


def test_password_rotation_is_an_explicit_opt_in(deployed: tuple[Fleet, PyinfraRun]) -> None:
    fleet, _ = deployed
    new = "Sbx-rotated-Pa55-41c8e0"
    env = fleet.env(BRAINALL_STORAGEBOX_PASSWORD=new)
    mark = fleet.simulator.mark()
    assert fleet.pyinfra(env=env).changed == 0  # a changed password cannot be seen: nothing sent
    assert mutations(fleet, mark) == []
    run = fleet.pyinfra("--data", "brainall_proxmox_rotate_box_password=true", env=env)
    assert run.returncode == 0 and run.changed == 1, run.output
    assert mutations(fleet, mark) == [("PUT", "/storage/storagebox")]
    assert fleet.cluster.storages["storagebox"].password_sha256 == hashlib.sha256(new.encode()).hexdigest()
    assert new not in run.output and new not in json.dumps(fleet.simulator.requests())


def test_live_plan_lists_the_storage_and_the_job(deployed: tuple[Fleet, PyinfraRun]) -> None:
    fleet, _ = deployed
    fleet.client().request("PUT", f"/cluster/backup/{JOB}", schedule="sun 05:00")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in fleet.env().items():
            if key.startswith("BRAINALL_"):
                patch.setenv(key, value)
        context = PlanContext(place_rolemap(fleet.rm), live=True, options={"environment": ENVIRONMENT})
        mark = fleet.simulator.mark()
        changes = plan_changes(fleet.rm, context).changes
        assert all(c["method"] == "GET" for c in fleet.requests_since(mark))
    vzdump = {c.detail.get("job", "storage"): c for c in changes if "job" in c.detail or c.detail.get("type") == "cifs"}
    assert vzdump["storage"].action == "unchanged" and vzdump["storage"].target == "prox-101"
    assert vzdump[JOB].action == "update" and "schedule sun 05:00 → 01:00" in vzdump[JOB].summary
    assert fleet.pyinfra().changed == 1  # put back for the tests after this one


def test_offline_plan_lists_them_in_phase_2_once() -> None:
    from brainall_ops.planning.plan import build_plan

    plan = build_plan(load_rolemap(), "builtin")
    lines = [c for c in plan.changes if "vzdump" in c.summary or "CIFS storage" in c.summary]
    assert [(c.phase, c.action) for c in lines] == [("phase2", "create"), ("phase2", "create")]


# --------------------------------------------------------------------------- secrecy and failures
def test_the_password_never_shows_even_with_debug_output() -> None:
    with Fleet() as fleet:
        run = fleet.pyinfra("-vvv", "--debug")
        assert run.returncode == 0, run.output[-3000:]
        assert "POST /storage" in run.output or "create CIFS storage" in run.output
        assert fleet.box_password not in run.output
        log = json.dumps(fleet.simulator.requests(), indent=1)
        print(log)  # what the simulator's request log shows an engineer
        assert fleet.box_password not in log and '"password": "********"' in log
        assert fleet.box_password not in json.dumps(fleet.simulator.state())


def test_a_5xx_on_create_is_one_clear_line_and_a_rerun_completes() -> None:
    with Fleet() as fleet:
        fleet.simulator.add_fault(kind="http_error", method="POST", path="/storage", status=500,
                                  message="cfs-lock 'file-storage_cfg' error: got lock request timeout")  # fmt: skip
        run = fleet.pyinfra()
        assert run.returncode == 1, run.output
        errors = [line for line in run.stderr.splitlines() if "POST /storage: HTTP 500" in line]
        assert len(errors) == 1, run.stderr
        assert "storage 'storagebox': POST /storage: HTTP 500: cfs-lock 'file-storage_cfg' error" in errors[0]
        assert "Traceback" not in run.output and fleet.box_password not in run.output
        assert "storagebox" not in fleet.cluster.storages and JOB not in fleet.cluster.backup_jobs
        again = fleet.pyinfra()
        assert again.returncode == 0, again.output
        assert "storagebox" in fleet.cluster.storages and JOB in fleet.cluster.backup_jobs
        assert fleet.left_to_do() == []
        mark = fleet.simulator.mark()
        assert fleet.pyinfra().changed == 0 and mutations(fleet, mark) == []


def test_creating_the_storage_without_the_password_fails_before_any_change() -> None:
    with Fleet() as fleet:
        env = {k: v for k, v in fleet.env().items() if k != "BRAINALL_STORAGEBOX_PASSWORD"}
        mark = fleet.simulator.mark()
        run = fleet.pyinfra(env=env)
        assert run.returncode == 1
        assert "creating storage 'storagebox' needs the Storage Box password" in run.output, run.output
        assert ("POST", "/storage") not in mutations(fleet, mark)
