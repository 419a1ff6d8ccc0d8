"""The session's real Ceph cluster (brainall_ops/lab/ceph_cluster.py), as a pytest fixture.

    from tests.integration.ceph_fixture import ceph_cluster  # noqa: F401  (in a conftest or test module)

One cluster per session, because the monitor ports (3300, 6789 on 127.0.0.1) are fixed: every
test that needs Ceph shares it. It comes up in BRAINALL_CEPH_TEST_DIR (default
/var/tmp/brainall-ops-ceph-test), stopping the daemons a killed earlier run left there, and goes
down (daemons stopped, directory removed) when the session ends. A missing Ceph package is a
failure, never a skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from brainall_ops.lab.ceph_cluster import DEFAULT_DIR, TestCluster, missing_binaries


@pytest.fixture(scope="session")
def ceph_cluster() -> Iterator[TestCluster]:
    missing = missing_binaries()
    if missing:
        pytest.fail(
            f"the Ceph test cluster needs {', '.join(missing)}: "
            "apt-get install ceph-mon ceph-mgr ceph-osd ceph-common (scripts/install-deps does)"
        )
    cluster = TestCluster(DEFAULT_DIR)
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()  # also after a failed start: no daemon outlives the session
