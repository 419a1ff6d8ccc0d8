"""The survey's probes as pyinfra facts: `host.get_fact(CPU, bound_s=20)` and so on.

Each fact's command is bounded on the host itself: the measuring part runs under
`timeout -k 2 BOUND`, which ends the whole process group, and the script reports the exit status
of that part on a final `@rc=N` line (124/137: cut at the bound). The scripts always exit 0, so
pyinfra hands every output to `process`, which turns it into an `Outcome` and never raises; a
fact whose command produced nothing at all (the SSH channel failed or was cut by the survey's own,
longer bound) yields the default, None. A probe whose tool is missing answers `@absent=why`
(no GPU, not a Proxmox node, no Ceph): reported as absent, not as an error.

Only POSIX sh, coreutils and (for TCP latency) bash are assumed on the hosts; `ping`, `fio`,
`nvidia-smi`, `pvesh` and `ceph` are used when present.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from pyinfra.api import FactBase

from brainall_ops.survey import parse
from brainall_ops.survey.parse import Outcome, ProbeOutputError

ICMP_ECHO = Path(__file__).with_name("icmp_echo.py")

# Temporary files and directories the probes make; a leftover of a killed run is found by name.
TMP_PREFIX = ".brainall-survey"
LEFTOVER_MINUTES = 60


def bounded(bound_s: int, script: str) -> str:
    """`script` cut at `bound_s` on the host (TERM, then KILL 2 s later), then its exit status."""
    return f'timeout -k 2 {int(bound_s)} sh -c {shlex.quote(script)}; echo "@rc=$?"'


def _absent_unless(command: str, why: str) -> str:
    return f"command -v {command} >/dev/null 2>&1 || {{ echo {shlex.quote('@absent=' + why)}; exit 0; }}; "


class SurveyFact(FactBase[Outcome | None]):
    """Base of the probes: C locale, never raises, None when the command produced nothing."""

    @staticmethod
    def default() -> None:
        return None

    def parse(self, markers: dict[str, list[str]], other: list[str]) -> Outcome:
        raise NotImplementedError

    def process(self, output: list[str]) -> Outcome:  # type: ignore[override]
        markers, other = parse.split_markers(output)
        bound = float((markers.get("bound") or ["0"])[0] or 0)
        common = parse.common_outcome(markers, other, bound)
        if common is not None:
            return common
        try:
            return self.parse(markers, other)
        except (ProbeOutputError, ValueError, KeyError, TypeError) as exc:
            return Outcome("error", reason=f"could not read the output: {exc}")


def _script(bound_s: int, body: str, prelude: str = "") -> str:
    return f'export LC_ALL=C; echo "@bound={int(bound_s)}"; {prelude}{bounded(bound_s, body)}'


class System(SurveyFact):
    """Hostname, virtualization (none, kvm, systemd-nspawn, ...), kernel and OS."""

    def command(self, bound_s: int) -> str:
        body = (
            'echo "hostname=$(hostname)"; echo "virt=$(systemd-detect-virt 2>/dev/null)"; '
            'echo "kernel=$(uname -r)"; if [ -r /etc/os-release ]; then . /etc/os-release; fi; '
            'echo "os=${PRETTY_NAME:-}"'
        )
        return _script(bound_s, body)

    def parse(self, markers: dict[str, list[str]], other: list[str]) -> Outcome:
        return Outcome("ok", parse.parse_system(other))


class CPU(SurveyFact):
    """Model, sockets, cores and threads (`lscpu`, falling back on /proc/cpuinfo and nproc)."""

    def command(self, bound_s: int) -> str:
        body = 'lscpu 2>/dev/null; echo "@nproc=$(nproc --all)"; grep -m1 "^model name" /proc/cpuinfo; true'
        return _script(bound_s, body)

    def parse(self, markers: dict[str, list[str]], other: list[str]) -> Outcome:
        lines = [*other, *(f"@nproc={v}" for v in markers.get("nproc", []))]
        return Outcome("ok", parse.parse_cpu(lines))


class Memory(SurveyFact):
    """RAM total / used / free / available / cached from /proc/meminfo (GiB)."""

    def command(self, bound_s: int) -> str:
        return _script(bound_s, "cat /proc/meminfo")

    def parse(self, markers: dict[str, list[str]], other: list[str]) -> Outcome:
        return Outcome("ok", parse.parse_meminfo(other))


class DiskSpace(SurveyFact):
    """Total / used / free of the filesystem holding `path` (GiB)."""

    def command(self, bound_s: int, path: str = "/") -> str:
        return _script(bound_s, f"df -P -k {shlex.quote(path)}")

    def parse(self, markers: dict[str, list[str]], other: list[str]) -> Outcome:
        return Outcome("ok", parse.parse_df(other)[0])


class DiskSpeed(SurveyFact):
    """Sequential write then read of a `size_mb` MiB temporary file in `directory` (fio when
    present, else dd with fdatasync; the file's cached pages are dropped before reading).

    The file is removed in every case: after the bounded part returns (also when it was cut), on
    HUP/INT/TERM/PIPE (the survey's connection went away), and a leftover of a run that was killed
    outright is removed by the next survey after an hour. It refuses to run with less than four
    times its size free, so a nearly full disk (the bastion) is never filled by the survey.
    """

    def command(self, bound_s: int, directory: str, size_mb: int) -> str:
        d = shlex.quote(directory)
        size = int(size_mb)
        dd = (
            'dd if=/dev/zero of="$0" bs=1M count="$1" conv=fdatasync 2>&1 | tail -n 1 | sed "s/^/@write=/"; '
            'dd if="$0" iflag=nocache count=0 2>/dev/null; '
            'dd if="$0" of=/dev/null bs=1M 2>&1 | tail -n 1 | sed "s/^/@read=/"'
        )
        fio = (
            'fio --name=write --filename="$0" --rw=write --bs=1M --size="$1"M --end_fsync=1 '
            "--output-format=json && echo @@read@@ && "
            'fio --name=read --filename="$0" --rw=read --bs=1M --size="$1"M --output-format=json'
        )
        return (
            f'export LC_ALL=C; echo "@bound={int(bound_s)}"; d={d}; size={size}; '
            'echo "@path=$d"; echo "@size_mb=$size"; '
            '[ -d "$d" ] || { echo "@skip=no directory $d"; exit 0; }; '
            "avail=$(df -P -k \"$d\" | awk 'NR==2 {print $4}'); "
            'if [ "${avail:-0}" -lt $((size * 4 * 1024)) ]; then '
            'echo "@skip=only $((${avail:-0} / 1024)) MiB free in $d, the test needs 4 x $size MiB"; exit 0; fi; '
            f"find \"$d\" -maxdepth 1 -name '{TMP_PREFIX}-disk.*' -mmin +{LEFTOVER_MINUTES} "
            "-exec rm -f {} + 2>/dev/null; "
            f'f=$(mktemp "$d/{TMP_PREFIX}-disk.XXXXXX") || {{ echo "@rc=1"; exit 0; }}; '
            "trap 'rm -f \"$f\"' EXIT; "
            "trap 'rm -f \"$f\"; exit 129' HUP INT TERM PIPE; "
            "if command -v fio >/dev/null 2>&1; then echo @method=fio; "
            f'timeout -k 2 {int(bound_s)} sh -c {shlex.quote(fio)} "$f" "$size"; '
            "else echo @method=dd; "
            f'timeout -k 2 {int(bound_s)} sh -c {shlex.quote(dd)} "$f" "$size"; fi; '
            'rc=$?; rm -f "$f"; echo "@rc=$rc"'
        )

    def parse(self, markers: dict[str, list[str]], other: list[str]) -> Outcome:
        return Outcome("ok", parse.parse_disk_speed(markers, other))


class GPU(SurveyFact):
    """NVIDIA GPUs: model, VRAM, driver and CUDA version (`nvidia-smi`). Without nvidia-smi, the PCI
    bus (`lspci -k`) still shows a card whose driver is missing: recorded with `driver: null`, so
    a box with an A100 and no driver is "GPU present, driver missing", not a host without a GPU."""

    def command(self, bound_s: int) -> str:
        smi = (
            "nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader,nounits"
            ' && { nvidia-smi | grep -o "CUDA Version: [0-9.]*" | sed "s/^/@cuda=/"; true; }'
        )
        # The lspci fallback runs inside the bound too; with no NVIDIA device it is absent.
        pci = (
            'out=$(lspci -k 2>&1) || { echo "$out"; exit 1; }; '
            'if printf "%s\\n" "$out" | grep -q "NVIDIA"; then echo "@source=lspci"; printf "%s\\n" "$out"; '
            "else echo '@absent=no nvidia-smi (no NVIDIA GPU driver); lspci lists no NVIDIA device'; fi"
        )
        body = f"if command -v nvidia-smi >/dev/null 2>&1; then {smi}; else {pci}; fi"
        prelude = (
            "command -v nvidia-smi >/dev/null 2>&1 || command -v lspci >/dev/null 2>&1 || "
            "{ echo '@absent=no nvidia-smi (no NVIDIA GPU driver) and no lspci to look for a card'; exit 0; }; "
        )
        return _script(bound_s, body, prelude)

    def parse(self, markers: dict[str, list[str]], other: list[str]) -> Outcome:
        if (markers.get("source") or [""])[0] == "lspci":
            cards = parse.parse_lspci_gpus(other)
            if not cards:
                return Outcome("absent", reason="no nvidia-smi (no NVIDIA GPU driver); lspci lists no NVIDIA GPU")
            return Outcome("ok", {"cards": cards})
        lines = [*other, *(f"@cuda={v}" for v in markers.get("cuda", []))]
        return Outcome("ok", {"cards": parse.parse_nvidia(lines)})


class VMStorage(SurveyFact):
    """Where a Proxmox node's VM disks go, and how much room is left there: `pvesm status` (every
    storage PVE knows, KiB) and the LVM thin pools (`lvs`), which answer even when a network
    storage makes pvesm hang. Placement needs this figure, not the root filesystem's: a standard
    install has a ~100 GB `/` and the VM disks in the `local-lvm` thin pool. Absent on hosts
    that are not Proxmox nodes."""

    def command(self, bound_s: int) -> str:
        pvesm_bound = max(1, int(bound_s) - 5)
        body = (
            "if command -v pvesm >/dev/null 2>&1; then echo @@pvesm@@; "
            f'timeout -k 1 {pvesm_bound} pvesm status 2>&1; echo "@pvesm_rc=$?"; fi; '
            "if command -v lvs >/dev/null 2>&1; then echo @@lvs@@; "
            "lvs --noheadings --units b --nosuffix --separator '|' "
            '-o vg_name,lv_name,lv_attr,lv_size,data_percent 2>&1; echo "@lvs_rc=$?"; fi; true'
        )
        prelude = (
            "{ command -v pvesm >/dev/null 2>&1 || [ -d /etc/pve ]; } || "
            "{ echo '@absent=no pvesm (not a Proxmox VE node)'; exit 0; }; "
        )
        return _script(bound_s, body, prelude)

    def parse(self, markers: dict[str, list[str]], other: list[str]) -> Outcome:
        sections: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in other:
            if line in ("@@pvesm@@", "@@lvs@@"):
                current = sections.setdefault(line.strip("@"), [])
            elif current is not None:
                current.append(line)
        storages: list[dict[str, object]] = []
        problems: list[str] = []
        if "pvesm" in sections:
            rc = (markers.get("pvesm_rc") or ["0"])[-1]
            if rc == "0":
                storages.extend(parse.parse_pvesm_status(sections["pvesm"]))
            else:
                cut = rc in {str(c) for c in parse.TIMEOUT_EXIT_CODES}
                problems.append("pvesm status " + ("hung (cut)" if cut else f"failed (rc {rc})"))
        if "lvs" in sections and (markers.get("lvs_rc") or ["0"])[-1] == "0":
            storages.extend(parse.parse_lvs_thin_pools(sections["lvs"]))
        if not storages:
            raise ProbeOutputError("; ".join(problems) or "no storage in pvesm status or lvs")
        return Outcome("ok", {"storages": storages, "problems": problems})


class Identity(SurveyFact):
    """What tells one machine from another: /etc/machine-id and the global addresses (`ip -o addr`,
    else `hostname -I`). Two inventory names with one machine-id, or one reached at an address the
    other holds, are one machine measured twice."""

    def command(self, bound_s: int) -> str:
        body = (
            'echo "@machine_id=$(cat /etc/machine-id 2>/dev/null)"; '
            "if command -v ip >/dev/null 2>&1; then ip -o addr show; "
            'else echo "@hostname_i=$(hostname -I 2>/dev/null)"; fi; true'
        )
        return _script(bound_s, body)

    def parse(self, markers: dict[str, list[str]], other: list[str]) -> Outcome:
        return Outcome("ok", parse.parse_identity(markers, other))


class Proxmox(SurveyFact):
    """The node's VMs (status, memory, vCPUs) and storages (`pvesh`); absent on other hosts."""

    def command(self, bound_s: int) -> str:
        body = (
            'printf "@qemu="; pvesh get "/nodes/$(hostname)/qemu" --output-format json && echo && '
            'printf "@storage="; pvesh get "/nodes/$(hostname)/storage" --output-format json && echo'
        )
        prelude = _absent_unless("pvesh", "no pvesh (not a Proxmox VE node)") + 'echo "@node=$(hostname)"; '
        return _script(bound_s, body, prelude)

    def parse(self, markers: dict[str, list[str]], other: list[str]) -> Outcome:
        return Outcome("ok", parse.parse_proxmox(markers))


class Ceph(SurveyFact):
    """Ceph health and usage (`ceph status`); absent without the ceph CLI or a cluster config."""

    def command(self, bound_s: int) -> str:
        connect = max(1, int(bound_s) - 3)
        prelude = _absent_unless("ceph", "no ceph command") + (
            "[ -r /etc/ceph/ceph.conf ] || "
            "{ echo '@absent=ceph CLI present but no /etc/ceph/ceph.conf (no cluster here)'; exit 0; }; "
        )
        return _script(bound_s, f"ceph status --connect-timeout {connect} -f json 2>&1", prelude)

    def parse(self, markers: dict[str, list[str]], other: list[str]) -> Outcome:
        return Outcome("ok", parse.parse_ceph_status("\n".join(other)))


def _tcp_connects(count: int, bound_s: float) -> str:
    """`count` timed TCP connects from one bash process to "$t":"$port", after one untimed warm-up
    (a fresh process's first connect carries one-time costs). The stamps are bash's own
    EPOCHREALTIME around the connect, so no fork sits inside them. The loop is cut at `bound_s`:
    attempts it did not make count as lost."""
    loop = (
        'i=0; while [ $i -le $2 ]; do s=$EPOCHREALTIME; exec 3<>"/dev/tcp/$0/$1"; r=$?; e=$EPOCHREALTIME; '
        'exec 3>&-; if [ $i -gt 0 ]; then echo "@try $r $s $e"; fi; i=$((i+1)); '
        "if [ $i -le $2 ]; then sleep 0.2; fi; done"
    )
    return f'timeout -k 1 {bound_s:g} bash -c {shlex.quote(loop)} "$t" "$port" {int(count)} 2>&1; echo "@tryrc=$?"'


class StorageBoxReach(SurveyFact):
    """Whether this host reaches the Storage Box port (SSH/SFTP on 23): `tries` timed TCP connects."""

    def command(self, bound_s: int, address: str, port: int, tries: int = 3, connect_s: float = 5) -> str:
        """`connect_s`: how long the connects may take in all before the box counts as not answering."""
        loop = f"t={shlex.quote(address)}; port={int(port)}; {_tcp_connects(tries, connect_s)}"
        prelude = _absent_unless("bash", "no bash for the TCP connect test") + (
            f'echo "@port={int(port)}"; echo "@connect_s={connect_s:g}"; '
        )
        return _script(bound_s, loop, prelude)

    def parse(self, markers: dict[str, list[str]], other: list[str]) -> Outcome:
        port = int((markers.get("port") or ["0"])[0] or 0)
        connect_s = float((markers.get("connect_s") or ["5"])[0] or 5)
        return Outcome("ok", parse.parse_reachability(markers, other, port, connect_s))


class Latency(SurveyFact):
    """Round-trip time and loss from this host to each of `targets`, all targets at once.

    ICMP, as the hand benchmark measured it: with `ping -c COUNT -i 0.2` where iputils ping is
    installed, else with python3's raw socket (icmp_echo.py; the lab hosts and minimal installs
    have no ping). Only where neither can send ICMP (or with method="tcp"): the TCP connect time
    to `port` (22), one round trip too, timed inside bash; a firewall that keeps SSH for the
    bastion (as the fleet's does) makes those connects fail, while it lets ICMP through. Every
    reply is kept, so the median is known; the method is recorded with every figure.
    """

    def command(
        self, bound_s: int, targets: Sequence[str], count: int = 5, port: int = 22, method: str = "auto"
    ) -> str:
        count = int(count)
        deadline = int(count * 0.2 + 2)
        ping = f'timeout -k 1 {deadline + 2} ping -n -c {count} -i 0.2 -W 1 -w {deadline} "$t"'
        tcp = f"( {_tcp_connects(count, count * 1.2 + 2)} )"
        quoted = " ".join(shlex.quote(t) for t in targets)
        if method not in ("auto", "tcp"):
            raise ValueError(f"latency method {method!r}: auto or tcp")
        echo = shlex.quote(ICMP_ECHO.read_text(encoding="utf-8"))
        choose = (
            "if command -v ping >/dev/null 2>&1; then method=icmp; "
            f"elif command -v python3 >/dev/null 2>&1 && python3 -c {echo} --check 2>/dev/null; then "
            "method=icmp-python; else method=tcp; fi; "
            if method == "auto"
            else "method=tcp; "
        )
        body = (
            f"port={int(port)}; "
            f'dir=$(mktemp -d "/tmp/{TMP_PREFIX}-latency.XXXXXX") || exit 1; '
            "trap 'rm -rf \"$dir\"' EXIT; trap 'rm -rf \"$dir\"; exit 129' HUP INT TERM PIPE; "
            f'{choose}echo "@method=$method"; '
            f'if [ "$method" = icmp-python ]; then python3 -c {echo} {count} {quoted} 2>&1; else i=0; '
            f"for t in {quoted}; do i=$((i+1)); "
            f'if [ "$method" = icmp ]; then {ping} >"$dir/$i" 2>&1 & else {tcp} >"$dir/$i" 2>&1 & fi; done; wait; '
            f'i=0; for t in {quoted}; do i=$((i+1)); echo "@target=$t"; cat "$dir/$i"; done; fi'
        )
        return _script(bound_s, body, f'echo "@count={count}"; echo "@port={int(port)}"; ')

    def process(self, output: list[str]) -> Outcome:  # type: ignore[override]
        # The per-target blocks carry their own @try/@tryrc markers: split by target first.
        header, blocks = parse.split_targets(output)
        tail = blocks.get(list(blocks)[-1], []) if blocks else []
        rc_lines = [line for line in tail if line.startswith("@rc=")]
        markers = {**header, "rc": [line[4:] for line in rc_lines]} if rc_lines else header
        bound = float((header.get("bound") or ["0"])[0] or 0)
        if blocks:
            blocks[list(blocks)[-1]] = [line for line in tail if not line.startswith("@rc=")]
        common = parse.common_outcome(markers, [], bound)
        if common is not None:
            return common
        count = int((header.get("count") or ["5"])[0])
        port = int((header.get("port") or ["22"])[0])
        method = (header.get("method") or ["icmp"])[0]
        try:
            label = {"icmp": "icmp", "icmp-python": "icmp/python3"}.get(method, f"tcp/{port}")
            samples = {
                target: (
                    parse.parse_ping(lines, count)
                    if method == "icmp"
                    else parse.parse_timed_attempts(lines, count, label)
                )
                for target, lines in blocks.items()
            }
        except (ProbeOutputError, ValueError) as exc:
            return Outcome("error", reason=f"could not read the output: {exc}")
        return Outcome("ok", {"method": method, "targets": samples})


# The order a host runs its probes in: cheap ones first; latency before the disk test, so the
# host's own disk load never sits inside its round-trip times.
PROBES: tuple[str, ...] = (
    "system",
    "cpu",
    "memory",
    "disk",
    "identity",
    "gpu",
    "proxmox",
    "vm_storage",
    "ceph",
    "storagebox",
    "latency",
    "disk_speed",
)
