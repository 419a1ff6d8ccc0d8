"""Phase 5, monitoring: node exporter on every host and VM, Prometheus (and Grafana's
provisioning) on the role map's monitoring.prometheus_host.

    pyinfra -y inventories/hel1.py deploys/monitoring.py
"""

from brainall_ops.monitoring.deploy import monitoring

monitoring()
