"""Chat names (PROTOCOL.md revision 2): ~guest<N> per guest session, NICK, MSG by chat name."""

from __future__ import annotations

import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.task import Clock

from echofile.chat import ChatService, GuestNumbers
from support import connect, drainTransfer, loggedIn, makeFilesFactory, replies


@pytest.fixture
def factory(served):
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice="pw", bob="pw")
    return makeFilesFactory(served, Clock(), checkers=[checker])


def guests(factory, count: int, firstPort: int = 1):
    return [loggedIn(factory, "guest", firstPort + i) for i in range(count)]


def who(protocol, transport) -> list[bytes]:
    replies(transport)
    protocol.dataReceived(b"WHO\r\n")
    return replies(transport)


# -- names at login ---------------------------------------------------------------------------


def test_four_guests_get_distinct_names(factory):
    sessions = guests(factory, 4)
    assert who(*sessions[0]) == [b"#4 users online.", b"~guest1", b"~guest2", b"~guest3", b"~guest4"]


def test_named_accounts_and_guests_in_who(factory):
    loggedIn(factory, "bob", 1)
    alice = loggedIn(factory, "alice", 2)
    loggedIn(factory, "alice", 3)
    guests(factory, 2, firstPort=4)
    assert who(*alice) == [b"#4 users online.", b"alice", b"bob", b"~guest1", b"~guest2"]


def test_a_guest_gets_the_smallest_free_number(factory):
    sessions = guests(factory, 3)
    sessions[1][0].connectionLost(None)
    sessions[0][0].dataReceived(b"QUIT\r\n")
    newcomer = loggedIn(factory, "guest", 10)
    assert who(*newcomer) == [b"#2 users online.", b"~guest1", b"~guest3"]
    later = loggedIn(factory, "guest", 11)
    assert who(*later) == [b"#3 users online.", b"~guest1", b"~guest2", b"~guest3"]


def test_guest_numbers_skip_a_number_a_nickname_holds(factory):
    first, firstT = loggedIn(factory, "guest", 1)
    first.dataReceived(b"NICK Guest2\r\n")  # frees 1, takes 2 (case-insensitively)
    assert replies(firstT) == [b"#You are now ~Guest2."]
    second = loggedIn(factory, "guest", 2)
    third = loggedIn(factory, "guest", 3)
    assert who(*third) == [b"#3 users online.", b"~Guest2", b"~guest1", b"~guest3"]
    first.connectionLost(None)  # gives 2 back
    fourth = loggedIn(factory, "guest", 4)
    assert who(*fourth) == [b"#3 users online.", b"~guest1", b"~guest2", b"~guest3"]
    assert who(*second)[1:] == [b"~guest1", b"~guest2", b"~guest3"]


def test_guest_number_heap_stays_bounded_under_churn():
    numbers = GuestNumbers()
    taken = {numbers.take(lambda n: False) for _ in range(3)}
    assert taken == {1, 2, 3}
    for _ in range(10000):  # the same number released again and again
        numbers.release(2)
    assert len(numbers._free) == 1
    assert numbers.take(lambda n: False) == 2


# -- SAY and MSG by chat name -----------------------------------------------------------------


def test_say_shows_the_guest_name(factory):
    (one, oneT), (two, twoT) = guests(factory, 2)
    one.dataReceived(b"SAY hi all\r\n")
    assert replies(oneT) == [b"#Said."]
    assert replies(twoT) == [b"*~guest1: hi all"]


def test_msg_reaches_only_that_guest(factory):
    alice, aliceT = loggedIn(factory, "alice", 1)
    (one, oneT), (two, twoT), (three, threeT) = guests(factory, 3, firstPort=2)
    alice.dataReceived(b"MSG ~guest2 psst\r\n")
    assert replies(aliceT) == [b"#Sent to ~guest2."]
    assert (replies(oneT), replies(twoT), replies(threeT)) == ([], [b"*alice (private): psst"], [])
    three.dataReceived(b"MSG alice back\r\nMSG ~guest1 hello one\r\n")
    assert replies(threeT) == [b"#Sent to alice.", b"#Sent to ~guest1."]
    assert replies(aliceT) == [b"*~guest3 (private): back"]
    assert replies(oneT) == [b"*~guest3 (private): hello one"]
    assert replies(twoT) == []


def test_msg_guest_no_longer_reaches_every_guest(factory):
    (one, oneT), (two, twoT) = guests(factory, 2)
    one.dataReceived(b"MSG guest hi\r\n")
    assert replies(oneT) == [b"!No such user online: guest."]
    assert replies(twoT) == []


def test_msg_matches_the_chat_name_exactly(factory):
    alice, aliceT = loggedIn(factory, "alice", 1)
    guest, guestT = loggedIn(factory, "guest", 2)
    guest.dataReceived(b"MSG Alice hi\r\nMSG guest1 hi\r\n")
    alice.dataReceived(b"MSG ~Guest1 hi\r\nMSG guest1 hi\r\n")
    assert replies(guestT) == [b"!No such user online: Alice.", b"!No such user online: guest1."]
    assert replies(aliceT) == [b"!No such user online: ~Guest1.", b"!No such user online: guest1."]


def test_msg_never_echoes_to_the_senders_session(factory):
    alice1, alice1T = loggedIn(factory, "alice", 1)
    alice2, alice2T = loggedIn(factory, "alice", 2)
    alice1.dataReceived(b"MSG alice note to self\r\n")
    assert replies(alice1T) == [b"#Sent to alice."]
    assert replies(alice2T) == [b"*alice (private): note to self"]
    alice2.connectionLost(None)
    alice1.dataReceived(b"MSG alice again\r\n")  # the sender's own session is all there is
    assert replies(alice1T) == [b"!No such user online: alice."]


def test_a_guest_cannot_message_itself(factory):
    guest, guestT = loggedIn(factory, "guest", 1)
    guest.dataReceived(b"MSG ~guest1 hi\r\n")
    assert replies(guestT) == [b"!No such user online: ~guest1."]


# -- NICK -------------------------------------------------------------------------------------


def test_nick_renames_and_tells_everyone_else(factory):
    alice, aliceT = loggedIn(factory, "alice", 1)
    (one, oneT), (two, twoT) = guests(factory, 2, firstPort=2)
    one.dataReceived(b"NICK ada\r\n")
    assert replies(oneT) == [b"#You are now ~ada."]
    assert replies(aliceT) == replies(twoT) == [b"*[server]: ~guest1 is now ~ada."]
    one.dataReceived(b"SAY hi\r\nMSG alice psst\r\n")
    assert replies(twoT) == [b"*~ada: hi"]
    assert replies(aliceT) == [b"*~ada: hi", b"*~ada (private): psst"]
    alice.dataReceived(b"MSG ~ada back\r\nMSG ~guest1 hi\r\n")
    assert replies(aliceT) == [b"#Sent to ~ada.", b"!No such user online: ~guest1."]
    assert replies(oneT) == [b"#Said.", b"#Sent to alice.", b"*alice (private): back"]
    assert who(alice, aliceT) == [b"#3 users online.", b"alice", b"~ada", b"~guest2"]


def test_nick_again_and_to_the_same_name(factory):
    (one, oneT), (two, twoT) = guests(factory, 2)
    one.dataReceived(b"NICK guest1\r\n")  # its own name: nothing changes, nobody is told
    assert replies(oneT) == [b"#You are now ~guest1."]
    assert replies(twoT) == []
    one.dataReceived(b"NICK Guest1\r\nNICK ada\r\nNICK Ada\r\n")  # a change of case is a change
    assert replies(oneT) == [b"#You are now ~Guest1.", b"#You are now ~ada.", b"#You are now ~Ada."]
    assert replies(twoT) == [
        b"*[server]: ~guest1 is now ~Guest1.",
        b"*[server]: ~Guest1 is now ~ada.",
        b"*[server]: ~ada is now ~Ada.",
    ]


@pytest.mark.parametrize(
    "user, lines, reply",
    [
        (None, b"NICK ada", b"!You are not logged in."),
        (None, b"NICK", b"!You are not logged in."),
        (None, b"NICK ~b@d", b"!You are not logged in."),
        ("guest", b"NICK", b"!Usage: NICK <name>"),
        ("guest", b"nick   ", b"!Usage: NICK <name>"),
        ("alice", b"NICK", b"!Usage: NICK <name>"),
        ("alice", b"NICK ada", b"!Only guest sessions have nicknames."),
        ("alice", b"NICK ~b@d", b"!Only guest sessions have nicknames."),
        ("guest", b"NICK ~ada", b"!Invalid user name."),
        ("guest", b"NICK a b", b"!Invalid user name."),
        ("guest", b"NICK [server]", b"!Invalid user name."),
        ("guest", "NICK ad\u00e1".encode(), b"!Invalid user name."),
        ("guest", b"NICK ev\x01l", b"!Invalid user name."),
        ("guest", b"NICK " + b"x" * 33, b"!Invalid user name."),
    ],
)
def test_nick_errors_in_order(factory, user, lines, reply):
    if user is None:
        protocol, transport = connect(factory)
        replies(transport)
    else:
        protocol, transport = loggedIn(factory, user)
    protocol.dataReceived(lines + b"\r\n")
    assert replies(transport) == [reply]


def test_nick_longest_name(factory):
    guest, guestT = loggedIn(factory, "guest")
    guest.dataReceived(b"NICK " + b"a.b_c-D9" * 4 + b"\r\n")
    assert replies(guestT) == [b"#You are now ~" + b"a.b_c-D9" * 4 + b"."]


def test_nickname_in_use_case_insensitively(factory):
    (one, oneT), (two, twoT), (three, threeT) = guests(factory, 3)
    one.dataReceived(b"NICK Ada\r\n")
    replies(oneT), replies(twoT), replies(threeT)
    two.dataReceived(b"NICK Ada\r\nNICK ada\r\nNICK ADA\r\nNICK guest3\r\nNICK GUEST3\r\n")
    assert replies(twoT) == [
        b"!Nickname ~Ada is in use.",
        b"!Nickname ~ada is in use.",
        b"!Nickname ~ADA is in use.",
        b"!Nickname ~guest3 is in use.",
        b"!Nickname ~GUEST3 is in use.",
    ]
    assert replies(oneT) == replies(threeT) == []
    two.dataReceived(b"NICK guest1\r\n")  # ~guest1 is free since it became ~Ada
    assert replies(twoT) == [b"#You are now ~guest1."]


def test_a_nickname_may_spell_an_account_name(factory):
    """`~` keeps them apart: ~alice is a guest, alice the account."""
    alice, aliceT = loggedIn(factory, "alice", 1)
    guest, guestT = loggedIn(factory, "guest", 2)
    guest.dataReceived(b"NICK alice\r\n")
    assert replies(guestT) == [b"#You are now ~alice."]
    assert who(alice, aliceT) == [b"#2 users online.", b"alice", b"~alice"]
    alice.dataReceived(b"MSG ~alice hi\r\n")
    assert replies(guestT) == [b"*alice (private): hi"]


def test_nickname_freed_when_the_session_ends(factory):
    (one, oneT), (two, twoT), (three, threeT) = guests(factory, 3)
    one.dataReceived(b"NICK ada\r\n")
    two.dataReceived(b"NICK bea\r\n")
    one.connectionLost(None)
    two.dataReceived(b"QUIT\r\n")
    replies(threeT)
    three.dataReceived(b"NICK ADA\r\nNICK Bea\r\n")
    assert replies(threeT) == [b"#You are now ~ADA.", b"#You are now ~Bea."]


def test_nickname_freed_by_a_rename(factory):
    (one, oneT), (two, twoT) = guests(factory, 2)
    one.dataReceived(b"NICK ada\r\nNICK bea\r\n")
    two.dataReceived(b"NICK ada\r\n")
    assert replies(twoT)[-1] == b"#You are now ~ada."


def test_rename_event_waits_for_the_end_of_a_body(factory):
    (one, oneT), (two, twoT) = guests(factory, 2)
    two.dataReceived(b"FILE notes.txt\r\n")  # StringTransport: the body waits for the producer
    one.dataReceived(b"NICK ada\r\n")
    assert b"*" not in twoT.value()
    drainTransfer(twoT)
    assert twoT.value().endswith(b"#File notes.txt sent successfully.\r\n*[server]: ~guest1 is now ~ada.\r\n")


def test_the_service_refuses_to_rename_an_account():
    chat = ChatService()
    session = object()
    assert chat.join(session, "alice", guest=False) == "alice"
    with pytest.raises(ValueError):
        chat.rename(session, "ada")
