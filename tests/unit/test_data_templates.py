"""The data tier's rendered files: dump and clean-up scripts (run through `sh -n`), units."""

from __future__ import annotations

import subprocess

from brainall_ops.data.logic import DUMP_LOG, cleanup_job, data_spec
from brainall_ops.data.rendering import render
from brainall_ops.rolemap import load_rolemap
from brainall_ops.storage.rendering import render as render_job_unit

RM = load_rolemap()
SPEC = data_spec(RM, "lab")


def _sh_syntax_ok(script: str) -> None:
    result = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_dump_script_locks_logs_keeps_n_and_mirrors_to_the_box() -> None:
    script = render("pg-dump.sh.j2", job=SPEC.dump, log=DUMP_LOG)
    _sh_syntax_ok(script)
    assert "flock -n 9" in script and SPEC.dump.lock in script
    assert "pg_dump -Fc -d brainall" in script
    assert "pg_restore --list" in script  # a dump that does not read back fails the run
    assert "tail -n +8" in script  # keep: 7
    assert "rsync -rt --delete" in script and "u503462@10.77.1.50:backups/postgres/" in script
    assert "StrictHostKeyChecking=yes" in script and "BatchMode=yes" in script
    assert script.count('say "ok:') == 1


def test_dump_units_run_the_script_on_the_calendar() -> None:
    service = render_job_unit("job.service.j2", job=SPEC.dump)
    timer = render_job_unit("job.timer.j2", job=SPEC.dump)
    assert f"ExecStart={SPEC.dump.script}" in service and "Type=oneshot" in service
    assert f"After=network-online.target {SPEC.pg_service}\n" in service
    assert "Description=pg_dump of brainall to the Storage Box (" in service
    assert "OnCalendar=*-*-* 02:30:00" in timer and "Persistent=true" in timer


def test_cleanup_units_run_the_script_weekly_spread_out() -> None:
    assert RM.data is not None and RM.data.cleanup is not None
    job = cleanup_job(RM.data.cleanup)
    service = render_job_unit("job.service.j2", job=job)
    timer = render_job_unit("job.timer.j2", job=job)
    assert "ExecStart=/usr/local/lib/brainall-data/cleanup" in service
    assert "Description=Bounded disk clean-up (journal, rotated logs, unused Docker images)\n" in service
    assert "After=network-online.target\n" in service
    assert "OnCalendar=weekly" in timer and "RandomizedDelaySec=1800" in timer


def test_cleanup_is_bounded_and_never_touches_containers() -> None:
    assert RM.data is not None and RM.data.cleanup is not None
    script = render("cleanup.sh.j2", job=cleanup_job(RM.data.cleanup), log="/var/log/x.log")
    _sh_syntax_ok(script)
    assert "flock -n 9" in script and "/run/lock/brainall-cleanup.lock" in script
    assert "journalctl --vacuum-size=500M" in script
    assert "-mtime +14" in script
    assert 'docker image prune --all --force --filter "until=168h"' in script
    for forbidden in ("container prune", "volume prune", "system prune", "docker rm", "builder prune"):
        assert forbidden not in script
    assert "command -v docker" in script  # a host without Docker skips the images
    assert "freed $freed bytes" in script


def test_phase5_plan_lists_the_data_tier_and_monitoring() -> None:
    from brainall_ops.planning.plan import build_plan

    plan = build_plan(RM, "builtin")
    phase5 = [c for c in plan.changes if c.phase == "phase5"]
    targets = {c.target for c in phase5 if c.concern == "data"}
    assert {"vm-brainall-db", "vm-brainall-api", "vm-brainall-workers", "bastion"} <= targets
    summaries = " ".join(c.summary for c in phase5)
    assert "192.168.100.71:5432 only" in summaries and "shared_buffers 4096 MB" in summaries
    assert {c.target for c in phase5 if c.concern == "monitoring"} >= {h.name for h in RM.hosts}
    assert any("bastion: disk 87 %" in w for w in plan.warnings)
    grafana = [c for c in phase5 if c.summary.startswith("Grafana from deb [signed-by=")]
    assert [c.target for c in grafana] == ["prox-101"] and "192.168.100.1:3000" in grafana[0].summary
    assert not any("Grafana" in w for w in plan.warnings)
