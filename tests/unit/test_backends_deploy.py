"""The deploy's own parameters (pyinfra --data) and the app revision that restarts the instances."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyinfra.api.exceptions import DeployError

from brainall_ops.backends.deploy import app_revision, deploy_parameters
from brainall_ops.rolemap import load_rolemap
from brainall_ops.rolemap.models import Backends

B = load_rolemap().backends
assert B is not None


def test_the_lab_ships_its_app_through_data() -> None:
    data = {
        "backends_app": "lab_app:app",
        "backends_app_source": "brainall_ops/lab/backend_app",
        "backends_extra_packages": "python3-starlette, python3-uvicorn",
    }
    b = deploy_parameters(B, data)
    assert (b.app, b.app_source) == ("lab_app:app", "brainall_ops/lab/backend_app")
    assert b.packages == ["python3-uvicorn", "python3-fastapi", "python3-starlette"]
    assert deploy_parameters(B, {}) is B


def test_a_bad_parameter_is_one_line() -> None:
    with pytest.raises(DeployError) as info:
        deploy_parameters(B, {"backends_app": "lab app"})
    assert str(info.value).startswith("backends deploy parameters (--data): app: String should match pattern")
    assert "\n" not in str(info.value)


def test_the_app_revision_follows_the_code_not_the_caches(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "main.py").write_text("app = 1\n")
    first = app_revision(tmp_path)
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "pkg" / "stale.pyc").write_bytes(b"\0")
    assert app_revision(tmp_path) == first
    (tmp_path / "pkg" / "main.py").write_text("app = 2\n")
    assert app_revision(tmp_path) != first


def test_backends_model_defaults_are_safe() -> None:
    b = Backends.model_validate(
        {
            "host": "api",
            "proxy_host": "nginx",
            "app": "m:app",
            "app_dir": "/srv/app",
            "env_file": "/etc/x.env",
            "instances": [{"port": 8000, "role": "primary"}],
            "production": {"backends": 1, "workers": 1},
            "validation": {"backends": 1, "workers": 2},
        }
    )
    assert b.mode == "production" and b.proxy.max_fails == 1 and b.watchdog.interval_s == 2
    assert b.production.min_healthy == 1 and b.drain_s == 30
