"""`vllm serve MODEL [flags]` of the stand-in: the flags the deploy passes are parsed as vLLM
parses them (unknown ones are accepted and printed), then the stand-in server runs in the
foreground until SIGTERM, as `vllm serve` does under systemd."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    from vllm_standin.server import serve

    parser = argparse.ArgumentParser(prog="vllm", description="vLLM stand-in for tests (no GPU, no weights)")
    parser.add_argument("--version", action="version", version="vllm stand-in")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve")
    run.add_argument("model")
    run.add_argument("--host", default="0.0.0.0")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--served-model-name", nargs="+", default=None)
    run.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    run.add_argument("--max-model-len", type=int, default=None)
    args, unknown = parser.parse_known_args(argv)

    served = (args.served_model_name or [args.model])[0]
    print(
        f"vllm stand-in: serve {args.model} as {served!r} on {args.host}:{args.port}, "
        f"gpu_memory_utilization={args.gpu_memory_utilization}, max_model_len={args.max_model_len}, "
        f"other flags={unknown}, HF_HOME={os.environ.get('HF_HOME')}, "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}",
        flush=True,
    )
    if not 0 < args.gpu_memory_utilization <= 1:
        print(f"error: --gpu-memory-utilization {args.gpu_memory_utilization} is not in (0, 1]", file=sys.stderr)
        return 2
    # vLLM fails at once on a local model path that is not there; so does the stand-in.
    if args.model.startswith("/") and not os.path.isdir(args.model):
        print(f"error: model directory {args.model} does not exist", file=sys.stderr)
        return 1
    load_s = float(os.environ.get("VLLM_STANDIN_LOAD_S", "0"))
    server = serve(args.model, served, args.host, args.port, args.max_model_len, load_s)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    print("vllm stand-in: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
