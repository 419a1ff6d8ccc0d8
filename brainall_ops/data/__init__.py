"""Phase 5: the data tier (PostgreSQL, Redis), its backups, and the bastion clean-up."""
