"""`mailrules undo [RUN | --last] [--dry-run] [--yes]`: reverse one run exactly, from the journal.

The run's done steps are reversed last first, each by its action object (`Action.reverse`,
bodies in `mailrules.actions.reverse`) from the record the step journaled: moved and trashed
messages go back (by the COPYUID/MOVE mapping), copies the run made are removed (\\Deleted by
us, then UID EXPUNGE of exactly those UIDs), flags and keywords change back only on the
messages the run changed and nobody changed since. What cannot be reversed (delete, plugin
actions, messages changed since) is left alone and listed.

Undo is one run of its own (kind ``undo:<run id>``, also for an apply over several mailboxes
and accounts: each step says where it acted, in its detail's "where"), planned first, confirmed on a terminal
(``--yes`` for scripts), journaled step by step (intent, then done with the record of its
own reversal: an undo is undoable), and crash-safe: run again, it resumes the unfinished undo
and skips the steps already done. It takes the state directory's lock, so it never runs
beside a daemon on the same state.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import TextIO

from imapclient.exceptions import IMAPClientError

from .actions.reverse import Reversed, UndoRun
from .api import ActionFailed
from .imap.session import ServerRefused
from .journal import Entry, Journal, RunSummary, done_detail, iso
from .model import Config
from .state import RunRecord, StateStore

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class Refused(Exception):
    """The run cannot be undone (the message says why and what to do)."""


class NeedsYes(Refused):
    """No terminal to ask on, and no --yes: a usage error (exit 2)."""


@dataclass
class UndoPlan:
    """The steps of a run to reverse (last first) and those that cannot be."""

    run: RunSummary
    steps: list[Entry] = field(default_factory=list)
    cannot: list[Entry] = field(default_factory=list)

    def render(self, out: TextIO) -> None:
        r = self.run
        out.write(f"undo run {r.id} ({r.kind}, account {r.account} mailbox {r.mailbox}, started {iso(r.started)}):\n")
        rows = [(e.rule, e.text, str(len(e.uids)), "reversed") for e in self.steps]
        rows += [(e.rule, e.text, str(len(e.uids)), "cannot be undone") for e in self.cannot]
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(("rule", "action", "msgs", ""))]
        for row in [("rule", "action", "msgs", "")] + rows:
            out.write("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def choose(journal: Journal, run_id: int | None, last: bool) -> RunSummary:
    """The run to undo: RUN, or with --last the latest finished run that did something."""
    runs = journal.runs()
    if last:
        done = [r for r in runs if r.finished is not None and r.steps]
        if not done:
            raise Refused("there is no run in the journal that changed anything")
        return done[-1]
    found = next((r for r in runs if r.id == run_id), None)
    if found is None:
        raise Refused(f"run {run_id} is not in the journal (runs are kept history_days days; "
                      "`mailrules history --runs` lists them)")
    return found


def plan(journal: Journal, registry, run: RunSummary) -> UndoPlan:
    """The steps to reverse, refusing a run that cannot be undone (unfinished, already undone)."""
    if run.finished is None:
        raise Refused(f"run {run.id} has not finished (in progress, or interrupted: the next "
                      "`mailrules run` finishes it); undo it afterwards")
    if any(u.finished is not None for u in journal.undone_by(run.id)):
        raise Refused(f"run {run.id} was undone already (`mailrules history --runs`); "
                      "undo that undo to redo it")
    out = UndoPlan(run)
    for entry in reversed(journal.entries(run.id)):
        action = registry.actions.get(entry.action)
        if action is not None and action.reversible and entry.undo:
            out.steps.append(entry)
        else:
            out.cannot.append(entry)
    if not out.steps:
        raise Refused(f"run {run.id} did nothing that can be undone")
    return out


def confirm(args: argparse.Namespace, question: str, out: TextIO) -> bool:
    """--yes, or a yes typed on a terminal; never a guess when nobody can answer."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise NeedsYes("not a terminal: pass --yes to go ahead without a question")
    out.write(f"{question} [y/N] ")
    out.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


class Reversals:
    """The `UndoRun` of each mailbox a run acted on (an apply's may be several, of several
    accounts): UIDs renumbered by the messages brought back are per mailbox."""

    def __init__(self, pool) -> None:
        self.pool = pool
        self.by_mailbox: dict[tuple[str, str], UndoRun] = {}

    def of(self, entry: Entry) -> UndoRun:
        key = (entry.account, entry.mailbox)
        if key not in self.by_mailbox:
            self.by_mailbox[key] = UndoRun(connect=self.pool.get, account=entry.account, mailbox=entry.mailbox)
        return self.by_mailbox[key]

    @property
    def left(self) -> list[str]:
        return [line for undo in self.by_mailbox.values() for line in undo.left]


def check_uidvalidity(pool, the_plan: UndoPlan) -> None:
    """Refuse when a mailbox the run acted on was renumbered since (its UIDs no longer say which)."""
    r = the_plan.run
    for account, mailbox, uidvalidity in dict.fromkeys((e.account, e.mailbox, e.uidvalidity) for e in the_plan.steps):
        if uidvalidity and pool.get(account).select(mailbox).uidvalidity != uidvalidity:
            raise Refused(f"account {account} mailbox {mailbox}: UIDVALIDITY changed since run {r.id} "
                          "(the server renumbered the mailbox): its messages can no longer be found by UID")


def execute(store: StateStore, journal: Journal, registry, pool, the_plan: UndoPlan) -> tuple[int, Reversals, int]:
    """Reverse the plan's steps as one journaled run (whatever the number of mailboxes); returns
    (undo run id, the reversals with what they left alone, failures)."""
    r = the_plan.run
    check_uidvalidity(pool, the_plan)
    kind = f"undo:{r.id}"
    run = journal.unfinished(kind)
    undos = Reversals(pool)
    done_before: set[int] = set()
    intents: dict[int, dict] = {}
    if run is not None:
        done_before = _resumed(run, the_plan, undos)
        intents = {s.seq: s.detail for s in run.steps if s.state == "intent"}
    else:
        run = journal.begin(r.account, r.mailbox, r.uidvalidity, kind, list(r.rules))
    failed = 0
    for pos, entry in enumerate(the_plan.steps):
        if pos in done_before:
            continue
        undo = undos.of(entry)
        undo.resumed = intents.get(pos)
        undo.uids = entry.uids
        store.add_step(run.id, pos, entry.seq, 0, entry.uids, "intent", undo.resumed or {"undoing": entry.seq})
        undo.note = _noter(store, run.id, pos, entry)
        try:
            result: Reversed = registry.actions[entry.action].reverse(undo, entry.undo)
        except (ActionFailed, ServerRefused, IMAPClientError, ValueError) as exc:
            failed += 1
            undo.left.append(f"rule {entry.rule!r} {entry.text}: {exc}")
            store.add_step(run.id, pos, entry.seq, 0, entry.uids, "failed", {"undoing": entry.seq})
            continue
        mids = {undo.renumber.get(u, u): m for u, m in entry.message_ids.items()}
        detail = done_detail(result.name, result.text, result.undo, result.uids, mids)
        detail.update(rule=entry.rule, undoing=entry.seq, count=result.count,
                      where=[entry.account, entry.mailbox, entry.uidvalidity])
        store.add_step(run.id, pos, entry.seq, 0, result.uids, "done", detail)
    journal.finish(run.id)
    return run.id, undos, failed


def _noter(store: StateStore, run_id: int, pos: int, entry: Entry):
    """For the reversal in progress: rewrite its journaled intent (what a resume must know)."""
    return lambda detail: store.add_step(run_id, pos, entry.seq, 0, entry.uids, "intent",
                                         {"undoing": entry.seq, **detail})


def _resumed(run: RunRecord, the_plan: UndoPlan, undos: Reversals) -> set[int]:
    """An undo interrupted by a crash: the steps it finished (their places in the plan), and the
    UIDs its moves gave back."""
    done: set[int] = set()
    for step in run.steps:
        if step.state != "done" or not 0 <= step.seq < len(the_plan.steps):
            continue
        done.add(step.seq)
        back = (step.detail.get("undo") or {})
        original = the_plan.steps[step.seq]
        undo = undos.of(original)
        if back.get("dest") != undo.mailbox or not original.undo:
            continue
        forward = {int(d): int(s) for s, d in (original.undo.get("mapping") or {}).items()}
        for old_dest, new in (back.get("mapping") or {}).items():
            if int(old_dest) in forward:
                undo.renumber[forward[int(old_dest)]] = int(new)
    return done


def undo_command(config: Config, registry, state_dir, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    from .imap.pool import SessionPool
    from .lock import AlreadyRunning, StateLock

    if (args.run is None) == (not args.last):
        print("mailrules: undo: give a run id or --last (not both)", file=sys.stderr)
        return EXIT_USAGE
    lock = StateLock(state_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"mailrules: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    store = StateStore(state_dir)
    journal = Journal(store, config.history_days)
    pool = SessionPool(config)
    try:
        target = choose(journal, args.run, args.last)
        the_plan = plan(journal, registry, target)
        gone = [e.account for e in the_plan.steps if e.account not in config.accounts]
        if gone:
            raise Refused(f"run {target.id} is of account {gone[0]!r}, no longer in {config.path}")
        the_plan.render(out)
        if args.dry_run:
            return EXIT_OK
        if not confirm(args, f"Undo run {target.id}?", out):
            out.write("nothing done\n")
            return EXIT_OK
        run_id, undos, failed = execute(store, journal, registry, pool, the_plan)
    except Refused as exc:
        print(f"mailrules: undo: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, NeedsYes) else EXIT_FAILURE
    finally:
        pool.close()
        store.close()
        lock.release()
    for line in undos.left:
        out.write(f"left alone: {line}\n")
    for entry in the_plan.cannot:
        out.write(f"not undoable: rule {entry.rule!r} {entry.text} ({len(entry.uids)} messages)\n")
    out.write(f"undid run {the_plan.run.id} as run {run_id}\n")
    return EXIT_FAILURE if failed else EXIT_OK
