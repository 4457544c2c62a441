"""The journal as one object: runs, their steps, what each action did, for how long it is kept.

The engine writes a run's journal while it works (`mailrules.state` holds the tables and
the crash-resume queries); this module owns what happens to a run once it is finished:

* it is kept for ``history_days`` (a top-level key of the rules file, default 30), so that
  `mailrules undo` can reverse it and `mailrules history` can show it;
* `Journal.prune` deletes older runs a bounded batch at a time (`PRUNE_BATCH` runs per call),
  so that no pass of the daemon or of a command ever waits on a long deletion; every pass
  that finishes a run prunes, and so does every command that writes the journal;
* the typed records `RunSummary` and `Entry` are what `history` and `undo` read.

One `mailrules apply` is one run, whatever the number of mailboxes: the engine journals a pass
per mailbox (its crash resume and the daemon's checkpoints are per account and mailbox, and
stay so), and the apply journals a *head* run (kind ``apply``) whose id is the one users see;
each mailbox's pass is a *part* of it, of kind ``apply:<head id>``. The head holds the list of
its targets (a step of state ``plan``), so that an apply killed midway and run again knows
which mailboxes are done, half done (resumed from their journal) or not begun. Listing,
reading, undoing and pruning take a head with its parts, as one run.

A done step's detail (JSON) holds, besides what an action's reversal needs ("undo", see
`mailrules.actions`), the action as written ("action": name, "text": its description) and
the Message-IDs of its messages ("mids"), so that history needs no server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from .state import RunRecord, StateStore
from .uidset import UidSet

PRUNE_BATCH = 200  # finished runs deleted per call: bounded work for a pass, the rest next time
DAY = 86400.0
PART = "apply:"  # the kind of a mailbox's pass within an apply: "apply:<head id>"
PLAN_INDEX = -2  # a head's step listing its targets (action_index; matched sets are -1)


def part_kind(head: int) -> str:
    """The journal kind of a mailbox's pass that belongs to the apply run `head`."""
    return f"{PART}{head}"


def _group(run_id: int, kind: str) -> int:
    """The run a journal row belongs to, as users know it: a part's head, else the row itself."""
    return int(kind[len(PART):]) if kind.startswith(PART) and kind[len(PART):].isdigit() else run_id


class Failure(NamedTuple):
    """An action (or predicate) that failed for one message in a pass: retried from there."""

    rule_index: int
    rule_name: str
    action_index: int
    message_id: str | None
    error: str


@dataclass(frozen=True)
class RunSummary:
    """One journaled run, as `history --runs` lists it."""

    id: int
    account: str
    mailbox: str
    uidvalidity: int
    kind: str  # arrival | sweep:<key> | apply | undo:<run id>
    rules: tuple[str, ...]
    started: float
    finished: float | None
    messages: int  # message-actions done
    steps: int  # action batches done

    def to_json(self) -> dict:
        return {"id": self.id, "account": self.account, "mailbox": self.mailbox, "kind": self.kind,
                "started": iso(self.started), "finished": iso(self.finished) if self.finished else None,
                "actions": self.steps, "messages": self.messages}


@dataclass(frozen=True)
class Entry:
    """One action done on a batch of messages, from the journal."""

    run: int  # the run as users know it (an apply's head)
    seq: int
    time: float  # the run's start
    account: str
    mailbox: str
    kind: str
    rule: str
    action: str  # the action's name
    text: str  # name and argument, as the log prints it
    uids: UidSet
    message_ids: Mapping[int, str]
    undo: Mapping | None  # what reversing it needs (None: it cannot be reversed)
    part: int = 0  # the journal row the step is in (an apply's part; else `run`)
    uidvalidity: int = 0  # of `mailbox` when the step was done

    def rows(self) -> Iterator[dict]:
        """One row per message (the JSON form of `history`)."""
        for uid in self.uids:
            yield {"time": iso(self.time), "run": self.run, "kind": self.kind, "rule": self.rule,
                   "account": self.account, "mailbox": self.mailbox, "action": self.text, "uid": uid,
                   "message_id": self.message_ids.get(uid) or None}


def iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def done_detail(name: str, text: str, detail: Mapping | None, uids: Iterable[int],
                mids: Mapping[int, str]) -> dict:
    """The JSON of a done step: the action, its messages' Message-IDs, what reversing it needs."""
    out = dict(detail or {})
    out["action"] = name
    out["text"] = text
    out["mids"] = {str(u): mids[u] for u in uids if mids.get(u)}
    return out


class Journal:
    """The finished runs of a state store: kept `keep_days`, listed, read back, pruned."""

    def __init__(self, store: StateStore, keep_days: float = 30) -> None:
        self.store = store
        self.db = store.db
        self.keep_days = keep_days

    # ------------------------------------------------------------------ keeping

    def prune(self, now: float | None = None, batch: int = PRUNE_BATCH) -> int:
        """Delete up to `batch` runs finished more than `keep_days` ago (oldest first), an apply
        with its parts; their count."""
        if self.store.readonly:
            return 0
        cutoff = (now if now is not None else time.time()) - self.keep_days * DAY
        with self.store.transaction() as db:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM run WHERE finished IS NOT NULL AND finished<=? AND kind NOT LIKE ? "
                "ORDER BY id LIMIT ?", (cutoff, PART + "%", batch))]
            if ids:
                rows = ids + [r[0] for r in db.execute(
                    f"SELECT id FROM run WHERE kind IN ({','.join('?' * len(ids))})", [part_kind(i) for i in ids])]
                marks = ",".join("?" * len(rows))
                db.execute(f"DELETE FROM step WHERE run_id IN ({marks})", rows)
                db.execute(f"DELETE FROM run WHERE id IN ({marks})", rows)
        return len(ids)

    # ------------------------------------------------------------------ reading

    def runs(self, *, since: float | None = None) -> list[RunSummary]:
        """Every kept run, oldest first, with the count of its done actions (an apply's parts in it)."""
        rows = self.db.execute(
            "SELECT r.id, r.account, r.mailbox, r.uidvalidity, r.kind, r.rules, r.started, r.finished, "
            "(SELECT count(*) FROM step s WHERE s.run_id=r.id AND s.state='done' AND s.action_index>=0) "
            "FROM run r WHERE r.started>=? ORDER BY r.id", (since or 0,)).fetchall()  # parts start after heads
        counts: dict[int, list[int]] = {}
        for rid, *_, kind, _rules, _started, _finished, steps in rows:
            messages = sum(len(UidSet.parse(u)) for (u,) in self.db.execute(
                "SELECT uids FROM step WHERE run_id=? AND state='done' AND action_index>=0", (rid,))) if steps else 0
            total = counts.setdefault(_group(rid, kind), [0, 0])
            total[0] += messages
            total[1] += steps
        return [RunSummary(rid, account, mailbox, uidvalidity, kind, tuple(json.loads(rules)), started, finished,
                           *counts[rid])
                for rid, account, mailbox, uidvalidity, kind, rules, started, finished, _ in rows
                if _group(rid, kind) == rid]

    def run(self, run_id: int) -> RunSummary | None:
        return next((r for r in self.runs() if r.id == run_id), None)

    def entries(self, run_id: int | None = None, *, since: float | None = None) -> list[Entry]:
        """The done actions of one run (or of every kept run), in the order they were done."""
        sql = ("SELECT r.id, s.seq, r.started, r.account, r.mailbox, r.uidvalidity, r.kind, r.rules, s.rule_index, "
               "s.uids, s.detail FROM step s JOIN run r ON r.id=s.run_id WHERE s.state='done' "
               "AND s.action_index>=0 AND r.started>=?")
        args: list = [since or 0]
        if run_id is not None:
            sql += " AND (r.id=? OR r.kind=?)"
            args += [run_id, part_kind(run_id)]
        out = []
        for rid, seq, started, account, mailbox, uidvalidity, kind, rules, ri, uids, detail in self.db.execute(
                sql + " ORDER BY r.id, s.seq", args):
            data = json.loads(detail) if detail else {}
            names = json.loads(rules)
            rule = data.get("rule") or (names[ri] if 0 <= ri < len(names) else f"#{ri}")
            mids = {int(k): v for k, v in (data.get("mids") or {}).items()}
            account, mailbox, uidvalidity = data.get("where") or (account, mailbox, uidvalidity)
            group = _group(rid, kind)
            out.append(Entry(group, seq, started, account, mailbox, kind if group == rid else "apply", rule,
                             data.get("action", "?"), data.get("text", data.get("action", "?")), UidSet.parse(uids),
                             mids, data.get("undo"), rid, uidvalidity))
        return out

    def undone_by(self, run_id: int) -> list[RunSummary]:
        """The runs that undid (or are undoing) run `run_id`."""
        return [r for r in self.runs() if r.kind == f"undo:{run_id}"]

    # ------------------------------------------------------------------ a command's run

    def begin(self, account: str, mailbox: str, uidvalidity: int, kind: str, rules: list[str]) -> RunRecord:
        """A run of a command (apply, undo): journaled like a pass, never resumed by the daemon."""
        return self.store.begin_run(account, mailbox, uidvalidity, kind, {}, rules, 0)

    def begin_apply(self, targets: list[tuple[str, str, list[str]]]) -> RunRecord:
        """The head run of an apply over `targets` (account, mailbox, rule names), which it records."""
        rules = list(dict.fromkeys(name for _a, _m, names in targets for name in names))
        accounts = ",".join(dict.fromkeys(a for a, _m, _n in targets))
        mailboxes = ",".join(dict.fromkeys(m for _a, m, _n in targets))
        head = self.begin(accounts, mailboxes, 0, "apply", rules)
        self.store.add_step(head.id, 0, -1, PLAN_INDEX, UidSet(), "plan",
                            {"targets": [[a, m, list(n)] for a, m, n in targets]})
        return head

    def targets(self, head: int) -> list[tuple[str, str, list[str]]] | None:
        """The targets an apply's head recorded (None: a run of before apply had heads)."""
        row = self.db.execute("SELECT detail FROM step WHERE run_id=? AND state='plan' AND action_index=?",
                              (head, PLAN_INDEX)).fetchone()
        if row is None:
            return None
        return [(a, m, list(n)) for a, m, n in json.loads(row[0])["targets"]]

    def parts_done(self, head: int) -> set[tuple[str, str]]:
        """(account, server mailbox) of the finished passes of the apply `head`."""
        return {(a, m) for a, m in self.db.execute(
            "SELECT account, mailbox FROM run WHERE kind=? AND finished IS NOT NULL", (part_kind(head),))}

    def finish(self, run_id: int) -> None:
        """End a command's run (its steps are kept), then prune."""
        self.db.execute("UPDATE run SET finished=? WHERE id=?", (time.time(), run_id))
        self.prune()

    def unfinished(self, kind: str) -> RunRecord | None:
        """A command's run of this kind left unfinished (a crash): resumed by running it again."""
        row = self.db.execute("SELECT account, mailbox FROM run WHERE kind=? AND finished IS NULL "
                              "ORDER BY id DESC LIMIT 1", (kind,)).fetchone()
        return self.store.open_run(row[0], row[1], kind=kind) if row else None
