"""The progress store: SQLite (stdlib sqlite3, WAL) under the state directory.

One module because the SQLite schema, its migrations, the read-only opening and every query
on those tables must change together; split, a column added in one place is missed in another.

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

import contextlib
import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .secrets import redact_secrets
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


def state_directory(given: str | os.PathLike[str] | None) -> Path:
    """The state directory: `given` (--state DIR), else `default_state_dir()`."""
    return Path(given) if given else default_state_dir()


class StateError(Exception):
    """The state file cannot be opened or used. The message names the file and says what to do.

    A broken state is a runtime failure (exit 1): the rules file is fine, and starting over
    with an empty state would process every message again (and copy it twice).
    """


STATE_FILE = "state.sqlite3"
_SQLITE_HEADER = b"SQLite format 3\x00"
_TABLES = frozenset({"mailbox", "pending", "placed", "run", "step", "sweep", "meta"})
_START_AFRESH = (
    "if it cannot be restored from a backup, move it away and run `mailrules run --since-now` "
    "(or without --since-now to process every message again)"
)


def state_file(state_dir: str | os.PathLike[str]) -> Path:
    """The SQLite file of the state directory `state_dir`."""
    return Path(state_dir) / STATE_FILE


def describe_state_error(path: Path, exc: BaseException, doing: str) -> StateError:
    """A `StateError` for an SQLite or OS error met while `doing` something with the state file.

    Public so that the command line can word a failure in the middle of a run the same way.
    """
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if name.startswith("SQLITE_FULL") or "disk is full" in text or getattr(exc, "errno", None) == 28:
        hint = "the disk is full: free some space and run again (nothing was lost: the work is retried)"
    elif name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        hint = f"the file is damaged. Refusing to start: {_START_AFRESH}"
    elif name.startswith("SQLITE_READONLY") or isinstance(exc, PermissionError) or name == "SQLITE_CANTOPEN" \
            or getattr(exc, "errno", None) in (1, 13, 30):
        hint = (f"it cannot be written (read-only file system or directory, or no permission); "
                f"make {path.parent} writable for this user, or use --state DIR. "
                "`mailrules status` and `run --dry-run` only read it")
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        hint = "another process holds it locked; try again"
    else:
        hint = "check the file and its directory"
    detail = getattr(exc, "strerror", None) or text or "no details"
    return StateError(f"state file {path}: {doing} failed ({detail}): {hint}")


def _check_file(path: Path) -> bool:
    """False if there is no state file; raise `StateError` if one exists but is not a state."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise describe_state_error(path, exc, "looking at it") from None
    if not stat.S_ISREG(info.st_mode):
        raise StateError(f"state file {path}: it exists but is not a regular file; move it away "
                         "or use --state DIR")
    if info.st_size == 0:
        raise StateError(
            f"state file {path}: it exists but is empty, so the progress it held is lost (a new state "
            f"would process every message again and copy it twice). Refusing to start: {_START_AFRESH}"
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise describe_state_error(path, exc, "reading it") from None
    if head != _SQLITE_HEADER:
        raise StateError(f"state file {path}: it is not an SQLite database (damaged, truncated or "
                         f"overwritten). Refusing to start: {_START_AFRESH}")
    return True


def _verify(db: sqlite3.Connection, path: Path) -> None:
    """The file is an undamaged SQLite database holding mailrules tables (else `StateError`)."""
    problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise StateError(f"state file {path}: it is damaged ({'; '.join(map(str, problems))[:300]}). "
                         f"Refusing to start: {_START_AFRESH}")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables & _TABLES:
        raise StateError(f"state file {path}: it is an SQLite database but holds no mailrules state. "
                         f"Refusing to start: {_START_AFRESH}")


def _create(directory: Path, path: Path) -> None:
    """Create a new, complete state file atomically: built beside it, then linked into place.

    So that an interrupted creation (full disk, kill) never leaves an empty `state.sqlite3`
    behind, which the next start would have to refuse.
    """
    tmp = directory / f".{STATE_FILE}.{os.getpid()}.new"
    try:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            leftover.unlink(missing_ok=True)
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # One transaction (BEGIN inside the script: executescript commits one opened before
            # it): in autocommit mode each CREATE TABLE was a commit with its own fsync, ~5 ms
            # of every first run.
            created = repr(str(time.time()))  # a float's digits: a safe SQL string literal
            db.executescript(f"BEGIN;\n{SCHEMA}\nINSERT OR REPLACE INTO meta VALUES ('created', {created});\nCOMMIT;")
        finally:
            db.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # created meanwhile by another process: use theirs
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _shadow_missing(db: sqlite3.Connection) -> None:
    """On a read-only connection to an older state: empty TEMP stand-ins for missing tables and columns.

    The queries of this module then work unchanged, without migrating (writing) the file.
    """
    reference = sqlite3.connect(":memory:")
    try:
        reference.executescript(SCHEMA)
        for table, sql in reference.execute("SELECT name, sql FROM sqlite_master WHERE type='table' "
                                          "AND name NOT LIKE 'sqlite%'").fetchall():
            wanted = [row[1] for row in reference.execute(f"PRAGMA table_info({table})")]
            present = {row[1] for row in db.execute(f"PRAGMA main.table_info({table})")}
            if not present:
                db.execute(sql.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))
            elif any(c not in present for c in wanted):
                select = ", ".join(c if c in present else f"NULL AS {c}" for c in wanted)
                db.execute(f"CREATE TEMP VIEW {table} AS SELECT {select} FROM main.{table}")
    finally:
        reference.close()


class StateStore:
    """The progress of every account and mailbox, in `state_dir/state.sqlite3`.

    `StateStore(dir)` opens it for a run: created (atomically) if absent, migrated, written.
    `StateStore.open_readonly(dir)` opens it for `status` and `run --dry-run`: read-only,
    never created or migrated (None if there is none). Either way a file that exists but is
    empty, damaged or not a mailrules state is refused with a `StateError`, never replaced.
    """

    def __init__(self, state_dir: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / STATE_FILE
        self.readonly = readonly
        if readonly:
            self.db = self._connect_readonly()
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise describe_state_error(self.path, exc, "creating its directory") from None
        if not _check_file(self.path):
            try:
                _create(self.dir, self.path)
            except (OSError, sqlite3.Error) as exc:
                raise describe_state_error(self.path, exc, "creating it") from None
            _check_file(self.path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        except sqlite3.Error as exc:
            raise describe_state_error(self.path, exc, "opening it") from None
        try:
            _verify(self.db, self.path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self._migrate()
        except StateError:
            self.db.close()
            raise
        except sqlite3.Error as exc:
            self.db.close()
            raise describe_state_error(self.path, exc, "opening it for writing") from None

    @classmethod
    def open_readonly(cls, state_dir: str | os.PathLike[str]) -> StateStore | None:
        """The state for reading only (`status`, `run --dry-run`); None if nothing was processed yet."""
        if not _check_file(state_file(state_dir)):
            return None
        return cls(state_dir, readonly=True)

    def _connect_readonly(self) -> sqlite3.Connection:
        if not _check_file(self.path):
            raise StateError(f"state file {self.path}: there is none yet")
        uri = self.path.resolve().as_uri()
        try:
            try:
                db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=30,
                                     check_same_thread=False)
                try:
                    db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                except sqlite3.Error:
                    db.close()
                    raise
            except sqlite3.OperationalError:
                # WAL needs a -shm file beside the database. In a read-only directory without
                # one, no writer can be active and nothing can be pending in a -wal: the file
                # alone is the whole state, so read it as immutable.
                if os.path.exists(f"{self.path}-wal") or os.access(self.dir, os.W_OK):
                    raise
                db = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None,
                                     check_same_thread=False)
            try:
                _verify(db, self.path)
                _shadow_missing(db)
            except BaseException:
                db.close()
                raise
        except sqlite3.Error as exc:
            raise describe_state_error(self.path, exc, "reading it") from None
        return db

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

    def cap_cache(self, kib: int) -> None:
        """Keep at most `kib` KiB of database pages cached on this connection (SQLite's default: 2 MiB).

        A long-lived connection's cache fills with pages of the growing journal up to the
        limit; a daemon holds one connection per account (`mailrules.daemon.worker`).
        """
        self.db.execute(f"PRAGMA cache_size=-{int(kib)}")

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
        """Record a mailbox's last error, redacted: `status` reads it in a process that knows no secret."""
        self.db.execute(
            "UPDATE mailbox SET last_error=?, updated=? WHERE account=? AND mailbox=?",
            (None if error is None else redact_secrets(error), time.time(), account, mailbox),
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
        """Delete the entries of `uids` that exist: a pass resolves every candidate, and few have one
        (a DELETE per candidate cost a 10,000-message pass ~8 ms at its end, after the server was done)."""
        held = {row[0] for row in db.execute(
            "SELECT uid FROM pending WHERE account=? AND mailbox=? AND uidvalidity=?", (account, mailbox, uidvalidity))}
        db.executemany(
            "DELETE FROM pending WHERE account=? AND mailbox=? AND uidvalidity=? AND uid=?",
            [(account, mailbox, uidvalidity, uid) for uid in held.intersection(uids)],
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

    def open_run(self, account: str, mailbox: str, *, kind: str | None = None) -> RunRecord | None:
        """The unfinished run on this mailbox (left by a crash), if any: a pass of the daemon
        (arrival, sweep), or with `kind` a command's run of that kind (`mailrules.journal`)."""
        row = self.db.execute(
            "SELECT id, uidvalidity, kind, candidates, rules, high, started FROM run "
            f"WHERE account=? AND mailbox=? AND finished IS NULL AND {_kind_is(3)} ORDER BY id DESC LIMIT 1",
            (account, mailbox, kind),
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
                f"UPDATE run SET finished=? WHERE account=? AND mailbox=? AND finished IS NULL AND {_kind_is(4)}",
                (time.time(), account, mailbox, None if _daemon_kind(kind) else kind),
            )
            cur = db.execute(
                "INSERT INTO run (account, mailbox, uidvalidity, kind, candidates, rules, high, started) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (account, mailbox, uidvalidity, kind, json.dumps({str(k): v for k, v in candidates.items()}),
                 json.dumps(rules), high, started := time.time()),
            )
            return RunRecord(int(cur.lastrowid), uidvalidity, kind, dict(candidates), tuple(rules), high, started, ())

    def set_run_candidates(self, run_id: int, candidates: dict[int, tuple[int, int]]) -> None:
        """Rewrite a run's start positions (shared: a claim taken over resumes where its old holder was)."""
        with self.transaction() as db:
            db.execute("UPDATE run SET candidates=? WHERE id=?",
                       (json.dumps({str(k): v for k, v in candidates.items()}), run_id))

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
                     message_id, redact_secrets(error), now, json.dumps(detail) if detail else None),
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
            # finished runs are kept for undo and history, and pruned by `mailrules.journal`
        return given_up

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (key, value))


# The runs a query is about: the daemon's passes (kind NULL), or a command's of exactly that kind.
def _kind_is(n: int) -> str:
    """SQL: the run's kind is parameter n's, or (n NULL) one of the daemon's passes."""
    return f"(CASE WHEN ?{n} IS NULL THEN (kind='arrival' OR kind LIKE 'sweep:%') ELSE kind=?{n} END)"


def _daemon_kind(kind: str) -> bool:
    return kind == "arrival" or kind.startswith("sweep:")


_PENDING_COLUMNS = (
    "uid, rule_index, rule_name, action_index, attempts, status, message_id, last_error, resume_detail"
)


def _pending(row) -> Pending:
    *fields, detail = row
    return Pending(*fields, resume_detail=json.loads(detail) if detail else None)
