"""The package as a library: `python -m build`, the wheel installed (not editable) in a fresh
venv, then `brainall-ops plan` and `brainall-ops init` from a directory outside the checkout.

The fresh venv borrows this venv's dependencies (a .pth line naming its site-packages, whose own
.pth files, the editable hook among them, are not run), so no dependency is downloaded; the
build itself runs in pip's isolated environment (setuptools>=77, from pip's cache or PyPI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ directory of a fresh venv holding the wheel built from this checkout."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to copy the checkout's tracked files")
    work = tmp_path_factory.mktemp("wheel")
    # Build from a copy of the tracked and new files, so the checkout gets no build/ or dist/.
    source = work / "src"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=CHECKOUT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in listed:
        if (CHECKOUT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(CHECKOUT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if built.returncode != 0 and "No module named build" in built.stderr:
        pytest.skip("the `build` package is not installed (pip install -e '.[test]')")
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (work / "dist").glob("brainall_ops-*.whl")
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    return env_dir / "bin"


def run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRAINALL_", "PYTHON"))}
    return subprocess.run([str(bin_dir / "brainall-ops"), *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_wheel_is_what_runs(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(installed / "python"), "-c", "import brainall_ops; print(brainall_ops.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(installed.parent)) and not where.startswith(str(CHECKOUT))


def test_plan_from_outside_the_checkout_prints_the_built_in_plan(installed: Path, tmp_path: Path) -> None:
    result = run(installed, "plan", cwd=tmp_path)
    assert result.returncode == 2, result.stderr  # the built-in plan has changes to make: exit 2
    assert "prox-101" in result.stdout and "Traceback" not in result.stderr
    checkout = subprocess.run(
        [sys.executable, "-m", "brainall_ops.cli", "plan"], cwd=CHECKOUT, capture_output=True, text=True
    )
    # The same plan; only its first line names where the role map was read from.
    assert result.stdout.splitlines()[0].startswith("Plan for brainall-v2 (")
    assert result.stdout.splitlines()[1:] == checkout.stdout.splitlines()[1:]


def test_init_writes_a_fleet_repository_pyinfra_loads(installed: Path, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    result = run(installed, "init", str(fleet), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (fleet / "inventories" / "brainall-v2.yaml").is_file()
    assert {p.name for p in (fleet / "deploys").glob("phase*.py")} == {f"phase{n}.py" for n in range(1, 6)}
    # The fleet repository is where the toolkit now runs: plan, validate and the inventory check.
    assert run(installed, "validate", "--rolemap", "inventories/brainall-v2.yaml", cwd=fleet).returncode == 0
    check = run(installed, "inventory", "--rolemap", "inventories/brainall-v2.yaml", "--check", cwd=fleet)
    assert check.returncode == 0, check.stdout + check.stderr
    # pyinfra's own inventory loader reads the generated inventories; every deploy compiles, and
    # each one's imports resolve in the installed package (reaching hosts needs a lab).
    probe = (
        "import ast, importlib, pathlib\n"
        "from pyinfra.api.state import State\n"
        "from pyinfra.context import ctx_state\n"
        "from pyinfra_cli.inventory import make_inventory\n"
        "ctx_state.set(State())  # as the pyinfra CLI does before it reads an inventory\n"
        "inv = make_inventory('inventories/hel1.py')\n"
        "assert 'prox-101' in [h.name for h in inv], list(inv)\n"
        "for script in sorted(pathlib.Path('deploys').glob('*.py')):\n"
        "    tree = ast.parse(script.read_text(), str(script))\n"
        "    for node in ast.walk(tree):\n"
        "        if isinstance(node, ast.ImportFrom) and node.module.startswith('brainall_ops'):\n"
        "            module = importlib.import_module(node.module)\n"
        "            assert all(hasattr(module, a.name) for a in node.names), (script, node.module)\n"
        "print('ok')\n"
    )
    loaded = subprocess.run([str(installed / "python"), "-c", probe], cwd=fleet, capture_output=True, text=True)
    assert loaded.stdout.strip() == "ok", loaded.stderr[-3000:]
    refused = run(installed, "init", str(fleet), cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "not empty" in refused.stderr
