"""
UDP echo loops, for real: one datagram spoofed from the server's own
address and port (on loopback) made it echo to itself for ever at 100 % CPU.
"""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from e2ehelpers import cpuSeconds, freeUdpPort

INTERVAL = 2.0


def sendSpoofed(source: tuple[str, int], destination: tuple[str, int], payload: bytes) -> None:
    """One UDP datagram with a forged source, through a raw socket (needs root; loopback only)."""
    assert source[0] == destination[0] == "127.0.0.1"
    header = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0)  # checksum 0: none (IPv4)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) as raw:
        raw.sendto(header + payload, (destination[0], 0))


def test_a_datagram_from_our_own_port_does_not_loop(startServer) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test sends a spoofed datagram through a raw socket: run it as root")
    port = freeUdpPort()
    server = startServer("--echo-udp", f"127.0.0.1:{port}")
    server.waitLog(rf"starting on {port}\b")
    sendSpoofed(("127.0.0.1", port), ("127.0.0.1", port), b"echo yourself")
    before, started = cpuSeconds(server.pid), time.monotonic()
    time.sleep(INTERVAL)
    used, elapsed = cpuSeconds(server.pid) - before, time.monotonic() - started
    # A loop keeps one core busy (about `elapsed` CPU seconds); an idle server uses about none.
    assert used < 0.25 * elapsed, f"the server used {used:.2f} CPU seconds in {elapsed:.2f} s"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # and it still echoes
        s.settimeout(5)
        s.sendto(b"still here", ("127.0.0.1", port))
        assert s.recvfrom(100)[0] == b"still here"
