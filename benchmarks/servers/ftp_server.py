"""
The reference server of the concurrent-downloads benchmark: pyftpdlib's
default FTPHandler (sendfile on, as it is wherever os.sendfile exists), one
process, one user with read-only permissions on ROOT, logging at INFO to
LOG (its usual per-connection and per-transfer lines, as echofile's log
has).  Only the connection cap is changed: pyftpdlib accepts 512 sockets by
default (control and data channels together), the benchmark needs 2,000.

    python ftp_server.py PORT ROOT PASSWORD LOG
"""

import logging
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer


def main(port: int, root: str, password: str, log: str) -> None:
    logging.basicConfig(filename=log, level=logging.INFO)
    authorizer = DummyAuthorizer()
    authorizer.add_user("bench", password, root, perm="elr")
    handler = FTPHandler
    handler.authorizer = authorizer
    server = FTPServer(("127.0.0.1", port), handler, backlog=4096)
    server.max_cons = 0  # unlimited (default 512)
    server.max_cons_per_ip = 0
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
