"""Phase 1 plan: Storage Box keys, mounts, backups, configs to Git and the Ollama model migration."""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainall_ops.planning.changes import Change, Contribution
from brainall_ops.rolemap.environment import PRODUCTION
from brainall_ops.rolemap.models import RoleMap
from brainall_ops.storage.config_git import config_git_hosts

if TYPE_CHECKING:
    from brainall_ops.planning.plan import PlanContext


# Offline, the plan cannot know a host's kernel: say what each outcome means.
OFFLINE_MODE = "automount where the host has /dev/autofs, else a mount unit + retry timer"


def mount_modes(rm: RoleMap, environment: str, names: list[str]) -> dict[str, str]:
    """`plan --live`: each mount host's mode and why, read over SSH (read-only); a host that cannot
    be read says so instead."""
    from concurrent.futures import ThreadPoolExecutor

    from brainall_ops.firewall import SshPath, run_ssh, ssh_targets
    from brainall_ops.storage.logic import MOUNT_SUPPORT_COMMAND, parse_mount_support

    targets = ssh_targets(rm, environment, names)

    def read(name: str) -> str:
        result = run_ssh(SshPath(targets[name]), MOUNT_SUPPORT_COMMAND, 5, 20.0)
        if not result.ok:
            return f"mode unknown: cannot read {name}: {result.error}"
        return parse_mount_support(result.output.splitlines()).describe()

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(names)))) as pool:
        return dict(zip(names, pool.map(read, names), strict=True))


def plan_changes(rm: RoleMap, context: PlanContext) -> Contribution:
    out = Contribution()
    if rm.storage is None:
        return out
    mount_hosts = sorted({m.host for m in [*rm.storage.sshfs, *rm.storage.cifs]})
    if context.live and mount_hosts:
        environment = str(context.options.get("environment") or PRODUCTION)
        modes = mount_modes(rm, environment, mount_hosts)
    else:
        modes = dict.fromkeys(mount_hosts, OFFLINE_MODE)
    box = rm.storage.box
    where = f"{box.user}@{box.hostname}:{box.ssh_port}"
    if box.password_must_be_reset:
        out.warnings.append(
            f"storage box {box.hostname}: the password must be reset before CIFS mounts work "
            "(set BRAINALL_STORAGEBOX_PASSWORD or a secret file)"
        )
    clients = sorted({m.host for m in [*rm.storage.sshfs, *rm.storage.cifs, *rm.storage.backups]})
    for host in clients:
        out.changes.append(
            Change("phase1", "storage", "create", host, f"ed25519 key installed on {where}, box host key pinned")
        )
    for m in rm.storage.sshfs:
        out.changes.append(
            Change(
                "phase1",
                "storage",
                "create",
                m.host,
                f"SSHFS {where}/{m.remote_path} -> {m.mount_point} ({modes[m.host]})",
                {
                    "mount_point": m.mount_point,
                    "remote_path": m.remote_path,
                    "allow_other": m.allow_other,
                    "mode": modes[m.host],
                },
            )
        )
    for c in rm.storage.cifs:
        unc = f"//{box.hostname}/{c.share}" + (f"/{c.subdir}" if c.subdir else "")
        out.changes.append(
            Change(
                "phase1",
                "storage",
                "create",
                c.host,
                f"CIFS {unc} -> {c.mount_point} (vers=3.0, {modes[c.host]})",
                {"mount_point": c.mount_point, "share": c.share, "mode": modes[c.host]},
            )
        )
    for b in rm.storage.backups:
        out.changes.append(
            Change(
                "phase1",
                "storage",
                "create",
                b.host,
                f"rsync backup '{b.name}' {', '.join(b.sources)} -> {where}/{b.destination} ({b.on_calendar})",
                {"sources": b.sources, "destination": b.destination, "on_calendar": b.on_calendar},
            )
        )
    section = rm.storage.config_git
    if section is not None:
        for name in config_git_hosts(rm):
            phase = "phase5" if rm.data is not None and name == rm.data.host and name not in clients else "phase1"
            out.changes.append(
                Change(
                    phase,
                    "storage",
                    "create",
                    name,
                    f"configs to Git: etckeeper keeps /etc in git (secrets and /etc/pve kept out); a bundle of it "
                    f"-> {where}/{section.destination}/{name}.bundle ({section.on_calendar})",
                    {"destination": f"{section.destination}/{name}.bundle", "on_calendar": section.on_calendar},
                )
            )
    move = rm.storage.ollama
    if move is not None:
        source = move.source or (rm.inference.ollama_models_dir if rm.inference else "?")
        out.changes.append(
            Change(
                "phase1",
                "storage",
                "run",
                move.host,
                f"move Ollama models {source} to {where}/{move.remote_path} (verified by size and checksum, "
                "then the local directory becomes a link to the SSHFS copy)",
                {"source": source, "remote_path": move.remote_path},
            )
        )
    return out
