"""The progress store (mailrules.state): things not seen through the engine's behaviour."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_only_directory

from mailrules.state import StateError, StateStore

ROOT = str(Path(__file__).resolve().parents[1])

OLD_PENDING = """
CREATE TABLE pending (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,
    rule_index INTEGER NOT NULL, rule_name TEXT NOT NULL, action_index INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT 'retry', message_id TEXT,
    last_error TEXT, updated REAL, PRIMARY KEY (account, mailbox, uidvalidity, uid)
);
INSERT INTO pending VALUES ('me', 'INBOX', 7, 42, 1, 'file', 0, 1, 'retry', '<a@b>', 'NO', 0);
"""


def test_a_state_file_from_before_resume_details_keeps_its_retries(tmp_path):
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    db.executescript(OLD_PENDING)
    db.close()
    store = StateStore(tmp_path)
    (pending,) = store.pending("me", "INBOX", 7)
    assert (pending.uid, pending.rule_name, pending.resume_detail) == (42, "file", None)
    run = store.begin_run("me", "INBOX", 7, "arrival", {42: (1, 0)}, ["x", "file"], 42)
    detail = {"account": "other", "dest": "Invoices", "uidnext": 5}
    store.finish_run(run.id, "me", "INBOX", 7, checkpoint=42, failures={42: (1, "file", 0, "<a@b>", "timeout")},
                     resolved=(), started=run.started, resume_details={42: detail})
    (pending,) = store.pending("me", "INBOX", 7)
    assert pending.attempts == 2 and pending.resume_detail == detail
    store.close()


def test_finishing_a_run_clears_the_retries_of_the_messages_it_resolved_and_only_those(tmp_path):
    store = StateStore(tmp_path)
    run = store.begin_run("me", "INBOX", 7, "arrival", {uid: (0, 0) for uid in range(1, 6)}, ["file"], 5)
    store.finish_run(run.id, "me", "INBOX", 7, checkpoint=5, started=run.started, resolved=(),
                     failures={uid: (0, "file", 0, None, "NO") for uid in (2, 4, 5)})
    run = store.begin_run("me", "INBOX", 7, "arrival", {uid: (0, 0) for uid in range(1, 1001)}, ["file"], 1000)
    store.finish_run(run.id, "me", "INBOX", 7, checkpoint=1000, started=run.started, failures={},
                     resolved=[*range(1, 5), *range(6, 1001)])
    assert [p.uid for p in store.pending("me", "INBOX", 7)] == [5]
    store.close()


# ----------------------------------------------------------------------------- a state that cannot be used


def _state_with_progress(directory: Path) -> Path:
    """A real state (one mailbox, a retry, enough rows to span many pages); its file."""
    store = StateStore(directory)
    store.set_mailbox("me", "INBOX", 7, 42)
    run = store.begin_run("me", "INBOX", 7, "arrival", {43: (0, 0)}, ["file"], 43)
    store.finish_run(run.id, "me", "INBOX", 7, checkpoint=43, failures={43: (0, "file", 0, "<a@b>", "NO")},
                     resolved=(), started=run.started)
    with store.transaction() as db:
        db.executemany("INSERT INTO placed VALUES (?,?,?,?)", [("me", "Archive", 1, uid) for uid in range(3000)])
    store.close()
    return directory / "state.sqlite3"


def _broken(kind: str, path: Path) -> None:
    data = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif kind == "random bytes":
        path.write_bytes(os.urandom(len(data)))
    elif kind == "header only":
        path.write_bytes(data[:100])
    else:
        raise AssertionError(kind)


BROKEN = ["empty", "truncated", "random bytes", "header only"]


@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_state_file_is_refused_naming_it_and_never_replaced(tmp_path, kind):
    path = _state_with_progress(tmp_path)
    _broken(kind, path)
    before = path.read_bytes()
    with pytest.raises(StateError) as caught:
        StateStore(tmp_path)
    assert str(path) in str(caught.value) and "Refusing to start" in str(caught.value)
    assert path.read_bytes() == before  # not taken for a new state, not "repaired"


@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_state_file_is_refused_when_opened_read_only(tmp_path, kind):
    path = _state_with_progress(tmp_path)
    _broken(kind, path)
    with pytest.raises(StateError, match=re.escape(str(path))):
        StateStore.open_readonly(tmp_path)


def test_an_sqlite_file_holding_no_mailrules_tables_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    db.execute("CREATE TABLE photos (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="holds no mailrules state"):
        StateStore(tmp_path)


def test_a_state_file_that_is_a_directory_is_refused(tmp_path):
    (tmp_path / "state.sqlite3").mkdir()
    with pytest.raises(StateError, match="not a regular file"):
        StateStore(tmp_path)


FULL_DISK_AT_CREATION = """
import resource, signal, sys
from mailrules.state import StateError, StateStore
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # no file may grow: like a full disk
try:
    StateStore(sys.argv[1])
except StateError as exc:
    print(exc)
    sys.exit(1)
"""


def test_a_full_disk_while_creating_the_state_leaves_no_empty_state_file(tmp_path):
    result = subprocess.run([sys.executable, "-c", FULL_DISK_AT_CREATION, str(tmp_path / "state")],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "state.sqlite3" in result.stdout
    assert not (tmp_path / "state" / "state.sqlite3").exists()  # a later start is a clean first start
    StateStore(tmp_path / "state").close()


def test_reading_a_state_read_only_neither_creates_nor_migrates_nor_writes_it(tmp_path):
    assert StateStore.open_readonly(tmp_path / "none") is None
    assert not (tmp_path / "none").exists()
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(OLD_PENDING)
    db.close()
    before = path.read_bytes()
    store = StateStore.open_readonly(tmp_path)
    assert store is not None
    (pending,) = store.pending("me", "INBOX", 7)
    assert (pending.uid, pending.resume_detail) == (42, None)
    assert store.mailboxes() == [] and store.get_meta("x") is None and store.open_run("me", "INBOX") is None
    with pytest.raises(sqlite3.OperationalError):
        store.set_mailbox("me", "INBOX", 7, 50)
    store.close()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.sqlite3"]


def test_a_state_in_a_read_only_directory_is_read_and_refused_for_writing_with_a_clear_error(tmp_path):
    path = _state_with_progress(tmp_path / "state")
    with read_only_directory(tmp_path / "state"):
        store = StateStore.open_readonly(tmp_path / "state")
        assert store is not None
        assert [(m.mailbox, m.checkpoint) for m in store.mailboxes()] == [("INBOX", 43)]
        store.close()
        with pytest.raises(StateError) as caught:
            StateStore(tmp_path / "state")
        assert str(path) in str(caught.value) and "cannot be written" in str(caught.value)


def test_errors_kept_in_the_state_never_hold_a_known_secret(tmp_path):
    """`status` runs in a new process that knows no secret, so the state must be written redacted."""
    from mailrules.secrets import register_secret

    secret = "s3cr\u00e9t-pass-42"
    register_secret(secret)
    store = StateStore(tmp_path)
    store.set_mailbox("me", "INBOX", 7, 0)
    store.set_error("me", "INBOX", f"NO [AUTHENTICATIONFAILED] bad password {secret!r}")
    run = store.begin_run("me", "INBOX", 7, "arrival", {42: (0, 0)}, ["file"], 42)
    store.finish_run(run.id, "me", "INBOX", 7, checkpoint=42, started=run.started, resolved=(),
                     failures={42: (0, "file", 0, "<a@b>", f"server said {secret}")})
    (mailbox,) = store.mailboxes()
    (pending,) = store.pending("me", "INBOX", 7)
    assert "pass-42" not in (mailbox.last_error or "") and "***" in mailbox.last_error
    assert "pass-42" not in pending.last_error and "***" in pending.last_error


def test_a_capped_connection_keeps_that_much_cache_and_still_sees_the_other_connections_writes(tmp_path):
    capped, other = StateStore(tmp_path), StateStore(tmp_path)
    capped.cap_cache(256)
    other.set_mailbox("me", "INBOX", 7, 41)
    assert capped.db.execute("PRAGMA cache_size").fetchone()[0] == -256
    assert capped.mailbox("me", "INBOX").checkpoint == 41
    capped.close()
    other.close()
