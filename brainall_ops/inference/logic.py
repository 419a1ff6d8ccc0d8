"""Phase 3 pure logic: the GPU memory budget, what nvidia-smi says, and what each vLLM unit runs.

No pyinfra here: `brainall-ops plan` and the unit tests use this module as it is, and the deploy
(`deploy.py`) turns its answers into operations.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from brainall_ops.errors import BrainallError, RoleMapError
from brainall_ops.rolemap.models import AuxService, Inference, RoleMap, ServedModel
from brainall_ops.shared.secrets import INFERENCE_REDIS_PASSWORD, REDIS_AUTH_FILE, Secret

# A YAML mapping merged over the role map's `inference:` section, for sites (and the lab tests)
# that need another package index, Storage Box path or timeouts without editing the role map.
OVERRIDES_ENV = "BRAINALL_INFERENCE_OVERRIDES"

UNIT_TEMPLATE = "vllm@.service"
ENV_DIR = "/etc/vllm"
PROBE_PATH = "/usr/local/lib/brainall-ops/inference_probe.py"
SERVICE_USER = "vllm"
SERVICE_HOME = "/var/lib/vllm"
APT_PACKAGES = ("python3-venv", "rsync", "redis-server")
# Redis listens on the vSwitch: it takes no connection there without this password (never in
# the role map, the plan or any output; written to the host in a 0600 file).
REDIS_PASSWORD_ENV = INFERENCE_REDIS_PASSWORD.variable
REDIS_PASSWORD_FILE_ENV = INFERENCE_REDIS_PASSWORD.file_variable
REDIS_AUTH_CONF = REDIS_AUTH_FILE
# Tolerance between the role map's hardware.gpu.vram_gb and what nvidia-smi reports (the
# benchmark's "49 GB" is nvidia-smi's 49140 MiB read as decimal GB: 48.0 GiB).
VRAM_TOLERANCE = 0.10


# --------------------------------------------------------------------------- role map + overrides
def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(inf: Inference, text: str, source: str) -> Inference:
    """`inf` with the YAML mapping `text` merged over it (mappings merge, lists replace), validated
    as strictly as the role map: an unknown key or a bad value is one line naming source:line."""
    import yaml
    from pydantic import ValidationError

    from brainall_ops.rolemap.loader import LineIndex, format_path

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RoleMapError([f"{source}:{mark.line + 1 if mark else 1}: (yaml): {exc}"]) from None
    if not isinstance(data, dict):
        raise RoleMapError([f"{source}:1: (top level): inference overrides must be a mapping"])
    try:
        return Inference.model_validate(_deep_merge(inf.model_dump(), data))
    except ValidationError as exc:
        index = LineIndex(yaml.compose(text))
        problems = []
        for error in exc.errors(include_url=False):
            loc = tuple(part for part in error["loc"] if isinstance(part, int) or str(part).isidentifier())
            kind = error["type"]
            message = f"unknown key {loc[-1]!r}" if kind == "extra_forbidden" else error["msg"]
            problems.append(f"{source}:{index.line_of(loc)}: inference.{format_path(loc)}: {message}")
        raise RoleMapError(problems) from None


def effective_inference(rm: RoleMap, environ: Mapping[str, str] | None = None) -> tuple[Inference, str | None]:
    """The role map's inference section with $BRAINALL_INFERENCE_OVERRIDES applied, and that file's path."""
    if rm.inference is None:
        raise BrainallError(f"role map {rm.name} has no inference section")
    path = (environ if environ is not None else os.environ).get(OVERRIDES_ENV)
    if not path:
        return rm.inference, None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BrainallError(f"{OVERRIDES_ENV}={path}: cannot read: {exc.strerror}") from None
    return apply_overrides(rm.inference, text, path), path


def redis_password(environ: Mapping[str, str] | None = None) -> Secret:
    """The inference cache's Redis password (shared.secrets.INFERENCE_REDIS_PASSWORD: the one rule,
    a private file outside the repository, the value masked). Errors never include the secret."""
    return INFERENCE_REDIS_PASSWORD.require(environ)


# --------------------------------------------------------------------------- GPU memory budget
@dataclass(frozen=True)
class Budget:
    host: str
    vram_gb: float
    utilization_max: float
    items: tuple[tuple[str, float], ...]

    @property
    def used_gb(self) -> float:
        return sum(gb for _, gb in self.items)

    @property
    def usable_gb(self) -> float:
        return self.vram_gb * self.utilization_max

    @property
    def fits(self) -> bool:
        return self.vram_gb > 0 and self.used_gb <= self.usable_gb + 1e-9

    @property
    def shares(self) -> str:
        return ", ".join(f"{name} {gb:g} GB" for name, gb in self.items)

    def fraction(self, gb: float) -> float:
        """vLLM's --gpu-memory-utilization for a share: a per-instance fraction of the whole GPU."""
        return round(gb / self.vram_gb, 3) if self.vram_gb else 0.0

    def refusal(self) -> str | None:
        if self.vram_gb <= 0:
            return f"inference on {self.host}: the host has no GPU in the role map (hardware.gpu)"
        if self.fits:
            return None
        return (
            f"inference on {self.host}: the models need {self.used_gb:g} GB of GPU memory ({self.shares}), "
            f"but {self.vram_gb:g} GB x {self.utilization_max:g} = {self.usable_gb:.2f} GB is usable"
        )


def aux_services(inf: Inference) -> list[AuxService]:
    return [aux for aux in (inf.whisper, inf.embeddings) if aux is not None]


def vram_budget(rm: RoleMap, inf: Inference) -> Budget:
    gpu = rm.host(inf.host).hardware.gpu
    items = [(m.name, m.gpu_memory_gb) for m in inf.models]
    items += [(aux.name, aux.gpu_memory_gb) for aux in aux_services(inf) if aux.device == "cuda"]
    return Budget(inf.host, gpu.vram_gb if gpu else 0.0, inf.gpu_memory_utilization_max, tuple(items))


# --------------------------------------------------------------------------- nvidia-smi
@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mib: int
    driver: str


@dataclass(frozen=True)
class GpuReport:
    """What `nvidia-smi` says: absent, failing (driver not loaded), or the GPUs and CUDA version."""

    state: Literal["absent", "failed", "ok"]
    gpus: tuple[Gpu, ...] = ()
    cuda: str | None = None
    error: str = ""


def nvidia_smi_command() -> str:
    """One shell command that always exits 0 and prints lines `parse_nvidia_smi` reads."""
    return (
        "if ! command -v nvidia-smi >/dev/null 2>&1; then echo 'nvidia-smi: absent'; exit 0; fi; "
        "out=$(nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader,nounits 2>&1) "
        '|| { echo "nvidia-smi: failed: $(echo "$out" | head -n 1)"; exit 0; }; '
        "echo \"$out\" | sed 's/^/gpu: /'; "
        "nvidia-smi -q 2>/dev/null | sed -n 's/^ *CUDA Version *: */cuda: /p' | head -n 1"
    )


def parse_nvidia_smi(lines: list[str]) -> GpuReport:
    gpus: list[Gpu] = []
    cuda = None
    for raw in lines:
        line = raw.strip()
        if line == "nvidia-smi: absent":
            return GpuReport("absent")
        if line.startswith("nvidia-smi: failed:"):
            return GpuReport("failed", error=line.removeprefix("nvidia-smi: failed:").strip())
        if line.startswith("cuda: "):
            cuda = line.removeprefix("cuda: ").strip() or None
        elif line.startswith("gpu: "):
            fields = [part.strip() for part in line.removeprefix("gpu: ").split(",")]
            if len(fields) != 4:
                return GpuReport("failed", error=f"unexpected nvidia-smi line {line!r}")
            index, name, memory, driver = fields
            try:
                gpus.append(Gpu(int(index), name, int(float(memory)), driver))
            except ValueError:
                return GpuReport("failed", error=f"unexpected nvidia-smi line {line!r}")
    if not gpus:
        return GpuReport("failed", error="nvidia-smi lists no GPU")
    return GpuReport("ok", tuple(gpus), cuda)


def version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def gpu_refusal(report: GpuReport, inf: Inference, budget: Budget) -> str | None:
    """Why vLLM cannot run on this host's GPU, or None. Checked before anything is installed."""
    where = f"inference on {inf.host}"
    if report.state == "absent":
        return (
            f"{where}: refused: no NVIDIA driver (nvidia-smi not found); install the driver "
            f"(CUDA >= {inf.min_cuda}) before phase 3"
        )
    if report.state == "failed":
        return f"{where}: refused: nvidia-smi failed ({report.error}); is the NVIDIA driver loaded?"
    if report.cuda is None:
        return f"{where}: refused: nvidia-smi does not report a CUDA version (needs >= {inf.min_cuda})"
    if version_tuple(report.cuda) < version_tuple(inf.min_cuda):
        driver = report.gpus[0].driver
        return (
            f"{where}: refused: the driver {driver} supports CUDA {report.cuda}, "
            f"vLLM {inf.vllm_version} needs CUDA >= {inf.min_cuda}"
        )
    gpu = report.gpus[0]
    measured_gb = gpu.memory_mib / 1024
    if abs(measured_gb - budget.vram_gb) > VRAM_TOLERANCE * budget.vram_gb:
        return (
            f"{where}: refused: the role map says {budget.vram_gb:g} GB of GPU memory, nvidia-smi reports "
            f"{gpu.name} with {gpu.memory_mib} MiB ({measured_gb:.1f} GiB); correct hardware.gpu.vram_gb"
        )
    return None


# --------------------------------------------------------------------------- runtimes and services
@dataclass(frozen=True)
class Runtime:
    """A virtual environment holding one pinned package with a `vllm` console script."""

    venv: str
    package: str
    version: str
    index: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def vllm(self) -> str:
        return f"{self.venv}/bin/vllm"

    def pip_install_command(self) -> str:
        args = [
            f"{self.venv}/bin/pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--index-url",
            self.index,
        ]
        parts = urlsplit(self.index)
        # pip refuses plain-http indexes other than localhost unless the host is named as trusted
        # (a site's wheel mirror on the vSwitch).
        if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
            args += ["--trusted-host", parts.hostname or ""]
        args.append(self.requirement)
        # No pip.conf: the role map's index is the only source, not a mirror some config adds.
        return "PIP_CONFIG_FILE=/dev/null " + shlex.join(args)


def runtimes(inf: Inference) -> dict[str, Runtime]:
    """The runtimes to install: "cuda" always, "cpu" when a service runs on the CPU."""
    out = {"cuda": Runtime(inf.venv, "vllm", inf.vllm_version, inf.package_index)}
    if inf.cpu_runtime is not None and any(aux.device == "cpu" for aux in aux_services(inf)):
        cpu = inf.cpu_runtime
        out["cpu"] = Runtime(cpu.venv, cpu.package, cpu.version, inf.package_index)
    return out


@dataclass(frozen=True)
class ServiceSpec:
    """One `vllm serve` process: a model (`vllm@NAME.service`) or an aux service (`NAME.service`)."""

    name: str
    kind: Literal["model", "aux"]
    runtime: Runtime
    served_name: str
    address: str
    port: int
    source: str
    storage_dir: str | None
    local_dir: str | None
    device: Literal["cuda", "cpu"]
    gpu_memory_gb: float
    gpu_memory_utilization: float | None
    max_model_len: int | None
    extra_args: tuple[str, ...] = field(default=())

    @property
    def unit(self) -> str:
        return f"vllm@{self.name}.service" if self.kind == "model" else f"{self.name}.service"

    @property
    def env_file(self) -> str:
        return f"{ENV_DIR}/{self.name}.env"

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def model_ref(self) -> str:
        """What `vllm serve` loads: the local copy when there is one, else the Hugging Face id."""
        return self.local_dir or self.source

    def serve_args(self) -> list[str]:
        args = ["--served-model-name", self.served_name, "--host", self.address, "--port", str(self.port)]
        if self.gpu_memory_utilization is not None:
            args += ["--gpu-memory-utilization", f"{self.gpu_memory_utilization:g}"]
        if self.max_model_len is not None:
            args += ["--max-model-len", str(self.max_model_len)]
        return [*args, *self.extra_args]

    def env_text(self) -> str:
        what = "model" if self.kind == "model" else "service"
        lines = [
            f"# Managed by brainall-ops (phase 3): vLLM {what} {self.name}. Read by {self.unit}.",
            f"VLLM_MODEL={self.model_ref}",
            f"VLLM_SERVED_NAME={self.served_name}",
            f"VLLM_HOST={self.address}",
            f"VLLM_PORT={self.port}",
            f"VLLM_ARGS={' '.join(self.serve_args())}",
        ]
        if self.local_dir:
            # Weights and tokenizer are in the local copy: never reach out to the Hub.
            lines.append("HF_HUB_OFFLINE=1")
        if self.device == "cpu":
            lines.append("CUDA_VISIBLE_DEVICES=")
        return "\n".join(lines) + "\n"


def _storage_dir(inf: Inference, path: str | None, name: str, synced: bool) -> tuple[str | None, str | None]:
    if not synced or inf.models_source is None:
        return None, None
    return f"{inf.models_source.rstrip('/')}/{path or name}", f"{inf.models_dir.rstrip('/')}/{name}"


def build_services(inf: Inference, budget: Budget, address: str, synced: bool) -> list[ServiceSpec]:
    """Every `vllm serve` of phase 3, in start order: the models, then whisper and embeddings.

    `synced`: the weights come from the Storage Box mount (copied to models_dir first); without it
    vLLM loads each source from the Hub into hf_home.
    """
    rts = runtimes(inf)
    specs: list[ServiceSpec] = []
    for m in inf.models:
        specs.append(_model_spec(inf, m, budget, address, synced, rts["cuda"]))
    for aux in aux_services(inf):
        storage_dir, local_dir = _storage_dir(inf, aux.storage_path, aux.name, synced)
        on_gpu = aux.device == "cuda"
        specs.append(
            ServiceSpec(
                name=aux.name,
                kind="aux",
                runtime=rts["cuda" if on_gpu else "cpu"],
                served_name=aux.served_name or aux.name,
                address=address,
                port=aux.port,
                source=aux.model,
                storage_dir=storage_dir,
                local_dir=local_dir,
                device=aux.device,
                gpu_memory_gb=aux.gpu_memory_gb,
                gpu_memory_utilization=budget.fraction(aux.gpu_memory_gb) if on_gpu else None,
                max_model_len=aux.max_model_len,
                extra_args=tuple(aux.extra_args),
            )
        )
    return specs


def _model_spec(
    inf: Inference, m: ServedModel, budget: Budget, address: str, synced: bool, runtime: Runtime
) -> ServiceSpec:
    storage_dir, local_dir = _storage_dir(inf, m.storage_path, m.name, synced)
    return ServiceSpec(
        name=m.name,
        kind="model",
        runtime=runtime,
        served_name=m.served_name,
        address=address,
        port=m.port,
        source=m.source,
        storage_dir=storage_dir,
        local_dir=local_dir,
        device="cuda",
        gpu_memory_gb=m.gpu_memory_gb,
        gpu_memory_utilization=budget.fraction(m.gpu_memory_gb),
        max_model_len=m.max_model_len,
        extra_args=tuple(m.extra_args),
    )


def source_refusal(inf: Inference, source_present: bool, missing_dirs: list[str]) -> str | None:
    """Why the weights cannot be synced from the Storage Box, or None."""
    if inf.models_source is None:
        return None
    if not source_present:
        if not inf.models_source_required:
            return None
        return (
            f"inference on {inf.host}: refused: the Storage Box mount {inf.models_source} is not there or "
            f"not mounted (phase 1 mounts it over SSHFS; without autofs its retry timer mounts it again "
            f"once the box answers); set inference.models_source_required: false to load the models "
            f"from the Hub instead"
        )
    if missing_dirs:
        return (
            f"inference on {inf.host}: refused: no weights on the Storage Box for "
            f"{', '.join(missing_dirs)} (expected directories under {inf.models_source})"
        )
    return None


def rsync_command(
    source: str, dest: str, *, delete: bool = True, chmod: bool = True, dry_run: bool = False, checksum: bool = False
) -> str:
    """Copy `source/` into `dest/`. Times and links are kept, owners never (SSHFS on the Storage Box
    refuses chown); `chmod`: readable by the vLLM user whatever the box's modes are."""
    args = ["rsync", "-rlt"]
    if chmod:
        args += ["--perms", "--chmod=D755,F644"]
    if delete:
        args.append("--delete")
    if checksum:
        args.append("--checksum")
    if dry_run:
        args += ["--dry-run", "--itemize-changes"]
    return shlex.join([*args, f"{source.rstrip('/')}/", f"{dest.rstrip('/')}/"])


# --------------------------------------------------------------------------- readiness
def probe_args(specs: list[ServiceSpec], *, with_units: bool) -> list[str]:
    args: list[str] = []
    for spec in specs:
        args += ["--endpoint", f"{spec.served_name}={spec.url}"]
        if with_units:
            args += ["--unit", f"{spec.served_name}={spec.unit}"]
    return args


def probe_command(mode: Literal["check", "wait"], specs: list[ServiceSpec], timeout_s: int = 0, note: str = "") -> str:
    args = ["python3", PROBE_PATH, mode, *probe_args(specs, with_units=True)]
    if mode == "wait":
        args += ["--timeout", str(timeout_s)]
        if note:
            args += ["--note", note]
    return shlex.join(args)


# --------------------------------------------------------------------------- the plan's steps
def migration_steps(inf: Inference, specs: list[ServiceSpec]) -> list[str]:
    """The order phase 3 keeps, as the plan shows it."""
    units = ", ".join(s.unit for s in specs)
    source = (
        f"sync the weights {inf.models_source} -> {inf.models_dir} (rsync, only on drift)"
        if inf.models_source
        else f"vLLM loads each model from the Hub into {inf.hf_home}"
    )
    rts = runtimes(inf)
    installs = "; ".join(f"{r.requirement} in {r.venv}" for r in rts.values())
    return [
        f"check the GPU as facts: nvidia-smi present, CUDA >= {inf.min_cuda}, memory as in the role map "
        f"(refuse otherwise, before anything changes)",
        f"install {installs} from {inf.package_index}",
        source,
        f"install and start {units} (start timeout {inf.start_timeout_s} s, restart on failure)",
        f"gate: within {inf.ready_timeout_s} s every service answers /health 200 and lists its served name "
        f"in /v1/models; otherwise the run fails here and {inf.ollama_service} keeps serving",
        f"copy {inf.ollama_models_dir} -> {inf.ollama_models_copy} and verify it by checksum",
        f"stop and disable {inf.ollama_service} (frees {inf.ollama_ram_gb:g} GB RAM); if vLLM then stops "
        f"answering, {inf.ollama_service} is started again and the run fails",
    ]
