"""Proxmox VE: the phase 2 VMs, created and kept as the role map says, through the API.

- `spec`: what each VM should be (pure): desired config, drift, the steps to converge;
- `client`: proxmoxer with endpoint/TLS/token settings, task waiting, lock retries, scrubbed errors;
- `secrets`: the API token secret from the environment or an owner-only file outside the repo;
- `facts`: cluster state read on the controller, once per run; `operations`: the `vm` operation;
- `vzdump`: the vzdump storage on the Storage Box and the backup job (`data.vzdump`);
- `deploy`: the pyinfra deploy `deploys/phase2.py` runs; `plan`: `brainall-ops plan [--live]`;
- `simulator`: a Proxmox VE API simulator (PVE 9.1.3's schema) for tests, the bench and the lab.
"""
