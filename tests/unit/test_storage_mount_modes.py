"""The Storage Box mounts adapt to the host: automount units where systemd can automount
(/dev/autofs), plain mount units pulled in by remote-fs.target plus a retry timer where it cannot.
The mode is read from the host (the MountSupport fact), and so is whether its kernel can mount
fuse and cifs at all; these tests run the fact's own command on this machine too."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from brainall_ops.lab.features import WITHHOLDABLE, kernel_features, kernel_filesystems, missing_required
from brainall_ops.lab.model import LabHost, LabSpecError
from brainall_ops.lab.spec import parse_withhold
from brainall_ops.rolemap import load_rolemap
from brainall_ops.storage.logic import (
    MOUNT_SUPPORT_COMMAND,
    REMOUNT_EVERY,
    REMOUNT_LOG,
    REMOUNT_STATE_DIR,
    cifs_units,
    client_plan,
    parse_mount_support,
    remount_job,
    sshfs_units,
)
from brainall_ops.storage.rendering import render

RM = load_rolemap()
GPU = client_plan(RM, "lab", "gpu")
PROX106 = client_plan(RM, "lab", "prox-106")
assert GPU and PROX106


def unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None, comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


@pytest.mark.parametrize(
    ("lines", "autofs", "reason"),
    [
        (["autofs", "fs:fuse", "fs:cifs"], True, ""),
        (["no-autofs-device", "fs:fuse"], False, "was not given the device"),
        (["no-autofs-kernel", "fs:fuse"], False, "built without autofs"),
        ([], False, "did not say"),
    ],
)
def test_mount_support_is_parsed_with_its_reason(lines: list[str], autofs: bool, reason: str) -> None:
    support = parse_mount_support(lines)
    assert support.autofs is autofs
    assert support.mode == ("automount" if autofs else "mount")
    assert reason in support.why_not_autofs
    assert support.filesystems == {w.removeprefix("fs:") for w in lines if w.startswith("fs:")}
    assert ("automount" if autofs else "retry timer") in support.describe()


def test_the_fact_command_tells_this_machine_as_it_is() -> None:
    """The fact's command run for real here: its answer matches /dev and /proc/filesystems."""
    output = subprocess.run(["sh", "-c", MOUNT_SUPPORT_COMMAND], capture_output=True, text=True, timeout=30)
    assert output.returncode == 0, output.stderr
    support = parse_mount_support(output.stdout.splitlines())
    assert support.autofs == Path("/dev/autofs").exists()
    assert ("fuse" in support.filesystems) == Path("/dev/fuse").exists()
    if "cifs" in kernel_filesystems():
        assert "cifs" in support.filesystems
    print(f"this machine: {support.describe()}")


def test_mount_mode_unit_is_wanted_by_remote_fs_nofail_and_bounded() -> None:
    units = sshfs_units(GPU.sshfs[0], GPU.box).in_mode("mount")
    assert units.enabled_unit == units.mount_unit == "mnt-storagebox-models.mount"
    mount = unit(render("mount.j2", units=units))
    assert mount["Install"]["WantedBy"] == "remote-fs.target"
    options = mount["Mount"]["Options"].split(",")
    assert "nofail" in options and "_netdev" in options and "reconnect" in options
    assert mount["Mount"]["TimeoutSec"] == str(units.timeout_s)


def test_automount_mode_unit_is_static_and_has_no_nofail() -> None:
    units = cifs_units(PROX106.cifs[0], PROX106.box)
    assert units.mode == "automount" and units.enabled_unit == units.automount_unit
    mount = unit(render("mount.j2", units=units))
    assert "Install" not in mount
    assert "nofail" not in mount["Mount"]["Options"].split(",")


def test_remount_job_only_for_mount_mode_units() -> None:
    automount = [sshfs_units(GPU.sshfs[0], GPU.box)]
    assert remount_job(automount, GPU.box) is None
    job = remount_job([u.in_mode("mount") for u in automount], GPU.box)
    assert job is not None and job.on_calendar == REMOUNT_EVERY
    timer = unit(render("job.timer.j2", job=job))
    assert timer["Timer"]["OnCalendar"] == REMOUNT_EVERY
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_remount_script_is_valid_sh_and_checks_each_mount() -> None:

    mounts = [
        sshfs_units(GPU.sshfs[0], GPU.box).in_mode("mount"),
        cifs_units(PROX106.cifs[0], GPU.box).in_mode("mount"),
    ]
    job = remount_job(mounts, GPU.box)
    assert job is not None
    script = render("remount.sh.j2", job=job, log=REMOUNT_LOG, state_dir=REMOUNT_STATE_DIR)
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell
    checked = subprocess.run([shell, "-n"], input=script, capture_output=True, text=True, timeout=10)
    assert checked.returncode == 0, checked.stderr
    assert "check mnt-storagebox-models.mount /mnt/storagebox/models fuse" in script
    assert "check mnt-storagebox-uploads.mount /mnt/storagebox/uploads cifs" in script
    assert "flock -n 9" in script  # never two runs at once


def test_kernel_features_read_this_machine() -> None:
    features = {f.name: f for f in kernel_features()}
    assert features["autofs"].present == Path("/dev/autofs").exists()
    assert features["FUSE"].present == Path("/dev/fuse").exists()
    assert features["overlayfs"].present == ("overlay" in kernel_filesystems())
    assert {"cgroups", "overlayfs", "nftables", "FUSE"} <= {f.name for f in features.values() if f.required}
    assert not features["autofs"].required and not features["CIFS"].required
    for feature in features.values():
        print(feature.line())
        assert feature.line().startswith(f"{feature.name}: ")
        if not feature.present:
            assert feature.without in feature.line()
    assert all(f.required and not f.present for f in missing_required(list(features.values())))


def test_kernel_filesystems_of_a_file(tmp_path: Path) -> None:
    sample = tmp_path / "filesystems"
    sample.write_text("nodev\tsysfs\nnodev\toverlay\n\text4\nnodev\tfuse\n")
    assert kernel_filesystems(sample) == {"sysfs", "overlay", "ext4", "fuse"}
    assert kernel_filesystems(tmp_path / "absent") == set()


def test_withhold_is_parsed_and_checked() -> None:
    assert parse_withhold(["gpu=autofs", "gpu=fuse", "prox-106=autofs"]) == {
        "gpu": frozenset({"autofs", "fuse"}),
        "prox-106": frozenset({"autofs"}),
    }
    with pytest.raises(LabSpecError, match="HOST=FEATURE"):
        parse_withhold(["gpu"])
    with pytest.raises(LabSpecError, match="cannot withhold kvm"):
        LabHost("gpu", "gpu", "10.77.1.130", withhold=frozenset({"kvm"})).validate()
    assert frozenset({"autofs"}) <= WITHHOLDABLE
