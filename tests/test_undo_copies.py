"""`mailrules undo` of copies that another client changed since, on Dovecot.

A copy journals the flags and keywords each copy was made with, and undo compares. A run
copies five messages to Archive; another client then flags one copy and adds a keyword to
another. Undo removes the three copies nobody touched, leaves the two alone and lists them.
Counted by content: the multiset of (folder, SHA-256 of the whole message, flags and keywords).
"""

from __future__ import annotations

import collections
import json
import sqlite3

from helpers import account_contents, check_transfer_reads_flags

COPY_ALL = """
    - name: keep a copy
      match: {subject: keep}
      actions: [{copy: Archive}]
"""
SUBJECTS = ("keep 1", "keep 2", "keep 3", "keep 4", "keep 5")


def copied_and_changed_by_another_client(lab) -> tuple[collections.Counter, dict[str, int]]:
    """Run the copy, then flag the copy of 'keep 1' and give 'keep 2''s copy a keyword by hand;
    returns the account's contents before the run, and subject -> UID of the copies."""
    lab.deliver(*SUBJECTS)
    lab.deliver("old", folder="Archive")  # the destination exists: undo never deletes folders
    before = account_contents(lab)
    assert lab.run().code == 0
    copies = {m.subject: m.uid for m in lab.messages("Archive") if m.subject != "old"}
    assert sorted(copies) == list(SUBJECTS)
    with lab.client() as other:
        other.select_folder("Archive")
        other.add_flags([copies["keep 1"]], ["\\Flagged"])
        other.add_flags([copies["keep 2"]], ["$Later"])
    return before, copies


def test_undo_removes_only_the_copies_nobody_changed_and_lists_the_others(lab):
    lab.write(COPY_ALL)
    before, copies = copied_and_changed_by_another_client(lab)
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.stderr
    assert sorted(lab.subjects("Archive")) == ["keep 1", "keep 2", "old"]
    assert lab.flags("Archive") == {"old": set(), "keep 1": {"\\Flagged"}, "keep 2": {"$Later"}}
    for subject in ("keep 1", "keep 2"):
        assert f"me:Archive UID {copies[subject]}: the copy was changed since by someone else" in result.out
    assert result.out.count("changed since by someone else") == 2
    kept = collections.Counter({("Archive", d, f): n for (folder, d, f), n in account_contents(lab).items()
                                if folder == "Archive" and f})
    assert len(kept) == 2
    assert account_contents(lab) == before + kept  # by content: the sources untouched, nothing else lost


def test_undo_of_that_undo_copies_again_only_what_it_removed(lab):
    lab.write(COPY_ALL)
    before, _copies = copied_and_changed_by_another_client(lab)
    assert lab.cli("undo", "--last", "--yes").code == 0
    after_undo = account_contents(lab)
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.stderr
    assert "left alone" not in result.out
    assert sorted(lab.subjects("Archive")) == ["keep 1", "keep 2", "keep 3", "keep 4", "keep 5", "old"]
    redone = collections.Counter({k: n for k, n in account_contents(lab).items() if k not in after_undo})
    assert sum(redone.values()) == 3 and all(folder == "Archive" and not f for folder, _d, f in redone)
    # and undoing the redo removes those three again, the two changed copies still left alone
    assert lab.cli("undo", "--last", "--yes").code == 0
    assert account_contents(lab) == after_undo


def test_undo_of_the_redo_leaves_alone_a_copy_changed_since_too(lab):
    lab.write(COPY_ALL)
    copied_and_changed_by_another_client(lab)
    assert lab.cli("undo", "--last", "--yes").code == 0
    assert lab.cli("undo", "--last", "--yes").code == 0  # the three copies made again
    copy3 = next(m.uid for m in lab.messages("Archive") if m.subject == "keep 3" and not m.flags)
    with lab.client() as other:
        other.select_folder("Archive")
        other.add_flags([copy3], ["\\Seen"])
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.stderr
    assert f"me:Archive UID {copy3}: the copy was changed since by someone else" in result.out
    assert sorted(lab.subjects("Archive")) == ["keep 1", "keep 2", "keep 3", "old"]


def test_a_copy_journaled_without_its_flags_is_removed_as_before(lab):
    lab.write(COPY_ALL)
    before, _copies = copied_and_changed_by_another_client(lab)
    with sqlite3.connect(lab.state / "state.sqlite3") as db:  # as a mailrules before this change journaled it
        steps = db.execute("SELECT rowid, detail FROM step WHERE state = 'done' AND detail IS NOT NULL").fetchall()
        for rowid, text in steps:
            detail = json.loads(text)
            if isinstance(detail.get("undo"), dict):
                assert detail["undo"].pop("flags") == {"": "2:6"}
                db.execute("UPDATE step SET detail = ? WHERE rowid = ?", (json.dumps(detail), rowid))
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.stderr
    assert lab.subjects("Archive") == ["old"]
    assert account_contents(lab) == before


# --------------------------------------------------------------------------- the reversal itself, on the memory store


def archive_with(*flag_sets: frozenset[str]):
    """A memory store whose Archive holds one copy per flag set (UIDs 1, 2, ...), selected."""
    from mailrules.local_search import LocalMessage
    from mailrules.memory import MemoryServer, MemoryStore

    server = MemoryServer()
    for n, flags in enumerate(flag_sets):
        system = frozenset(f for f in flags if f.startswith("\\"))
        server.deliver("a", "Archive", LocalMessage(f"Subject: {n}\r\n\r\nx\r\n".encode(), system, flags - system))
    store = MemoryStore(server, "a")
    store.select("Archive")
    return server, store


def test_a_resumed_undo_removes_the_copies_it_had_marked_deleted_before_the_crash():
    from mailrules.actions.reverse import UndoRun, reverse_copy

    # copy 1: marked \Deleted by the interrupted undo; 2: untouched; 3: given a keyword by another client
    server, store = archive_with(frozenset({"\\Deleted"}), frozenset(), frozenset({"$Later"}))
    undo = UndoRun(connect=lambda _account: store, account="a", mailbox="INBOX", resumed={"marking": "1:2"})
    record = {"source": "INBOX", "account": "a", "dest": "Archive", "mapping": {"7": 1, "8": 2, "9": 3},
              "flags": {"": "1:3"}}
    done = reverse_copy(undo, record)
    assert sorted(server.folder("a", "Archive").messages) == [3]
    assert list(done.uids) == [7, 8] and done.count == 2
    assert undo.left == ["a:Archive UID 3: the copy was changed since by someone else"]


# --------------------------------------------------------------------------- the COPY that reads the flags


def test_a_copy_reports_each_copied_messages_flags_and_a_missing_folder_as_trycreate(lab):
    check_transfer_reads_flags(lab, "copy")
