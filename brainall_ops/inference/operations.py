"""pyinfra operations of phase 3. Each reads a fact and yields commands only on drift, so a second
run of an unchanged deploy yields nothing."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterator
from io import BytesIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, StringCommand, operation
from pyinfra.facts.files import File, Sha256File

from brainall_ops.inference.facts import RsyncDrift, ServicesReady, UnitState, VenvPackageVersion
from brainall_ops.inference.logic import (
    PROBE_PATH,
    Runtime,
    ServiceSpec,
    probe_args,
    probe_command,
    redis_password,
    rsync_command,
)

# A unit that is starting or running needs no start; systemd restarts a failed one itself
# (Restart=on-failure: "activating/auto-restart").
STARTING_OR_UP = ("active", "activating", "reloading")


def _fail(message: str) -> StringCommand:
    """A command that fails with `message` on stderr: how an operation refuses at execution time."""
    return StringCommand(f"echo {shlex.quote(message)} >&2; exit 1")


@operation()
def python_runtime(runtime: Runtime) -> Iterator[StringCommand | str]:
    """A virtual environment at `runtime.venv` holding exactly `runtime.requirement`, from its index."""
    installed = host.get_fact(VenvPackageVersion, venv=runtime.venv, package=runtime.package)
    if installed is None:
        yield f"python3 -m venv {shlex.quote(runtime.venv)}"
    if installed != runtime.version:
        yield runtime.pip_install_command()
        # The unit runs this script: an index that served something else must not pass unnoticed.
        yield f"test -x {shlex.quote(runtime.vllm)} || {{ echo 'no vllm command in {runtime.venv}' >&2; exit 1; }}"


@operation()
def redis_auth(path: str, owner: str) -> Iterator[StringCommand | FileUploadCommand | str]:
    """`path` holds Redis's `requirepass`, mode 0600. The password is read from the controller's
    environment here, at execution: it is never an operation argument, a command line or output."""
    password = redis_password().reveal()
    content = f"# Managed by brainall-ops (phase 3): the inference cache's password.\nrequirepass {password}\n"
    data = content.encode()
    quoted = shlex.quote(path)
    if host.get_fact(Sha256File, path=path) != hashlib.sha256(data).hexdigest():
        # Created 0600 first: the upload then writes into a file nobody else can read.
        yield f"install -m 0600 -o {owner} -g {owner} /dev/null {quoted}"
        yield FileUploadCommand(BytesIO(data), path)
    info = host.get_fact(File, path=path) or {}
    if info.get("mode") != 600 or info.get("user") != owner or info.get("group") != owner:
        yield f"chown {owner}:{owner} {quoted} && chmod 0600 {quoted}"


@operation()
def weights_synced(source: str, dest: str) -> Iterator[StringCommand | str]:
    """`dest` mirrors `source` (the model's directory on the Storage Box mount)."""
    drift = host.get_fact(RsyncDrift, source=source, dest=dest)
    if drift is None:
        yield _fail(f"{source} is not there: is the Storage Box mounted?")
        return
    if drift:
        yield f"mkdir -p {shlex.quote(dest)}"
        yield rsync_command(source, dest)


@operation()
def unit_restarted(unit: str) -> Iterator[str]:
    """Stop (synchronously, so no stale process answers the gate) and start without waiting:
    loading a model takes minutes, and the gate waits for every unit at once."""
    quoted = shlex.quote(unit)
    yield f"systemctl stop {quoted}; systemctl reset-failed {quoted} 2>/dev/null; systemctl start --no-block {quoted}"


@operation()
def unit_running(unit: str) -> Iterator[str]:
    """Enabled, and started (without waiting for readiness) unless already starting or up."""
    state = host.get_fact(UnitState, unit=unit)
    quoted = shlex.quote(unit)
    if state.get("UnitFileState") != "enabled":
        yield f"systemctl enable {quoted}"
    if state.get("ActiveState") not in STARTING_OR_UP:
        yield f"systemctl reset-failed {quoted} 2>/dev/null; systemctl start --no-block {quoted}"


@operation()
def services_ready(specs: list[ServiceSpec], timeout_s: int, note: str) -> Iterator[str]:
    """The gate: every service's unit active, /health 200 and its served name in /v1/models.
    Waits up to `timeout_s`; when they are not all ready the operation fails (with why, and `note`),
    which ends the deploy on this host before anything after the gate runs."""
    statuses = host.get_fact(ServicesReady, probe=PROBE_PATH, args=probe_args(specs, with_units=True))
    if len(statuses) == len(specs) and all(s.get("ready") for s in statuses):
        return
    yield probe_command("wait", specs, timeout_s, note)


@operation()
def ollama_retired(service: str, models_dir: str, copy_dir: str, specs: list[ServiceSpec]) -> Iterator[str]:
    """Ollama stopped and disabled, once its models are copied to the Storage Box and verified by
    checksum, and every vLLM service is ready (checked again here, and after the stop: if vLLM
    stops answering, Ollama is started and enabled again and the operation fails)."""
    unit = f"{service}.service"
    state = host.get_fact(UnitState, unit=unit)
    if state.get("LoadState") == "not-found":
        return  # no Ollama on this host: nothing to migrate
    if state.get("ActiveState") in ("inactive", "failed") and state.get("UnitFileState") != "enabled":
        return  # already retired
    src, copy = shlex.quote(models_dir), shlex.quote(copy_dir)
    parent = shlex.quote(copy_dir.rstrip("/").rsplit("/", 1)[0] or "/")
    check = probe_command("check", specs)
    copy_cmd = rsync_command(models_dir, copy_dir, delete=False, chmod=False)
    verify_cmd = rsync_command(models_dir, copy_dir, delete=False, chmod=False, dry_run=True, checksum=True)
    keeps = f"{service} keeps serving"
    yield "\n".join(
        [
            "set -e",
            f"if ! {check} >/dev/null; then echo 'vLLM is not ready: {keeps}' >&2; exit 1; fi",
            # Phase 1 may have moved them already (the local dir a link to the box's copy): then
            # there is nothing to copy, and checksumming 60 GB against itself over SSHFS is waste.
            f'if [ -d {src} ] && [ "$(realpath {src})" = "$(realpath -m {copy})" ]; then',
            f"  echo 'the {service} models already live in {copy_dir}'",
            f"elif [ -d {src} ]; then",
            f"  if [ ! -d {parent} ]; then echo {shlex.quote(f'{parent} (the Storage Box) is not there: {keeps}')} >&2;"
            " exit 1; fi",
            f"  mkdir -p {copy}",
            f"  {copy_cmd}",
            f"  differs=$({verify_cmd})",
            '  if [ -n "$differs" ]; then',
            f'    echo "the copy in {copy_dir} differs from {models_dir} by checksum:'
            f' $(echo "$differs" | wc -l) file(s): {keeps}" >&2',
            "    exit 1",
            "  fi",
            "fi",
            f"systemctl disable --now {shlex.quote(unit)}",
            f"if ! {check} >/dev/null; then",
            f"  systemctl enable --now {shlex.quote(unit)}",
            f"  echo 'vLLM stopped answering once {service} was stopped: {service} started again' >&2",
            "  exit 1",
            "fi",
            f"echo '{service} stopped and disabled; its models are kept in {copy_dir}'",
        ]
    )
