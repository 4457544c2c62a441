"""`apply` then `undo` on Cyrus IMAP, where servers differ from Dovecot: the namespace (``INBOX.x``
with separator ``.`` under Debian's settings, ``x`` with ``/`` under Cyrus 3's), COPYUID and
MOVE answers, CONDSTORE (``UNCHANGEDSINCE`` guards undo's flag changes), the 100-keyword cap.

"Exactly as before" is counted by content over every folder of the account: the multiset of
(folder, SHA-256 of the whole message, flags and keywords). Skipped without Cyrus, unless
MAILRULES_REQUIRE_CYRUS=1 (CI).
"""

from __future__ import annotations

import collections

import pytest

from mailrules.testing.daemon import account_by_content
from mailrules.testing.messages import make_message
from tests.helpers import run_cli, write_config

RULES = """
- name: dev list
  match: {header: {List-Id: dev.lists.example.org}}
  actions:
    - add_keyword: $Dev
    - flag
    - move: Lists/dev
- name: receipts
  match: {subject: receipt}
  actions:
    - copy: Archive/receipts
    - seen
    - add_keyword: $Paid
"""
DEV = {"List-Id": "Dev <dev.lists.example.org>"}


@pytest.fixture(params=["debian", "cyrus3"])
def server(request, cyrus):
    """Each namespace in turn: Debian's (``INBOX.``/``.``), then Cyrus 3's (``""``/``/``)."""
    return cyrus if request.param == "debian" else request.getfixturevalue("cyrus3")


class Box:
    """A Cyrus user's folders, as another client sees them."""

    def __init__(self, server, user) -> None:
        self.server, self.user = server, user

    def contents(self) -> collections.Counter:
        client = self.server.client(self.user)
        try:
            return account_by_content(client)
        finally:
            client.logout()

    def uids(self, folder: str, subject: str) -> list[int]:
        client = self.server.client(self.user, self.server.folder(folder))
        try:
            return client.search(["SUBJECT", subject])
        finally:
            client.logout()


class Account(Box):
    """A fresh Cyrus account with mail, some of it already carrying what the rules set, and a
    rules file and state directory for it."""

    def __init__(self, server, tmp_path, monkeypatch) -> None:
        super().__init__(server, server.add_user())
        server.deliver_files(self.user, "INBOX", [
            make_message(subject="build 1", headers=DEV),
            make_message(subject="build 2", headers=DEV),
            make_message(subject="your receipt 1"),
            make_message(subject="your receipt 2"),
            make_message(subject="hello"),
        ])  # fmt: skip
        server.deliver_files(self.user, "INBOX", [make_message(subject="build 3", headers=DEV)], flags="F")
        server.deliver_files(self.user, "INBOX", [make_message(subject="receipt seen")], flags="S")
        self.config = write_config(tmp_path, monkeypatch, server, self.user, RULES)
        self.state = tmp_path / "state"

    def cli(self, *args: str):
        return run_cli("-c", self.config, "--state", self.state, *args)


def test_apply_then_undo_restores_every_folder_exactly_in_either_namespace(server, tmp_path, monkeypatch):
    account = Account(server, tmp_path, monkeypatch)
    before = account.contents()
    applied = account.cli("apply", "--yes")
    assert applied.code == 0, applied.err
    said = applied.out + applied.err  # what apply planned and did, if the next lines fail
    assert len(account.uids("Lists/dev", "build")) == 3, said  # moved into the server's name of Lists/dev
    assert len(account.uids("Archive/receipts", "receipt")) == 3, said
    undone = account.cli("undo", "--last", "--yes")
    assert undone.code == 0, undone.err
    assert "left alone" not in undone.out
    assert account.contents() == before


def test_undo_leaves_alone_and_lists_what_another_client_changed_since(cyrus, tmp_path, monkeypatch):
    account = Account(cyrus, tmp_path, monkeypatch)
    before = account.contents()
    [first] = account.uids("INBOX", "build 1")
    assert account.cli("apply", "--yes").code == 0
    other = cyrus.client(account.user, cyrus.folder("Lists/dev"))
    try:  # another client takes $Dev off one moved message and moves another elsewhere
        [one, two, _three] = sorted(other.search(["SUBJECT", "build"]))
        other.remove_flags([one], ["$Dev"])
        other.create_folder(cyrus.folder("Kept"))
        other.move([two], cyrus.folder("Kept"))
    finally:
        other.logout()
    undone = account.cli("undo", "--last", "--yes")
    assert undone.code == 0, undone.err
    assert f"left alone: me:{cyrus.folder('Lists/dev')} UID {one}: changed since by someone else" in undone.out
    assert f"INBOX UID {first}:" not in undone.out  # left alone entirely: its flag steps too, not listed again
    assert f"left alone: me:{cyrus.folder('Lists/dev')} UID {two}: moved or deleted since" in undone.out
    now = account.contents()
    # everything is as before but the two messages the other client changed: build 1 stays in
    # Lists/dev as the other client left it (flagged, without $Dev), build 2 where it was put, with
    # what the run gave it
    gone, kept = before - now, now - before
    assert sorted((f, flags, n) for (f, _d, flags), n in gone.items()) == [("INBOX", frozenset(), 1)] * 2
    assert sorted((f, flags, n) for (f, _d, flags), n in kept.items()) == sorted(
        [(cyrus.folder("Lists/dev"), frozenset({"\\Flagged"}), 1),
         (cyrus.folder("Kept"), frozenset({"$Dev", "\\Flagged"}), 1)])
    assert {d for _f, d, _flags in gone} == {d for _f, d, _flags in kept}  # the same two messages, by content


def test_undo_of_the_undo_redoes_the_apply_on_cyrus(cyrus, tmp_path, monkeypatch):
    account = Account(cyrus, tmp_path, monkeypatch)
    assert account.cli("apply", "--yes").code == 0
    applied = account.contents()
    assert account.cli("undo", "--last", "--yes").code == 0
    redone = account.cli("undo", "--last", "--yes")
    assert redone.code == 0, redone.err
    assert account.contents() == applied


def test_a_keyword_past_the_cap_fails_and_undo_reverses_exactly_what_was_done(cyrus, tmp_path, monkeypatch):
    account = Account(cyrus, tmp_path, monkeypatch)
    client = cyrus.client(account.user, "INBOX")
    try:  # 99 keywords in use: the rules' $Dev is the 100th, $Paid would be the 101st
        client.append("INBOX", make_message(subject="keywords"))
        [uid] = client.search(["SUBJECT", "keywords"])
        client.add_flags([uid], [f"$k{n}" for n in range(99)])
    finally:
        client.logout()
    before = account.contents()
    applied = account.cli("apply", "--yes")
    assert applied.code == 1  # the $Paid action failed (Cyrus: too many user flags), the rest was done
    assert account.contents() != before
    undone = account.cli("undo", "--last", "--yes")
    assert undone.code == 0, undone.err
    assert account.contents() == before


def test_a_copy_to_another_cyrus_account_is_undone(cyrus, tmp_path, monkeypatch):
    from tests.helpers import Acct

    account = Account(cyrus, tmp_path, monkeypatch)
    other = cyrus.add_user()
    cyrus.deliver_files(other, cyrus.folder("Backup"), [make_message(subject="already there")])
    account.config = write_config(tmp_path, monkeypatch, cyrus, account.user, RULES + """\
- name: backup
  match: {subject: receipt}
  actions: [{copy: "other:Backup"}]
""", others={"other": Acct(other, cyrus.port, watch=("Nothing",))})
    theirs = Box(cyrus, other)
    before = (account.contents(), theirs.contents())
    applied = account.cli("apply", "--account", "me", "--yes")
    assert applied.code == 0, applied.err
    assert len(theirs.uids("Backup", "receipt")) == 3
    undone = account.cli("undo", "--last", "--yes")
    assert undone.code == 0, undone.err
    assert (account.contents(), theirs.contents()) == before


def test_undo_leaves_alone_and_lists_the_copies_another_client_changed_since(cyrus, tmp_path, monkeypatch):
    account = Account(cyrus, tmp_path, monkeypatch)
    before = account.contents()
    assert account.cli("apply", "--yes").code == 0
    archive = cyrus.folder("Archive/receipts")
    other = cyrus.client(account.user, archive)
    try:  # another client flags the copy of one receipt and gives another copy a keyword
        [one] = other.search(["SUBJECT", "receipt 1"])
        [seen] = other.search(["SUBJECT", "receipt seen"])
        other.add_flags([one], ["\\Flagged"])
        other.add_flags([seen], ["$Later"])
    finally:
        other.logout()
    undone = account.cli("undo", "--last", "--yes")
    assert undone.code == 0, undone.err
    for uid in (one, seen):
        assert f"left alone: me:{archive} UID {uid}: the copy was changed since by someone else" in undone.out
    assert sorted(account.uids("Archive/receipts", "receipt")) == sorted([one, seen])
    kept = account.contents() - before  # by content: only those two copies, as the other client left them
    assert collections.Counter(flags for (_folder, _sha, flags) in kept.elements()) == collections.Counter(
        [frozenset({"$Later", "\\Seen"}), frozenset({"\\Flagged"})])
    assert all(folder == archive for (folder, _sha, _flags) in kept) and not before - account.contents()
