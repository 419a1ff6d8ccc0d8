"""Lab only: make the lab's `storagebox` host play the Storage Box (SFTP/rsync on 23, Samba).

    pyinfra -y inventories/lab.py deploys/lab_storagebox.py --limit storagebox --data ssh_port=22

(`--data ssh_port=22`: the box port 23 exists only once this deploy ran, unless the lab runtime
already opened it; port 22 always answers.) Run it before phase 1, with the same
BRAINALL_STORAGEBOX_PASSWORD or BRAINALL_STORAGEBOX_PASSWORD_FILE as the clients.
"""

from pyinfra import host

from brainall_ops.lab.storagebox import lab_storage_box

if "storagebox" in host.groups:
    lab_storage_box()
