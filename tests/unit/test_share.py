"""Path confinement and listing rules of the avatar, on a real temporary folder."""

from __future__ import annotations

import os
import stat

import pytest

from echofile.share import MAX_SYMLINKS, NotAvailable, Share, Tree, splitName


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

    def denied(path, flags, *args, **kwargs):
        if str(path).endswith("notes.txt"):
            raise PermissionError(13, "Permission denied", path)
        return realOpen(path, flags, *args, **kwargs)

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


# -- names that name a folder, hidden and unclean names ------------------------------


@pytest.mark.parametrize("name", ["notes.txt/.", "notes.txt/..", "notes.txt\\.", "docs/readme.txt/.", "docs/.", "docs/.."])
def test_a_name_ending_in_dot_names_a_folder(share, name):
    """``notes.txt/.`` gets the same answer as ``notes.txt/``: FILE refuses it."""
    with pytest.raises(NotAvailable):
        share.open(name)


def test_dot_segments_inside_a_name_still_work(share):
    share.open("./docs/./readme.txt").close()
    share.open("docs/../notes.txt").close()
    assert [e.name for e in share.list("docs/.")] == ["readme.txt"]


@pytest.fixture
def dotted(served):
    (served / ".git").mkdir()
    (served / ".git" / "config").write_text("[remote]\n")
    (served / ".env").write_text("SECRET=1\n")
    (served / "docs" / ".hidden").write_text("h")
    os.symlink(".git/config", served / "git-config")
    os.symlink(".git", served / "git-dir")
    os.symlink("docs/../.env", served / "env-link")
    return served


HIDDEN = [".git/config", ".env", "docs/.hidden", "git-config", "git-dir/config", "env-link", "/.env", "\\.git\\config"]


@pytest.mark.parametrize("name", HIDDEN)
def test_dotfiles_are_not_served_by_default(dotted, share, name):
    """Hidden names, also when reached through a symlink inside the root."""
    with pytest.raises(NotAvailable):
        share.open(name)


def test_dotfiles_are_not_listed_by_default(dotted, share):
    assert [e.name for e in share.list("/")] == ["binary.bin", "docs", "empty.bin", "notes.txt", "with space.txt"]
    assert [e.name for e in share.list("docs")] == ["readme.txt"]
    for name in [".git", "git-dir"]:
        with pytest.raises(NotAvailable):
            share.list(name)


def test_dotfiles_option_serves_and_lists_them(dotted):
    share = Share(Tree(os.fspath(dotted), dotfiles=True), "guest")
    for name in HIDDEN:
        share.open(name).close()
    names = {e.name for e in share.list("/")}
    assert {".git", ".env", "git-config", "git-dir", "env-link"} <= names
    assert [e.name for e in share.list("git-dir")] == ["config"]


@pytest.mark.parametrize("name", ["tab\tname", "csi\u009bJ.txt", "rlo\u202etxt.exe", "sep\u2028x.txt", "esc\x1b[2J"])
def test_unclean_names_are_never_served_by_name(served, share, name):
    """What LIST leaves out (control characters) is not served by name either, nor through a link."""
    (served / name).write_bytes(b"x")
    os.symlink(name, served / "clean-link")
    with pytest.raises(NotAvailable):
        share.open(name)
    with pytest.raises(NotAvailable):
        share.open("clean-link")
    assert "clean-link" not in [e.name for e in share.list("/")]


def test_names_with_a_backslash_are_neither_listed_nor_served(served, share):
    """
    A client's ``\\`` separates segments, so it cannot name an entry whose
    name has one: listing ``back\\slash`` offered a name that FILE then
    refused.  Such an entry is left out, as an unclean one, and not served
    through a link either.
    """
    (served / "back\\slash").write_bytes(b"x")
    os.symlink("back\\slash", served / "to-backslash")
    names = [e.name for e in share.list("/")]
    assert "back\\slash" not in names and "to-backslash" not in names
    with pytest.raises(NotAvailable):
        share.open("to-backslash")


# -- symlinks followed by hand -------------------------------------------------------------


def test_dotdot_inside_link_targets(served, tmp_path, share):
    (served / "docs" / "sub").mkdir()
    os.symlink("../notes.txt", served / "docs" / "up")
    os.symlink("../../notes.txt", served / "docs" / "sub" / "upup")
    os.symlink("..", served / "docs" / "parent")
    os.symlink("../../root-other/secret", served / "docs" / "out")
    os.symlink("sub/../../notes.txt", served / "docs" / "zigzag")
    (tmp_path / "root-other").mkdir()
    (tmp_path / "root-other" / "secret").write_text("s")
    for name in ["docs/up", "docs/sub/upup", "docs/zigzag", "docs/parent/notes.txt"]:
        opened = share.open(name)
        assert os.read(opened.fd, 100) == b"hello notes\n"
        opened.close()
    assert "docs" in [e.name for e in share.list("docs/parent")]
    with pytest.raises(NotAvailable):
        share.open("docs/out")
    names = {e.name: e.size for e in share.list("docs")}
    assert names["up"] == 12 and names["parent"] is None and "out" not in names


def test_absolute_link_targets_inside_and_outside(served, share):
    os.symlink(os.path.realpath(served / "notes.txt"), served / "abs-in")
    os.symlink(os.path.realpath(served), served / "abs-root")
    os.symlink(os.path.realpath(served) + "-other/secret", served / "abs-sibling")
    share.open("abs-in").close()
    share.open("abs-root/docs/readme.txt").close()
    with pytest.raises(NotAvailable):
        share.open("abs-sibling")


def test_link_chains_stop_at_the_kernel_limit(served, share):
    """40 links in a row are followed (as the kernel would), 41 are refused, a loop is refused."""
    os.symlink("notes.txt", served / "chain0")
    for i in range(1, MAX_SYMLINKS + 1):
        os.symlink(f"chain{i - 1}", served / f"chain{i}")
    share.open(f"chain{MAX_SYMLINKS - 1}").close()
    with pytest.raises(NotAvailable):
        share.open(f"chain{MAX_SYMLINKS}")
    os.symlink("loop-b", served / "loop-a")
    os.symlink("loop-a", served / "loop-b")
    for name in ["loop-a", "loop-a/x"]:
        with pytest.raises(NotAvailable):
            share.open(name)
    with pytest.raises(NotAvailable):
        share.list("loop-a")


# -- the swap race, made deterministic ------------------------------------------------------


OUTSIDE = b"outside the root\n"


def raceTree(tmp_path):
    """root/race/d/ (a real folder) and root/race/l -> a folder outside; swap() exchanges them."""
    root = tmp_path / "root"
    (root / "race" / "d").mkdir(parents=True)
    (root / "race" / "d" / "passwd").write_bytes(b"inside\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "passwd").write_bytes(OUTSIDE)
    (tmp_path / "outside" / "outside-only").write_bytes(b"")
    os.symlink("../../outside", root / "race" / "l")

    def swap():
        race = root / "race"
        os.rename(race / "d", race / "tmp")
        os.rename(race / "l", race / "d")
        os.rename(race / "tmp", race / "l")

    return root, swap


class SwapAfter:
    """Swap the tree once, right after the C{n}-th file-system call the server makes."""

    CALLS = [(os, "open"), (os, "readlink"), (os, "stat"), (os, "lstat"), (os, "scandir"), (os.path, "realpath")]

    def __init__(self, monkeypatch, n, swap):
        self.n, self.swap, self.calls, self.swapped = n, swap, 0, False
        for module, name in self.CALLS:
            monkeypatch.setattr(module, name, self._wrap(getattr(module, name)))

    def _wrap(self, real):
        def call(*args, **kwargs):
            try:
                return real(*args, **kwargs)
            finally:
                self.calls += 1
                if self.calls == self.n and not self.swapped:
                    self.swapped = True
                    self.swap()

        return call


def test_a_folder_swapped_at_any_point_of_a_request_never_leads_outside(tmp_path, monkeypatch):
    """
    Swap ``race/d`` for a symlink out of the root after the 1st, 2nd, ...
    file-system call of a FILE and a LIST: every interleaving of the swap.
    The answer is the inside file (or folder) or a refusal, never outside.
    """
    n = 1
    while True:
        base = tmp_path / str(n)
        root, swap = raceTree(base)
        share = Share(os.fspath(root), "guest")
        with monkeypatch.context() as patched:
            race = SwapAfter(patched, n, swap)
            try:
                opened = share.open("race/d/passwd")
            except NotAvailable:
                pass
            else:
                assert os.read(opened.fd, 100) == b"inside\n", f"swap after call {n}"
                opened.close()
            try:
                names = [e.name for e in share.list("race/d")]
            except NotAvailable:
                pass
            else:
                assert names == ["passwd"], f"swap after call {n}"
        share.tree.close()
        if not race.swapped:  # n is past the last call: every point was tried
            break
        n += 1
    assert n > 5


# -- descriptors -----------------------------------------------------------------------------


def openDescriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_descriptor_leaks_on_any_path(served, dotted, share):
    """Served, refused for every reason, listed, listing refused: the count of open fds is unchanged."""
    (served / "docs" / "sub").mkdir()
    os.symlink("../notes.txt", served / "docs" / "sub" / "up-wrong")
    os.symlink("../../notes.txt", served / "docs" / "sub" / "up")
    os.symlink("/etc", served / "etc")
    os.symlink("loop", served / "loop")
    os.mkfifo(served / "fifo")
    names = ["notes.txt", "docs/readme.txt", "docs/sub/up", "docs/sub/up-wrong", "etc/passwd", "loop", "fifo",
             "docs", "nope", "docs/nope/x", "notes.txt/x", "../x", ".git/config", "git-dir/config", "docs/sub/../..",
             "docs/sub/up/x"]
    share.open("notes.txt").close()
    share.list("/")
    before = openDescriptors()
    for _ in range(3):
        for name in names:
            try:
                share.open(name).close()
            except NotAvailable:
                pass
            try:
                share.list(name)
            except NotAvailable:
                pass
    assert openDescriptors() == before


def test_the_root_is_opened_once(served):
    """One handle on the root for the tree, not one per request; closed with the tree."""
    before = openDescriptors()
    tree = Tree(os.fspath(served))
    share = Share(tree, "guest")
    assert openDescriptors() == before + 1
    share.open("notes.txt").close()
    share.list("docs")
    assert openDescriptors() == before + 1
    tree.close()
    assert openDescriptors() == before
