"""`mailrules undo`: each action's reversal on Dovecot, what others changed since, refusals.

Every test runs rules with `run --once`, undoes the run, and compares each mailbox of the
account with its state before, counted by content: the multiset of (folder, SHA-256 of the
whole message, flags and keywords).
"""

from __future__ import annotations

import collections
import json

from helpers import account_contents

MIXED = """
    - name: file lists
      match: {subject: list}
      actions:
        - flag
        - add_keyword: $Filed
        - copy: Archive
        - move: Lists
    - name: read the rest
      match: {subject: note}
      actions: [seen, {add_keyword: $Read}]
"""


def everything(lab) -> collections.Counter:
    return account_contents(lab)


def deliver_mixed(lab) -> None:
    lab.deliver("list one", "list two", "note one")
    lab.deliver("list flagged", "note seen", flags=["\\Flagged", "\\Seen", "$Filed"])
    lab.deliver("other")


def test_undo_last_restores_every_mailbox_exactly_as_before(lab):
    lab.write(MIXED)
    deliver_mixed(lab)
    lab.deliver("x", folder="Lists")  # the destinations exist beforehand: undo never deletes folders
    lab.deliver("y", folder="Archive")
    before = everything(lab)
    assert lab.run().code == 0
    assert everything(lab) != before
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.stderr
    assert "left alone" not in result.out
    assert everything(lab) == before


def test_undo_prints_the_plan_and_the_new_runs_id(lab):
    lab.write(MIXED)
    deliver_mixed(lab)
    assert lab.run().code == 0
    result = lab.cli("undo", "--last", "--yes")
    assert "undo run 1 (arrival, account me mailbox INBOX" in result.out
    assert "move Lists" in result.out and "reversed" in result.out
    assert "undid run 1 as run 2" in result.out


def test_undo_dry_run_prints_the_plan_and_changes_nothing(lab):
    lab.write(MIXED)
    deliver_mixed(lab)
    assert lab.run().code == 0
    after = everything(lab)
    result = lab.cli("undo", "1", "--dry-run")
    assert result.code == 0
    assert "move Lists" in result.out and "undid" not in result.out
    assert everything(lab) == after


def test_undo_leaves_a_flag_alone_on_a_message_that_had_it_before(lab):
    lab.deliver("urgent old", flags=["\\Flagged"])
    lab.deliver("urgent new")
    lab.write("""
        - name: flag urgent
          match: {subject: urgent}
          actions: [flag]
    """)
    assert lab.run().code == 0
    assert lab.cli("undo", "--last", "--yes").code == 0
    assert lab.flags() == {"urgent old": {"\\Flagged"}, "urgent new": set()}


def test_undo_leaves_alone_and_lists_what_another_client_changed_since(lab):
    lab.deliver("a", "b")
    lab.write("""
        - name: all
          match: {from: example.org}
          actions: [flag, {move: Done}]
    """)
    assert lab.run().code == 0
    with lab.client() as other:
        other.select_folder("Done")
        by_subject = {m.subject: m.uid for m in lab.messages("Done")}
        other.remove_flags([by_subject["a"]], ["\\Flagged"])  # a: unflagged by hand
        other.create_folder("Kept")
        other.move([by_subject["b"]], "Kept")  # b: filed elsewhere by hand
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.stderr
    assert lab.flags() == {}
    assert lab.flags("Done") == {"a": set()}  # changed since: left in Done as the other client left it
    assert lab.flags("Kept") == {"b": {"\\Flagged"}}
    assert f"left alone: me:Done UID {by_subject['a']}: changed since by someone else" in result.out
    assert f"left alone: me:Done UID {by_subject['b']}: moved or deleted since" in result.out
    assert "INBOX UID 1" not in result.out  # a is left alone entirely: its flag step too, not listed again


def test_an_undo_can_be_undone(lab):
    lab.write(MIXED)
    deliver_mixed(lab)
    before = everything(lab)
    assert lab.run().code == 0
    after = everything(lab)
    assert lab.cli("undo", "--last", "--yes").code == 0
    assert everything(lab) == before
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.stderr
    assert "undo run 2 (undo:1" in result.out
    assert "left alone" not in result.out
    assert everything(lab) == after


def test_trash_is_undone(lab):
    lab.deliver("spam", "ham")
    lab.deliver("old", folder="Trash")
    lab.write("""
        - name: bin spam
          match: {subject: spam}
          actions: [seen, trash]
    """)
    before = everything(lab)
    assert lab.run().code == 0
    assert lab.cli("undo", "--last", "--yes").code == 0
    assert everything(lab) == before


def test_moves_are_undone_on_a_server_without_move(dovecot_factory, tmp_path, monkeypatch):
    from helpers import Lab

    server = dovecot_factory(capabilities="IMAP4rev1 LITERAL+ UIDPLUS IDLE")
    lab = Lab(server, server.add_user(), tmp_path, monkeypatch)
    lab.deliver("a", "b", "c")
    lab.deliver("z", folder="Done")
    lab.write("""
        - name: file
          match: {subject: a}
          actions: [{add_keyword: $X}, {move: Done}]
    """)
    before = everything(lab)
    assert lab.run().code == 0
    assert lab.cli("undo", "--last", "--yes").code == 0
    assert everything(lab) == before


def test_delete_is_reported_as_not_undoable_and_the_rest_is_undone(lab):
    lab.deliver("junk", "keep")
    lab.write("""
        - name: junk
          match: {subject: junk}
          actions: [seen, delete]
    """)
    assert lab.run().code == 0
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0
    assert "junk  delete  1     cannot be undone" in result.out
    assert "not undoable: rule 'junk' delete (1 messages)" in result.out


# ----------------------------------------------------------------------------- refusals


def test_a_run_is_undone_only_once(lab):
    lab.deliver("a")
    lab.write("""
        - name: flag
          match: {from: example.org}
          actions: [flag]
    """)
    assert lab.run().code == 0
    assert lab.cli("undo", "1", "--yes").code == 0
    again = lab.cli("undo", "1", "--yes")
    assert again.code == 1
    assert "run 1 was undone already" in again.err


def test_undo_of_an_unknown_run_is_refused(lab):
    lab.write("""
        - name: flag
          match: {from: example.org}
          actions: [flag]
    """)
    result = lab.cli("undo", "42", "--yes")
    assert result.code == 1
    assert "run 42 is not in the journal" in result.err


def test_undo_needs_a_run_or_last(lab):
    lab.write("""
        - name: flag
          match: {from: example.org}
          actions: [flag]
    """)
    assert lab.cli("undo").code == 2
    assert lab.cli("undo", "1", "--last").code == 2


def test_undo_without_a_terminal_needs_yes(lab):
    lab.deliver("a")
    lab.write("""
        - name: flag
          match: {from: example.org}
          actions: [flag]
    """)
    assert lab.run().code == 0
    result = lab.cli("undo", "--last")
    assert result.code == 2
    assert "pass --yes" in result.err
    assert lab.flags() == {"a": {"\\Flagged"}}


def test_undo_is_refused_while_a_daemon_holds_the_state(lab):
    from mailrules.lock import StateLock

    lab.deliver("a")
    lab.write("""
        - name: flag
          match: {from: example.org}
          actions: [flag]
    """)
    assert lab.run().code == 0
    with StateLock(lab.state):
        result = lab.cli("undo", "--last", "--yes")
    assert result.code == 1
    assert "another mailrules" in result.err


# ----------------------------------------------------------------------------- history


def test_history_shows_every_action_on_one_message_across_runs(lab):
    lab.deliver({"subject": "a", "message_id": "<a@example.org>"}, "b")
    lab.write("""
        - name: flag a
          match: {subject: a}
          actions: [flag, {move: Done}]
    """)
    assert lab.run().code == 0
    assert lab.cli("undo", "--last", "--yes").code == 0
    result = lab.cli("history", "--message-id", "a@example.org", "--format", "json")
    rows = json.loads(result.out)
    assert [(r["run"], r["rule"], r["action"]) for r in rows] == [
        (1, "flag a", "flag"), (1, "flag a", "move Done"),
        (2, "flag a", "move INBOX (back from Done)"), (2, "flag a", "remove_flag \\Flagged"),
    ]
    assert {r["message_id"] for r in rows} == {"<a@example.org>"}


def test_history_runs_lists_the_run_and_its_undo(lab):
    lab.deliver("a", "b")
    lab.write("""
        - name: flag
          match: {from: example.org}
          actions: [flag]
    """)
    assert lab.run().code == 0
    assert lab.cli("undo", "--last", "--yes").code == 0
    runs = json.loads(lab.cli("history", "--runs", "--format", "json").out)
    assert [(r["id"], r["kind"], r["actions"], r["messages"]) for r in runs] == [
        (1, "arrival", 1, 2), (2, "undo:1", 1, 2)]


def test_history_filters_by_rule(lab):
    lab.deliver("a", "b")
    lab.write("""
        - name: flag a
          match: {subject: a}
          actions: [flag]
        - name: see b
          match: {subject: b}
          actions: [seen]
    """)
    assert lab.run().code == 0
    rows = json.loads(lab.cli("history", "--rule", "see b", "--format", "json").out)
    assert [(r["rule"], r["action"]) for r in rows] == [("see b", "seen")]


def test_history_since_refuses_a_bad_duration(lab):
    lab.write("""
        - name: flag
          match: {from: example.org}
          actions: [flag]
    """)
    result = lab.cli("history", "--since", "yesterday")
    assert result.code == 2
    assert "--since 'yesterday'" in result.err


def test_a_move_to_another_account_is_undone(dovecot, tmp_path, monkeypatch):
    from helpers import lab_moving_away

    lab, other = lab_moving_away(dovecot, tmp_path, monkeypatch)
    lab.deliver("away 1", "away 2", "stay")
    lab.deliver("old", folder="Away", user=other)
    before = (account_contents(lab), account_contents(lab, other))
    assert lab.run().code == 0
    assert lab.subjects() == ["stay"]
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.err
    assert (account_contents(lab), account_contents(lab, other)) == before
