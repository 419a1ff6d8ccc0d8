#!/usr/bin/env python3
"""vLLM smoke bench on a machine with an NVIDIA GPU: real vLLM, a small model from a local path.

Installs the role map's pinned vLLM (`inference.vllm_version` from `inference.package_index`, or
--version/--index) into its own virtual environment, serves the model at --model with `vllm serve`
as phase 3's units do, and prints:
- the time from `vllm serve` to ready (/health 200 and the served name in /v1/models, the gate's
  own probe), and
- generation throughput: completion tokens per second for sequential requests and for a
  concurrent batch.

Without an NVIDIA GPU (no working nvidia-smi) it says so and exits 0: it is a bench, not a test.

    python bench/vllm_smoke.py --model /models/Qwen2.5-0.5B-Instruct [--requests 16] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SERVED_NAME = "smoke"
PROMPT = "Write a short paragraph about the Helsinki data centre and why latency matters for inference."


def gpu_summary() -> str | None:
    """One line per GPU from nvidia-smi, or None when there is no usable NVIDIA GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    result = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0 or not result.stdout.strip():
        return None
    return result.stdout.strip()


def ensure_vllm(venv: Path, version: str, index: str) -> Path:
    vllm = venv / "bin" / "vllm"
    python = venv / "bin" / "python"
    if python.exists():
        probe = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('vllm'))"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            print(f"vLLM {version} already in {venv}")
            return vllm
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    started = time.perf_counter()
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "--index-url", index, f"vllm=={version}"],
        check=True,
    )
    print(f"installed vllm=={version} from {index} in {time.perf_counter() - started:.0f} s")
    return vllm


def completion(url: str, max_tokens: int) -> int:
    body = json.dumps(
        {"model": SERVED_NAME, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    ).encode()
    request = urllib.request.Request(
        f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return int(json.loads(response.read())["usage"]["completion_tokens"])


def main() -> int:
    from brainall_ops.inference.probe import wait_all
    from brainall_ops.rolemap import load_rolemap

    rm = load_rolemap()
    inf = rm.inference
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=os.environ.get("VLLM_SMOKE_MODEL"), help="local model dir")
    parser.add_argument("--version", default=inf.vllm_version if inf else None)
    parser.add_argument("--index", default=inf.package_index if inf else "https://pypi.org/simple")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/brainall-vllm-smoke"))
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--requests", type=int, default=16, help="sequential requests (bounded)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in the concurrent batch (bounded)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--ready-timeout", type=float, default=900)
    args = parser.parse_args()

    gpus = gpu_summary()
    if gpus is None:
        print("vllm_smoke: no NVIDIA GPU here (nvidia-smi missing or failing); this bench needs one. Nothing run.")
        return 0
    if args.model is None or not args.model.is_dir():
        print(f"vllm_smoke: --model must be a local model directory (got {args.model})", file=sys.stderr)
        return 2
    requests = max(1, min(args.requests, 256))
    concurrency = max(1, min(args.concurrency, 64))
    print(f"GPU: {gpus}")

    vllm = ensure_vllm(args.venv, args.version, args.index)
    url = f"http://127.0.0.1:{args.port}"
    log_path = args.venv / "serve.log"
    command = [
        str(vllm),
        "serve",
        str(args.model),
        "--served-model-name",
        SERVED_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        "--gpu-memory-utilization",
        str(args.gpu_memory_utilization),
        "--max-model-len",
        str(args.max_model_len),
    ]
    print("serving:", " ".join(command))
    with open(log_path, "w") as log:
        started = time.perf_counter()
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            ready, statuses, _ = wait_all([(SERVED_NAME, url)], {}, args.ready_timeout, 1.0)
            to_ready = time.perf_counter() - started
            if not ready:
                print(f"not ready after {args.ready_timeout:g} s: {statuses[0].reason}; log: {log_path}")
                return 1
            print(f"time to ready: {to_ready:.1f} s (vllm serve -> /health 200 and '{SERVED_NAME}' in /v1/models)")

            completion(url, 8)  # warm-up, not counted
            begin = time.perf_counter()
            tokens = sum(completion(url, args.max_tokens) for _ in range(requests))
            took = time.perf_counter() - begin
            print(f"sequential: {requests} requests, {tokens} tokens in {took:.2f} s = {tokens / took:.1f} tokens/s")

            begin = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                tokens = sum(pool.map(lambda _: completion(url, args.max_tokens), range(concurrency)))
            took = time.perf_counter() - begin
            print(f"concurrent: {concurrency} requests, {tokens} tokens in {took:.2f} s = {tokens / took:.1f} tokens/s")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
