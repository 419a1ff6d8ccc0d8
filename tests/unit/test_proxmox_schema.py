"""The simulator's validator of PVE's schema dialect, on the official apidata."""

from __future__ import annotations

from functools import cache

import pytest

from brainall_ops.lab.pve_simulator.schema import (
    ApiSchema,
    NoSuchMethod,
    ParameterError,
    check_format,
    parse_property_string,
    perl_regex,
)


@cache
def schema() -> ApiSchema:
    return ApiSchema()


def config_post() -> object:
    return schema().method("POST", "/nodes/{node}/qemu/{vmid}/config")


def test_paths_match_literal_segments_first() -> None:
    method, params = schema().match("GET", "/nodes/prox-1/qemu/105/status/current")
    assert method.path == "/nodes/{node}/qemu/{vmid}/status/current" and params == {"node": "prox-1", "vmid": "105"}
    method, params = schema().match("GET", "/nodes/pve/tasks/UPID:pve:0001:0002:0003:qmstart:100:root@pam:/status")
    assert method.path == "/nodes/{node}/tasks/{upid}/status"
    with pytest.raises(NoSuchMethod, match="Method 'GET /nodes/x/qemu/1/nope' not implemented"):
        schema().match("GET", "/nodes/x/qemu/1/nope")
    with pytest.raises(NoSuchMethod):
        schema().match("PATCH", "/version")


def test_parameters_are_coerced_from_strings() -> None:
    got = schema().check_parameters(
        config_post(),  # type: ignore[arg-type]
        {
            "node": "pve",
            "vmid": "105",
            "cores": "4",
            "onboot": "1",
            "net0": "virtio,bridge=vmbr1",
            "ipconfig3": "ip=dhcp",
        },
    )
    assert got["cores"] == 4 and got["onboot"] == 1 and got["vmid"] == 105


def test_a_boolean_parameter_is_0_or_1_as_in_pve_jsonschema_check_type() -> None:
    """pve-common src/PVE/JSONSchema.pm check_type: '1' or '0' only ('true' only inside property strings)."""
    for value in ("true", "on", "yes", "False"):
        with pytest.raises(ParameterError) as info:
            schema().check_parameters(config_post(), {"node": "pve", "vmid": "105", "onboot": value})  # type: ignore[arg-type]
        assert info.value.errors == {"onboot": f"type check ('boolean') failed - got '{value}'"}
    got = schema().check_parameters(config_post(), {"node": "pve", "vmid": "105", "agent": "enabled=true"})  # type: ignore[arg-type]
    assert got["agent"] == "enabled=true"


@pytest.mark.parametrize(
    ("params", "name", "message"),
    [
        (
            {"bogus": "1"},
            "bogus",
            "property is not defined in schema and the schema does not allow additional properties",
        ),
        ({"cores": "four"}, "cores", "type check ('integer') failed - got 'four'"),
        ({"cores": "0"}, "cores", "value must have a minimum value of 1"),
        ({"scsihw": "fast"}, "scsihw", "does not have a value in the enumeration"),
        ({"net32": "virtio"}, "net32", "property is not defined in schema"),  # nets stop at net31
        ({"net0": "virtio,color=red"}, "net0", "color: property is not defined in schema"),
        ({"net0": "virtio=01:00:00:00:00:01"}, "net0", "macaddr"),  # a multicast MAC
        ({"ipconfig0": "ip=10.0.0.1"}, "ipconfig0", "invalid format"),  # no prefix length
        ({"sshkeys": "ssh-ed25519 AAAA"}, "sshkeys", "invalid urlencoded string"),
        ({"tags": "ok;not ok!"}, "tags", "invalid format"),
        ({"memory": "current=8"}, "memory", "minimum value of 16"),
        ({"digest": "x" * 41}, "digest", "may only be 40 characters long"),
    ],
)
def test_pve_refusals(params: dict[str, str], name: str, message: str) -> None:
    with pytest.raises(ParameterError) as refused:
        schema().check_parameters(config_post(), {"node": "pve", "vmid": "105", **params})  # type: ignore[arg-type]
    assert message in refused.value.errors[name]


def test_required_parameters() -> None:
    clone = schema().method("POST", "/nodes/{node}/qemu/{vmid}/clone")
    with pytest.raises(ParameterError) as refused:
        schema().check_parameters(clone, {"node": "pve", "vmid": "9000"})
    assert refused.value.errors == {"newid": "property is missing and it is not optional"}


def test_property_strings_with_key_aliases() -> None:
    fmt = config_post().parameters["net[n]"]["format"]  # type: ignore[attr-defined]
    assert parse_property_string(fmt, "virtio=BC:24:11:00:00:01,bridge=vmbr1,firewall=1") == {
        "model": "virtio",
        "macaddr": "BC:24:11:00:00:01",
        "bridge": "vmbr1",
        "firewall": 1,
    }
    assert parse_property_string(fmt, "e1000") == {"model": "e1000"}
    with pytest.raises(ValueError, match="model: property is missing"):
        parse_property_string(fmt, "bridge=vmbr1")


def test_named_formats() -> None:
    check_format("pve-tag-list", "brainall;app;bo-0123456789")
    check_format("pve-configid-list", "vcpus,unused0")
    check_format("pve-qm-ipconfig", "ip=10.77.1.61/16,gw=10.77.0.1")
    check_format("pve-qm-boot", "order=scsi0;ide2;net0")
    for fmt, value in (("pve-node", "-bad"), ("dns-name", "a_b"), ("pve-qm-boot", "order=scsi0,bogus=1")):
        with pytest.raises(ValueError, match="invalid format"):
            check_format(fmt, value)
    check_format("some-format-the-toolkit-never-sends", "anything")


def test_perl_patterns_are_anchored() -> None:
    assert perl_regex(r"(?^:\d+(?:-\d+)?)").match("10-20")
    assert not perl_regex(r"\d+").match("12a")


def test_returns_are_checked_against_the_declared_shape() -> None:
    status = schema().method("GET", "/nodes/{node}/tasks/{upid}/status")
    ok = {
        "upid": "U",
        "node": "n",
        "pid": 1,
        "pstart": 2,
        "starttime": 3,
        "type": "t",
        "id": "1",
        "user": "u",
        "status": "stopped",
        "exitstatus": "OK",
    }
    assert schema().check_return(status, ok) == []
    problems = schema().check_return(status, {**ok, "status": "done", "extra": 1, "pid": "1"})
    assert any("status" in p and "enumeration" in p for p in problems)
    assert any("extra: not declared" in p for p in problems)
    assert any("pid" in p and "integer" in p for p in problems)
    assert schema().check_return(status, {k: v for k, v in ok.items() if k != "node"}) == [
        "data.node: missing, and it is not optional"
    ]
    nextid = schema().method("GET", "/cluster/nextid")
    assert schema().check_return(nextid, 106) == [] and schema().check_return(nextid, "106") != []
