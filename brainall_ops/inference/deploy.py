"""Phase 3 as a pyinfra deploy: vLLM in place of Ollama on the GPU host.

Order, and why:
1. refusals first, before anything changes: the GPU memory budget (role map only), the GPU as
   facts (nvidia-smi, CUDA, memory), the Storage Box mount holding the weights;
2. packages, the `vllm` user, the pinned vLLM venv(s), the weights synced to local NVMe;
3. the units (`vllm@NAME.service` per model, `whisper.service`, `embeddings.service`) and Redis;
4. the gate: every service ready (/health 200, served name in /v1/models, unit active);
5. only then Ollama: its models copied to the Storage Box and verified, then stopped and disabled.
A failed gate fails the run on this host with the reason, and Ollama keeps serving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import OperationError
from pyinfra.facts.files import Directory
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from brainall_ops.errors import BrainallError
from brainall_ops.inference import operations as ops
from brainall_ops.inference.facts import MountContaining, NvidiaGpus
from brainall_ops.inference.logic import (
    APT_PACKAGES,
    ENV_DIR,
    PROBE_PATH,
    REDIS_AUTH_CONF,
    SERVICE_HOME,
    SERVICE_USER,
    UNIT_TEMPLATE,
    build_services,
    effective_inference,
    gpu_refusal,
    redis_password,
    runtimes,
    source_refusal,
    vram_budget,
)
from brainall_ops.rolemap.models import Inference
from brainall_ops.shared.apt import apt_packages
from brainall_ops.shared.deploy_context import rolemap_for
from brainall_ops.shared.templating import template_dir

TEMPLATES = template_dir("inference")
PROBE_SOURCE = Path(__file__).with_name("probe.py")
UNIT_DIR = "/etc/systemd/system"
REDIS_CONF = "/etc/redis/redis.conf"
REDIS_DROPIN = "/etc/systemd/system/redis-server.service.d/brainall.conf"


class InferenceRefused(OperationError):
    """Phase 3 must not run on this host; pyinfra prints the message as one line and stops."""


def serves_inference(host_data: Any) -> bool:
    """Whether this inventory host is the role map's inference host."""
    rm = rolemap_for(host_data)
    return rm.inference is not None and getattr(host_data, "brainall_name", None) == rm.inference.host


def _weights_on_storage_box(inf: Inference, mount_points: list[str]) -> tuple[bool, list[str]]:
    """(the mount is there, names whose weights directory is missing in it). `mount_points`: the
    role map's Storage Box mounts on this host; a source under one of them counts only while that
    mount is up (without autofs an unmounted box leaves an empty local directory there)."""
    if inf.models_source is None or not host.get_fact(Directory, path=inf.models_source):
        return False, []
    source = inf.models_source.rstrip("/")
    under = [m for m in mount_points if source == m.rstrip("/") or source.startswith(m.rstrip("/") + "/")]
    if under and host.get_fact(MountContaining, path=source) in ("", "/"):
        return False, []
    entries = [(m.name, m.storage_path) for m in inf.models]
    entries += [(a.name, a.storage_path) for a in (inf.whisper, inf.embeddings) if a is not None]
    missing = [
        name
        for name, path in entries
        if not host.get_fact(Directory, path=f"{inf.models_source.rstrip('/')}/{path or name}")
    ]
    return True, missing


def _template(name: str) -> str:
    return str(TEMPLATES / name)


@deploy("BrainAll inference: vLLM in place of Ollama (phase 3)")
def inference_services() -> None:
    rm = rolemap_for(host.data)
    try:
        inf, _overrides = effective_inference(rm)
        redis_password()  # checked now; read again where it is written, never kept here
    except BrainallError as exc:
        raise InferenceRefused(str(exc)) from None

    # 1. Refusals, before any operation is queued.
    budget = vram_budget(rm, inf)
    if refusal := budget.refusal():
        raise InferenceRefused(refusal)
    if refusal := gpu_refusal(host.get_fact(NvidiaGpus), inf, budget):
        raise InferenceRefused(refusal)
    box_mounts = [m.mount_point for m in rm.storage.sshfs if m.host == inf.host] if rm.storage else []
    source_present, missing = _weights_on_storage_box(inf, box_mounts)
    if refusal := source_refusal(inf, source_present, missing):
        raise InferenceRefused(refusal)

    address = str(host.data.brainall_address)
    specs = build_services(inf, budget, address, synced=source_present)

    # 2. Packages, user, runtimes, weights.
    apt_packages(
        name="Packages for vLLM, the weights sync and the Redis cache",
        packages=list(APT_PACKAGES),
        update=True,
        cache_time=3600,
        no_recommends=True,
        # apt through the lab's proxy has been seen to hang: bounded, retried once.
        _timeout=600,
        _retries=1,
    )
    server.group(name="vllm group", group=SERVICE_USER, system=True)
    server.user(
        name="vllm user (runs every vLLM unit)",
        user=SERVICE_USER,
        group=SERVICE_USER,
        home=SERVICE_HOME,
        shell="/usr/sbin/nologin",
        system=True,
        create_home=True,
    )
    for path in (inf.hf_home, inf.models_dir):
        files.directory(name=f"{path}", path=path, user=SERVICE_USER, group=SERVICE_USER, mode="0755")
    files.directory(name=ENV_DIR, path=ENV_DIR, mode="0755")
    for runtime in runtimes(inf).values():
        ops.python_runtime(name=f"{runtime.requirement} in {runtime.venv}", runtime=runtime, _timeout=3600)
    files.put(
        name="Readiness probe (units' ExecStartPost, the gate)",
        src=str(PROBE_SOURCE),
        dest=PROBE_PATH,
        mode="0755",
        create_remote_dir=True,
    )

    synced: dict[str, Any] = {}
    for spec in specs:
        if spec.storage_dir and spec.local_dir:
            synced[spec.name] = ops.weights_synced(
                name=f"Weights of {spec.name}: {spec.storage_dir} -> {spec.local_dir}",
                source=spec.storage_dir,
                dest=spec.local_dir,
            )

    # 3. Units and Redis.
    unit_context = {
        "service_user": SERVICE_USER,
        "service_home": SERVICE_HOME,
        "hf_home": inf.hf_home,
        "probe": PROBE_PATH,
        "start_timeout_s": inf.start_timeout_s,
    }
    cuda = runtimes(inf)["cuda"]
    template_unit = files.template(
        name=f"{UNIT_DIR}/{UNIT_TEMPLATE}",
        src=_template("vllm.service.j2"),
        dest=f"{UNIT_DIR}/{UNIT_TEMPLATE}",
        mode="0644",
        what="one vLLM model per instance, vllm@NAME.service",
        description="vLLM model %i",
        env_file=f"{ENV_DIR}/%i.env",
        vllm=cuda.vllm,
        **unit_context,
    )
    unit_files: dict[str, Any] = {}
    env_files: dict[str, Any] = {}
    for spec in specs:
        if spec.kind == "aux":
            unit_files[spec.name] = files.template(
                name=f"{UNIT_DIR}/{spec.unit}",
                src=_template("vllm.service.j2"),
                dest=f"{UNIT_DIR}/{spec.unit}",
                mode="0644",
                what=f"vLLM service {spec.name}",
                description=f"vLLM service {spec.name} ({spec.source}, {spec.device})",
                env_file=spec.env_file,
                vllm=spec.runtime.vllm,
                **unit_context,
            )
        env_files[spec.name] = files.put(
            name=spec.env_file,
            src=_text_io(spec.env_text()),
            dest=spec.env_file,
            mode="0644",
        )
    units_changed = any_changed(template_unit, *unit_files.values())
    systemd.daemon_reload(name="systemd reads the vLLM units", _if=units_changed)
    verify_units = " ".join(spec.unit for spec in specs)
    server.shell(
        name="systemd-analyze verify the vLLM units",
        commands=[f"systemd-analyze verify {verify_units}"],
        _if=any_changed(template_unit, *unit_files.values(), *env_files.values()),
    )

    redis_conf = files.template(
        name=f"Redis cache bound to {address} and loopback",
        src=_template("redis.conf.j2"),
        dest=REDIS_CONF,
        user="redis",
        group="redis",
        mode="0640",
        host_name=inf.host,
        address=address,
        port=inf.redis_port,
        maxmemory_mb=inf.redis_maxmemory_mb,
        auth_conf=REDIS_AUTH_CONF,
    )
    redis_secret = ops.redis_auth(name=f"Redis password ({REDIS_AUTH_CONF}, 0600)", path=REDIS_AUTH_CONF, owner="redis")
    redis_dropin = files.template(
        name="Redis starts once the network is up",
        src=_template("redis-network.conf.j2"),
        dest=REDIS_DROPIN,
        mode="0644",
        create_remote_dir=True,
    )
    systemd.daemon_reload(name="systemd reads the Redis drop-in", _if=redis_dropin.did_change)
    systemd.service(
        name="Redis cache restarted with its configuration",
        service="redis-server.service",
        restarted=True,
        _if=any_changed(redis_conf, redis_secret, redis_dropin),
    )
    systemd.service(name="Redis cache running", service="redis-server.service", running=True, enabled=True)

    for spec in specs:
        # Not the probe: it only runs at start, and restarting a loaded 70B model costs minutes.
        changes = [env_files[spec.name], unit_files.get(spec.name) or template_unit]
        if spec.name in synced:
            changes.append(synced[spec.name])
        ops.unit_restarted(
            name=f"{spec.unit} restarted with its new settings or weights",
            unit=spec.unit,
            _if=any_changed(*changes),
        )
        ops.unit_running(name=f"{spec.unit} enabled and started", unit=spec.unit)

    # 4. The gate. 5. Ollama, only past it.
    ops.services_ready(
        name=f"Gate: every vLLM service ready within {inf.ready_timeout_s} s",
        specs=specs,
        timeout_s=inf.ready_timeout_s,
        note=f"{inf.ollama_service} keeps serving",
        _timeout=inf.ready_timeout_s + 60,
    )
    ops.ollama_retired(
        name=f"{inf.ollama_service}: models kept on the Storage Box, then stopped and disabled",
        service=inf.ollama_service,
        models_dir=inf.ollama_models_dir,
        copy_dir=inf.ollama_models_copy,
        specs=specs,
        _timeout=6 * 3600,  # the first copy of ~60 GB to the Storage Box
    )


def _text_io(text: str) -> Any:
    from io import BytesIO

    return BytesIO(text.encode())
