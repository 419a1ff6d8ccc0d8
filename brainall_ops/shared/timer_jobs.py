"""Timer jobs: a script a systemd timer runs under one lock, ending with one log line.

Every such job (the Storage Box backups and /etc to Git, the data tier's dump and clean-up) is a
`TimerJob`; storage's `timer_job` deploy writes its script and the shared `job.service.j2`,
`job.timer.j2` units (templates/storage/), the script importing the `_job.sh.j2` preamble.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TimerJob:
    """A job run by a systemd timer: a script under one lock, ending with one log line (the
    Storage Box jobs here, and the data tier's dump and clean-up).

    Subclasses name their unit, script and lock; `job.service.j2`, `job.timer.j2` and the
    `job_preamble` macro (templates/storage/_job.sh.j2) render every one of them the same way.
    """

    name: str
    where: str  # where it writes, for the unit's description and log lines ("" when nowhere)
    on_calendar: str
    randomized_delay_s: int
    after: tuple[str, ...] = ()  # units the service starts after, besides the network

    @property
    def description(self) -> str:
        raise NotImplementedError

    @property
    def unit(self) -> str:
        raise NotImplementedError

    @property
    def script(self) -> str:
        raise NotImplementedError

    @property
    def lock(self) -> str:
        raise NotImplementedError

    @property
    def tag(self) -> str:
        """What each log line starts with (after the time)."""
        raise NotImplementedError
