"""A Proxmox VE API simulator that proxmoxer talks to unchanged (Proxmox itself cannot run here).

A stateful HTTPS server on loopback: nodes with capacity, storage, cloud-init templates, qemu VMs
with current and pending config, clone / config / resize / start / stop / shutdown / reboot /
delete as async tasks with real UPIDs, per-VM locks, `/cluster/nextid`, `/cluster/resources`,
API-token auth with the schema's permission checks. Every request and answer is validated
against PVE 9.1.3's official apidata (`schema.py`). Faults are injected per test (`Fault`), the
request log is readable, and a pluggable hook (`hooks.py`) turns started VMs into lab hosts.

In process::

    cluster = seed_from_rolemap(Cluster(Settings(task_seconds=0.02)), load_rolemap())
    cluster.add_token("brainall-ops@pve!deploy", secret)
    with Simulator(cluster) as sim:
        ...  # sim.url, sim.ca_file, sim.add_fault(kind="task_fail", path="/nodes/*/qemu/*/clone")

As a process: `python -m brainall_ops.lab.pve_simulator --port 0 --state FILE` prints its URL.
"""

from brainall_ops.lab.pve_simulator.cluster import Cluster, Fault, Settings
from brainall_ops.lab.pve_simulator.seed import seed_from_rolemap
from brainall_ops.lab.pve_simulator.server import Simulator, SimulatorAdmin

__all__ = ["Cluster", "Fault", "Settings", "Simulator", "SimulatorAdmin", "seed_from_rolemap"]
