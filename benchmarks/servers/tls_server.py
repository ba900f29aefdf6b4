"""
The reference TLS file server: a plain blocking Python ``ssl`` socket, one
connection at a time, reading the file and writing it in 256 KiB chunks
with ``sendall`` (there is no sendfile through TLS in user space).  It
speaks just enough of the echofile file protocol for the benchmark's client
(greeting, AUTH accepted blindly, FILE), so the same client measures both.

    python tls_server.py PORT ROOT CERT.pem
"""

import os
import socket
import ssl
import sys

CHUNK = 256 * 1024


def serve(conn: ssl.SSLSocket, root: str) -> None:
    conn.sendall(b"#Server Ready.\r\n")
    reader = conn.makefile("rb")
    for raw in reader:
        line = raw.strip().decode()
        command, _, argument = line.partition(" ")
        command = command.upper()
        if command == "AUTH":
            conn.sendall(b"#You are logged in.\r\n")
        elif command == "FILE":
            with open(os.path.join(root, argument), "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                conn.sendall(f"#Sending {argument} ({size} bytes).\r\n".encode())
                buffer = bytearray(CHUNK)
                view = memoryview(buffer)
                left = size
                while left:
                    n = f.readinto(view[:min(CHUNK, left)])
                    if not n:
                        return
                    conn.sendall(view[:n])
                    left -= n
            conn.sendall(f"\r\n#File {argument} sent successfully.\r\n".encode())
        elif command == "QUIT":
            conn.sendall(b"#Bye.\r\n")
            return
        else:
            conn.sendall(b"!Invalid command.\r\n")


def main(port: int, root: str, pem: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    while True:
        raw, _ = listener.accept()
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            with context.wrap_socket(raw, server_side=True) as conn:
                serve(conn, root)
        except (OSError, ssl.SSLError):
            pass
        finally:
            raw.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
