"""Both pool warnings at once, the order the monitor accepts, merges under way and TOO_MANY_PGS, on
JSON captured from the real test cluster (tests/unit/fixtures/ceph/README.md: both_warn, merging,
too_many_per_osd)."""

from __future__ import annotations

from brainall_ops.ceph.model import Health
from brainall_ops.ceph.targets import Policy, PoolPolicy, Setting, decide, merge_progress, monitor_sum
from tests.unit.fixtures.ceph import snapshot

# both_warn: mon_max_pg_per_osd 50 x 3 OSDs = 150 PG replicas; mon_target_pg_per_osd 20.
#   device_health_metrics  1 PG  x 3                  =  3
#   a-ratio   size 3, warn,  8 PGs, target_size_ratio 1 ->  Ceph wants 16   24 -> 48
#   b-fewmin  size 2, warn, 16 PGs, under PG_NUM_MIN    ->  Ceph wants 32   32 -> 64
#   c-toomany size 2, warn, 16 PGs, pg_num_min 4        ->  Ceph wants 4    32 -> 8
#   d-on      size 3, on,    4 PGs                                          12
# Now 103, at the end 135; in Ceph's listing order (a, b, c) the increases come first and b's
# would mean 159 > 150: ERANGE (the real answer is in test_the_monitor_sum_is_the_one_ceph_refused).


def test_both_warnings_are_read_for_every_pool_named() -> None:
    health = snapshot("both_warn").health
    assert health.summary_line() == (
        "HEALTH_WARN (POOL_TOO_FEW_PGS: 2 pools have too few placement groups; "
        "POOL_TOO_MANY_PGS: 1 pools have too many placement groups)"
    )
    assert health.pool_warnings() == {
        "a-ratio": ("POOL_TOO_FEW_PGS", 8, 16),
        "b-fewmin": ("POOL_TOO_FEW_PGS", 16, 32),
        "c-toomany": ("POOL_TOO_MANY_PGS", 16, 4),
    }
    assert health.pgs_per_osd_warning() is None


def test_autoscale_pins_within_the_threshold_and_leaves_beyond_it_to_the_autoscaler() -> None:
    decision = decide(snapshot("both_warn"), Policy(strategy="autoscale"))
    assert not decision.refused and not decision.merges and not decision.waits
    steps = [(c.order, c.pool, c.phase, c.settings, c.autoscaler_sets_pg_num) for c in decision.changes]
    assert steps == [
        # 16 -> 4 is 4x off: beyond the autoscaler's 3x threshold, mode on is enough (it merges)
        (1, "c-toomany", "decrease", (Setting("pg_autoscale_mode", "warn", "on"),), True),
        # 8 -> 16 and 16 -> 32 are 2x off: in mode on the autoscaler would leave them: pinned first
        (
            2,
            "a-ratio",
            "increase",
            (Setting("pg_num", "8", "16"), Setting("pgp_num", "8", "16"), Setting("pg_autoscale_mode", "warn", "on")),
            False,
        ),
        (
            3,
            "b-fewmin",
            "increase",
            (Setting("pg_num", "16", "32"), Setting("pgp_num", "16", "32"), Setting("pg_autoscale_mode", "warn", "on")),
            False,
        ),
    ]
    # each increase checked against the monitor's sum at its turn, after the decrease
    assert [(c.projected, c.limit) for c in decision.changes] == [(0, 150), (103, 150), (135, 150)]
    assert decision.next_steps() == decision.changes[:1]  # the decrease first, alone
    assert decision.pgs_per_osd_after == 45  # 135 / 3


def test_the_monitor_sum_is_the_one_ceph_refused() -> None:
    snap = snapshot("both_warn")
    targets = {p.name: (p.pg_num_target, p.size) for p in snap.pools}
    # What Ceph 16.2.15 answered on this very cluster, after a-ratio's 8 -> 16 went first:
    # "Error ERANGE: pool id 3 pg_num 32 size 2 would mean 159 total pgs, which exceeds max 150
    #  (mon_max_pg_per_osd 50 * num_in_osds 3)"
    assert monitor_sum({**targets, "a-ratio": (16, 3)}, "b-fewmin", 32) == 159 > snap.mon_pg_limit == 150
    # ... and with the decrease sent first, the same step fits
    assert monitor_sum({**targets, "a-ratio": (16, 3), "c-toomany": (4, 2)}, "b-fewmin", 32) == 135


def test_each_pool_explained_in_one_line_with_its_step() -> None:
    lines = decide(snapshot("both_warn"), Policy(strategy="autoscale")).pool_lines
    assert len(lines) == 5
    by_pool = {line.split(":")[0]: line for line in lines}
    assert by_pool["c-toomany"] == (
        "c-toomany: pg_num 16, size 2, mode warn; POOL_TOO_MANY_PGS; target 4 (Ceph's pg_num_final 4: 0.0% of raw "
        "capacity, ideal 0, raised to the pool's pg_num_min 4; 4x off, beyond the autoscaler's 3x threshold: mode "
        "on, the autoscaler sets pg_num); step 1 of 3, a decrease (sent first): pg_autoscale_mode warn -> on"
    )
    assert by_pool["a-ratio"].startswith(
        "a-ratio: pg_num 8, size 3, mode warn; POOL_TOO_FEW_PGS; target 16 (Ceph's pg_num_final 16: "
        "target_size_ratio 1 (effective 1.00), ideal 20; 2x off, within the autoscaler's 3x threshold"
    )
    assert (
        "step 2 of 3, an increase, sent once the merges are done (the monitor's sum then 103 of 150)"
        in (by_pool["a-ratio"])
    )
    assert "ideal 0, raised to PG_NUM_MIN 32; 2x off" in by_pool["b-fewmin"]
    assert "step 3 of 3" in by_pool["b-fewmin"]
    assert by_pool["d-on"] == (
        "d-on: pg_num 4, size 3, mode on; no PG-count warning names it (Ceph's pg_num_final 4): left as it is"
    )


def test_pin_strategy_same_order_mode_off_first() -> None:
    decision = decide(snapshot("both_warn"), Policy(strategy="pin", pin_mode_after="off"))
    assert [(c.pool, c.phase, [s.key for s in c.settings]) for c in decision.changes] == [
        ("c-toomany", "decrease", ["pg_autoscale_mode", "pg_num", "pgp_num"]),
        ("a-ratio", "increase", ["pg_autoscale_mode", "pg_num", "pgp_num"]),
        ("b-fewmin", "increase", ["pg_autoscale_mode", "pg_num", "pgp_num"]),
    ]


def test_an_increase_the_monitor_would_refuse_is_refused_before_anything_is_sent() -> None:
    # The role map pins c-toomany at 8 and b-fewmin at 64: 3 + 48 + 128 + 16 + 12 = 207 > 150.
    policy = Policy(
        strategy="pin",
        pools=(("c-toomany", PoolPolicy(pg_num=8)), ("b-fewmin", PoolPolicy(pg_num=64))),
    )
    decision = decide(snapshot("both_warn"), policy)
    assert decision.refused and decision.next_steps() == ()
    assert decision.refusals == (
        "the change would mean 207 PG replicas (69 per OSD), more than mon_max_pg_per_osd 50 x 3 OSDs in (150)",
    )


def test_a_step_over_the_limit_is_refused_even_when_the_whole_change_shrinks() -> None:
    # limit lowered to 40 x 3 = 120 (now 103): c-toomany shrinks by 24 and a-ratio grows by 24 -> 103,
    # then b-fewmin's 16 -> 32 would mean 135 > 120. The whole change (135) is above the limit but
    # also above now, so the end-state gate says so; with b pinned at 16 the end fits (103) ...
    def limit_40(data: dict) -> None:
        data["mon_max_pg_per_osd"] = 40

    policy = Policy(strategy="pin", pools=(("b-fewmin", PoolPolicy(pg_num=16)),))
    fits = decide(snapshot("both_warn", limit_40), policy)
    assert not fits.refused
    assert [(c.pool, c.phase, c.projected) for c in fits.changes] == [
        ("c-toomany", "decrease", 0),  # the largest reduction first
        ("b-fewmin", "mode", 0),
        ("a-ratio", "increase", 103),
    ]

    # ... and with the limit at 33 x 3 = 99 the same plan shrinks nothing overall (103 -> 103) and its
    # one increase would mean 103 > 99: refused by the step check, as the monitor would.
    def limit_33(data: dict) -> None:
        data["mon_max_pg_per_osd"] = 33

    refused = decide(snapshot("both_warn", limit_33), policy)
    assert refused.refusals == (
        "pool a-ratio: pg_num 8 -> 16 (size 3) would mean 103 total PG replicas even after the decreases, more "
        "than mon_max_pg_per_osd 33 x 3 OSDs in (99); the monitor would answer ERANGE, so it is not sent",
    )


def test_resumed_during_merges_waits_for_them_then_increases() -> None:
    """`merging`: c-toomany 16 -> 4 under way (12 merges left), b-fewmin already at 32 (mode still
    warn: the quirk), a-ratio's increase not sent yet: what a run killed during the merges leaves."""
    snap = snapshot("merging")
    decision = decide(snap, Policy(strategy="autoscale"))
    assert not decision.refused and not decision.done
    assert decision.merges == (
        "Ceph is remapping pool b-fewmin: pg_num 32 -> 32 (16 placement changes to go), pgp_num 16 -> 32",
        "Ceph is merging pool c-toomany: pg_num 16 -> 4 (12 merges left), pgp_num 8 -> 4",
        "meanwhile 28 of 61 PGs are not active+clean (12 peering, 16 unknown)",
    )
    assert [(c.pool, c.phase) for c in decision.changes] == [("b-fewmin", "mode"), ("a-ratio", "increase")]
    assert decision.next_steps() == ()  # nothing is sent while Ceph merges
    # the monitor counts targets, so the increase fits even now: 3 + 48 + 64 + 8 + 12 = 135
    assert decision.changes[1].projected == 135
    # the same cluster once the merges are done: the mode change and the increase go
    done = decide(snapshot("merging", _merged), Policy(strategy="autoscale"))
    assert done.merges == () and [c.pool for c in done.next_steps()] == ["b-fewmin"]


def _merged(data: dict) -> None:
    for p in data["pools_detail"]:
        p["pg_num"], p["pg_placement_num"] = p["pg_num_target"], p["pg_placement_num_target"]
    data["status"]["pgmap"]["pgs_by_state"] = [{"state_name": "active+clean", "count": 57}]
    data["status"]["pgmap"]["num_pgs"] = 57


def test_merge_progress_names_the_merge_and_how_far() -> None:
    pool = snapshot("merging").pool("c-toomany")
    assert pool is not None
    assert merge_progress(pool, start=16) == (
        "Ceph is merging pool c-toomany: pg_num 16 -> 4 (12 merges left, 0 of 12 done (0%)), pgp_num 8 -> 4"
    )
    half = type(pool)(**{**pool.__dict__, "pg_num": 10})
    assert "pg_num 10 -> 4 (6 merges left, 6 of 12 done (50%))" in merge_progress(half, start=16)


def test_too_many_pgs_per_osd_with_no_pool_to_shrink_is_what_remains() -> None:
    """`too_many_per_osd`: mon_max_pg_per_osd lowered to 20 after the merges: TOO_MANY_PGS (37 > 20)."""
    snap = snapshot("too_many_per_osd")
    assert snap.health.pgs_per_osd_warning() == (37, 20)
    decision = decide(snap, Policy())
    assert "TOO_MANY_PGS" in decision.pg_checks and not decision.done
    (left,) = decision.remaining
    assert left.startswith("TOO_MANY_PGS (too many PGs per OSD (37 > max 20)): 135 PG replicas on 3 OSDs in")
    assert "lower a pool's pg_num by hand, or add OSDs" in left
    # and a-ratio's increase is refused: it would only add PGs
    assert any(r.startswith("the change would mean 135 PG replicas") for r in decision.refusals)


def test_too_many_pgs_during_a_merge_is_waited_for_and_named() -> None:
    def raise_too_many(data: dict) -> None:
        data["health_detail"]["checks"]["TOO_MANY_PGS"] = {
            "severity": "HEALTH_WARN",
            "summary": {"message": "too many PGs per OSD (301 > max 250)"},
            "detail": [],
        }

    decision = decide(snapshot("merging", raise_too_many), Policy())
    assert "TOO_MANY_PGS (too many PGs per OSD (301 > max 250)) clears as Ceph finishes the merges" in decision.waits
    assert not decision.remaining and not decision.refused and not decision.done


def test_done_means_no_pg_count_warning_left() -> None:
    assert decide(snapshot("ok"), Policy()).done
    assert not decide(snapshot("both_warn"), Policy()).done
    health = Health.from_json(
        {
            "status": "HEALTH_WARN",
            "checks": {"TOO_MANY_PGS": {"summary": {"message": "too many PGs per OSD (9 > max 3)"}}},
        }
    )
    assert [c.code for c in health.pg_count_checks()] == ["TOO_MANY_PGS"]


def test_right_after_the_mode_on_the_autoscalers_coming_decrease_is_counted() -> None:
    """c-toomany set to mode on, the autoscaler's pass not yet come (`would_adjust`, health still
    naming it): the increases are counted against c-toomany at 4, not 16, and wait for the pass."""

    def mode_on(data: dict) -> None:
        for p in data["pools_detail"]:
            if p["pool_name"] == "c-toomany":
                p["pg_autoscale_mode"] = "on"
        for row in data["autoscale_status"]:
            if row["pool_name"] == "c-toomany":
                row.update(pg_autoscale_mode="on", would_adjust=True)

    decision = decide(snapshot("both_warn", mode_on), Policy())
    assert not decision.refused
    assert decision.waits == ("the pg_autoscaler is to set pool c-toomany's pg_num 16 -> 4 at its next pass",)
    assert [(c.pool, c.projected) for c in decision.changes] == [("a-ratio", 103), ("b-fewmin", 135)]
    assert any(n.startswith("pool c-toomany is already set as the role map says") for n in decision.notes)
    assert decision.next_steps() == ()
