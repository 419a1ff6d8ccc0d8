"""Phase 5, data: PostgreSQL and Redis on the db VM (and their clients on the app VMs), the
nightly pg_dump to the Storage Box, the bastion's clean-up timer.

    BRAINALL_DB_APP_PASSWORD_FILE=... BRAINALL_REDIS_PASSWORD_FILE=... \\
    pyinfra -y inventories/hel1.py deploys/phase5.py --limit db_vms --limit app_vms --limit bastion

The db VM's key is installed on the Storage Box with the box password (storage's machinery:
BRAINALL_STORAGEBOX_PASSWORD(_FILE)) the first time only. Monitoring: deploys/monitoring.py.
"""

from brainall_ops.data.deploy import data_tier
from brainall_ops.storage.deploy import config_git_backup

data_tier()
config_git_backup()  # /etc to Git on the db VM, with the box key data_tier installed
