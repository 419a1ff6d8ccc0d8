"""The target computation and the decision, on the fleet's numbers and on JSON from a real cluster."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brainall_ops.ceph.model import Snapshot
from brainall_ops.ceph.targets import (
    Policy,
    PoolPolicy,
    Setting,
    autoscaler_estimate,
    classic_targets,
    decide,
    nearest_power_of_two,
)
from tests.unit.fixtures.ceph import raw, snapshot

GB = 10**9
TB = 10**12

# The fleet (FLEET.md): 3 OSDs (prox-101, prox-102, prox-106), size 3, 4.4 TB raw, 432 GB used,
# 222 GB stored, 58,080 objects, HEALTH_WARN "1 pools have too many placement groups".
FLEET_OSDS, FLEET_SIZE, FLEET_RAW, FLEET_USED, FLEET_STORED, FLEET_OBJECTS = 3, 3, 4.4 * TB, 432 * GB, 222 * GB, 58_080


# --------------------------------------------------------------------------- rounding
@pytest.mark.parametrize(
    ("n", "expected"),
    [(0.2, 1), (1, 1), (2, 2), (3, 4), (5, 4), (15.13, 16), (45, 32), (48, 64), (90, 64), (96, 128), (100, 128)],
)
def test_nearest_power_of_two_rounds_like_the_pg_autoscaler(n: float, expected: int) -> None:
    # Ties (3, 48, 96) go up, as in pg_autoscaler's nearest_power_of_two.
    assert nearest_power_of_two(n) == expected


@given(st.floats(min_value=1, max_value=1e6, allow_nan=False))
def test_nearest_power_of_two_is_a_power_of_two_and_no_other_is_nearer(n: float) -> None:
    p = nearest_power_of_two(n)
    assert p & (p - 1) == 0
    assert abs(p - n) <= abs(p * 2 - n) and abs(p - n) <= abs(p / 2 - n)


# --------------------------------------------------------------------------- the classic rule
def test_classic_rule_on_the_fleet_gives_128_for_its_one_data_pool() -> None:
    # 3 OSDs x 100 PGs per OSD / size 3 = 100 -> 128; all the data is in one pool.
    assert classic_targets(FLEET_OSDS, 100, {"rbd": (FLEET_SIZE, FLEET_STORED)}) == {"rbd": 128}


def test_classic_rule_splits_by_share_of_data_and_keeps_the_floor() -> None:
    pools = {"vm": (3, 300 * GB), "backup": (3, 100 * GB), "empty": (3, 0)}
    # 300 PGs: vm 75 % -> 75 -> 64; backup 25 % -> 25 -> 32 (also the floor); empty -> floor 32
    assert classic_targets(3, 100, pools) == {"vm": 64, "backup": 32, "empty": 32}
    # a bigger cluster: 12 OSDs x 100 = 1200; vm 900/3 = 300 -> 256, backup 300/3 = 100 -> 128
    assert classic_targets(12, 100, pools) == {"vm": 256, "backup": 128, "empty": 32}


def test_classic_rule_splits_evenly_when_nothing_is_stored() -> None:
    assert classic_targets(6, 100, {"a": (3, 0), "b": (2, 0)}) == {"a": 128, "b": 128}  # 100 and 150


def test_classic_rule_needs_an_osd() -> None:
    with pytest.raises(ValueError, match="at least one OSD"):
        classic_targets(0, 100, {"a": (3, 1)})


# --------------------------------------------------------------------------- the autoscaler's view
def test_autoscaler_estimate_on_the_fleet_is_32_as_the_warning_says() -> None:
    # 222 GB x 3 / 4.4 TB = 15 % of raw; x 300 PGs / 3 = 15.1 -> 16, below the floor: 32.
    assert autoscaler_estimate(FLEET_OSDS, 100, FLEET_RAW, FLEET_STORED, FLEET_SIZE) == 32
    # 58,080 objects in 32 PGs is ~1,815 objects per PG: far from any per-PG object limit.
    assert pytest.approx(1815) == FLEET_OBJECTS / 32
    # The raw used (432 GB) is 9.8 % of raw: the pool is not about to grow past 32 either.
    assert autoscaler_estimate(FLEET_OSDS, 100, FLEET_RAW, FLEET_USED / FLEET_SIZE, FLEET_SIZE) == 32


def test_autoscaler_estimate_matches_pg_num_final_of_the_real_autoscaler() -> None:
    data = raw("warn128")
    for row in data["autoscale_status"]:
        pool = next(p for p in data["pools_detail"] if p["pool_name"] == row["pool_name"])
        floor = pool["options"].get("pg_num_min", 32)
        estimate = autoscaler_estimate(3, 100, row["subtree_capacity"], row["logical_used"], pool["size"], floor)
        assert estimate == row["pg_num_final"], row["pool_name"]


def test_autoscaler_estimate_grows_with_the_data() -> None:
    # the fleet's pool filling 80 % of raw: 0.8 x 300 PGs / size 3 = 80 -> 64 PGs; 12 OSDs: 320 -> 256
    assert autoscaler_estimate(3, 100, FLEET_RAW, 0.8 * FLEET_RAW / 3, 3) == 64
    assert autoscaler_estimate(12, 100, 4 * FLEET_RAW, 0.8 * 4 * FLEET_RAW / 3, 3) == 256


# --------------------------------------------------------------------------- the fleet, decided
def fleet_snapshot(pg_num: int = 128, mode: str = "warn") -> Snapshot:
    """The fleet as the CLI would read it: the real warn128 JSON with the fleet's sizes put in."""

    def to_fleet(data: dict) -> None:
        kb = int(FLEET_RAW / 3 / 1024)
        for node in data["osd_df"]["nodes"]:
            node.update(kb=kb, kb_used=int(FLEET_USED / 3 / 1024))
        for p in data["pools_detail"]:
            if p["pool_name"] == "rbd":
                p.update(pg_num=pg_num, pg_placement_num=pg_num, pg_num_target=pg_num)
                p.update(pg_placement_num_target=pg_num, pg_autoscale_mode=mode)
        for p in data["df"]["pools"]:
            if p["name"] == "rbd":
                p["stats"].update(stored=FLEET_STORED, objects=FLEET_OBJECTS)
        for row in data["autoscale_status"]:
            if row["pool_name"] == "rbd":
                row.update(pg_num_target=pg_num, pg_autoscale_mode=mode, logical_used=FLEET_STORED)
                row["pg_num_final"] = autoscaler_estimate(3, 100, FLEET_RAW, FLEET_STORED, 3)
        data["health_detail"]["checks"]["POOL_TOO_MANY_PGS"]["detail"] = [
            {"message": f"Pool rbd has {pg_num} placement groups, should have 32"}
        ]

    return snapshot("warn128", to_fleet)


def test_fleet_autoscale_sets_the_mode_on_and_nothing_else() -> None:
    decision = decide(fleet_snapshot(), Policy(strategy="autoscale"))
    assert not decision.refused
    (change,) = decision.changes
    assert change.pool == "rbd"
    assert change.settings == (Setting("pg_autoscale_mode", "warn", "on"),)
    assert (change.target, change.target_source) == (32, "the pg_autoscaler")
    # (128 + 1) PGs x 3 replicas / 3 OSDs now; the autoscaler takes 128 -> 32 (more than 3x off)
    assert (decision.pgs_per_osd_now, decision.pgs_per_osd_after) == (129, 33)


def test_fleet_pin_off_sets_the_mode_first_then_pg_num_and_pgp_num() -> None:
    (change,) = decide(fleet_snapshot(), Policy(strategy="pin", pin_mode_after="off")).changes
    assert change.settings == (
        Setting("pg_autoscale_mode", "warn", "off"),
        Setting("pg_num", "128", "32"),
        Setting("pgp_num", "128", "32"),
    )


def test_fleet_pin_on_sets_pg_num_first_then_the_mode() -> None:
    (change,) = decide(fleet_snapshot(), Policy(strategy="pin", pin_mode_after="on")).changes
    assert [s.key for s in change.settings] == ["pg_num", "pgp_num", "pg_autoscale_mode"]
    assert change.settings[-1] == Setting("pg_autoscale_mode", "warn", "on")


def test_fleet_without_autoscale_status_falls_back_to_the_classic_rule() -> None:
    snap = fleet_snapshot(pg_num=512)
    snap = Snapshot(snap.health, snap.pools, (), snap.osds, snap.status, snap.stored, snap.mon_max_pg_per_osd)
    (change,) = decide(snap, Policy(strategy="pin")).changes
    # 512 -> 128: the classic rule's number, a 4x shrink (the most one run makes)
    assert (change.target, change.target_source) == (128, "the classic rule")
    assert Setting("pg_num", "512", "128") in change.settings


def test_fleet_shrink_beyond_the_factor_is_refused_with_the_step_to_pin() -> None:
    decision = decide(fleet_snapshot(pg_num=512), Policy(strategy="pin"))
    assert not decision.changes
    (refusal,) = decision.refusals
    assert "512 -> 32 PGs is a 16x shrink, more than max_shrink_factor 4" in refusal
    assert "ceph.pools[].pg_num: 128" in refusal


def test_fleet_autoscale_has_no_shrink_limit_ceph_paces_it() -> None:
    (change,) = decide(fleet_snapshot(pg_num=512), Policy(strategy="autoscale")).changes
    assert change.settings == (Setting("pg_autoscale_mode", "warn", "on"),)


# --------------------------------------------------------------------------- real JSON, each state
def test_healthy_cluster_needs_nothing_and_no_gate_is_asked() -> None:
    decision = decide(snapshot("ok"), Policy())
    assert decision == decide(snapshot("ok"), Policy(strategy="pin"))
    assert (decision.changes, decision.refusals, dict(decision.flagged)) == ((), (), {})


def test_the_real_warning_is_read_and_fixed_by_each_strategy() -> None:
    snap = snapshot("warn128")
    assert snap.health.flagged_pools() == {"rbd": (128, 32)}
    autoscale, pin_off, pin_on = (
        decide(snap, Policy(strategy="autoscale")),
        decide(snap, Policy(strategy="pin", pin_mode_after="off")),
        decide(snap, Policy(strategy="pin", pin_mode_after="on")),
    )
    assert [s.new for s in autoscale.changes[0].settings] == ["on"]
    assert [(s.key, s.new) for s in pin_off.changes[0].settings] == [
        ("pg_autoscale_mode", "off"),
        ("pg_num", "32"),
        ("pgp_num", "32"),
    ]
    assert [(s.key, s.new) for s in pin_on.changes[0].settings][-1] == ("pg_autoscale_mode", "on")
    # device_health_metrics is fine: it is never touched
    assert {c.pool for d in (autoscale, pin_off, pin_on) for c in d.changes} == {"rbd"}


def test_role_map_pin_overrides_the_autoscaler_target() -> None:
    policy = Policy(strategy="autoscale", pools=(("rbd", PoolPolicy(strategy="pin", pg_num=64)),))
    (change,) = decide(snapshot("warn128"), policy).changes
    assert (change.strategy, change.target, change.target_source) == ("pin", 64, "the role map")


def test_pools_not_flagged_are_never_touched_even_with_a_role_map_entry() -> None:
    policy = Policy(pools=(("device_health_metrics", PoolPolicy(strategy="pin", pg_num=32)),))
    decision = decide(snapshot("warn128"), policy)
    assert [c.pool for c in decision.changes] == ["rbd"]


def test_gate_health_err() -> None:
    decision = decide(snapshot("health_err"), Policy())
    assert decision.refusals == ("the cluster is HEALTH_ERR (OSD_OUT_OF_ORDER_FULL: full ratio(s) out of order)",)


def test_gate_osd_down() -> None:
    decision = decide(snapshot("osd_down"), Policy())
    assert decision.refusals == (
        "129 of 129 PGs are not active+clean (124 active+undersized, 5 active+undersized+degraded)",
        "osd.2 is down",
    )


def test_gate_osd_out() -> None:
    def mark_out(data: dict) -> None:
        data["osd_df"]["nodes"][1]["reweight"] = 0
        data["status"]["osdmap"]["num_in_osds"] = 2

    assert "osd.1 is out" in decide(snapshot("warn128", mark_out), Policy()).refusals


def test_gate_pgs_not_active_clean() -> None:
    decision = decide(snapshot("undersized"), Policy())
    assert decision.refusals == ("1 of 130 PGs are not active+clean (1 active+undersized)",)


def test_gate_no_mgr() -> None:
    def mgr_gone(data: dict) -> None:
        data["status"]["mgrmap"]["available"] = False

    decision = decide(snapshot("warn128", mgr_gone), Policy())
    assert decision.refusals == ("no mgr is active (the pg_autoscaler, which clears the warning, runs in it)",)


def test_gate_mon_max_pg_per_osd_with_the_numbers_ceph_itself_refuses() -> None:
    # Pinning the pool to 256 would mean (256 + 1) x 3 = 771 PG replicas > 250 x 3 = 750: Ceph
    # answers ERANGE to that; the gate says so before any command.
    policy = Policy(strategy="pin", pools=(("rbd", PoolPolicy(pg_num=256)),))
    decision = decide(snapshot("warn128"), policy)
    assert decision.refusals == (
        "the change would mean 771 PG replicas (257 per OSD), more than mon_max_pg_per_osd 250 x 3 OSDs in (750)",
    )


def test_gate_mon_max_pg_per_osd_lets_a_shrink_through_even_above_the_limit() -> None:
    def low_limit(data: dict) -> None:
        data["mon_max_pg_per_osd"] = 20

    decision = decide(snapshot("warn128", low_limit), Policy(strategy="pin"))
    assert not decision.refused  # 387 -> 99 replicas: fewer, as Ceph allows
    assert any("still more than mon_max_pg_per_osd 20 x 3 OSDs in (60)" in n for n in decision.notes)


def test_all_failing_gates_are_reported_together() -> None:
    def everything_wrong(data: dict) -> None:
        data["status"]["mgrmap"]["available"] = False
        data["health_detail"]["status"] = "HEALTH_ERR"
        data["health_detail"]["checks"]["OSD_FULL"] = {
            "severity": "HEALTH_ERR",
            "summary": {"message": "1 full osd(s)"},
            "detail": [],
        }

    refusals = decide(snapshot("osd_down", everything_wrong), Policy()).refusals
    assert [r.split(" ")[0] for r in refusals] == ["the", "129", "osd.2", "no"]


def test_merging_pool_quirk_32_only_needs_the_mode_but_waits_for_the_merge() -> None:
    snap = snapshot("merging_quirk32")
    # 16.2.15: "has 32, should have 32" while the mode stays warn
    assert snap.health.flagged_pools() == {"rbd": (32, 32)}
    decision = decide(snap, Policy(strategy="pin", pin_mode_after="off"))
    assert decision.changes[0].settings == (Setting("pg_autoscale_mode", "warn", "off"),)
    # A run that finds a merge under way (e.g. after a killed run) waits for it, naming the merge and
    # how far it is, with the PG states meanwhile; it is not refused, and nothing is sent yet.
    assert not decision.refused
    assert decision.merges == (
        "Ceph is merging pool rbd: pg_num 124 -> 32 (92 merges left), pgp_num 122 -> 32",
        "meanwhile 2 of 125 PGs are not active+clean (2 peering)",
    )
    assert decision.next_steps() == () and not decision.done


def test_no_new_pg_num_change_while_another_pool_merges() -> None:
    def second_flagged_pool(data: dict) -> None:
        rbd = next(p for p in data["pools_detail"] if p["pool_name"] == "rbd")
        other = dict(rbd, pool_name="other", pool_id=99, pg_num=64, pg_placement_num=64)
        other.update(pg_num_target=64, pg_placement_num_target=64)
        data["pools_detail"].append(other)
        data["status"]["pgmap"]["pgs_by_state"] = [{"state_name": "active+clean", "count": 189}]
        data["status"]["pgmap"]["num_pgs"] = 189
        data["health_detail"]["checks"]["POOL_TOO_MANY_PGS"]["detail"] = [
            {"message": "Pool other has 64 placement groups, should have 32"}
        ]

    decision = decide(snapshot("merging_quirk32", second_flagged_pool), Policy(strategy="pin"))
    # planned, but not sent until rbd has finished merging
    assert [(c.pool, c.phase) for c in decision.changes] == [("other", "decrease")]
    assert decision.merges == ("Ceph is merging pool rbd: pg_num 124 -> 32 (92 merges left), pgp_num 122 -> 32",)
    assert decision.next_steps() == () and not decision.refused


def test_flagged_pool_that_no_longer_exists_is_a_note() -> None:
    def gone(data: dict) -> None:
        data["health_detail"]["checks"]["POOL_TOO_MANY_PGS"]["detail"].append(
            {"message": "Pool deleted-meanwhile has 64 placement groups, should have 32"}
        )

    decision = decide(snapshot("warn128", gone), Policy())
    assert "pool deleted-meanwhile is named in POOL_TOO_MANY_PGS but no longer exists" in decision.notes
    assert [c.pool for c in decision.changes] == ["rbd"]


def test_computed_target_never_grows_a_pool_ceph_says_is_too_big() -> None:
    def odd_autoscaler(data: dict) -> None:
        for row in data["autoscale_status"]:
            if row["pool_name"] == "rbd":
                row["pg_num_final"] = 256

    decision = decide(snapshot("warn128", odd_autoscaler), Policy(strategy="pin"))
    assert not decision.changes
    assert "not growing it" in decision.refusals[0]


def test_a_target_that_is_not_a_power_of_two_is_refused() -> None:
    policy = Policy(strategy="pin", pools=(("rbd", PoolPolicy(pg_num=48)),))
    assert decide(snapshot("warn128"), policy).refusals == (
        "pool rbd: target 48 (from the role map) is not a power of two",
    )


def test_already_fixed_pool_still_named_is_a_note_not_a_change() -> None:
    # Right after a fix the check can still name the pool until the autoscaler's next pass.
    def mode_on_already(data: dict) -> None:
        for p in data["pools_detail"]:
            p["pg_autoscale_mode"] = "on"

    decision = decide(snapshot("warn128", mode_on_already), Policy())
    assert not decision.changes and not decision.refused
    assert any("already set as the role map says" in n for n in decision.notes)
