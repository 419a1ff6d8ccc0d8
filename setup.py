"""Build hook: the built-in role map lives in inventories/ (where the operator edits it and the
checkout's inventories name it); the wheel carries a copy as package data, brainall_ops/rolemap/,
which brainall_ops.rolemap.loader finds with importlib.resources. Everything else is in
pyproject.toml."""

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


setup(cmdclass={"build_py": BuildWithRoleMap})
