"""The progress store: SQLite (stdlib sqlite3, WAL) under the state directory.

The model, per account and mailbox (all UIDs are qualified by UIDVALIDITY):

* ``mailbox``: UIDVALIDITY and the *checkpoint*, the highest UID such that every message
  at or below it has been dealt with: processed, or listed in ``pending``.
* ``pending``: messages at or below the checkpoint that still need work. A message whose
  action failed resumes at that rule and action (``rule_index``/``action_index``; the
  rule's name is kept to find it again if the rules file changed), with a count of
  attempts; after ``MAX_ATTEMPTS`` it is ``given_up`` and listed by ``mailrules status``.
  For a copy that failed but may still have happened, ``resume_detail`` says where to look
  for the message (by content, see `mailrules.actions`) before copying it again.
* ``placed``: messages mailrules itself copied or moved *into* a mailbox: never
  processed there (no loops).
* ``run`` / ``step``: the journal of the run in progress on a mailbox. Before a rule's
  actions the matched UIDs are recorded; before each action batch an *intent* is
  written, and *done* after the server confirmed it. A run interrupted by a crash is
  resumed from the journal: finished steps are not repeated, the one uncertain step is
  verified (see `mailrules.actions`), and the checkpoint moves only when the run ends.

Writes are grouped in short transactions; the connection is used from one thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .uidset import UidSet

MAX_ATTEMPTS = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS mailbox (
    account     TEXT NOT NULL,
    mailbox     TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    checkpoint  INTEGER NOT NULL DEFAULT 0,
    last_pass   REAL,             -- time the last completed pass started (for UIDVALIDITY changes)
    last_error  TEXT,
    updated     REAL,
    PRIMARY KEY (account, mailbox)
);
CREATE TABLE IF NOT EXISTS pending (
    account      TEXT NOT NULL,
    mailbox      TEXT NOT NULL,
    uidvalidity  INTEGER NOT NULL,
    uid          INTEGER NOT NULL,
    rule_index   INTEGER NOT NULL,
    rule_name    TEXT NOT NULL,
    action_index INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    status       TEXT NOT NULL DEFAULT 'retry',    -- retry | given_up
    message_id   TEXT,
    last_error   TEXT,
    updated      REAL,
    resume_detail TEXT,             -- JSON: what the retry must verify first (a copy that may have happened)
    PRIMARY KEY (account, mailbox, uidvalidity, uid)
);
CREATE TABLE IF NOT EXISTS placed (
    account     TEXT NOT NULL,
    mailbox     TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    PRIMARY KEY (account, mailbox, uidvalidity, uid)
);
CREATE TABLE IF NOT EXISTS run (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account     TEXT NOT NULL,
    mailbox     TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    kind        TEXT NOT NULL,       -- arrival | sweep:<key>
    candidates  TEXT NOT NULL,       -- JSON: {uid: [rule_index, action_index]} start positions
    rules       TEXT NOT NULL,       -- JSON: the names of the rules of this pass, in order
    high        INTEGER NOT NULL,    -- checkpoint after this run
    started     REAL NOT NULL,
    finished    REAL
);
CREATE TABLE IF NOT EXISTS step (
    run_id       INTEGER NOT NULL REFERENCES run(id),
    seq          INTEGER NOT NULL,
    rule_index   INTEGER NOT NULL,
    action_index INTEGER NOT NULL,   -- -1: the rule's matched set
    uids         TEXT NOT NULL,      -- UID set, IMAP syntax
    state        TEXT NOT NULL,      -- intent | done | failed
    detail       TEXT,               -- JSON: what verification of an uncertain step needs
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS sweep (
    account     TEXT NOT NULL,
    mailbox     TEXT NOT NULL,
    rule_name   TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    action_index INTEGER NOT NULL,
    PRIMARY KEY (account, mailbox, rule_name, uidvalidity, uid, action_index)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT
);
"""


@dataclass(frozen=True)
class MailboxState:
    account: str
    mailbox: str
    uidvalidity: int
    checkpoint: int
    last_pass: float | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class Pending:
    uid: int
    rule_index: int
    rule_name: str
    action_index: int
    attempts: int
    status: str
    message_id: str | None
    last_error: str | None
    # A copy that failed uncertainly (the destination may have stored the message):
    # {"account", "dest", "uidnext", "claimed"?}: the retry first compares what arrived there since
    # UID uidnext with the message, by content ("claimed": digests of arrivals that are other messages).
    # JSON, so that older state files (without "claimed") keep working.
    resume_detail: dict | None = None


@dataclass(frozen=True)
class Step:
    seq: int
    rule_index: int
    action_index: int
    uids: UidSet
    state: str
    detail: dict


@dataclass(frozen=True)
class RunRecord:
    id: int
    uidvalidity: int
    kind: str
    candidates: dict[int, tuple[int, int]]
    rules: tuple[str, ...]
    high: int
    started: float
    steps: tuple[Step, ...]


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "mailrules"


class StateStore:
    """The progress of every account and mailbox, in `state_dir/state.sqlite3`."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.dir / "state.sqlite3"
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a state file written by an older mailrules up to this schema."""
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(pending)")}
        if "resume_detail" not in columns:
            try:
                self.db.execute("ALTER TABLE pending ADD COLUMN resume_detail TEXT")
            except sqlite3.OperationalError:  # another process (mailrules status) added it first
                columns = {row[1] for row in self.db.execute("PRAGMA table_info(pending)")}
                if "resume_detail" not in columns:
                    raise

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    # ------------------------------------------------------------------ mailboxes

    def mailbox(self, account: str, mailbox: str) -> MailboxState | None:
        row = self.db.execute(
            "SELECT uidvalidity, checkpoint, last_pass, last_error FROM mailbox WHERE account=? AND mailbox=?",
            (account, mailbox),
        ).fetchone()
        if row is None:
            return None
        return MailboxState(account, mailbox, row[0], row[1], row[2], row[3])

    def mailboxes(self) -> list[MailboxState]:
        rows = self.db.execute(
            "SELECT account, mailbox, uidvalidity, checkpoint, last_pass, last_error FROM mailbox "
            "ORDER BY account, mailbox"
        ).fetchall()
        return [MailboxState(*row) for row in rows]

    def set_mailbox(
        self, account: str, mailbox: str, uidvalidity: int, checkpoint: int, *, last_pass: float | None = None
    ) -> None:
        """Record UIDVALIDITY and the checkpoint (and forget state of another UIDVALIDITY)."""
        with self.transaction() as db:
            self._set_mailbox(db, account, mailbox, uidvalidity, checkpoint, last_pass)

    def _set_mailbox(
        self, db: sqlite3.Connection, account: str, mailbox: str, uidvalidity: int, checkpoint: int,
        last_pass: float | None,
    ) -> None:
        db.execute(
            "INSERT INTO mailbox (account, mailbox, uidvalidity, checkpoint, last_pass, updated) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(account, mailbox) DO UPDATE SET "
            "uidvalidity=excluded.uidvalidity, checkpoint=excluded.checkpoint, "
            "last_pass=COALESCE(excluded.last_pass, mailbox.last_pass), updated=excluded.updated",
            (account, mailbox, uidvalidity, checkpoint, last_pass, time.time()),
        )
        for table in ("pending", "placed"):
            db.execute(
                f"DELETE FROM {table} WHERE account=? AND mailbox=? AND uidvalidity<>?",
                (account, mailbox, uidvalidity),
            )

    def set_error(self, account: str, mailbox: str, error: str | None) -> None:
        self.db.execute(
            "UPDATE mailbox SET last_error=?, updated=? WHERE account=? AND mailbox=?",
            (error, time.time(), account, mailbox),
        )

    # ------------------------------------------------------------------ pending

    def pending(self, account: str, mailbox: str, uidvalidity: int, *, status: str | None = "retry") -> list[Pending]:
        sql = (
            f"SELECT {_PENDING_COLUMNS} FROM pending WHERE account=? AND mailbox=? AND uidvalidity=?"
        )
        args: list = [account, mailbox, uidvalidity]
        if status is not None:
            sql += " AND status=?"
            args.append(status)
        return [_pending(row) for row in self.db.execute(sql + " ORDER BY uid", args)]

    def resolve(self, account: str, mailbox: str, uidvalidity: int, uids: Iterable[int]) -> None:
        """Forget pending entries (the messages were processed, or are gone)."""
        with self.transaction() as db:
            self._resolve(db, account, mailbox, uidvalidity, uids)

    @staticmethod
    def _resolve(db: sqlite3.Connection, account: str, mailbox: str, uidvalidity: int, uids: Iterable[int]) -> None:
        db.executemany(
            "DELETE FROM pending WHERE account=? AND mailbox=? AND uidvalidity=? AND uid=?",
            [(account, mailbox, uidvalidity, uid) for uid in uids],
        )

    def all_pending(self) -> list[tuple[str, str, Pending]]:
        rows = self.db.execute(
            f"SELECT account, mailbox, {_PENDING_COLUMNS} FROM pending ORDER BY account, mailbox, uid"
        ).fetchall()
        return [(r[0], r[1], _pending(r[2:])) for r in rows]

    # ------------------------------------------------------------------ placed

    def add_placed(self, account: str, mailbox: str, uidvalidity: int, uids: Iterable[int]) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO placed VALUES (?,?,?,?)",
            [(account, mailbox, uidvalidity, uid) for uid in uids],
        )

    def placed(self, account: str, mailbox: str, uidvalidity: int, above: int) -> set[int]:
        rows = self.db.execute(
            "SELECT uid FROM placed WHERE account=? AND mailbox=? AND uidvalidity=? AND uid>?",
            (account, mailbox, uidvalidity, above),
        )
        return {r[0] for r in rows}

    # ------------------------------------------------------------------ sweeps

    def swept(self, account: str, mailbox: str, rule_name: str, uidvalidity: int, action_index: int) -> set[int]:
        """UIDs on which a sweep already applied this rule's (non-idempotent) action."""
        rows = self.db.execute(
            "SELECT uid FROM sweep WHERE account=? AND mailbox=? AND rule_name=? AND uidvalidity=? "
            "AND action_index=?",
            (account, mailbox, rule_name, uidvalidity, action_index),
        )
        return {r[0] for r in rows}

    def add_swept(
        self, account: str, mailbox: str, rule_name: str, uidvalidity: int, action_index: int, uids: Iterable[int]
    ) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO sweep VALUES (?,?,?,?,?,?)",
            [(account, mailbox, rule_name, uidvalidity, uid, action_index) for uid in uids],
        )

    # ------------------------------------------------------------------ run journal

    def open_run(self, account: str, mailbox: str) -> RunRecord | None:
        """The unfinished run on this mailbox (left by a crash), if any."""
        row = self.db.execute(
            "SELECT id, uidvalidity, kind, candidates, rules, high, started FROM run "
            "WHERE account=? AND mailbox=? AND finished IS NULL ORDER BY id DESC LIMIT 1",
            (account, mailbox),
        ).fetchone()
        if row is None:
            return None
        steps = tuple(
            Step(seq, ri, ai, UidSet.parse(uids), state, json.loads(detail) if detail else {})
            for seq, ri, ai, uids, state, detail in self.db.execute(
                "SELECT seq, rule_index, action_index, uids, state, detail FROM step WHERE run_id=? ORDER BY seq",
                (row[0],),
            )
        )
        candidates = {int(k): (v[0], v[1]) for k, v in json.loads(row[3]).items()}
        return RunRecord(row[0], row[1], row[2], candidates, tuple(json.loads(row[4])), row[5], row[6], steps)

    def begin_run(
        self, account: str, mailbox: str, uidvalidity: int, kind: str,
        candidates: dict[int, tuple[int, int]], rules: list[str], high: int,
    ) -> RunRecord:
        """Start the journal of a pass (ending any unfinished one on this mailbox)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE run SET finished=? WHERE account=? AND mailbox=? AND finished IS NULL",
                (time.time(), account, mailbox),
            )
            cur = db.execute(
                "INSERT INTO run (account, mailbox, uidvalidity, kind, candidates, rules, high, started) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (account, mailbox, uidvalidity, kind, json.dumps({str(k): v for k, v in candidates.items()}),
                 json.dumps(rules), high, started := time.time()),
            )
            return RunRecord(int(cur.lastrowid), uidvalidity, kind, dict(candidates), tuple(rules), high, started, ())

    def add_step(
        self, run_id: int, seq: int, rule_index: int, action_index: int, uids: UidSet, state: str,
        detail: dict | None = None,
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO step VALUES (?,?,?,?,?,?,?)",
            (run_id, seq, rule_index, action_index, str(uids), state, json.dumps(detail) if detail else None),
        )

    def finish_run(
        self,
        run_id: int,
        account: str,
        mailbox: str,
        uidvalidity: int,
        *,
        checkpoint: int,
        failures: dict[int, tuple[int, str, int, str | None, str]],
        resolved: Iterable[int],
        started: float,
        advance: bool = True,
        resume_details: dict[int, dict] | None = None,
    ) -> list[int]:
        """End a run in one transaction: record failures, clear resolved retries, move the checkpoint.

        failures: uid -> (rule_index, rule_name, action_index, message_id, error).
        resume_details: uid -> what its retry must verify first (see `Pending.resume_detail`).
        Returns the UIDs that reached MAX_ATTEMPTS and were given up in this call.
        """
        resume_details = resume_details or {}
        given_up = []
        now = time.time()
        with self.transaction() as db:
            self._resolve(db, account, mailbox, uidvalidity, resolved)
            for uid, (rule_index, rule_name, action_index, message_id, error) in failures.items():
                row = db.execute(
                    "SELECT attempts FROM pending WHERE account=? AND mailbox=? AND uidvalidity=? AND uid=?",
                    (account, mailbox, uidvalidity, uid),
                ).fetchone()
                attempts = (row[0] if row else 0) + 1
                status = "given_up" if attempts >= MAX_ATTEMPTS else "retry"
                if status == "given_up":
                    given_up.append(uid)
                detail = resume_details.get(uid)
                db.execute(
                    "INSERT OR REPLACE INTO pending (account, mailbox, uidvalidity, uid, rule_index, rule_name, "
                    "action_index, attempts, status, message_id, last_error, updated, resume_detail) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (account, mailbox, uidvalidity, uid, rule_index, rule_name, action_index, attempts, status,
                     message_id, error, now, json.dumps(detail) if detail else None),
                )
            if advance:
                current = self.mailbox(account, mailbox)
                new_checkpoint = max(checkpoint, current.checkpoint if current else 0)
                self._set_mailbox(db, account, mailbox, uidvalidity, new_checkpoint, started)
                db.execute(
                    "DELETE FROM placed WHERE account=? AND mailbox=? AND uidvalidity=? AND uid<=?",
                    (account, mailbox, uidvalidity, new_checkpoint),
                )
            db.execute("UPDATE run SET finished=? WHERE id=?", (now, run_id))
            db.execute("DELETE FROM step WHERE run_id IN (SELECT id FROM run WHERE finished IS NOT NULL)")
            db.execute("DELETE FROM run WHERE finished IS NOT NULL AND id<>?", (run_id,))
        return given_up

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (key, value))


_PENDING_COLUMNS = (
    "uid, rule_index, rule_name, action_index, attempts, status, message_id, last_error, resume_detail"
)


def _pending(row) -> Pending:
    *fields, detail = row
    return Pending(*fields, resume_detail=json.loads(detail) if detail else None)
