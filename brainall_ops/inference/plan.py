"""Phase 3 plan: the GPU memory budget per model, and the Ollama -> vLLM migration steps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainall_ops.planning.changes import Change, Contribution
from brainall_ops.rolemap.models import RoleMap

if TYPE_CHECKING:
    from brainall_ops.planning.plan import PlanContext


def vram_budget(rm: RoleMap) -> tuple[list[tuple[str, float]], float, float]:
    """([(service, GB)], used GB, usable GB) on the inference host's GPU."""
    assert rm.inference is not None
    inf = rm.inference
    gpu = rm.host(inf.host).hardware.gpu
    vram = gpu.vram_gb if gpu else 0.0
    items = [(m.name, m.gpu_memory_gb) for m in inf.models]
    for aux in (inf.whisper, inf.embeddings):
        if aux is not None and aux.device == "cuda":
            items.append((aux.name, aux.gpu_memory_gb))
    used = sum(gb for _, gb in items)
    return items, used, vram * inf.gpu_memory_utilization_max


def plan_changes(rm: RoleMap, context: PlanContext) -> Contribution:
    out = Contribution()
    inf = rm.inference
    if inf is None:
        return out
    items, used, usable = vram_budget(rm)
    gpu = rm.host(inf.host).hardware.gpu
    vram = gpu.vram_gb if gpu else 0.0
    shares = ", ".join(f"{name} {gb:g} GB" for name, gb in items)
    if used > usable:
        out.refusals.append(
            f"inference on {inf.host}: the models need {used:g} GB of GPU memory ({shares}), "
            f"but {vram:g} GB x {inf.gpu_memory_utilization_max:g} = {usable:.2f} GB is usable"
        )
        return out
    for m in inf.models:
        fraction = m.gpu_memory_gb / vram if vram else 0
        out.changes.append(
            Change(
                "phase3",
                "inference",
                "create",
                inf.host,
                f"vllm@{m.name}: {m.source} as '{m.served_name}' on :{m.port}, "
                f"{m.gpu_memory_gb:g} GB ({fraction:.3f} of {vram:g} GB), max_model_len {m.max_model_len}",
                {"model": m.name, "gpu_memory_gb": m.gpu_memory_gb, "gpu_memory_utilization": round(fraction, 3)},
            )
        )
    for aux in (inf.whisper, inf.embeddings):
        if aux is not None:
            out.changes.append(
                Change(
                    "phase3", "inference", "create", inf.host, f"{aux.name}: {aux.model} on :{aux.port} ({aux.device})"
                )
            )
    out.changes.append(
        Change(
            "phase3", "inference", "create", inf.host, f"redis cache on {rm.host(inf.host).address}:{inf.redis_port}"
        )
    )
    out.changes.append(
        Change(
            "phase3",
            "inference",
            "run",
            inf.host,
            f"GPU budget {used:g} of {usable:.2f} usable GB ({shares}); stop and disable "
            f"{inf.ollama_service} only once every model answers /health and /v1/models "
            f"(frees {inf.ollama_ram_gb:g} GB RAM)",
        )
    )
    return out
