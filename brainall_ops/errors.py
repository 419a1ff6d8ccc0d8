"""Errors the CLI reports as one plain line (never a traceback)."""

from __future__ import annotations


class BrainallError(Exception):
    """An error meant for the operator: its message is complete and printed as is."""

    exit_code = 1


class RoleMapError(BrainallError):
    """The role map is invalid. Carries every problem found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))
