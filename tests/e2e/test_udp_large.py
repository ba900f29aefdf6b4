"""UDP echo of datagrams of every size IPv4 allows, not only those under Twisted's default buffer."""

from __future__ import annotations

import socket

from e2ehelpers import freeUdpPort


def test_udp_echo_large_datagrams(startServer) -> None:
    """
    PROTOCOL §1b: each datagram is answered with one identical datagram,
    whatever its size (up to 65507 bytes, the most IPv4 UDP carries).
    """
    port = freeUdpPort()
    server = startServer("--echo-udp", f"127.0.0.1:{port}")
    server.waitLog(rf"starting on {port}\b")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        sizes = {}
        for size in (8192, 8193, 16384, 65507):
            datagram = bytes(range(256)) * (size // 256) + b"u" * (size % 256)
            s.sendto(datagram, ("127.0.0.1", port))
            reply, _ = s.recvfrom(65536)
            sizes[size] = len(reply) if reply != datagram else size
    assert sizes == {8192: 8192, 8193: 8193, 16384: 16384, 65507: 65507}, "sent size -> echoed size"
