"""Run the real phase 2 deploy (`pyinfra INVENTORY deploys/phase2.py`) against the simulator.

Shared by the integration tests and `bench/proxmox_bench.py`. The simulator runs in this
process, seeded from a role map; pyinfra runs as its own process, exactly as an operator runs
it, with `BRAINALL_PROXMOX_URL` / `BRAINALL_PROXMOX_CA` pointing it at the simulator (never at
the role map's production endpoint) and the token secret in its environment.

The inventory targets the Proxmox hosts through pyinfra's `@fake` connector: phase 2 runs no
command on a Proxmox host (its operations call the API from the controller), and these hosts
answer any command with a failure, so a deploy that tried one would fail the run. A non-Proxmox
host is in the inventory too, to show that the deploy leaves such hosts alone.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainall_ops.lab.pve_simulator.cluster import Cluster, Settings
from brainall_ops.lab.pve_simulator.hooks import RecordingHook
from brainall_ops.lab.pve_simulator.seed import seed_from_rolemap
from brainall_ops.lab.pve_simulator.server import Simulator
from brainall_ops.rolemap.loader import BUILTIN_ROLEMAP, REPO_ROOT, load_rolemap

ROLEMAP_SECTIONS_OF_OTHER_CONCERNS = ("storage", "ceph", "inference", "backends", "firewall", "data", "monitoring")

PYINFRA = Path(sys.executable).with_name("pyinfra")
PHASE2 = "deploys/phase2.py"
ENVIRONMENT = "lab"


def public_key_line(comment: str = "brainall-ops-test") -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{raw.decode()} {comment}"


@dataclass
class PyinfraRun:
    returncode: int
    stdout: str
    stderr: str
    results: dict[str, Any] | None = None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def changed(self) -> int:
        """Operations that changed something (pyinfra's `success` with commands executed)."""
        assert self.results is not None, self.output
        return int(self.results["results"]["totals"]["success"]) if self.results.get("results") else 0

    @property
    def errors(self) -> int:
        assert self.results is not None, self.output
        return int(self.results["results"]["totals"]["error"]) if self.results.get("results") else 0

    @property
    def planned_changes(self) -> list[str]:
        """Names of operations pyinfra's plan says will change something."""
        assert self.results is not None, self.output
        return [op["name"] for op in self.results["plan"] if op["hosts_with_change"]]


@dataclass
class Fleet:
    """A simulator seeded from a role map, and what a pyinfra run needs to talk to it."""

    rolemap: Path = BUILTIN_ROLEMAP
    settings: Settings = field(default_factory=lambda: Settings(task_seconds=0.02, lock_wait_s=0.5))
    workdir: Path | None = None
    token_id: str = "brainall-ops@pve!deploy"
    # download-url of these URLs reads the file (the lab has no network); no templates: phase 2 builds them
    image_sources: dict[str, Path] = field(default_factory=dict)
    with_templates: bool = True

    def __post_init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="pve-fleet-") if self.workdir is None else None
        self.dir = Path(self._tmp.name) if self._tmp else self.workdir
        assert self.dir is not None
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rm = load_rolemap(self.rolemap)
        if self.rm.proxmox is not None:
            self.token_id = self.rm.proxmox.token_id
        self.secret = secrets.token_hex(16)
        # the Storage Box password phase 2 gives the vzdump storage (data.vzdump of the role map)
        self.box_password = f"Sbx-{secrets.token_urlsafe(18)}"
        self.hook = RecordingHook(self.dir / "vm-events.jsonl")
        self.cluster = seed_from_rolemap(
            Cluster(self.settings, hook=self.hook, image_sources=self.image_sources),
            self.rm,
            with_templates=self.with_templates,
        )
        self.cluster.add_token(self.token_id, self.secret)
        self.lab_dir = self.dir / "lab"
        self.lab_dir.mkdir(exist_ok=True)
        self.public_key = public_key_line()
        (self.lab_dir / "id_ed25519.pub").write_text(self.public_key + "\n", encoding="utf-8")
        self.simulator = Simulator(self.cluster, tls_dir=self.dir / "tls")
        self.inventory = self.dir / "proxmox_inventory.py"

    def start(self) -> Fleet:
        self.simulator.start()
        self.write_inventory()
        return self

    def stop(self) -> None:
        self.simulator.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------- runs
    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINALL_")}
        env.update(
            {
                "BRAINALL_PROXMOX_URL": self.simulator.url,
                "BRAINALL_PROXMOX_CA": str(self.simulator.ca_file),
                "BRAINALL_PROXMOX_TOKEN_SECRET": self.secret,
                "BRAINALL_STORAGEBOX_PASSWORD": self.box_password,
                "BRAINALL_LAB_DIR": str(self.lab_dir),
                "PYINFRA_PROGRESS": "off",
            }
        )
        env.update(extra)
        return env

    def write_inventory(self, rolemap: Path | None = None) -> Path:
        hosts = []
        for host in self.rm.hosts:
            data: dict[str, Any] = {
                "brainall_name": host.name,
                "brainall_rolemap": str((rolemap or self.rolemap).resolve()),
                "brainall_environment": ENVIRONMENT,
                "fake_delay": 0,
                "fake_delay_jitter": 0,
            }
            if host.proxmox is not None:
                data["brainall_proxmox_node"] = host.proxmox.node
            elif host.name != self.rm.placement.reference_host:
                continue
            hosts.append((f"@fake/{host.name}", data))
        lines = [
            "# Written by brainall_ops.lab.pve_simulator.harness: the Proxmox hosts for deploys/phase2.py",
            "# against the API simulator. Any shell command on them fails: phase 2 must run none.",
            "import re",
            "",
            "_NO_SHELL = {re.compile('.*'): {'success': False, 'stderr': 'phase 2 must not run commands on hosts'}}",
            "",
            "proxmox = [",
        ]
        for name, data in hosts:
            if "brainall_proxmox_node" in data:
                lines.append(f"    ({name!r}, {{**{data!r}, 'fake_responses': _NO_SHELL}}),")
        lines += ["]", "", "others = ["]
        for name, data in hosts:
            if "brainall_proxmox_node" not in data:
                lines.append(f"    ({name!r}, {{**{data!r}, 'fake_responses': _NO_SHELL}}),")
        lines += ["]", ""]
        self.inventory.write_text("\n".join(lines), encoding="utf-8")
        return self.inventory

    def pyinfra(
        self, *args: str, dry: bool = False, env: dict[str, str] | None = None, timeout: float = 240
    ) -> PyinfraRun:
        """`pyinfra --json [-y|--dry] INVENTORY deploys/phase2.py ARGS`; stdout is pyinfra's JSON."""
        command = [str(PYINFRA), "--json", "--dry" if dry else "-y", str(self.inventory), PHASE2, *args]
        done = subprocess.run(
            command, cwd=REPO_ROOT, env=env or self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        results = None
        if done.stdout.strip().startswith("{"):
            results = json.loads(done.stdout)
        return PyinfraRun(done.returncode, done.stdout, done.stderr, results)

    def brainall_ops(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).with_name("brainall-ops")), *args]
        return subprocess.run(
            command, cwd=REPO_ROOT, env=env or self.env(), capture_output=True, text=True, timeout=120, check=False
        )

    # ----------------------------------------------------------------------- looking at the cluster
    def requests_since(self, mark: int) -> list[dict[str, Any]]:
        return self.simulator.requests(since=mark)

    def vms_named(self, name: str) -> list[Any]:
        return self.cluster.vm_by_name(name)

    def client(self) -> Any:
        from brainall_ops.proxmox.client import ConnectionSettings, ProxmoxClient
        from brainall_ops.shared.secrets import Secret

        settings = ConnectionSettings(
            url=self.simulator.url, token_id=self.token_id, verify=str(self.simulator.ca_file)
        )
        return ProxmoxClient(settings, Secret(self.secret))

    def left_to_do(self) -> list[str]:
        """What phase 2 would still do, decided by the deploy's own logic from a full read of the
        cluster (every VM's config too): empty when the fleet is converged. Faster than a no-op
        pyinfra run, and stricter (it reads what the fast path trusts the spec tag for)."""
        from brainall_ops.planning.fleet import place_rolemap
        from brainall_ops.proxmox.facts import read_cluster, read_vm_detail
        from brainall_ops.proxmox.spec import locate, plan_vm, read_ssh_keys, vm_specs

        client = self.client()
        vm_hosts = {p.vm: p.host for p in place_rolemap(self.rm).placements}
        specs = vm_specs(self.rm, ENVIRONMENT, vm_hosts, read_ssh_keys(self.rm, ENVIRONMENT, self.env()))
        cluster = read_cluster(client)
        left = []
        for spec in specs:
            vm = locate(spec, cluster.vms)
            plan = plan_vm(spec, cluster.vms, read_vm_detail(client, vm) if vm else None)
            if plan.action != "unchanged":
                left.append(plan.line())
        return left


def write_rolemap_copy(
    destination: Path, edit: Callable[[dict[str, Any]], None] | None = None, only_proxmox: bool = False
) -> Path:
    """The built-in role map, edited (e.g. a short task timeout), written to `destination`.

    `only_proxmox` drops the other concerns' sections (a `plan --live` then reads nothing but
    Proxmox) and points the production API endpoint at loopback port 1, so that even a run
    without `BRAINALL_PROXMOX_URL` can never reach the real fleet.
    """
    import yaml

    data = yaml.safe_load(BUILTIN_ROLEMAP.read_text(encoding="utf-8"))
    if only_proxmox:
        for section in ROLEMAP_SECTIONS_OF_OTHER_CONCERNS:
            data.pop(section, None)
        members = {h["name"] for h in data["hosts"]} | {v["name"] for v in data.get("vms", [])}
        for environment in data.get("environments", {}).values():
            hosts = environment.get("hosts", {})
            for name in [n for n in hosts if n not in members]:  # the Storage Box's stand-in
                del hosts[name]
        data["proxmox"].setdefault("environments", {})["production"] = {"api_url": "https://127.0.0.1:1"}
    if edit is not None:
        edit(data)
    destination.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return destination


def write_cloud_image(path: Path, virtual_size: int = 3 * 1024**3) -> tuple[Path, str, str]:
    """A small file that is a qcow2 image to PVE's checks (its header: magic, version 3, the virtual
    size), padded to 64 KiB; returns it with its real sha256 and sha512 (what a role map pins)."""
    import hashlib

    header = b"QFI\xfb" + struct.pack(">I", 3) + bytes(16) + struct.pack(">Q", virtual_size)
    data = header + bytes(64 * 1024 - len(header))
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest(), hashlib.sha512(data).hexdigest()
