"""Phase 1 plan: Storage Box keys, mounts, backups, configs to Git and the Ollama model migration."""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainall_ops.planning.changes import Change, Contribution
from brainall_ops.rolemap.models import RoleMap
from brainall_ops.storage.config_git import config_git_hosts

if TYPE_CHECKING:
    from brainall_ops.planning.plan import PlanContext


def plan_changes(rm: RoleMap, context: PlanContext) -> Contribution:
    out = Contribution()
    if rm.storage is None:
        return out
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
                f"SSHFS {where}/{m.remote_path} -> {m.mount_point} (automount)",
                {"mount_point": m.mount_point, "remote_path": m.remote_path, "allow_other": m.allow_other},
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
                f"CIFS {unc} -> {c.mount_point} (vers=3.0, automount)",
                {"mount_point": c.mount_point, "share": c.share},
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
