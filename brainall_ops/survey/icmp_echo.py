"""ICMP echo from a host that has python3 but no `ping` (the survey sends this file's text to run
with `python3 -c`; it imports nothing from the toolkit). Standard library only, IPv4.

    python3 -c "$(cat icmp_echo.py)" COUNT TARGET...

Sends COUNT echo requests 0.2 s apart to every target at once over one raw socket (root, or
CAP_NET_RAW), waits 1 s for the last replies, then prints, per target in the order given:

    @target=TARGET
    @try 0 0 RTT_SECONDS      (a reply)    or    @try 1 0 0    (no reply)

which the survey parses like its TCP connect attempts. `--check` only opens the socket: exit 0
when ICMP can be sent from here.
"""

import os
import select
import socket
import struct
import sys
import time

INTERVAL_S = 0.2
LAST_WAIT_S = 1.0
PAYLOAD = b"brainall-survey"


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def main(argv: list[str]) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    if argv[:1] == ["--check"]:
        return 0
    count, targets = int(argv[0]), argv[1:]
    ident = os.getpid() & 0xFFFF
    addresses: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    for target in targets:
        try:
            addresses[target] = socket.gethostbyname(target)
        except OSError as exc:
            addresses[target], errors[target] = None, f"{target}: {exc.strerror or exc}"
    sent: dict[tuple[str, int], float] = {}
    replies: dict[tuple[str, int], float] = {}

    def receive(until: float) -> None:
        while time.monotonic() < until:
            ready, _, _ = select.select([sock], [], [], max(0.0, until - time.monotonic()))
            if not ready:
                return
            data, (source, _) = sock.recvfrom(2048)
            now = time.monotonic()
            header = (data[0] & 0x0F) * 4
            kind, _, _, reply_id, seq = struct.unpack("!BBHHH", data[header : header + 8])
            key = (source, seq)
            if kind == 0 and reply_id == ident and key in sent and key not in replies:
                replies[key] = now - sent[key]

    for seq in range(1, count + 1):
        for target, address in addresses.items():
            if address is None:
                continue
            unsummed = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + PAYLOAD
            packet = struct.pack("!BBHHH", 8, 0, checksum(unsummed), ident, seq) + PAYLOAD
            sent[(address, seq)] = time.monotonic()
            try:
                sock.sendto(packet, (address, 0))
            except OSError as exc:
                errors[target] = f"{target}: {exc.strerror or exc}"
        receive(time.monotonic() + (INTERVAL_S if seq < count else LAST_WAIT_S))

    for target, address in addresses.items():
        print(f"@target={target}")
        if target in errors:
            print(errors[target])
        for seq in range(1, count + 1):
            rtt = replies.get((address, seq)) if address else None
            print(f"@try 0 0 {rtt:.9f}" if rtt is not None else "@try 1 0 0")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
