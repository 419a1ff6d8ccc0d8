"""The measurements file (strict, line-numbered errors, round trip) and `roles --write`'s targeted edit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from brainall_ops.rolemap import BUILTIN_ROLEMAP, load_rolemap, parse_rolemap
from brainall_ops.survey.measurements import MeasurementsError, dump_survey, load_survey, parse_survey
from brainall_ops.survey.rolemap_edit import (
    RoleMapEditError,
    edit_measured,
    measured_updates,
    prepare_update,
    write_update,
)

SEED = Path(__file__).parent / "fixtures" / "survey" / "seed-measurements.yaml"
BUILTIN_TEXT = BUILTIN_ROLEMAP.read_text()


def seed_with(changes: dict[str, object]) -> str:
    """The seed fixture's text with changes given as {"hosts/gpu/memory/available_gb": value}."""
    data = yaml.safe_load(SEED.read_text())
    for path, value in changes.items():
        *parents, leaf = path.split("/")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return yaml.safe_dump(data, sort_keys=False)


def test_measurements_round_trip_through_yaml() -> None:
    survey = load_survey(SEED)
    again = parse_survey(dump_survey(survey), "again.yaml")
    assert again == survey
    assert dump_survey(survey).startswith("# Fleet measurements by `brainall-ops survey`")


def test_bad_measurements_are_one_line_each_with_file_and_line() -> None:
    text = SEED.read_text().replace("cores: 16, threads: 32}", "cores: 16, threads: 32, turbo: yes}", 1)
    with pytest.raises(MeasurementsError) as exc:
        parse_survey(text, "m.yaml")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "turbo" in t)
    assert str(exc.value) == f"m.yaml:{line}: hosts.prox-101.cpu.turbo: unknown key 'turbo'"
    with pytest.raises(MeasurementsError, match=r"^m\.yaml:\d+: hosts\.gpu\.memory\.total_gb: "):
        parse_survey(SEED.read_text().replace("total_gb: 126", "total_gb: lots"), "m.yaml")
    with pytest.raises(MeasurementsError, match=r"^m\.yaml:4: \(yaml\): expected ',' or '}'"):
        parse_survey("version: 1\nhosts:\n  gpu: {answered: true\nlatency: {}\n", "m.yaml")
    with pytest.raises(MeasurementsError, match="cannot read the measurements"):
        load_survey("/nonexistent/m.yaml")


def test_the_seeds_numbers_change_nothing_in_the_builtin_map() -> None:
    rm = load_rolemap()
    updates = measured_updates(load_survey(SEED), rm)
    assert updates["prox-101"] == {
        "latency_from_gpu_ms": 0.568,
        "packet_loss_pct": 0.0,
        "disk_write_gbps": 1.2,
        "disk_read_gbps": 2.7,
        "ram_used_gb": 69.0,
        "ram_free_gb": 56.0,
        "disk_used_gb": 38.0,
        "disk_free_gb": 1600.0,
    }
    assert edit_measured(BUILTIN_TEXT, updates) == BUILTIN_TEXT


def test_new_numbers_change_only_measured_lines_and_drop_only_their_comments() -> None:
    survey = parse_survey(
        seed_with(
            {
                "hosts/gpu/memory/available_gb": 117.25,
                "hosts/prox-102/disk": {"path": "/", "total_gb": 1800, "used_gb": 100, "free_gb": 1650},
                "latency/gpu/prox-106/avg_ms": 0.91,
            }
        ),
        "s.yaml",
    )
    new = edit_measured(BUILTIN_TEXT, measured_updates(survey, load_rolemap()))
    old_lines, new_lines = BUILTIN_TEXT.splitlines(), new.splitlines()
    removed = [line for line in old_lines if line not in new_lines]
    added = [line for line in new_lines if line not in old_lines]
    assert removed == [
        '      ram_free_gb: 120  # "available" (60 free + 60 cache)',
        "      latency_from_gpu_ms: 0.844",
        "      disk_free_gb: 1600  # not measured: chosen equal to the others until `survey` runs",
    ]
    assert added == [
        "      ram_free_gb: 117.2",
        "      latency_from_gpu_ms: 0.91",
        "      disk_used_gb: 100",  # a field the block lacked, in the schema's order
        "      disk_free_gb: 1650",
    ]
    rm = parse_rolemap(new, "new.yaml")
    assert rm.host("prox-102").measured.disk_used_gb == 100 and rm.host("gpu").measured.ram_free_gb == 117.2
    # every comment outside the changed values survives
    kept_comments = [line for line in old_lines if "#" in line and line not in removed]
    assert all(line in new_lines for line in kept_comments)


def test_flow_style_measured_blocks_are_rewritten_in_place() -> None:
    text = BUILTIN_TEXT.replace(
        "    measured:\n      latency_from_gpu_ms: 0.844\n      ram_used_gb: 6\n      ram_free_gb: 118\n"
        '      disk_free_gb: 1600  # "similar to prox-101" (not measured separately)\n',
        "    measured: {latency_from_gpu_ms: 0.844, ram_free_gb: 118, disk_free_gb: 1600}  # flow\n",
    )
    assert text != BUILTIN_TEXT
    survey = parse_survey(seed_with({"hosts/prox-106/memory/available_gb": 100}), "s.yaml")
    new = edit_measured(text, measured_updates(survey, load_rolemap()))
    assert (
        "    measured: {latency_from_gpu_ms: 0.844, ram_free_gb: 100, disk_free_gb: 1600, ram_used_gb: 6}  # flow\n"
        in new
    )


def test_prepare_and_write_an_update_atomically(tmp_path: Path) -> None:
    target = tmp_path / "fleet.yaml"
    target.write_text(BUILTIN_TEXT)
    target.chmod(0o640)
    survey = parse_survey(seed_with({"hosts/bastion/disk/free_gb": 5.2}), "s.yaml")
    update = prepare_update(target, survey)
    assert update.changed
    assert "-      disk_free_gb: 6.7\n+      disk_free_gb: 5.2\n" in update.diff()
    write_update(update)
    assert load_rolemap(target).host("bastion").measured.disk_free_gb == 5.2
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["fleet.yaml"]  # no temporary file left
    # the file changed since the update was prepared: refuse rather than overwrite
    stale = prepare_update(target, parse_survey(seed_with({"hosts/bastion/disk/free_gb": 4.0}), "s.yaml"))
    target.write_text(target.read_text() + "# edited by hand meanwhile\n")
    with pytest.raises(RoleMapEditError, match="changed while the update was prepared"):
        write_update(stale)
