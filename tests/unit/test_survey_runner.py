"""From the probes' outcomes to the measurements file: what is absent, cut, not run or odd is reported per probe.

(The runner's SSH side runs against the lab: tests/integration/test_survey_lab.py. Importing the
module here is safe: gevent patches the process only when a survey runs.)"""

from __future__ import annotations

import subprocess
import sys

from brainall_ops.survey.measurements import Bounds, Target, dump_survey, parse_survey
from brainall_ops.survey.parse import Outcome
from brainall_ops.survey.runner import _HostRun, assemble
from brainall_ops.survey.selection import FleetSelection

SELECTION = FleetSelection(
    names=("gpu", "prox-102"),
    addresses={"gpu": "10.77.1.130", "prox-102": "10.77.1.2"},
    storagebox=Target(address="10.77.1.50", port=23),
    rolemap="inventories/brainall-v2.yaml",
    environment="lab",
    reference_host="gpu",
)


def test_outcomes_become_sections_absences_and_errors() -> None:
    gpu = _HostRun("gpu", answered=True)
    gpu.outcomes = {
        "cpu": Outcome("ok", {"model": "AMD EPYC", "sockets": 1, "cores": 2, "threads": 2}),
        "memory": Outcome("ok", {"total_gb": 23.5, "used_gb": 1, "free_gb": 20, "available_gb": 22.5, "cached_gb": 1}),
        "gpu": Outcome("absent", reason="no nvidia-smi (no NVIDIA GPU driver)"),
        "disk_speed": Outcome("timeout", reason="cut at its 60 s bound on the host"),
        "ceph": Outcome("ok", {"status": "HEALTH_OK", "checks": [], "osds": "three"}),  # not a number
        "storagebox": Outcome("skipped", reason="no Storage Box address"),
        "latency": Outcome(
            "ok",
            {
                "method": "tcp",
                "targets": {
                    "10.77.1.2": {"method": "tcp/22", "sent": 5, "received": 5, "loss_pct": 0, "avg_ms": 0.2},
                },
            },
        ),
    }
    gpu.seconds = {"connect": 0.1, "cpu": 0.3}
    prox = _HostRun("prox-102", answered=True, stopped_at="system")
    prox.outcomes = {
        "system": Outcome("timeout", reason="no answer within 9 s: cut at the survey's bound"),
        "cpu": Outcome("error", reason="not run: the host stopped answering during system"),
    }
    survey = assemble(SELECTION, {"gpu": gpu, "prox-102": prox}, Bounds(), ["inventories/lab.py"], 12.5)

    h = survey.hosts["gpu"]
    assert h.cpu is not None and h.cpu.threads == 2 and h.memory is not None and h.memory.available_gb == 22.5
    assert h.absent == {"gpu": "no nvidia-smi (no NVIDIA GPU driver)"}
    assert h.errors == {
        "disk_speed": "cut at its 60 s bound on the host",
        "ceph": "unexpected values: osds: Input should be a valid integer, unable to parse string as an integer",
    }
    assert h.storagebox is None and "storagebox" not in h.errors  # skipped: neither measured nor failed
    assert survey.latency == {"gpu": {"prox-102": survey.latency["gpu"]["prox-102"]}}
    assert survey.latency["gpu"]["prox-102"].avg_ms == 0.2
    assert survey.hosts["prox-102"].errors == {
        "system": "no answer within 9 s: cut at the survey's bound",
        "cpu": "not run: the host stopped answering during system",
    }
    assert (survey.environment, survey.reference_host, survey.seconds) == ("lab", "gpu", 12.5)
    assert parse_survey(dump_survey(survey), "again.yaml") == survey


def test_a_host_that_never_answered_is_recorded_with_the_reason() -> None:
    runs = {
        "gpu": _HostRun("gpu", answered=False, reason="no SSH answer within 15 s"),
        "prox-102": _HostRun("prox-102", answered=True),
    }
    survey = assemble(SELECTION, runs, Bounds(), ["inventories/lab.py"], 15.0)
    assert survey.hosts["gpu"].answered is False and survey.hosts["gpu"].reason == "no SSH answer within 15 s"
    assert survey.latency == {}


def test_importing_the_runner_does_not_patch_the_process() -> None:
    # gevent patches the standard library only when a survey runs (this test process may already
    # be patched by another module importing pyinfra_cli, so ask a fresh interpreter).
    code = (
        "import brainall_ops.survey.runner, brainall_ops.survey.cli\n"
        "from gevent import monkey\n"
        "print(monkey.is_module_patched('socket'), 'paramiko' in __import__('sys').modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["False", "False"]
