"""Helpers for the kernel-backend tests inside the QEMU guest: namespaces, capture, IP parsing."""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from core.dataplane.xfrm.netlink import in_netns

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800


def sh(*argv: str, netns: str | None = None, check: bool = True) -> str:
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    done = subprocess.run(full, capture_output=True, text=True, timeout=120, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(full)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


@contextlib.contextmanager
def two_namespaces(a: str, b: str) -> Iterator[None]:
    """a --veth-- b: 198.51.100.1/24 and .2/24, no default route."""
    for name in (a, b):
        sh("ip", "netns", "add", name)
    try:
        sh("ip", "link", "add", "veth-a", "netns", a, "type", "veth", "peer", "veth-b", "netns", b)
        for name, dev, address in (
            (a, "veth-a", "198.51.100.1/24"),
            (b, "veth-b", "198.51.100.2/24"),
        ):
            sh("ip", "link", "set", "lo", "up", netns=name)
            sh("ip", "addr", "add", address, "dev", dev, netns=name)
            sh("ip", "link", "set", dev, "up", netns=name)
        yield
    finally:
        for name in (a, b):
            sh("ip", "netns", "del", name, check=False)


@dataclass(frozen=True)
class Frame:
    outgoing: bool
    data: bytes  # from the IP header on (SOCK_DGRAM strips the link header)


class Sniffer:
    """Queues every IPv4 packet seen on one interface of a namespace until read."""

    def __init__(self, netns: str, ifname: str) -> None:
        def make() -> socket.socket:
            return socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))

        self._sock = in_netns(netns, make)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self._sock.bind((ifname, ETH_P_ALL))

    def frames(self) -> list[Frame]:
        found: list[Frame] = []
        while True:
            try:
                data, address = self._sock.recvfrom(65535, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return found
            if data[:1] and data[0] >> 4 == 4:
                found.append(Frame(outgoing=address[2] == socket.PACKET_OUTGOING, data=data))

    def close(self) -> None:
        self._sock.close()


@dataclass(frozen=True)
class Ipv4:
    tos: int
    proto: int
    src: str
    dst: str
    payload: bytes
    raw: bytes


def parse_ipv4(data: bytes) -> Ipv4:
    header_len = (data[0] & 0x0F) * 4
    total = struct.unpack_from("!H", data, 2)[0]
    return Ipv4(
        tos=data[1],
        proto=data[9],
        src=socket.inet_ntoa(data[12:16]),
        dst=socket.inet_ntoa(data[16:20]),
        payload=data[header_len:total],
        raw=data[:total],
    )


def esp_of(packet: Ipv4) -> bytes | None:
    """The ESP bytes (SPI..ICV) of an outer packet: raw ESP or ESP in UDP 4500."""
    if packet.proto == 50:
        return packet.payload
    if packet.proto == 17 and len(packet.payload) > 12:
        dport = struct.unpack_from("!H", packet.payload, 2)[0]
        esp = packet.payload[8:]
        if dport == 4500 and esp[:4] != b"\0\0\0\0":  # non-ESP marker = IKE
            return esp
    return None


def tcp_mss_of_syn(packet: Ipv4) -> int | None:
    """The MSS option of a TCP SYN, None for other packets."""
    if packet.proto != 6 or len(packet.payload) < 20:
        return None
    tcp = packet.payload
    if not tcp[13] & 0x02:
        return None
    offset, end = 20, (tcp[12] >> 4) * 4
    while offset < end:
        kind = tcp[offset]
        if kind == 0:
            break
        if kind == 1:
            offset += 1
            continue
        length = tcp[offset + 1]
        if kind == 2 and length == 4:
            return int(struct.unpack_from("!H", tcp, offset + 2)[0])
        offset += max(length, 2)
    return None
