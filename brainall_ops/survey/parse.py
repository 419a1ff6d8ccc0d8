"""The probes' raw output to numbers. Pure functions, so they are tested on real command output.

Every probe script ends with a line `@rc=N`: the exit status of its bounded part (`timeout`
exits 124 when it cut the command, 137 when it had to kill it). Lines starting with `@` are the
scripts' own markers; everything else is the commands' output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

GIB = 1024**3
TIMEOUT_EXIT_CODES = (124, 137)  # GNU timeout: cut with TERM, or killed after -k


class ProbeOutputError(ValueError):
    """The output did not have the expected shape (the message says what was missing)."""


@dataclass(frozen=True)
class Outcome:
    """One probe's result on one host."""

    status: str  # ok | absent | timeout | error | skipped
    value: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def gib(n_bytes: float) -> float:
    return n_bytes / GIB


def split_markers(lines: Iterable[str]) -> tuple[dict[str, list[str]], list[str]]:
    """`@key=value` / `@key value` marker lines by key, and the other lines in order."""
    markers: dict[str, list[str]] = {}
    other: list[str] = []
    for raw in lines:
        line = raw.rstrip("\n")
        match = re.match(r"^@([a-z_]+)(?:=| |$)(.*)$", line)
        if match:
            markers.setdefault(match.group(1), []).append(match.group(2))
        else:
            other.append(line)
    return markers, other


def exit_status(markers: dict[str, list[str]]) -> int | None:
    values = markers.get("rc")
    if not values:
        return None
    try:
        return int(values[-1])
    except ValueError:
        return None


def common_outcome(markers: dict[str, list[str]], other: Sequence[str], bound_s: float) -> Outcome | None:
    """The outcome every probe shares (absent, cut at its bound, failed), or None to go on parsing."""
    if "absent" in markers:
        return Outcome("absent", reason=markers["absent"][0])
    if "skip" in markers:
        return Outcome("skipped", reason=markers["skip"][0])
    rc = exit_status(markers)
    if rc in TIMEOUT_EXIT_CODES:
        return Outcome("timeout", reason=f"cut at its {bound_s:g} s bound on the host")
    if rc is None:
        return Outcome("error", reason="the probe's output ended early (no exit status)")
    if rc != 0:
        detail = last_meaningful(other)
        return Outcome("error", reason=f"exit status {rc}" + (f": {detail}" if detail else ""))
    return None


def last_meaningful(lines: Sequence[str]) -> str:
    for line in reversed(lines):
        if line.strip():
            return line.strip()[:200]
    return ""


def key_values(lines: Iterable[str], sep: str = "=") -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        if sep in line:
            key, _, value = line.partition(sep)
            out.setdefault(key.strip(), value.strip())
    return out


# --------------------------------------------------------------------------- system
def parse_system(lines: Sequence[str]) -> dict[str, Any]:
    kv = key_values(lines)
    virt = kv.get("virt", "") or "unknown"
    return {
        "hostname": kv.get("hostname", ""),
        "virtualization": virt,
        "kernel": kv.get("kernel", ""),
        "os": kv.get("os", ""),
    }


# --------------------------------------------------------------------------- cpu
def _int(value: str | None) -> int | None:
    if value is None:
        return None
    match = re.match(r"^\s*(\d+)", value)
    return int(match.group(1)) if match else None


def parse_cpu(lines: Sequence[str]) -> dict[str, Any]:
    """`lscpu` (C locale) plus `@nproc=` and the first `model name` line of /proc/cpuinfo."""
    markers, other = split_markers(lines)
    lscpu = key_values(other, ":")
    model = lscpu.get("Model name") or lscpu.get("model name") or ""
    sockets = _int(lscpu.get("Socket(s)"))
    per_socket = _int(lscpu.get("Core(s) per socket")) or _int(lscpu.get("Core(s) per cluster"))
    per_core = _int(lscpu.get("Thread(s) per core"))
    threads = _int(lscpu.get("CPU(s)")) or _int((markers.get("nproc") or [None])[0])
    if not threads:
        raise ProbeOutputError("no CPU count in lscpu or nproc output")
    if sockets and per_socket:
        cores = sockets * per_socket
    elif per_core:
        cores = max(1, threads // per_core)
    else:
        cores = threads
    if not model:
        raise ProbeOutputError("no CPU model name in lscpu or /proc/cpuinfo")
    return {"model": model, "sockets": sockets, "cores": cores, "threads": threads}


# --------------------------------------------------------------------------- memory
def parse_meminfo(lines: Sequence[str]) -> dict[str, float]:
    """/proc/meminfo to GiB. `available` is what the role map calls free (free + reclaimable cache)."""
    kib: dict[str, int] = {}
    for line in lines:
        match = re.match(r"^(\w+(?:\(\w+\))?):\s+(\d+)(?:\s+kB)?$", line.strip())
        if match:
            kib[match.group(1)] = int(match.group(2))
    if "MemTotal" not in kib:
        raise ProbeOutputError("no MemTotal in /proc/meminfo")
    total = kib["MemTotal"]
    free = kib.get("MemFree", 0)
    cached = kib.get("Cached", 0) + kib.get("Buffers", 0) + kib.get("SReclaimable", 0)
    available = kib.get("MemAvailable", free + cached)
    return {
        "total_gb": round(total * 1024 / GIB, 2),
        "used_gb": round((total - available) * 1024 / GIB, 2),
        "free_gb": round(free * 1024 / GIB, 2),
        "available_gb": round(available * 1024 / GIB, 2),
        "cached_gb": round(cached * 1024 / GIB, 2),
    }


# --------------------------------------------------------------------------- disk space
def parse_df(lines: Sequence[str]) -> list[dict[str, Any]]:
    """`df -P -k PATH...` to GiB, one entry per line (the header is skipped)."""
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or not parts[1].isdigit():
            continue
        total, used, avail = (int(p) * 1024 for p in parts[1:4])
        out.append(
            {
                "path": parts[5],
                "filesystem": parts[0],
                "total_gb": round(gib(total), 2),
                "used_gb": round(gib(used), 2),
                "free_gb": round(gib(avail), 2),
            }
        )
    if not out:
        raise ProbeOutputError("no filesystem line in df output")
    return out


# --------------------------------------------------------------------------- disk throughput
_DD_LINE = re.compile(r"^(\d+) bytes .*copied, ([0-9.]+(?:e-?\d+)?) s")


def parse_dd(line: str) -> float:
    """A dd summary line (`268435456 bytes (268 MB, 256 MiB) copied, 0.21 s, 1.3 GB/s`) to GB/s."""
    match = _DD_LINE.match(line.strip())
    if not match:
        raise ProbeOutputError(f"not a dd summary line: {line.strip()[:120]!r}")
    n_bytes, seconds = int(match.group(1)), float(match.group(2))
    if n_bytes == 0 or seconds <= 0:
        raise ProbeOutputError(f"dd copied nothing: {line.strip()[:120]!r}")
    return n_bytes / seconds / 1e9


def parse_fio(text: str, direction: str) -> float:
    """fio --output-format=json to GB/s for `direction` (read or write)."""
    start = text.find("{")
    if start < 0:
        raise ProbeOutputError("no JSON in fio output")
    try:
        data = json.loads(text[start:])
        job = data["jobs"][0]
        if job.get("error"):
            raise ProbeOutputError(f"fio job error {job['error']}")
        bw = float(job[direction]["bw_bytes"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ProbeOutputError(f"unexpected fio output ({exc})") from None
    if bw <= 0:
        raise ProbeOutputError(f"fio measured no {direction} throughput")
    return bw / 1e9


def parse_disk_speed(markers: dict[str, list[str]], other: Sequence[str]) -> dict[str, Any]:
    method = (markers.get("method") or ["dd"])[0]
    size_mb = _int((markers.get("size_mb") or ["0"])[0]) or 0
    path = (markers.get("path") or [""])[0]
    if method == "fio":
        text = "\n".join(other)
        parts = text.split("@@read@@")
        if len(parts) != 2:
            raise ProbeOutputError("fio output lacks its read part")
        write, read = parse_fio(parts[0], "write"), parse_fio(parts[1], "read")
    else:
        if "write" not in markers or "read" not in markers:
            raise ProbeOutputError("dd output lacks its write or read summary")
        write, read = parse_dd(markers["write"][-1]), parse_dd(markers["read"][-1])
    return {
        "path": path,
        "method": method,
        "size_mb": size_mb,
        "write_gbps": round(write, 3),
        "read_gbps": round(read, 3),
    }


# --------------------------------------------------------------------------- gpu
def parse_nvidia(lines: Sequence[str]) -> list[dict[str, Any]]:
    """`nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader,nounits`
    lines, plus `@cuda=` from nvidia-smi's banner."""
    markers, other = split_markers(lines)
    cuda = None
    for value in markers.get("cuda", []):
        match = re.search(r"CUDA Version:\s*([0-9.]+)", value)
        if match:
            cuda = match.group(1)
    cards = []
    for line in other:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not parts[1].replace(".", "").isdigit():
            continue
        total_mib, used_mib = float(parts[1]), float(parts[2]) if parts[2].replace(".", "").isdigit() else 0.0
        cards.append(
            {
                "model": parts[0],
                "vram_mib": int(total_mib),
                "vram_gb": round(total_mib / 1024, 1),
                "vram_used_mib": int(used_mib),
                "driver": parts[3] or None,
                "cuda": cuda,
            }
        )
    if not cards:
        raise ProbeOutputError("nvidia-smi listed no GPU")
    return cards


# --------------------------------------------------------------------------- proxmox
def _json_after(markers: dict[str, list[str]], key: str) -> Any:
    values = markers.get(key)
    if not values or not values[-1].strip():
        raise ProbeOutputError(f"no {key} JSON from pvesh")
    try:
        return json.loads(values[-1])
    except ValueError as exc:
        raise ProbeOutputError(f"{key}: not JSON ({exc})") from None


def parse_proxmox(markers: dict[str, list[str]]) -> dict[str, Any]:
    """`pvesh get /nodes/NODE/qemu` and `/nodes/NODE/storage` (JSON, one line each)."""
    node = (markers.get("node") or [""])[0]
    vms = []
    for vm in sorted(_json_after(markers, "qemu"), key=lambda v: int(v.get("vmid", 0))):
        maxmem = vm.get("maxmem")
        vms.append(
            {
                "vmid": int(vm["vmid"]),
                "name": str(vm.get("name") or f"vm{vm['vmid']}"),
                "status": str(vm.get("status", "unknown")),
                "memory_gb": round(gib(float(maxmem)), 2) if maxmem else None,
                "vcpu": int(vm["cpus"]) if vm.get("cpus") else None,
            }
        )
    storages = []
    if "storage" in markers:
        for st in _json_after(markers, "storage"):
            if not st.get("total"):
                continue
            storages.append(
                {
                    "name": str(st.get("storage")),
                    "type": str(st.get("type", "")),
                    "total_gb": round(gib(float(st.get("total", 0))), 2),
                    "used_gb": round(gib(float(st.get("used", 0))), 2),
                    "free_gb": round(gib(float(st.get("avail", 0))), 2),
                }
            )
    return {"node": node, "vms": vms, "storages": storages}


# --------------------------------------------------------------------------- ceph
def parse_ceph_status(text: str) -> dict[str, Any]:
    """`ceph status -f json`: health status, its checks, and the cluster's usage."""
    start = text.find("{")
    if start < 0:
        raise ProbeOutputError("no JSON in ceph status output")
    try:
        data = json.loads(text[start:])
        health = data["health"]
    except (ValueError, KeyError) as exc:
        raise ProbeOutputError(f"unexpected ceph status output ({exc})") from None
    checks = []
    for name, check in sorted((health.get("checks") or {}).items()):
        message = ((check or {}).get("summary") or {}).get("message", "")
        checks.append({"name": name, "severity": (check or {}).get("severity", ""), "message": message})
    pgmap = data.get("pgmap") or {}
    osdmap = data.get("osdmap") or {}
    osdmap = osdmap.get("osdmap", osdmap)  # older releases nest it once more
    out: dict[str, Any] = {"status": health.get("status", "UNKNOWN"), "checks": checks}
    if osdmap.get("num_osds") is not None:
        out["osds"] = int(osdmap["num_osds"])
        out["osds_up"] = int(osdmap.get("num_up_osds", 0))
    if pgmap.get("bytes_total"):
        out["raw_tb"] = round(float(pgmap["bytes_total"]) / 1024**4, 2)
        out["used_gb"] = round(gib(float(pgmap.get("bytes_used", 0))), 1)
        out["objects"] = int(pgmap.get("num_objects", 0))
    return out


# --------------------------------------------------------------------------- latency
_PING_COUNTS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_PING_RTT = re.compile(r"(?:rtt|round-trip) min/avg/max(?:/mdev|/stddev)? = ([0-9.]+)/([0-9.]+)/([0-9.]+)")


_PING_REPLY = re.compile(r"\bicmp_seq=\d+ .*\btime[=<]([0-9.]+) ms")


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def parse_ping(lines: Sequence[str], count: int) -> dict[str, Any]:
    """iputils `ping` replies and summary. A ping that could not send (no route) counts as all lost."""
    text = "\n".join(lines)
    counts = _PING_COUNTS.search(text)
    sent, received = (int(counts.group(1)), int(counts.group(2))) if counts else (count, 0)
    sent = max(sent, count) if received < count else sent  # -w may stop early: unsent count as lost
    out: dict[str, Any] = {
        "method": "icmp",
        "sent": sent,
        "received": received,
        "loss_pct": round(100 * (sent - received) / sent, 1) if sent else 100.0,
    }
    rtt = _PING_RTT.search(text)
    if rtt and received:
        out.update(min_ms=float(rtt.group(1)), avg_ms=float(rtt.group(2)), max_ms=float(rtt.group(3)))
        replies = [float(m.group(1)) for m in _PING_REPLY.finditer(text)]
        if replies:
            out["median_ms"] = round(_median(replies), 3)
    elif not received:
        out["reason"] = connect_failure(text) or "no reply"
    return out


def parse_timed_attempts(lines: Sequence[str], count: int, method: str) -> dict[str, Any]:
    """Lines `@try RC START END` (seconds) from the bash /dev/tcp connect loop (EPOCHREALTIME
    stamps) or the python3 ICMP echo, with error messages in between. Only RC 0 is a reply."""
    markers, other = split_markers(lines)
    times: list[float] = []
    sent = 0
    for attempt in markers.get("try", []):
        parts = attempt.split()
        if len(parts) != 3:
            continue
        sent += 1
        rc, start, end = parts
        elapsed_ms = (float(end.replace(",", ".")) - float(start.replace(",", "."))) * 1000
        if rc == "0":
            times.append(max(elapsed_ms, 0.0))
    sent = max(sent, count)
    out: dict[str, Any] = {
        "method": method,
        "sent": sent,
        "received": len(times),
        "loss_pct": round(100 * (sent - len(times)) / sent, 1) if sent else 100.0,
    }
    if times:
        out.update(
            min_ms=round(min(times), 3),
            avg_ms=round(sum(times) / len(times), 3),
            max_ms=round(max(times), 3),
            median_ms=round(_median(times), 3),
        )
    else:
        timed_out = any(rc.strip() in {str(c) for c in TIMEOUT_EXIT_CODES} for rc in markers.get("tryrc", []))
        out["reason"] = connect_failure("\n".join(other)) or ("timed out" if timed_out else "no reply")
    return out


def split_targets(lines: Sequence[str]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The latency probe's output: header markers, then a block per `@target=ADDRESS`."""
    header: dict[str, list[str]] = {}
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line.startswith("@target="):
            current = blocks.setdefault(line.partition("=")[2].strip(), [])
        elif current is None:
            match = re.match(r"^@([a-z_]+)=(.*)$", line)
            if match:
                header.setdefault(match.group(1), []).append(match.group(2))
        else:
            current.append(line)
    return header, blocks


# --------------------------------------------------------------------------- reachability
_FAILURES = (
    ("connection refused", "connection refused"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("name or service not known", "name does not resolve"),
    ("temporary failure in name resolution", "name does not resolve"),
    ("connection timed out", "timed out"),
    ("connection reset", "connection reset"),
    ("permission denied", "permission denied"),
)


def connect_failure(text: str) -> str:
    lowered = text.lower()
    for needle, reason in _FAILURES:
        if needle in lowered:
            return reason
    return ""


def parse_reachability(
    markers: dict[str, list[str]], other: Sequence[str], port: int, connect_s: float
) -> dict[str, Any]:
    """Connect attempts to the Storage Box port (`@try RC START END` and `@tryrc=N` per attempt):
    reachable with its mean connect time, or why not."""
    times = []
    for attempt in markers.get("try", []):
        parts = attempt.split()
        if len(parts) == 3 and parts[0] == "0":
            times.append((float(parts[2].replace(",", ".")) - float(parts[1].replace(",", "."))) * 1000)
    timeouts = sum(1 for rc in markers.get("tryrc", []) if rc.strip() in {str(c) for c in TIMEOUT_EXIT_CODES})
    if times:
        return {"port": port, "reachable": True, "connect_ms": round(sum(times) / len(times), 3)}
    reason = connect_failure("\n".join(other))
    if not reason and timeouts:
        reason = f"timed out after {connect_s:g} s (no answer: filtered or down)"
    return {"port": port, "reachable": False, "reason": reason or last_meaningful(other) or "no answer"}


# --------------------------------------------------------------------------- gpu without its driver
_LSPCI_NVIDIA = re.compile(
    r'^(?P<slot>[0-9a-fA-F:.]+)\s+"?(?P<cls>VGA compatible controller|3D controller|Display controller)'
    r'(?: \[[0-9a-f]{4}\])?"?\s*(?::\s*|\s+)"?(?P<vendor>NVIDIA Corporation)(?: \[10de\])?"?\s*:?\s*(?P<model>.*)$'
)
_VRAM_IN_NAME = re.compile(r"(\d+(?:\.\d+)?)\s*GB\b", re.IGNORECASE)


def parse_lspci_gpus(lines: Sequence[str]) -> list[dict[str, Any]]:
    """`lspci -k` (or `lspci -nnk`): the NVIDIA display and 3D controllers, with the kernel driver in
    use. No nvidia-smi means no usable NVIDIA driver (no CUDA), whatever the kernel binds (nouveau,
    vfio-pci or nothing): every card found this way has `driver` None. The VRAM is only known where
    the marketing name carries it (`GA100 [A100 PCIe 40GB]`)."""
    cards: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for raw in lines:
        line = raw.rstrip()
        if not line:
            continue
        if not line[0].isspace():
            current = None
            match = _LSPCI_NVIDIA.match(line.strip())
            if match:
                model = re.sub(r"\s*\(rev [0-9a-f]+\)$", "", match.group("model")).strip()
                model = re.sub(r"\s*\[10de:[0-9a-f]{4}\]", "", model).strip()
                vram = _VRAM_IN_NAME.search(model)
                current = {
                    "model": f"NVIDIA {model}" if model else "NVIDIA (unnamed device)",
                    "vram_gb": float(vram.group(1)) if vram else None,
                    "driver": None,
                    "cuda": None,
                    "source": "lspci",
                    "pci_slot": match.group("slot"),
                    "kernel_driver": None,
                }
                cards.append(current)
            continue
        if current is not None:
            key, sep, value = line.strip().partition(":")
            if sep and key == "Kernel driver in use":
                current["kernel_driver"] = value.strip() or None
    return cards


# --------------------------------------------------------------------------- VM storage (Proxmox)
def parse_pvesm_status(lines: Sequence[str]) -> list[dict[str, Any]]:
    """`pvesm status` (sizes in KiB): every storage with its type, state and space. A disabled or
    inactive storage is listed with its state, as PVE prints it, so the caller can say why it is
    not used."""
    out: list[dict[str, Any]] = []
    header_seen = False
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "Name" and "Type" in parts:
            header_seen = True
            continue
        if not header_seen or len(parts) < 6:
            continue
        name, kind, status = parts[0], parts[1], parts[2]
        try:
            total, used, avail = (int(p) * 1024 for p in parts[3:6])
        except ValueError:
            raise ProbeOutputError(f"pvesm status: not a size in {line.strip()[:120]!r}") from None
        out.append(
            {
                "name": name,
                "type": kind,
                "status": status,
                "source": "pvesm",
                "total_gb": round(gib(total), 2),
                "used_gb": round(gib(used), 2),
                "free_gb": round(gib(avail), 2),
            }
        )
    if not header_seen:
        raise ProbeOutputError("no header line in pvesm status output")
    return out


def parse_lvs_thin_pools(lines: Sequence[str]) -> list[dict[str, Any]]:
    """`lvs --noheadings --units b --nosuffix --separator '|' -o vg_name,lv_name,lv_attr,lv_size,data_percent`:
    the thin pools (lv_attr starting with `t`), free space from the pool's data use. PVE's
    `local-lvm` is the thin pool `pve/data` of a standard install."""
    out: list[dict[str, Any]] = []
    for line in lines:
        parts = [p.strip() for p in line.strip().split("|")]
        if len(parts) < 5 or not parts[2].startswith("t"):
            continue
        try:
            size = float(parts[3])
            used_pct = float(parts[4].replace(",", ".")) if parts[4] else 0.0
        except ValueError:
            raise ProbeOutputError(f"lvs: not a size or percentage in {line.strip()[:120]!r}") from None
        if not 0 <= used_pct <= 100:
            raise ProbeOutputError(f"lvs: data use {used_pct} % of {parts[0]}/{parts[1]} is not a percentage")
        used = size * used_pct / 100
        out.append(
            {
                "name": f"{parts[0]}/{parts[1]}",
                "type": "lvmthin",
                "status": "active" if len(parts[2]) > 4 and parts[2][4] == "a" else "inactive",
                "source": "lvs",
                "total_gb": round(gib(size), 2),
                "used_gb": round(gib(used), 2),
                "free_gb": round(gib(size - used), 2),
            }
        )
    return out


# --------------------------------------------------------------------------- machine identity
# Interfaces whose addresses are the same on many machines (container and VM bridges): never
# evidence that two names are one machine.
SHARED_INTERFACES = re.compile(r"^(lo|docker\d*|br-[0-9a-f]+|veth.*|virbr\d+|cni\d*|flannel.*|podman\d*|lxcbr\d+)$")


def parse_identity(markers: dict[str, list[str]], other: Sequence[str]) -> dict[str, Any]:
    """`@machine_id=` (/etc/machine-id) and `ip -o addr show` lines: the facts that tell one machine
    from another. Addresses are the global ones, without the prefix length, interface by interface;
    loopback, link-local and container bridges are left out."""
    machine_id = ((markers.get("machine_id") or [""])[0] or "").strip().lower()
    if machine_id and not re.fullmatch(r"[0-9a-f]{32}", machine_id):
        raise ProbeOutputError(f"/etc/machine-id is not 32 hex digits: {machine_id[:40]!r}")
    addresses: list[str] = []
    for line in other:
        # 2: vmbr0    inet 192.168.100.6/24 brd 192.168.100.255 scope global vmbr0\       valid_lft ...
        match = re.match(r"^\d+:\s+(\S+?)(?:@\S+)?\s+inet6?\s+([0-9a-fA-F:.]+)/\d+.*?\bscope (\w+)", line.strip())
        if not match:
            continue
        interface, address, scope = match.groups()
        if scope != "global" or SHARED_INTERFACES.match(interface):
            continue
        if address not in addresses:
            addresses.append(address)
    for value in markers.get("hostname_i", []):  # `hostname -I` where there is no ip command
        for address in value.split():
            if address not in addresses and not address.startswith(("127.", "fe80:", "172.17.")):
                addresses.append(address)
    if not machine_id and not addresses:
        raise ProbeOutputError("neither a machine-id nor an address")
    return {"machine_id": machine_id or None, "addresses": addresses}
