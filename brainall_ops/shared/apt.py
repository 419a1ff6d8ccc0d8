"""apt with every list refresh bounded: one `apt-get update` through a proxy can hang forever.

Every deploy installs through `apt_packages` (pyinfra's `apt.packages`, its `update=True`
replaced by `apt_update`): a stuck refresh is cut, retried and then fails the operation with its
reason, instead of pyinfra's unbounded `apt-get update` hanging until the operation's own
timeout. Seen when a concern ran alone on a fresh lab (the firewall, with no phase 1 before it
to refresh the lists): six hosts refreshing at once through the lab's proxy, two hung for the
firewall's whole 600 s and failed it there.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pyinfra import host
from pyinfra.api import operation
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import File
from pyinfra.facts.server import Date
from pyinfra.operations import apt
from pyinfra.operations.apt import APT_UPDATE_FILENAME

# One `apt-get update` through a proxy has been seen to hang forever (lab notes: 3 of 4 attempts
# with six hosts at once); apt's own Acquire timeouts did not catch it. Bound every attempt.
APT_UPDATE_TIMEOUT_S = 90
APT_UPDATE_ATTEMPTS = 3


@operation()
def apt_update(
    cache_time: int | None = None, timeout_s: int = APT_UPDATE_TIMEOUT_S, attempts: int = APT_UPDATE_ATTEMPTS
):
    """`apt-get update` like pyinfra's `apt.update`, but each attempt is cut at `timeout_s` and
    retried, so a stuck mirror or proxy fails the operation instead of hanging the deploy.

    + cache_time: skip when the lists were refreshed less than this many seconds ago
    """
    if cache_time:
        cache_info = host.get_fact(File, path=APT_UPDATE_FILENAME)
        if cache_info and cache_info["mtime"]:
            now = datetime.fromtimestamp(host.get_fact(Date).timestamp(), UTC).replace(tzinfo=None)
            if cache_info["mtime"] > now - timedelta(seconds=cache_time):
                host.noop("apt is already up to date")
                return
    yield (
        f"for attempt in $(seq 1 {attempts}); do "
        f"timeout --kill-after=10 {timeout_s} apt-get update -q && exit 0; "
        f'echo "apt-get update attempt $attempt failed or timed out after {timeout_s}s" >&2; sleep 2; '
        f"done; exit 1"
    )
    if cache_time:
        yield f"touch {APT_UPDATE_FILENAME}"


def apt_packages(*, name: str, packages: list[str], update: bool = False, cache_time: int | None = None, **kwargs):
    """pyinfra's `apt.packages`, whose list refresh (`update`, `cache_time`) is the bounded
    `apt_update`, declared only when a package is missing (nothing to install, nothing to refresh)."""
    if update:
        installed = host.get_fact(DebPackages) or {}
        if any(package.split("=", 1)[0] not in installed for package in packages):
            apt_update(name=f"{name}: apt lists (bounded)", cache_time=cache_time)
    return apt.packages(name=name, packages=packages, **kwargs)
