"""Reading the Ceph CLI's JSON (captured from a real 16.2.15 cluster), and the role map's ceph section."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from brainall_ops.ceph.model import CephDataError, ClusterStatus, Health, Snapshot
from brainall_ops.ceph.targets import Policy, PoolPolicy
from brainall_ops.errors import RoleMapError
from brainall_ops.rolemap.loader import BUILTIN_ROLEMAP, load_rolemap, parse_rolemap
from tests.unit.fixtures.ceph import STATES, raw, snapshot

LAB_NOTES = Path(__file__).parent / "fixtures" / "ceph" / "lab-notes-memstore"


# The multi-pool states were captured with the limit lowered (tests/unit/fixtures/ceph/README.md).
MON_MAX_PG_PER_OSD = {"both_warn": 50, "merging": 50, "too_many_per_osd": 20}


@pytest.mark.parametrize("state", STATES)
def test_every_captured_state_reads(state: str) -> None:
    snap = snapshot(state)
    assert snap.mon_max_pg_per_osd == MON_MAX_PG_PER_OSD.get(state, 250)
    assert snap.status.num_osds == 3 and len(snap.osds) == 3
    assert any(p.name == "device_health_metrics" for p in snap.pools)


def test_pool_fields_including_pgp_num_named_pg_placement_num() -> None:
    rbd = snapshot("merging_quirk32").pool("rbd")
    assert rbd is not None
    assert (rbd.pg_num, rbd.pgp_num, rbd.pg_num_target, rbd.pgp_num_target) == (124, 122, 32, 32)
    assert (rbd.size, rbd.min_size, rbd.autoscale_mode, rbd.changing) == (3, 2, "warn", True)
    dhm = snapshot("warn128").pool("device_health_metrics")
    assert dhm is not None and dhm.pg_num_min == 1 and not dhm.changing


def test_autoscale_status_pg_num_final_and_df_stored() -> None:
    snap = snapshot("warn128")
    row = snap.autoscale_row("rbd")
    assert row is not None and (row.pg_num_target, row.pg_num_final, row.autoscale_mode) == (128, 32, "warn")
    assert snap.stored["rbd"] == 5 * 4 * 1024 * 1024
    assert snap.pg_replicas == (128 + 1) * 3 and snap.pgs_per_osd() == 129


def test_osd_down_is_read_from_osd_df_and_status() -> None:
    snap = snapshot("osd_down")
    assert [(o.name, o.up) for o in snap.osds] == [("osd.0", True), ("osd.1", True), ("osd.2", False)]
    assert (snap.status.num_up_osds, snap.status.num_in_osds) == (2, 3)


def test_health_checks_and_flagged_pools() -> None:
    health = snapshot("health_err").health
    assert health.status == "HEALTH_ERR"
    assert [c.code for c in health.checks] == ["OSD_OUT_OF_ORDER_FULL", "POOL_TOO_MANY_PGS"]
    assert health.flagged_pools() == {"rbd": (128, 32)}
    assert health.flagged_pools("POOL_TOO_FEW_PGS") == {}
    assert health.summary_line().startswith("HEALTH_ERR (OSD_OUT_OF_ORDER_FULL: full ratio(s) out of order; ")


def test_flagged_pool_names_with_spaces_and_dots() -> None:
    health = Health.from_json(
        {
            "status": "HEALTH_WARN",
            "checks": {
                "POOL_TOO_MANY_PGS": {
                    "severity": "HEALTH_WARN",
                    "summary": {"message": "2 pools have too many placement groups"},
                    "detail": [
                        {"message": "Pool cephfs.data has 256 placement groups, should have 64"},
                        {"message": "Pool odd name has 64 placement groups, should have 32"},
                    ],
                    "muted": True,
                }
            },
        }
    )
    assert health.flagged_pools() == {"cephfs.data": (256, 64), "odd name": (64, 32)}
    assert health.checks[0].muted


@pytest.mark.parametrize(
    ("states", "unclean"),
    [
        ([("active+clean", 10), ("active+clean+scrubbing+deep", 2), ("active+clean+snaptrim", 1)], {}),
        ([("active+clean", 10), ("active+clean+remapped", 1)], {"active+clean+remapped": 1}),
        ([("active+clean", 8), ("peering", 2)], {"peering": 2}),
        ([("active+clean", 8)], {"unknown": 2}),  # 10 PGs, 2 not reported by any OSD yet
    ],
)
def test_unclean_pgs(states: list[tuple[str, int]], unclean: dict[str, int]) -> None:
    status = ClusterStatus(3, 3, 3, 10, tuple(states), True)
    assert status.unclean_pgs() == unclean


def test_the_lab_notes_memstore_captures_read_too() -> None:
    # Same release, other object store and pool (testpool, 128): the parser is not tied to our capture.
    names = {
        "health_detail": "health_detail",
        "autoscale_status": "autoscale_status",
        "pools_detail": "osd_pool_ls_detail",
        "osd_df": "osd_df",
        "status": "status",
        "df": "df",
    }
    data = {key: json.loads((LAB_NOTES / f"{file}.warn.json").read_text()) for key, file in names.items()}
    snap = Snapshot.from_json(**data, mon_max_pg_per_osd=250)
    assert snap.health.flagged_pools() == {"testpool": (128, 32)}
    assert snap.autoscale_row("testpool") is not None


def test_unexpected_json_is_one_clear_error() -> None:
    data = raw("warn128")
    del data["pools_detail"][1]["pg_num"]
    with pytest.raises(CephDataError, match=r"unexpected `ceph osd pool ls detail` output: no 'pg_num'"):
        Snapshot.from_json(**data)
    data = raw("warn128")
    data["mon_max_pg_per_osd"] = "lots"
    with pytest.raises(CephDataError, match="mon_max_pg_per_osd"):
        Snapshot.from_json(**data)


# --------------------------------------------------------------------------- the role map
def test_builtin_role_map_policy() -> None:
    rm = load_rolemap()
    assert rm.ceph is not None
    policy = Policy.from_rolemap(rm.ceph)
    assert (policy.strategy, policy.pin_mode_after, policy.target_pgs_per_osd) == ("autoscale", "off", 100)
    assert policy.max_shrink_factor == 4 and rm.ceph.wait_timeout_s == 900


def test_max_shrink_factor_below_2_is_refused() -> None:
    text = re.sub(r"^  max_shrink_factor: .*$", "  max_shrink_factor: 1", BUILTIN_ROLEMAP.read_text(), flags=re.M)
    with pytest.raises(RoleMapError) as info:
        parse_rolemap(text, "fleet.yaml")
    line = text.splitlines().index("  max_shrink_factor: 1") + 1
    assert info.value.problems == [
        f"fleet.yaml:{line}: ceph.max_shrink_factor: Input should be greater than or equal to 2 (got 1)"
    ]


def _with_ceph_tail(tail: str) -> str:
    text = BUILTIN_ROLEMAP.read_text()
    marker = next(line for line in text.splitlines(keepends=True) if line.startswith("  wait_timeout_s: "))
    return text.replace(marker, marker + tail, 1)


def test_pool_overrides_are_read() -> None:
    rm = parse_rolemap(
        _with_ceph_tail("  pools:\n    - {name: rbd, strategy: pin, pg_num: 64, pin_mode_after: 'on'}\n"), "x.yaml"
    )
    assert rm.ceph is not None
    assert Policy.from_rolemap(rm.ceph).for_pool("rbd") == ("pin", "on", 64)
    assert Policy.from_rolemap(rm.ceph).pools == (("rbd", PoolPolicy("pin", "on", 64)),)
    assert Policy.from_rolemap(rm.ceph).for_pool("other") == ("autoscale", "off", None)


def test_pool_pg_num_must_be_a_power_of_two_with_file_and_line() -> None:
    text = _with_ceph_tail("  pools:\n    - {name: rbd, pg_num: 48}\n")
    with pytest.raises(RoleMapError) as info:
        parse_rolemap(text, "fleet.yaml")
    line = text.splitlines().index("    - {name: rbd, pg_num: 48}") + 1
    assert info.value.problems == [f"fleet.yaml:{line}: ceph.pools[0].pg_num: 48 is not a power of two"]


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (
            "  pools:\n    - {name: rbd, strategy: grow}\n",
            "ceph.pools[0].strategy: Input should be 'autoscale' or 'pin'",
        ),
        (
            "  pools:\n    - {name: rbd, autoscale_mode: warn}\n",
            "ceph.pools[0].autoscale_mode: unknown key 'autoscale_mode'",
        ),
    ],
)
def test_bad_ceph_values_are_refused_by_field(tail: str, message: str) -> None:
    with pytest.raises(RoleMapError) as info:
        parse_rolemap(_with_ceph_tail(tail), "fleet.yaml")
    assert len(info.value.problems) == 1
    assert message in info.value.problems[0]
