"""Phase 4, backend: the dynamic-mode backend cluster on the API VM behind nginx on the nginx VM.

    pyinfra -y inventories/hel1.py deploys/phase4.py --limit vm-brainall-api --limit vm-brainall-nginx

Idempotent: a second run changes nothing. A run that changes the app, its environment or the
units restarts the instances one at a time, drained first (no request dropped). The lab ships its
test app: --data backends_app_source=brainall_ops/lab/backend_app --data backends_app=lab_app:app
--data backends_extra_packages=python3-starlette.
"""

from brainall_ops.backends.deploy import backend_cluster

backend_cluster()
