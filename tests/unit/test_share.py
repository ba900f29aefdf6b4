"""Path confinement and listing rules of the avatar, on a real temporary folder."""

from __future__ import annotations

import os
import stat

import pytest

from echofile.share import NotAvailable, Share, splitName


@pytest.fixture
def share(served):
    return Share(os.fspath(served), "guest")


def test_split_name():
    assert splitName("/a\\b//./c/") == ["a", "b", "c"]
    assert splitName("a/../b") == ["b"]
    assert splitName("") == []
    with pytest.raises(NotAvailable):
        splitName("a/../../b")


def test_open_regular_file(share):
    opened = share.open("notes.txt")
    try:
        assert opened.size == 12
        assert os.read(opened.fd, 100) == b"hello notes\n"
    finally:
        opened.close()


def test_sibling_with_root_name_as_prefix(served, share):
    """String-prefix containment would let ../root-other/ through."""
    sibling = served.parent / (served.name + "-other")
    sibling.mkdir()
    (sibling / "secret").write_text("s")
    with pytest.raises(NotAvailable):
        share.open(f"../{served.name}-other/secret")
    os.symlink(sibling / "secret", served / "link-out")
    with pytest.raises(NotAvailable):
        share.open("link-out")
    assert "link-out" not in [e.name for e in share.list("/")]


def test_climbing_back_into_the_root_is_refused(served, share):
    with pytest.raises(NotAvailable):
        share.open(f"../{served.name}/notes.txt")


def test_symlinks_inside_the_root(served, share):
    os.symlink("docs/readme.txt", served / "alias.txt")
    os.symlink("docs", served / "docs-link")
    os.symlink("nowhere", served / "dangling")
    os.symlink("/etc", served / "etc")
    opened = share.open("alias.txt")
    opened.close()
    assert opened.size == 9
    names = {e.name: e.size for e in share.list("")}
    assert names["alias.txt"] == 9
    assert names["docs-link"] is None
    assert "dangling" not in names and "etc" not in names
    assert [e.name for e in share.list("docs-link")] == ["readme.txt"]
    with pytest.raises(NotAvailable):
        share.open("etc/passwd")
    with pytest.raises(NotAvailable):
        share.list("etc")


def test_symlinked_root(served, tmp_path):
    link = tmp_path / "root-link"
    os.symlink(served, link)
    share = Share(os.fspath(link), "guest")
    share.open("notes.txt").close()


def test_fifo_is_refused_without_blocking(served, share):
    os.mkfifo(served / "pipe")
    with pytest.raises(NotAvailable):
        share.open("pipe")
    assert "pipe" not in [e.name for e in share.list("/")]


def test_unreadable_file(share, monkeypatch):
    """EACCES on open (we run as root here, so simulate it) is the usual error."""
    realOpen = os.open

    def denied(path, flags, *args):
        if str(path).endswith("notes.txt"):
            raise PermissionError(13, "Permission denied", path)
        return realOpen(path, flags, *args)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(NotAvailable):
        share.open("notes.txt")


def test_directories_and_nul_and_empty(share):
    for name in ["docs", "", "/", "a\x00b", "docs\x00/readme.txt", "notes.txt/", "docs\\readme.txt\\"]:
        with pytest.raises(NotAvailable):
            share.open(name)


def test_listing_leaves_out_unclean_names(served, share):
    (served / "tab\tname").write_text("x")
    os.mkfifo(served / "fifo")
    bad = os.fsencode(served) + b"/latin1-\xe9"
    with open(bad, "wb") as f:
        f.write(b"x")
    names = [e.name for e in share.list("/")]
    assert names == ["binary.bin", "docs", "empty.bin", "notes.txt", "with space.txt"]


def test_listing_sorted_by_utf8_bytes(served, share):
    for name in ["Zeta", "alpha", "\u00e9t\u00e9", "_x"]:
        (served / "docs" / name).write_text("")
    names = [e.name for e in share.list("docs")]
    assert names == sorted(names, key=lambda n: n.encode("utf-8"))
    assert names[0] == "Zeta" and names[-1] == "\u00e9t\u00e9"


def test_files_opened_nonblocking_and_cloexec(share):
    opened = share.open("notes.txt")
    try:
        assert not os.get_inheritable(opened.fd)
        assert stat.S_ISREG(os.fstat(opened.fd).st_mode)
    finally:
        opened.close()
