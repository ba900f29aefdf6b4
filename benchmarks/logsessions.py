"""
Sessions for the log-volume benchmark (run as a subprocess by run.py).

    python logsessions.py PORT PASSWORD SHAPE COUNT

Runs COUNT files sessions one after the other, each of SHAPE:

- ``file-quit``: greeting, AUTH, FILE notes.txt (the body read to its trailer), QUIT;
- ``greet-quit``: greeting, QUIT;
- ``greet-eof``: greeting, then the client shuts its sending side (``nc -N``).

Each session waits for the server to close, so that its close line is written
before the next session starts.  Prints one JSON line: ``{"sessions": COUNT}``.
"""

import json
import socket
import sys


def readUntilClosed(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def session(port: int, password: str, shape: str) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        if shape == "file-quit":
            sock.sendall(f"AUTH {password}\r\nFILE notes.txt\r\nQUIT\r\n".encode())
        elif shape == "greet-quit":
            sock.sendall(b"QUIT\r\n")
        elif shape == "greet-eof":
            sock.shutdown(socket.SHUT_WR)
        else:
            raise SystemExit(f"unknown shape {shape!r}")
        data = readUntilClosed(sock)
        if not data.startswith(b"#"):
            raise SystemExit(f"unexpected reply: {data[:200]!r}")
        if shape == "file-quit" and b"sent successfully." not in data:
            raise SystemExit(f"FILE failed: {data[-200:]!r}")


def main() -> None:
    port, password, shape, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    for _ in range(count):
        session(port, password, shape)
    print(json.dumps({"sessions": count}))


if __name__ == "__main__":
    main()
