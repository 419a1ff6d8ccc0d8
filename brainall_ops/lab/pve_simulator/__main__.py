"""`python -m brainall_ops.lab.pve_simulator`: run the simulator as a process.

Prints, one per line: the URL, `ca_file=PATH` (the CA to verify it with), `token_id=ID` and,
when it made the token secret itself, `token_secret_file=PATH` (mode 0600, kept across starts;
the secret itself is never printed). Runs until SIGTERM or SIGINT. With `--state FILE` the cluster is kept in FILE and
picked up again at the next start; without it, a fresh cluster is seeded from the role map.

In the lab (the role map's `proxmox.environments.lab`: https://127.0.0.1:8006, CA in
$BRAINALL_LAB_DIR/proxmox/ca.pem)::

    python -m brainall_ops.lab.pve_simulator --port 8006 --state "$LAB/proxmox/cluster.json" \
        --tls-dir "$LAB/proxmox" --lab-state "$LAB"
    BRAINALL_PROXMOX_TOKEN_FILE="$LAB/proxmox/token-secret" pyinfra inventories/lab.py deploys/phase2.py
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from brainall_ops.errors import BrainallError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m brainall_ops.lab.pve_simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--state", type=Path, help="keep the cluster in this JSON file")
    parser.add_argument("--rolemap", type=Path, help="seed from this role map (default: the built-in one)")
    parser.add_argument("--token-id", default=None, help="API token to accept (default: the role map's)")
    parser.add_argument("--token-secret-file", type=Path, help="its secret (default: made and written to --tls-dir)")
    parser.add_argument("--tls-dir", type=Path, help="where the CA and certificate go (default: next to --state)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every API call")
    parser.add_argument("--task-seconds", type=float, default=0.2, help="how long each task runs")
    parser.add_argument("--lock-wait-s", type=float, default=10.0, help="how long a writer waits for a VM lock")
    parser.add_argument("--lab-state", type=Path, help="make started VMs lab hosts of this lab state dir")
    parser.add_argument("--hook-log", type=Path, help="append VM start/stop events to this file (JSON lines)")
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="URL=FILE",
        help="download-url of URL reads FILE (repeatable; the simulator never fetches from the network)",
    )
    parser.add_argument("--no-templates", action="store_true", help="seed no cloud-init template (phase 2 builds them)")
    args = parser.parse_args(argv)
    images: dict[str, Path] = {}
    for item in args.image:
        url, eq, file = item.partition("=")
        if not eq or not url.startswith(("http://", "https://")) or not Path(file).is_file():
            print(f"error: --image {item!r}: expected URL=FILE with an existing FILE", file=sys.stderr)
            return 1
        images[url] = Path(file)

    from brainall_ops.lab.pve_simulator import Cluster, Settings, Simulator, seed_from_rolemap
    from brainall_ops.lab.pve_simulator.hooks import LabHook, LabHookUnavailable, RecordingHook, VMHook
    from brainall_ops.rolemap.loader import load_rolemap

    try:
        rm = load_rolemap(args.rolemap)
    except BrainallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    hook: VMHook | None = None
    if args.lab_state is not None:
        try:
            hook = LabHook(args.lab_state)
        except LabHookUnavailable as exc:
            print(f"error: --lab-state: {exc}", file=sys.stderr)
            return 1
    elif args.hook_log is not None:
        hook = RecordingHook(args.hook_log)

    settings = Settings(latency_s=args.latency_ms / 1000, task_seconds=args.task_seconds, lock_wait_s=args.lock_wait_s)
    fresh = args.state is None or not args.state.exists()
    cluster = Cluster(settings, hook=hook, state_file=args.state, image_sources=images)
    if fresh:
        seed_from_rolemap(cluster, rm, with_templates=not args.no_templates)
        cluster.save()

    tls_dir = args.tls_dir or (args.state.parent / (args.state.name + ".tls") if args.state else None)
    token_id = args.token_id or (rm.proxmox.token_id if rm.proxmox else "root@pam!simulator")
    secret_file: Path | None = None
    if args.token_secret_file is not None:
        secret = args.token_secret_file.read_text(encoding="utf-8").strip()
    elif os.environ.get("BRAINALL_PROXMOX_TOKEN_SECRET"):
        secret = os.environ["BRAINALL_PROXMOX_TOKEN_SECRET"]
    elif tls_dir is not None and (tls_dir / "token-secret").is_file():
        secret_file = tls_dir / "token-secret"  # kept from the last start: clients keep working
        secret = secret_file.read_text(encoding="utf-8").strip()
    else:
        secret = secrets.token_hex(16)
        if tls_dir is None:
            print(
                "error: give --token-secret-file, --tls-dir or --state to keep the made-up token secret",
                file=sys.stderr,
            )
            return 1
        tls_dir.mkdir(parents=True, exist_ok=True)
        secret_file = tls_dir / "token-secret"
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
    cluster.add_token(token_id, secret)

    simulator = Simulator(cluster, host=args.bind, port=args.port, tls_dir=tls_dir).start()
    print(simulator.url)
    print(f"ca_file={simulator.ca_file}")
    print(f"token_id={token_id}")
    if secret_file is not None:
        print(f"token_secret_file={secret_file}")
    sys.stdout.flush()

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    simulator.stop()
    cluster.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
