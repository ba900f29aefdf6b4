"""
Chat on the real ``twistd -n echofile`` (PROTOCOL.md revision 2, "Chat names"):
the service tree wires one chat service into the realm and the sessions, so
four people on the shared default account are four chat names.
"""

from __future__ import annotations

from contextlib import ExitStack

from e2ehelpers import ALICE, Conn, Server


def test_four_guests_and_an_account_chat_by_name(server: Server) -> None:
    with ExitStack() as stack:
        guests: list[Conn] = []
        for _ in range(4):
            conn = stack.enter_context(server.files())
            conn.login()
            guests.append(conn)
        alice = stack.enter_context(server.files())
        assert alice.line() == b"#Server Ready."
        assert alice.command(f"USER {ALICE[0]}") == f"#User {ALICE[0]} accepted, send AUTH.".encode()
        assert alice.command(f"AUTH {ALICE[1]}") == b"#You are logged in."

        assert alice.command("WHO") == b"#5 users online."
        assert alice.lines(5) == [b"alice", b"~guest1", b"~guest2", b"~guest3", b"~guest4"]

        assert guests[0].command("NICK ada") == b"#You are now ~ada."
        for other in (*guests[1:], alice):
            assert other.line() == b"*[server]: ~guest1 is now ~ada."
        assert guests[1].command("NICK ADA") == b"!Nickname ~ADA is in use."
        assert alice.command("NICK bob") == b"!Only guest sessions have nicknames."

        assert alice.command("MSG ~ada hello ada") == b"#Sent to ~ada."
        assert guests[0].line() == b"*alice (private): hello ada"
        assert guests[0].command("MSG guest anyone?") == b"!No such user online: guest."
        assert guests[2].command("SAY hi all") == b"#Said."
        for other in (guests[0], guests[1], guests[3], alice):
            assert other.line() == b"*~guest3: hi all"

        assert guests[3].command("QUIT") == b"#Bye."
        assert guests[1].command("WHO") == b"#4 users online."
        assert guests[1].lines(4) == [b"alice", b"~ada", b"~guest2", b"~guest3"]
