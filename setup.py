"""Build hook: the built-in role map lives in inventories/ (where the operator edits it and the
checkout's inventories name it) and the phase deploys in deploys/ (where pyinfra runs them from a
checkout); the wheel carries copies as package data, brainall_ops/rolemap/brainall-v2.yaml and
brainall_ops/skeleton/deploys/, found with importlib.resources (`brainall-ops plan` and
`brainall-ops init`). Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROLEMAP = Path("inventories") / "brainall-v2.yaml"


class BuildWithRoleMap(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads inventories/ itself
            return
        target = Path(self.build_lib) / "brainall_ops" / "rolemap" / ROLEMAP.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROLEMAP, target)
        deploys = Path(self.build_lib) / "brainall_ops" / "skeleton" / "deploys"
        deploys.mkdir(parents=True, exist_ok=True)
        for script in sorted(Path("deploys").glob("*.py")):
            shutil.copyfile(script, deploys / script.name)


setup(cmdclass={"build_py": BuildWithRoleMap})
