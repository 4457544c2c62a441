"""The journal (`mailrules.journal`): finished runs kept for history_days, pruned in bounded
batches; the runs of commands (undo) kept apart from the daemon's passes; the config key."""

from __future__ import annotations

import textwrap
import time

import pytest

from mailrules.config import ConfigError, load
from mailrules.journal import DAY, Journal, done_detail
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
