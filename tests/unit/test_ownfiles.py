"""The server's own pid and log files are never served or listed, even inside --root."""

from __future__ import annotations

import os

from twisted.internet.task import Clock

from echofile.ownfiles import OwnFiles
from support import connect, makeFilesFactory, replies, runHere


def test_own_files_are_known_by_folder_and_name_before_they_exist(served):
    own = OwnFiles([str(served / "twistd.pid"), str(served / "logs" / "missing-folder.log"), None, ""])
    assert own
    fd = os.open(served, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = own.inFolder(fd)
    finally:
        os.close(fd)
    assert names == {"twistd.pid"}
    assert OwnFiles.matches({"twistd.log"}, "twistd.log.3") and not OwnFiles.matches({"twistd.log"}, "twistd.logx")
    assert not OwnFiles()


def test_pid_and_log_files_in_the_root_are_neither_served_nor_listed(served, monkeypatch):
    for name in ("twistd.pid", "twistd.log", "twistd.log.1"):
        (served / name).write_text("12345\n")
    (served / "docs" / "link.pid").symlink_to("../twistd.pid")
    monkeypatch.chdir(served)
    from echofile.tree import Tree

    tree = Tree(str(served), runInThread=runHere, clock=Clock(), ownFiles=OwnFiles(["twistd.pid", "twistd.log"]))
    factory = makeFilesFactory(tree.path, Clock())
    factory.portal.realm.tree = tree
    protocol, transport = connect(factory)
    protocol.dataReceived(b"AUTH correct horse\r\n")
    replies(transport)
    protocol.dataReceived(b"FILE twistd.pid\r\nFILE twistd.log.1\r\nFILE docs/link.pid\r\nLIST\r\n")
    lines = replies(transport)
    assert lines[:3] == [
        b"!File twistd.pid could not be opened.",
        b"!File twistd.log.1 could not be opened.",
        b"!File docs/link.pid could not be opened.",
    ]
    assert not [line for line in lines[3:] if b"twistd" in line]
