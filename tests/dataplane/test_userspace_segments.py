"""ESP in UDP: UDP GSO sends (how a batch is cut into runs, the fallbacks) and when
packets the daemon hands over are written.

No root: the backend's packet path is driven with a recording socket in place of the
daemon's port-4500 socket, or a loopback socket and a pipe in place of the TUN.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import time
from typing import Any

from core.dataplane.model import InterfaceSpec, if_id_for
from core.dataplane.userspace.backend import (
    UDP_SEGMENT,
    UserspaceDataplane,
    _Interface,
    _Sa,
)
from core.dataplane.userspace.esp import EspSa
from core.dataplane.userspace.packet import build_ipv4_header
from tests.dataplane.scenario import OUTER_A, OUTER_B, sa_pair

DESTINATION = (str(OUTER_B), 4500)


class RecordingSocket:
    """Records what is sent; `fail_gso` makes every UDP GSO send fail with that errno."""

    def __init__(self, fail_gso: int | None = None) -> None:
        self.fail_gso = fail_gso
        self.sent: list[tuple[bytes, int | None]] = []  # (data, segment size or None)

    def sendto(self, data: bytes, destination: tuple[str, int]) -> int:
        assert destination == DESTINATION
        self.sent.append((data, None))
        return len(data)

    def sendmsg(
        self, buffers: list[bytes], ancillary: list[tuple[int, int, bytes]], flags: int,
        destination: tuple[str, int],
    ) -> int:  # fmt: skip
        if self.fail_gso is not None:
            raise OSError(self.fail_gso, "refused")
        ((level, kind, size),) = ancillary
        assert (level, kind, flags, destination) == (socket.SOL_UDP, UDP_SEGMENT, 0, DESTINATION)
        data = b"".join(buffers)
        self.sent.append((data, int.from_bytes(size, "little")))
        return len(data)


def backend_with(sock: RecordingSocket) -> tuple[UserspaceDataplane, _Interface]:
    backend = UserspaceDataplane()
    interface = _Interface(InterfaceSpec(name="ipsec1", if_id=if_id_for(1)), -1, 1)
    out, _ = sa_pair("aes-gcm-128", 0x100, OUTER_A, OUTER_B, encap=True)
    state = _Sa(EspSa(out, 0.0), interface)
    state.sock = sock  # type: ignore[assignment]  # records instead of sending
    interface.outbound = state
    return backend, interface


def send_batch(backend: UserspaceDataplane, interface: _Interface, sizes: list[int]) -> Any:
    segments = [bytes([index % 256]) * size for index, size in enumerate(sizes)]
    interface.tx_packets += len(segments)  # _send() counts them when it queues them
    backend._send_segments(interface, segments)
    return segments


def test_runs_of_equal_size_go_out_in_one_send_each() -> None:
    sock = RecordingSocket()
    backend, interface = backend_with(sock)
    sizes = [100] * 3 + [40] + [100] * 2 + [120] + [60] * 70
    segments = send_batch(backend, interface, sizes)
    assert [(len(data), size) for data, size in sock.sent] == [
        (340, 100),  # the shorter one closes a run
        (200, 100),  # a larger one starts the next
        (180, 120),  # 120 with a shorter 60 as its tail
        (64 * 60, 60),  # at most 64 segments in one send
        (5 * 60, 60),
    ]
    assert b"".join(data for data, _ in sock.sent) == b"".join(segments)
    assert (interface.tx_packets, interface.tx_errors) == (len(sizes), 0)


def test_a_packet_alone_goes_out_in_a_plain_send() -> None:
    sock = RecordingSocket()
    backend, interface = backend_with(sock)
    send_batch(backend, interface, [100, 200])
    assert [(len(data), size) for data, size in sock.sent] == [(100, None), (200, None)]


def test_a_run_stays_within_one_ip_packet() -> None:
    sock = RecordingSocket()
    backend, interface = backend_with(sock)
    send_batch(backend, interface, [1480] * 50)
    assert all(len(data) <= 0xFFFF - 48 for data, _ in sock.sent)
    assert sum(len(data) for data, _ in sock.sent) == 50 * 1480 and len(sock.sent) == 2


def test_a_kernel_without_udp_gso_gets_the_packets_one_by_one_from_then_on() -> None:
    sock = RecordingSocket(fail_gso=errno.EIO)
    backend, interface = backend_with(sock)
    segments = send_batch(backend, interface, [100] * 5)
    assert sock.sent == [(segment, None) for segment in segments]
    assert not backend._udp_segmentation
    assert (interface.tx_packets, interface.tx_errors) == (5, 0)


def test_a_full_send_buffer_counts_the_run_as_errors() -> None:
    sock = RecordingSocket(fail_gso=errno.ENOBUFS)
    backend, interface = backend_with(sock)
    send_batch(backend, interface, [100] * 5 + [300])
    assert [len(data) for data, _ in sock.sent] == [300]
    assert (interface.tx_packets, interface.tx_errors) == (1, 5)
    assert backend._udp_segmentation  # a passing condition, not a missing feature


def test_no_outbound_sa_any_more_counts_the_batch_as_errors() -> None:
    sock = RecordingSocket()
    backend, interface = backend_with(sock)
    interface.outbound = None
    send_batch(backend, interface, [100] * 3)
    assert sock.sent == [] and (interface.tx_packets, interface.tx_errors) == (0, 3)


def test_the_destination_is_the_sas() -> None:
    _, interface = backend_with(RecordingSocket())
    assert interface.outbound is not None
    assert interface.outbound.destination == DESTINATION
    assert ipaddress.ip_address(DESTINATION[0]) == OUTER_B


# -- ESP in UDP handed over by the daemon ------------------------------------------------
def test_a_lone_datagram_is_written_at_once_and_a_queue_waits_for_the_batch() -> None:
    """handle_encapsulated_esp() writes queued packets to the TUN right away when no
    datagram waits on the port-4500 socket, else at the loop's next turn."""
    loop = asyncio.new_event_loop()
    encap = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        encap.bind(("127.0.0.1", 0))
        backend = UserspaceDataplane()
        backend._loop = loop
        backend.register_encap_socket(encap)
        read_end, write_end = os.pipe()  # stands in for the TUN: written packets land here
        interface = _Interface(InterfaceSpec(name="ipsec1", if_id=if_id_for(1)), write_end, 1)
        backend._interfaces["ipsec1"] = interface
        out, inbound = sa_pair("aes-gcm-128", 0x200, OUTER_B, OUTER_A, encap=True)
        backend._inbound[0x200] = _Sa(EspSa(inbound, 0.0), interface)
        sealer = EspSa(out, 0.0)
        datagram = build_ipv4_header(src=OUTER_B, dst=OUTER_A, protocol=17, payload_length=8)
        local = ("127.0.0.1", 4500)

        backend.handle_encapsulated_esp(sealer.encapsulate(datagram + bytes(8)), local, local)
        assert interface.rx_packets == 1 and backend._flush_handle is None  # at once

        sender.sendto(b"waiting", encap.getsockname())
        time.sleep(0.05)
        backend.handle_encapsulated_esp(sealer.encapsulate(datagram + bytes(8)), local, local)
        assert interface.rx_packets == 1 and backend._flush_handle is not None  # deferred
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert interface.rx_packets == 2 and interface.rx_errors == 0
        os.close(read_end)
        os.close(write_end)
    finally:
        encap.close()
        sender.close()
        loop.close()
