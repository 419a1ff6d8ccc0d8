"""Phase 2: clear Ceph's PG-count warnings (POOL_TOO_MANY_PGS, POOL_TOO_FEW_PGS, TOO_MANY_PGS), as
the role map's `ceph:` section says.

    pyinfra inventories/hel1.py deploys/ceph.py      # runs on the monitor host (prox-101) only
    pyinfra @local deploys/ceph.py --data ceph_conf=/path/to/ceph.conf --data ceph_monitor=1

Gated (HEALTH_ERR, PGs not active+clean, an OSD down, mon_max_pg_per_osd), idempotent, resumable;
decreases, their merges, then increases, each checked against the monitor's sum: see
brainall_ops/ceph/ (targets.py for the rules, operations.py for the sequence).
"""

from brainall_ops.ceph.deploy import ceph_from_rolemap

ceph_from_rolemap()
