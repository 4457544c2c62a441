"""The journal (`mailrules.journal`): finished runs kept for history_days, pruned in bounded
batches; the runs of commands (undo) kept apart from the daemon's passes; the config key."""

from __future__ import annotations

import textwrap
import time

import pytest

from mailrules.config import ConfigError, load
from mailrules.journal import DAY, Journal, done_detail, part_kind
from mailrules.plugins import Registry
from mailrules.state import StateStore
from mailrules.uidset import UidSet

CONFIG = """\
version: 1
accounts:
  me: {host: imap.example.com, username: me, password_env: PW}
rules: []
"""


def finished_run(store: StateStore, *, days_ago: float, mailbox: str = "INBOX") -> int:
    """An arrival pass with one done action, finished `days_ago` days ago."""
    run = store.begin_run("me", mailbox, 7, "arrival", {1: (0, 0)}, ["r"], 1)
    store.add_step(run.id, 0, 0, 0, UidSet([1]), "done", done_detail("flag", "flag", {}, [1], {1: "<m@x>"}))
    store.finish_run(run.id, "me", mailbox, 7, checkpoint=1, failures={}, resolved=[1], started=run.started)
    when = time.time() - days_ago * DAY
    store.db.execute("UPDATE run SET started=?, finished=? WHERE id=?", (when, when, run.id))
    return run.id


def test_finished_runs_are_kept_until_history_days_have_passed(tmp_path):
    store = StateStore(tmp_path)
    old, recent = finished_run(store, days_ago=31), finished_run(store, days_ago=29)
    assert Journal(store, 30).prune() == 1
    assert [r.id for r in Journal(store, 30).runs()] == [recent]
    assert old not in {e.run for e in Journal(store, 30).entries()}


def test_a_finished_pass_keeps_its_steps_for_undo(tmp_path):
    store = StateStore(tmp_path)
    run_id = finished_run(store, days_ago=0)
    [entry] = Journal(store).entries(run_id)
    assert (entry.action, list(entry.uids), entry.message_ids) == ("flag", [1], {1: "<m@x>"})


def test_pruning_deletes_a_bounded_batch_per_call(tmp_path):
    store = StateStore(tmp_path)
    for _ in range(5):
        finished_run(store, days_ago=40)
    journal = Journal(store, 30)
    assert [journal.prune(batch=2), journal.prune(batch=2), journal.prune(batch=2)] == [2, 2, 1]
    assert journal.runs() == []


def test_an_unfinished_undo_is_neither_resumed_nor_closed_by_the_daemons_passes(tmp_path):
    store = StateStore(tmp_path)
    undo = Journal(store).begin("me", "INBOX", 7, "undo:1", ["r"])
    assert store.open_run("me", "INBOX") is None
    store.begin_run("me", "INBOX", 7, "arrival", {}, ["r"], 0)
    again = store.open_run("me", "INBOX", kind="undo:1")
    assert again is not None and again.id == undo.id


def test_history_days_defaults_to_30(tmp_path):
    (tmp_path / "r.yaml").write_text(CONFIG)
    assert load(tmp_path / "r.yaml", registry=Registry.load(entry_points=False)).history_days == 30


def test_history_days_is_read_from_the_top_level(tmp_path):
    (tmp_path / "r.yaml").write_text(CONFIG + "history_days: 7\n")
    assert load(tmp_path / "r.yaml", registry=Registry.load(entry_points=False)).history_days == 7


def test_a_negative_history_days_is_refused_with_its_line(tmp_path):
    (tmp_path / "r.yaml").write_text(CONFIG + textwrap.dedent("history_days: -1\n"))
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "r.yaml", registry=Registry.load(entry_points=False))
    assert "history_days: expected a number of days, 0 or more" in str(info.value)
    assert "r.yaml:5" in str(info.value)


# ------------------------------------------------------------------ an apply over several mailboxes


def applied(store: StateStore, *, days_ago: float = 0) -> int:
    """An apply over INBOX of 'me' and INBOX of 'other': a head and two finished parts, one done action each."""
    journal = Journal(store)
    head = journal.begin_apply([("me", "INBOX", ["r"]), ("other", "INBOX", ["r"])])
    for account, uid in (("me", 1), ("other", 5)):
        part = store.begin_run(account, "INBOX", 7, part_kind(head.id), {uid: (0, 0)}, ["r"], 0)
        store.add_step(part.id, 0, 0, 0, UidSet([uid]), "done", done_detail("flag", "flag", {}, [uid], {}))
        store.db.execute("UPDATE run SET finished=? WHERE id=?", (time.time(), part.id))
    journal.finish(head.id)
    when = time.time() - days_ago * DAY
    store.db.execute("UPDATE run SET started=?, finished=?", (when, when))
    return head.id


def test_an_apply_over_two_mailboxes_is_listed_as_one_run_with_both_counts(tmp_path):
    store = StateStore(tmp_path)
    head = applied(store)
    [run] = Journal(store).runs()
    assert (run.id, run.kind, run.account, run.steps, run.messages) == (head, "apply", "me,other", 2, 2)


def test_the_entries_of_an_apply_are_those_of_every_mailbox_under_its_id(tmp_path):
    store = StateStore(tmp_path)
    head = applied(store)
    entries = Journal(store).entries(head)
    assert [(e.run, e.account, list(e.uids), e.uidvalidity) for e in entries] == [
        (head, "me", [1], 7), (head, "other", [5], 7)]


def test_an_apply_is_pruned_with_its_parts(tmp_path):
    store = StateStore(tmp_path)
    applied(store, days_ago=40)
    assert Journal(store, 30).prune() == 1
    assert store.db.execute("SELECT count(*) FROM run").fetchone()[0] == 0
    assert store.db.execute("SELECT count(*) FROM step").fetchone()[0] == 0


def test_an_apply_records_its_mailboxes_and_which_are_done(tmp_path):
    store = StateStore(tmp_path)
    journal = Journal(store)
    head = journal.begin_apply([("me", "INBOX", ["a", "b"]), ("me", "Work", ["b"])])
    part = store.begin_run("me", "INBOX", 7, part_kind(head.id), {}, ["a", "b"], 0)
    store.db.execute("UPDATE run SET finished=? WHERE id=?", (time.time(), part.id))
    assert journal.targets(head.id) == [("me", "INBOX", ["a", "b"]), ("me", "Work", ["b"])]
    assert journal.parts_done(head.id) == {("me", "INBOX")}
    assert journal.unfinished("apply").id == head.id
