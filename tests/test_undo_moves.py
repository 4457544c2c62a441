"""`mailrules undo` of moves that another client changed since, on Dovecot.

A move journals the flags and keywords each message was moved with (read in the MOVE's own
round trip), and undo compares. A run gives five messages a keyword and moves them to Done;
another client then flags one of them there and adds a keyword to another. Undo moves back
the three nobody touched (their keyword taken off again), leaves the two in Done exactly as
the other client left them (keyword and all), and lists them. Counted by content: the
multiset of (folder, SHA-256 of the whole message, flags and keywords).
"""

from __future__ import annotations

import collections
import json
import sqlite3

from helpers import account_contents, check_transfer_reads_flags

MOVE_ALL = """
    - name: file
      match: {subject: file}
      actions: [{add_keyword: $Filed}, {move: Done}]
"""
SUBJECTS = ("file 1", "file 2", "file 3", "file 4", "file 5")


def moved_and_changed_by_another_client(lab) -> tuple[collections.Counter, dict[str, int]]:
    """Run the move, then flag 'file 1' and give 'file 2' a keyword in Done by hand;
    returns the account's contents before the run, and subject -> UID in Done."""
    lab.deliver(*SUBJECTS)
    lab.deliver("old", folder="Done")  # the destination exists: undo never deletes folders
    before = account_contents(lab)
    assert lab.run().code == 0
    moved = {m.subject: m.uid for m in lab.messages("Done") if m.subject != "old"}
    assert sorted(moved) == list(SUBJECTS)
    with lab.client() as other:
        other.select_folder("Done")
        other.add_flags([moved["file 1"]], ["\\Flagged"])
        other.add_flags([moved["file 2"]], ["$Later"])
    return before, moved


def changed_ones(lab) -> collections.Counter:
    """The messages of Done another client changed: what the undo must leave exactly as it is."""
    return collections.Counter({k: n for k, n in account_contents(lab).items()
                                if k[0] == "Done" and k[2] & {"\\Flagged", "$Later"}})


def test_undo_moves_back_only_the_messages_nobody_changed_and_lists_the_others(lab):
    lab.write(MOVE_ALL)
    before, moved = moved_and_changed_by_another_client(lab)
    changed = changed_ones(lab)
    assert sorted(changed.values()) == [1, 1]
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.stderr
    assert lab.flags() == {"file 3": set(), "file 4": set(), "file 5": set()}
    assert lab.flags("Done") == {"old": set(), "file 1": {"\\Flagged", "$Filed"}, "file 2": {"$Later", "$Filed"}}
    for subject in ("file 1", "file 2"):
        assert f"left alone: me:Done UID {moved[subject]}: changed since by someone else" in result.out
    assert result.out.count("left alone") == 2  # their keyword step is left alone too, not listed again
    # by content: the three back in INBOX exactly as before, the two in Done as the other client left them
    left_in_inbox = collections.Counter({("INBOX", digest, frozenset()): 1 for (_f, digest, _flags) in changed})
    assert account_contents(lab) == before - left_in_inbox + changed


def test_undo_of_that_undo_moves_again_only_what_it_moved_back(lab):
    lab.write(MOVE_ALL)
    moved_and_changed_by_another_client(lab)
    changed = changed_ones(lab)
    assert lab.cli("undo", "--last", "--yes").code == 0
    after_undo = account_contents(lab)
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.stderr
    assert "left alone" not in result.out
    assert lab.subjects() == []
    assert sorted(lab.subjects("Done")) == ["file 1", "file 2", "file 3", "file 4", "file 5", "old"]
    redone = collections.Counter({k: n for k, n in account_contents(lab).items() if k not in after_undo})
    assert sorted(redone.values()) == [1, 1, 1]
    assert all(folder == "Done" and flags == {"$Filed"} for folder, _digest, flags in redone)
    assert changed_ones(lab) == changed
    # and undoing the redo moves those three back again, the two changed ones still left alone
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.stderr
    assert account_contents(lab) == after_undo


def test_undo_of_the_redo_leaves_alone_a_message_changed_since_too(lab):
    lab.write(MOVE_ALL)
    moved_and_changed_by_another_client(lab)
    assert lab.cli("undo", "--last", "--yes").code == 0
    assert lab.cli("undo", "--last", "--yes").code == 0  # the three moved again
    file3 = next(m.uid for m in lab.messages("Done") if m.subject == "file 3")
    with lab.client() as other:
        other.select_folder("Done")
        other.remove_flags([file3], ["$Filed"])
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.stderr
    assert f"left alone: me:Done UID {file3}: changed since by someone else" in result.out
    assert sorted(lab.subjects("Done")) == ["file 1", "file 2", "file 3", "old"]
    assert lab.flags() == {"file 4": set(), "file 5": set()}


def test_a_move_journaled_without_its_flags_moves_back_every_message_as_before(lab):
    lab.write(MOVE_ALL)
    _before, _moved = moved_and_changed_by_another_client(lab)
    with sqlite3.connect(lab.state / "state.sqlite3") as db:  # as a mailrules before this change journaled it
        steps = db.execute("SELECT rowid, detail FROM step WHERE state = 'done' AND detail IS NOT NULL").fetchall()
        for rowid, text in steps:
            detail = json.loads(text)
            if isinstance(detail.get("undo"), dict) and "dest" in detail["undo"]:
                assert detail["undo"].pop("flags") == {"$Filed": "2:6"}
                db.execute("UPDATE step SET detail = ? WHERE rowid = ?", (json.dumps(detail), rowid))
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.stderr
    assert lab.subjects("Done") == ["old"]
    # every one moved back, with the other client's changes, and the run's keyword taken off
    assert lab.flags() == {"file 1": {"\\Flagged"}, "file 2": {"$Later"}, "file 3": set(), "file 4": set(),
                           "file 5": set()}
    assert "changed since" not in result.out


def test_trash_moves_back_only_the_messages_nobody_changed(lab):
    lab.deliver("spam 1", "spam 2")
    lab.deliver("old", folder="Trash")
    lab.write("""
        - name: bin spam
          match: {subject: spam}
          actions: [trash]
    """)
    assert lab.run().code == 0
    binned = {m.subject: m.uid for m in lab.messages("Trash") if m.subject != "old"}
    with lab.client() as other:
        other.select_folder("Trash")
        other.add_flags([binned["spam 1"]], ["\\Seen"])
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.stderr
    assert f"left alone: me:Trash UID {binned['spam 1']}: changed since by someone else" in result.out
    assert lab.flags("Trash") == {"old": set(), "spam 1": {"\\Seen"}}
    assert lab.flags() == {"spam 2": set()}


def test_a_move_to_another_account_leaves_alone_a_message_changed_there_since(dovecot, tmp_path, monkeypatch):
    from helpers import lab_moving_away

    lab, other = lab_moving_away(dovecot, tmp_path, monkeypatch)
    lab.deliver("away 1", "away 2")
    lab.deliver("old", folder="Away", user=other)
    assert lab.run().code == 0
    with lab.client(other) as client:
        client.select_folder("Away")
        [away1] = client.search(["SUBJECT", "away 1"])
        client.add_flags([away1], ["\\Flagged"])
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.err
    assert f"left alone: other:Away UID {away1}: changed since by someone else" in result.out
    assert lab.flags() == {"away 2": set()}
    assert lab.flags("Away", user=other) == {"old": set(), "away 1": {"\\Seen", "\\Flagged"}}


def test_a_move_reports_each_moved_messages_flags_and_a_missing_folder_as_trycreate(lab):
    check_transfer_reads_flags(lab, "move")
    assert lab.flags() == {}
