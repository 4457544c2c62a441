"""`mailrules apply`: the chosen rules over every message already in the chosen mailboxes.

The same pass as arrival processing and sweeps (`mailrules.engine.Engine.sweep`: the kernel's
semantics, the journal, crash resume), as one run of kind ``apply`` however many mailboxes it
covers (the engine journals a pass per mailbox, as a part of that run: `mailrules.journal`):

1. the plan: a dry run over every message (per rule: how many messages, each action, a few
   samples), the `mailrules.dryrun` table; ``--dry-run`` stops here;
2. a confirmation question on a terminal (``--yes`` for scripts; without a terminal and
   without ``--yes`` it refuses, exit 2);
3. the run, journaled: its id is printed, for ``mailrules undo RUN`` and ``history --run``.
   A mailbox of `PROGRESS_FROM` messages or more shows its progress (`mailrules.progress`, as
   ``run --once`` does for a backlog): a bar on a terminal, a log line every few seconds, in
   rule steps (each rule's search, then each of its actions), the pass's own unit: the run is
   one journaled pass, so it is not sliced into batches of messages.

It takes the state directory's lock, so it never runs beside a daemon on the same state
(stop the daemon, apply, start it again). It never moves a checkpoint, and takes only the
messages at or below the daemon's: a message the daemon has not seen yet is left to it (it
would otherwise be processed twice). On a mailbox the daemon never processed it takes every
message, and the plan says to start the daemon with --since-now afterwards. Killed midway, ``apply`` run
again finishes the interrupted run (the mailboxes it recorded: those done are skipped, a
half-done one resumes from its journal, the rest are begun) instead of starting a new one. Plugin actions with outside effects are listed in the plan like any action and are
never run by ``--dry-run``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from imapclient.exceptions import IMAPClientError

from .imap.session import ServerRefused
from .journal import Journal, part_kind
from .model import Config, Rule
from .state import RunRecord, StateError, StateStore
from .undo import NeedsYes, confirm

if TYPE_CHECKING:
    from .progress import CatchUp

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
KIND = "apply"
PROGRESS_FROM = 1000  # messages in a mailbox from which apply shows its progress
APPLYING = ("applying rules", "applied rules", "rule steps")  # the progress lines' wording


def targets(config: Config, args: argparse.Namespace) -> list[tuple[str, str, list[Rule]]]:
    """(account, mailbox, rules) to apply: the named rules (default: every arrival rule) that
    apply to each chosen mailbox (default: the account's watched ones)."""
    out = []
    for account in config.accounts.values():
        if args.account and account.name != args.account:
            continue
        for mailbox in args.mailbox or account.watch:
            scheduled = None if args.rule else False
            rules = [r for r in config.rules_for(account.name, mailbox, scheduled=scheduled)
                     if not args.rule or r.name in args.rule]
            if args.mailbox and args.rule:  # named rules on a named mailbox: also where they do not watch
                rules = [r for r in config.rules if r.name in args.rule and r.enabled
                         and r.account in (None, account.name)]
            if rules:
                out.append((account.name, mailbox, rules))
    return out


def check(config: Config, args: argparse.Namespace) -> str | None:
    """What is wrong with the command line (None: nothing)."""
    names = {r.name for r in config.rules}
    unknown = [n for n in args.rule or () if n not in names]
    if unknown:
        return f"no rule named {', '.join(map(repr, unknown))} in {config.path}"
    if args.account and args.account not in config.accounts:
        return f"no account named {args.account!r} in {config.path}"
    return None


def apply_command(config: Config, registry, state_dir, args: argparse.Namespace, out: TextIO | None = None) -> int:
    from .engine import Engine
    from .imap.pool import SessionPool
    from .lock import AlreadyRunning, StateLock

    out = out or sys.stdout
    problem = check(config, args)
    if problem:
        print(f"mailrules: apply: {problem}", file=sys.stderr)
        return EXIT_USAGE
    chosen = targets(config, args)
    if not chosen:
        print("mailrules: apply: no rule applies to the chosen mailboxes", file=sys.stderr)
        return EXIT_USAGE
    lock = None if args.dry_run else StateLock(state_dir)
    try:
        if lock is not None:
            lock.acquire()
        store = StateStore.open_readonly(state_dir) if args.dry_run else StateStore(state_dir)
    except (AlreadyRunning, StateError, OSError) as exc:
        print(f"mailrules: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    pool = SessionPool(config)
    try:
        if store is not None and not args.dry_run:
            resumed = _resume(lambda: Engine(config, registry, store, pool), store, config, out)
            if resumed is not None:
                return resumed
        planner = Engine(config, registry, store, pool, dry_run=True, out=out)
        sizes = {}  # (account, mailbox) -> how many messages the plan covers
        for account, mailbox, rules in chosen:
            planned = planner.sweep(account, mailbox, rules, KIND, kind=KIND,
                                    upto=_seen(store, pool, account, mailbox, out))
            sizes[account, mailbox] = planned.candidates
        planner.close()
        _outside(registry, chosen, out)
        if args.dry_run:
            return EXIT_OK
        try:
            if not confirm(args, "Apply these rules?", out):
                out.write("nothing done\n")
                return EXIT_OK
        except NeedsYes as exc:
            print(f"mailrules: apply: {exc}", file=sys.stderr)
            return EXIT_USAGE
        assert store is not None
        return _run(Engine(config, registry, store, pool, out=out), store, config, chosen, out, sizes)
    except (StateError, ServerRefused, IMAPClientError, OSError) as exc:
        print(f"mailrules: apply: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        pool.close()
        if store is not None:
            store.close()
        if lock is not None:
            lock.release()


def _run(engine, store: StateStore, config: Config, chosen: list[tuple[str, str, list[Rule]]], out: TextIO,
         sizes: dict[tuple[str, str], int], head: RunRecord | None = None) -> int:
    """Apply over every chosen mailbox as one run (a head, a part per mailbox); with `head`,
    finish that interrupted run: the mailboxes done are skipped, a half-done one is resumed
    from its journal, the others are begun."""
    failed = False
    journal = Journal(store, config.history_days)
    if head is None:
        head = journal.begin_apply([(a, m, [r.name for r in rules]) for a, m, rules in chosen])
    done = journal.parts_done(head.id)
    try:
        for account, mailbox, rules in chosen:
            server = engine.pool.get(account).server_name(mailbox)
            if (account, server) not in done:
                failed |= not _part(engine, store, head.id, account, mailbox, server, rules, out, sizes)
    finally:
        engine.close()
    journal.finish(head.id)
    if len(chosen) > 1:
        out.write(f"applied to {len(chosen)} mailboxes as run {head.id} (`mailrules undo {head.id}` reverses it)\n")
    return EXIT_FAILURE if failed else EXIT_OK


def _part(engine, store: StateStore, head: int, account: str, mailbox: str, server: str, rules: list[Rule],
          out: TextIO, sizes: dict[tuple[str, str], int]) -> bool:
    """One mailbox's pass of the apply `head` (begun, or resumed from its journal); False if
    something failed. A mailbox that cannot be opened before its pass began (gone since the
    plan) is reported and skipped, so that the run can finish; a failure midway leaves the run
    unfinished, for `apply` run again to resume."""
    part = store.open_run(account, server, kind=part_kind(head))
    try:
        upto = None if part is not None else _seen(store, engine.pool, account, mailbox, None)
        progress = _progress(account, mailbox, rules, sizes.get((account, mailbox), 0))
        engine.interrupt = progress.step if progress is not None else None
        try:
            outcome = engine.sweep(account, mailbox, rules, KIND, kind=part_kind(head), upto=upto, resume=part)
        finally:
            engine.interrupt = None
            if progress is not None:
                progress.finish()
    except (ServerRefused, IMAPClientError) as exc:
        if part is not None or store.open_run(account, server, kind=part_kind(head)) is not None:
            raise
        out.write(f"account {account} mailbox {mailbox}: skipped: {exc}\n")
        return False
    if not outcome.candidates:
        out.write(f"account {account} mailbox {mailbox}: no messages, nothing to do\n")
    else:
        out.write(f"{'finished the interrupted apply' if part else 'applied'} to account {account} mailbox "
                  f"{mailbox}: {outcome.applied} message-actions, {len(outcome.failed)} failed: run {head}\n")
    return outcome.ok


class _Steps:
    """Counts the pass's steps for a `CatchUp`: the engine polls `step` between two steps."""

    def __init__(self, progress: CatchUp) -> None:
        self.progress = progress
        self.started = False

    def step(self) -> bool:
        """Called before each rule and each action; the first call starts the first step."""
        if self.started:
            self.progress.advance(1)
        self.started = True
        return False  # never asks the pass to stop

    def finish(self) -> None:
        """The last step started is over (steps never reached, of rules that matched nothing, are
        not counted: the final line says how many ran)."""
        if self.started:
            self.progress.advance(1)
        self.progress.finish()


def _progress(account: str, mailbox: str, rules: list[Rule], size: int) -> _Steps | None:
    """The progress of applying `rules` to a mailbox of `size` messages (None below PROGRESS_FROM)."""
    if size < PROGRESS_FROM:
        return None
    from .progress import CatchUp

    total = sum(1 + len(rule.actions) for rule in rules)
    return _Steps(CatchUp(account, mailbox, total, words=APPLYING))


def _resume(make_engine, store: StateStore, config: Config, out: TextIO) -> int | None:
    """Finish the apply a crash interrupted, from its journal (its exit code; None: there was none)."""
    journal = Journal(store, config.history_days)
    head = journal.unfinished(KIND)
    if head is None:
        return None
    recorded = journal.targets(head.id)
    if recorded is None:  # by a mailrules before heads, or killed as it began: nothing to resume
        journal.finish(head.id)
        out.write(f"note: closed run {head.id}, an interrupted apply that recorded no list of mailboxes (made by "
                  "an older mailrules, or killed as it began); this apply takes its mailboxes again\n")
        return None
    rules = {r.name: r for r in config.rules}
    chosen = [(a, m, [rules[n] for n in names if n in rules]) for a, m, names in recorded]
    missing = [(a, m) for a, m, _n in recorded if a not in config.accounts]
    if missing:
        raise StateError(f"the interrupted apply run {head.id} was over account {missing[0][0]!r}, no longer in "
                         f"{config.path}: put it back to finish the run")
    out.write(f"finishing the interrupted apply run {head.id}\n")
    return _run(make_engine(), store, config, chosen, out, {}, head)


def _outside(registry, chosen: list[tuple[str, str, list[Rule]]], out: TextIO) -> None:
    """Name the actions whose effects reach outside the mailbox (a plugin's): they would run, and
    no undo can take them back."""
    seen: set[tuple[str, str]] = set()
    for _account, _mailbox, rules in chosen:
        for rule in rules:
            for call in rule.actions:
                action = registry.actions.get(call.name)
                if action is not None and action.effects == "outside" and (rule.name, call.name) not in seen:
                    seen.add((rule.name, call.name))
                    out.write(f"would run: rule {rule.name!r}: {call.name} (effects outside the mailbox: "
                              "not undoable)\n")


def _seen(store: StateStore | None, pool, account: str, mailbox: str, out: TextIO | None) -> int | None:
    """The daemon's checkpoint on the mailbox: apply takes the messages at or below it and leaves
    the newer ones to the daemon (else they would be processed twice: copied twice). None (all):
    the daemon never processed the mailbox, which `out` is told (the plan says it)."""
    server = pool.get(account).server_name(mailbox)
    state = store.mailbox(account, server) if store is not None else None
    if state is not None:
        return state.checkpoint
    if out is not None:
        out.write(f"note: account {account} mailbox {mailbox}: no `mailrules run` has processed it yet; a first "
                  "run would process these messages again: start the daemon with --since-now after apply\n")
    return None
