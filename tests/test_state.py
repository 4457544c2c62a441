"""The progress store (mailrules.state): things not seen through the engine's behaviour."""

from __future__ import annotations

import sqlite3

from mailrules.state import StateStore

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
