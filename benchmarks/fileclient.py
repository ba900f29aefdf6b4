"""
Download client for the file benchmark (run as a subprocess by run.py).

    python fileclient.py PORT PASSWORD NAME REPEATS [tls]

Logs in once, fetches NAME REPEATS times on the same connection, checks the
byte count and the trailer, and prints one JSON line with the seconds each
transfer took (from sending FILE to the end of the trailer).  With ``tls``
it speaks TLS (certificate not verified: a benchmark on 127.0.0.1).
"""

import json
import socket
import ssl
import sys
import time

BUFFER = 4 * 1024 * 1024


class Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = b""
        self.buffer = bytearray(BUFFER)
        self.view = memoryview(self.buffer)

    def line(self) -> bytes:
        while b"\r\n" not in self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed while reading a line")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line

    def skip(self, count: int) -> None:
        """Read and discard exactly count bytes."""
        take = min(count, len(self.pending))
        self.pending = self.pending[take:]
        count -= take
        recv_into, view = self.sock.recv_into, self.view
        while count > BUFFER:
            n = recv_into(view, BUFFER)
            if not n:
                raise EOFError("short body")
            count -= n
        while count:
            n = recv_into(view, count)
            if not n:
                raise EOFError("short body")
            count -= n


def main(port: int, password: str, name: str, repeats: int, tls: bool = False) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock)
    reader = Reader(sock)
    assert reader.line().startswith(b"#"), "no greeting"
    sock.sendall(f"AUTH {password}\n".encode())
    answer = reader.line()
    assert answer.startswith(b"#"), answer
    seconds = []
    size = 0
    for _ in range(repeats):
        started = time.perf_counter()
        sock.sendall(f"FILE {name}\n".encode())
        header = reader.line()
        assert header.startswith(b"#Sending"), header
        size = int(header.rsplit(b"(", 1)[1].split(b" ", 1)[0])
        reader.skip(size)
        assert reader.line() == b"", "body not followed by CRLF"
        trailer = reader.line()
        assert trailer.startswith(b"#File"), trailer
        seconds.append(time.perf_counter() - started)
    sock.sendall(b"QUIT\n")
    sock.close()
    print(json.dumps({"size": size, "seconds": seconds}))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:6] == ["tls"])
