"""
The reference file server: plain blocking sockets and ``os.sendfile``, one
connection at a time.  It speaks just enough of the echofile file protocol
for the benchmark's client (greeting, AUTH accepted blindly, FILE), so the
same client measures both servers.
"""

import os
import socket
import sys


def serve(conn: socket.socket, root: str) -> None:
    conn.sendall(b"#Server Ready.\r\n")
    reader = conn.makefile("rb")
    for raw in reader:
        line = raw.strip().decode()
        command, _, argument = line.partition(" ")
        command = command.upper()
        if command == "AUTH":
            conn.sendall(b"#You are logged in.\r\n")
        elif command == "FILE":
            fd = os.open(os.path.join(root, argument), os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                conn.sendall(f"#Sending {argument} ({size} bytes).\r\n".encode())
                offset = 0
                while offset < size:
                    sent = os.sendfile(conn.fileno(), fd, offset, size - offset)
                    if sent == 0:
                        return
                    offset += sent
            finally:
                os.close(fd)
            conn.sendall(f"\r\n#File {argument} sent successfully.\r\n".encode())
        elif command == "QUIT":
            conn.sendall(b"#Bye.\r\n")
            return
        else:
            conn.sendall(b"!Invalid command.\r\n")


def main(port: int, root: str) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    while True:
        conn, _ = listener.accept()
        with conn:
            # Without NODELAY the trailer waits for a delayed ACK (40 ms a file).
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                serve(conn, root)
            except OSError:
                pass


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
