"""The role map: the fleet as data (hosts, sites, measurements, VMs, policies)."""

from brainall_ops.rolemap.loader import BUILTIN_ROLEMAP, REPO_ROOT, load_rolemap, parse_rolemap
from brainall_ops.rolemap.models import RoleMap

__all__ = ["BUILTIN_ROLEMAP", "REPO_ROOT", "RoleMap", "load_rolemap", "parse_rolemap"]
