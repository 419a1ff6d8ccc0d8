"""Phase 3 plan: the GPU memory budget per model, and the Ollama -> vLLM migration steps.

Refuses, with the numbers, a set of models that does not fit in the GPU: `brainall-ops plan`
then exits 1 and the deploy refuses the same way before it touches the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainall_ops.inference.logic import (
    aux_services,
    build_services,
    effective_inference,
    migration_steps,
    vram_budget,
)
from brainall_ops.planning.changes import Change, Contribution
from brainall_ops.rolemap.environment import PRODUCTION, endpoints
from brainall_ops.rolemap.models import RoleMap

if TYPE_CHECKING:
    from brainall_ops.planning.plan import PlanContext


def plan_changes(rm: RoleMap, context: PlanContext) -> Contribution:
    out = Contribution()
    if rm.inference is None:
        return out
    inf, overrides = effective_inference(rm)
    if overrides:
        out.warnings.append(f"inference: role map settings overridden by {overrides} ($BRAINALL_INFERENCE_OVERRIDES)")
    budget = vram_budget(rm, inf)
    if refusal := budget.refusal():
        out.refusals.append(refusal)
        return out

    # The vSwitch address vLLM and Redis bind, in the environment planned (`plan --environment`).
    environment = str(context.options.get("environment") or PRODUCTION)
    address = str(endpoints(rm, environment)[inf.host].address)
    specs = build_services(inf, budget, address, synced=inf.models_source is not None)
    for spec in specs:
        if spec.device == "cuda":
            share = (
                f"{spec.gpu_memory_gb:g} GB of GPU memory ({spec.gpu_memory_utilization:g} of {budget.vram_gb:g} GB)"
            )
        else:
            share = "CPU, no GPU memory"
        length = f", max_model_len {spec.max_model_len}" if spec.max_model_len else ""
        out.changes.append(
            Change(
                "phase3",
                "inference",
                "create",
                inf.host,
                f"{spec.unit}: {spec.source} as '{spec.served_name}' on :{spec.port}, {share}{length}",
                {
                    "service": spec.name,
                    "unit": spec.unit,
                    "served_name": spec.served_name,
                    "port": spec.port,
                    "device": spec.device,
                    "gpu_memory_gb": spec.gpu_memory_gb,
                    "gpu_memory_utilization": spec.gpu_memory_utilization,
                },
            )
        )
    on_cpu = [aux.name for aux in aux_services(inf) if aux.device == "cpu"]
    out.changes.append(
        Change(
            "phase3",
            "inference",
            "run",
            inf.host,
            f"GPU memory budget: {budget.used_gb:g} of {budget.usable_gb:.2f} usable GB "
            f"({budget.vram_gb:g} GB x {budget.utilization_max:g}): {budget.shares}"
            + (f"; on the CPU: {', '.join(on_cpu)}" if on_cpu else ""),
            {
                "vram_gb": budget.vram_gb,
                "usable_gb": round(budget.usable_gb, 2),
                "used_gb": budget.used_gb,
                "items": [{"service": name, "gpu_memory_gb": gb} for name, gb in budget.items],
            },
        )
    )
    out.changes.append(
        Change(
            "phase3",
            "inference",
            "create",
            inf.host,
            f"redis cache on {address}:{inf.redis_port} and loopback only ({inf.redis_maxmemory_mb} MB, LRU)",
        )
    )
    for number, step in enumerate(migration_steps(inf, specs), start=1):
        out.changes.append(Change("phase3", "inference", "run", inf.host, f"migration step {number}: {step}"))
    return out
