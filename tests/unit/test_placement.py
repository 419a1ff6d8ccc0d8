"""Placement: the seed's result on the built-in map, and what happens when the numbers change."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brainall_ops.planning.fleet import budgets, place_rolemap
from brainall_ops.planning.placement import HostCapacity, PlacementError, VMRequest, place
from brainall_ops.rolemap import BUILTIN_ROLEMAP, load_rolemap, parse_rolemap

BUILTIN_TEXT = BUILTIN_ROLEMAP.read_text()


def with_text(old: str, new: str):
    assert old in BUILTIN_TEXT
    return parse_rolemap(BUILTIN_TEXT.replace(old, new, 1), "fleet.yaml")


def hosts_of(result) -> dict[str, str]:
    return {p.vm: p.host for p in result.placements}


def test_builtin_map_gives_the_seeds_placement() -> None:
    rm = load_rolemap()
    result = place_rolemap(rm)
    assert hosts_of(result) == {
        "vm-brainall-api": "prox-106",
        "vm-brainall-workers": "prox-106",
        "vm-brainall-nginx": "prox-106",
        "vm-brainall-db": "prox-101",
    }
    api = result.by_vm()["vm-brainall-api"]
    assert "prox-106: 105.6 GB RAM" in api.reason and "0.844 ms" in api.reason
    rejected = dict(api.rejected)
    assert rejected["prox-102"] == "latency 25.673 ms > 2 ms budget"
    assert rejected["prox-101"] == "does not serve 'app'"


def test_budget_after_the_plan_matches_the_seed() -> None:
    rm = load_rolemap()
    by_host = {b.host: b for b in budgets(rm, place_rolemap(rm))}
    assert by_host["prox-106"].planned_gb == 56 and by_host["prox-106"].ram_free_gb == 118
    assert round(by_host["prox-106"].planned_pct_of_free) == 47
    assert by_host["prox-101"].planned_gb == 16
    assert by_host["prox-102"].planned_gb == 0


def test_frankfurt_never_gets_latency_sensitive_vms_even_with_all_the_ram() -> None:
    # (its total RAM raised with it: free RAM beyond the host's total is refused at load)
    rm = parse_rolemap(
        BUILTIN_TEXT.replace("ram_gb: 62,", "ram_gb: 6200,", 1).replace(
            "      ram_free_gb: 49\n", "      ram_free_gb: 4900\n", 1
        ),
        "fleet.yaml",
    )
    assert "prox-102" not in hosts_of(place_rolemap(rm)).values()


def test_prox106_short_of_ram_moves_app_vms_to_prox101_and_says_why() -> None:
    # prox-106 with 60 GB free keeps 47.6 GB after the 12.4 GB headroom: api (32) and nginx (8)
    # still fit there, workers (16) no longer does once api is placed, and goes to prox-101.
    rm = with_text("      ram_free_gb: 118\n", "      ram_free_gb: 60\n")
    result = place_rolemap(rm)
    assert hosts_of(result) == {
        "vm-brainall-api": "prox-106",
        "vm-brainall-workers": "prox-101",
        "vm-brainall-nginx": "prox-106",
        "vm-brainall-db": "prox-101",
    }
    workers = result.by_vm()["vm-brainall-workers"]
    assert "no host serving 'app' had room" in workers.reason
    assert dict(workers.rejected)["prox-106"] == "only 15.6 GB RAM free after headroom (needs 16)"
    assert dict(workers.rejected)["prox-102"] == "latency 25.673 ms > 2 ms budget"


def test_nothing_fits_is_refused_with_the_numbers() -> None:
    rm = with_text("    memory_gb: 32\n", "    memory_gb: 320\n")
    with pytest.raises(PlacementError) as info:
        place_rolemap(rm)
    message = str(info.value)
    assert message.startswith("vm-brainall-api fits on no Proxmox host: it needs 16 vCPU, 320 GB RAM, 100 GB disk")
    assert "prox-106: only 105.6 GB RAM free after headroom (needs 320)" in message
    assert "prox-101: only 43.5 GB RAM free after headroom (needs 320)" in message
    assert "prox-102: latency 25.673 ms > 2 ms budget" in message


def test_pin_is_honoured_and_checked() -> None:
    rm = with_text("    tier: data\n", "    tier: data\n    host: prox-106\n")
    assert hosts_of(place_rolemap(rm))["vm-brainall-db"] == "prox-106"
    rm = with_text("    tier: data\n", "    tier: data\n    host: prox-102\n")
    with pytest.raises(PlacementError, match=r"vm-brainall-db: pinned to prox-102, but prox-102 has latency 25\.673"):
        place_rolemap(rm)


def test_not_latency_sensitive_may_go_far() -> None:
    vm = VMRequest("batch", "batch", 4, 8, 50, latency_sensitive=False)
    far = HostCapacity("far", 25.0, frozenset({"batch"}), 62, 49, 6, 24, 0, 1600, 180)
    near = HostCapacity("near", 0.5, frozenset(), 124, 118, 12, 32, 0, 1600, 180)
    assert place([vm], [near, far], 2.0).placements[0].host == "far"


def test_largest_first_packing_and_determinism() -> None:
    hosts = [HostCapacity(f"h{i}", 0.5, frozenset({"app"}), 64, 40, 0, 32, 0, 1000, 0) for i in range(2)]
    vms = [VMRequest(f"v{i}", "app", 1, gb, 1) for i, gb in enumerate([10, 30, 20, 20])]
    first = [(p.vm, p.host) for p in place(vms, hosts, 2.0).placements]
    hosts2 = [HostCapacity(f"h{i}", 0.5, frozenset({"app"}), 64, 40, 0, 32, 0, 1000, 0) for i in range(2)]
    assert first == [(p.vm, p.host) for p in place(vms, hosts2, 2.0).placements]
    assert dict(first) == {"v1": "h0", "v2": "h1", "v3": "h1", "v0": "h0"}


host_strategy = st.builds(
    lambda i, lat, ram, cpu, disk, serves: HostCapacity(
        f"h{i}", lat, frozenset(serves), ram * 1.2, ram, ram * 0.1, cpu, 0, disk, 10
    ),
    st.integers(0, 10_000),
    st.one_of(st.none(), st.floats(0.1, 40)),
    st.floats(0, 256),
    st.integers(1, 64),
    st.floats(0, 4000),
    st.lists(st.sampled_from(["app", "data"]), max_size=2),
)
vm_strategy = st.builds(
    VMRequest,
    st.uuids().map(str),
    st.sampled_from(["app", "data", "batch"]),
    st.integers(1, 16),
    st.floats(0.5, 64),
    st.floats(1, 500),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(host_strategy, min_size=1, max_size=8, unique_by=lambda h: h.name), st.lists(vm_strategy, max_size=12))
def test_placement_never_overcommits_or_breaks_the_latency_budget(hosts, vms) -> None:
    budget = 2.0
    try:
        result = place(vms, hosts, budget)
    except PlacementError:
        return
    by_name = {h.name: h for h in hosts}
    requests = {v.name: v for v in vms}
    for p in result.placements:
        host = by_name[p.host]
        if requests[p.vm].latency_sensitive:
            assert host.latency_ms is not None and host.latency_ms <= budget
    used = {p.host for p in result.placements}
    for host in (h for h in hosts if h.name in used):
        assert host.ram_available >= -1e-6
        assert host.vcpu_available >= -1e-6
        assert host.disk_available >= -1e-6
