"""Ceph: from any placement-group warning to HEALTH_OK, in an order the monitor accepts, from pyinfra.

- model.py: the Ceph CLI's JSON as plain data (pure)
- targets.py: each flagged pool's target, the strategy's settings, the safety gates (pure)
- facts.py: pyinfra facts reading `ceph ... -f json` on a monitor host
- operations.py: the pyinfra operation (gate, change all-or-nothing, wait, verify)
- deploy.py: the @deploy, and what deploys/ceph.py runs
- run.py, cli.py: `brainall-ops ceph status | fix [--dry]` through pyinfra's API
- plan.py: the Ceph part of `brainall-ops plan` (offline; live with --live)
- testcluster.py: a real 1-mon/1-mgr/3-OSD cluster on 127.0.0.1 for the tests

Importing this package imports nothing heavy; pyinfra comes in with facts/operations/deploy.
"""
