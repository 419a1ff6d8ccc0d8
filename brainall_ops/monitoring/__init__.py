"""Phase 5: node exporter everywhere, Prometheus with alert rules, Grafana provisioning."""
