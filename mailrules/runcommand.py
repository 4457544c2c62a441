"""`mailrules run`: the daemon, or with --once a catch-up of every watched mailbox, then exit.

`run --once` starts opening its first connection (and selecting its first mailbox) as soon as
the accounts of the rules file are read (`early_pool`), while the plugins and the rules load
(`mailrules.cli`) and the state store opens: the server's LOGIN and SELECT overlap them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from .model import Config

if TYPE_CHECKING:
    from .imap.pool import SessionPool

log = logging.getLogger("mailrules")


def early_pool(args: argparse.Namespace) -> SessionPool | None:
    """For `run --once`, a pool already opening the first served account's connection and
    selecting its first watched mailbox, on the accounts section alone (`load_accounts`): the
    ~40 ms of loading the plugins and the rest of the file then overlap the server's LOGIN and
    SELECT. None for any other command, a dry run, a file whose accounts do not load (the whole
    load says why), or an account whose password comes from a program or a keyring: nothing
    runs before the whole file is known to be valid.
    """
    if args.command != "run" or not args.once or args.dry_run:
        return None
    from .config import rules_file_path
    from .config.top import load_accounts
    from .daemon.shard import served_accounts, shard_option
    from .imap.pool import SessionPool
    from .secrets import SECRET_SOURCES
    from .state import state_directory

    try:
        config = Config(accounts=load_accounts(rules_file_path(args.config)), rules=())
        served = served_accounts(config, shard_option(args.shard, dict(os.environ)))
    except Exception:  # noqa: BLE001 - the whole load and run_command report every problem the usual way
        return None
    first = next((account for account in served if account.watch), None)
    if first is None or SECRET_SOURCES[first.auth.kind].runs_something:
        return None
    return SessionPool.connecting(config, [first], checkpoint_of=checkpoints(state_directory(args.state)))


def checkpoints(directory: Path) -> Callable[[str, str], int | None]:
    """(account, server name) -> the mailbox's checkpoint in the state at `directory` (0: none
    yet; None: the state cannot be read), for the search behind the first pass's early SELECT.
    Read without the lock: a pass taken later only uses that search if it is above a checkpoint
    no higher than the one it then reads (`mailrules.imap.reselect`)."""
    from .state import StateStore

    def checkpoint_of(account: str, server: str) -> int | None:
        try:
            store = StateStore.open_readonly(directory)
            if store is None:
                return 0  # nothing processed yet
            try:
                known = store.mailbox(account, server)
            finally:
                store.close()
        except Exception:  # noqa: BLE001 - then the pass searches itself, and reports what is wrong
            return None
        return known.checkpoint if known is not None else 0

    return checkpoint_of


def run_command(config: Config, registry, directory: Path, args: argparse.Namespace,
                early: SessionPool | None = None) -> int:
    """`mailrules run`: the daemon, or (--once) a catch-up of every watched mailbox, under the state's lock."""
    from .daemon.shard import ShardError, served_accounts, shard_option
    from .imap.pool import SessionPool
    from .lock import AlreadyRunning, StateLock
    from .state import StateError, StateStore

    try:
        args.shard = shard_option(args.shard, dict(os.environ))
    except ShardError as exc:
        print(f"mailrules: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.metrics is not None:
        problem = _metrics_problem(args)
        if problem:
            print(f"mailrules: {problem}", file=sys.stderr)
            return EXIT_CONFIG
    if args.dry_run:  # reads the progress (to know what is new) and writes nothing: read-only
        try:
            store = StateStore.open_readonly(directory)
        except StateError as exc:
            print(f"mailrules: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        try:
            return _run_once(config, registry, store, args)
        finally:
            if store is not None:
                store.close()
    try:
        lock = StateLock(directory)
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"mailrules: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:  # the lock file lives in the state directory too
        print(f"mailrules: state directory {directory}: cannot take the lock "
              f"({exc.strerror or exc}); make it writable for this user, or use --state DIR", file=sys.stderr)
        return EXIT_FAILURE
    # --once: the first connection opens (in a thread; `early`: since the accounts were read) while the
    # store opens and the pass's modules load
    pool = None
    if args.once:
        pool = early or SessionPool(config)
        pool.adopt(config, served_accounts(config, args.shard), checkpoints(directory))
    try:
        store = StateStore(directory)
    except StateError as exc:
        if pool is not None:
            pool.close()
        lock.release()
        print(f"mailrules: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        if pool is not None:
            return _run_once(config, registry, store, args, pool)
        from .daemon.process import DaemonOptions, run_daemon

        options = DaemonOptions(sweep=bool(args.sweep), since_now=bool(args.since_now), rules=tuple(args.rule or ()),
                                shard=args.shard, metrics=args.metrics)
        return run_daemon(config, registry, store, options)
    finally:
        if pool is not None:
            pool.close()  # (if _run_once failed before taking it)
        store.close()
        lock.release()


def _metrics_problem(args: argparse.Namespace) -> str | None:
    """Why --metrics cannot be served (a bad address, the daemon not asked for, the extra missing), or None."""
    from .daemon.metrics import MetricsUnavailable, parse_address, require_client

    if args.once or args.dry_run:
        return "--metrics is for the daemon (run without --once or --dry-run)"
    try:
        parse_address(args.metrics)
        require_client()
    except (ValueError, MetricsUnavailable) as exc:
        return str(exc)
    return None


def _run_once(config: Config, registry, store, args: argparse.Namespace, pool=None) -> int:
    """Catch up on every watched mailbox of every account (and sweep with --sweep), then exit."""
    from .daemon.shard import describe_shard, served_accounts
    from .engine import Engine
    from .imap.pool import SessionPool

    if args.shard is not None:
        log.info("%s", describe_shard(args.shard, config))
    served = served_accounts(config, args.shard)
    pool = pool or SessionPool(config)
    pool.searches_beside = not args.dry_run  # a catch-up: a pass may search on a second connection
    engine = Engine(config, registry, store, pool, dry_run=args.dry_run, rule_names=args.rule)
    failed = False
    registry.notify("mailrules_started", config=config)
    try:
        for account in served:
            for mailbox in account.watch:
                try:
                    outcome = _catch_up(engine, account.name, mailbox, args)
                except Exception as exc:  # noqa: BLE001 - one account's failure must not stop the others
                    failed = True
                    _report_failure(account.name, mailbox, exc, store, config)
                    pool.discard(account.name)
                    continue
                failed |= not outcome.ok
                log.info("account %s mailbox %s: %d new or retried, %d actions applied, %d failed",
                         account.name, mailbox, outcome.candidates, outcome.applied, len(outcome.failed),
                         extra={"event": "summary", "account": account.name, "mailbox": mailbox,
                                "count": outcome.candidates})
        if args.sweep:
            failed |= not _sweep_all(config, engine, store, pool, served)
    finally:
        registry.notify("mailrules_stopping")
        engine.close()
        pool.close()
    return EXIT_FAILURE if failed else EXIT_OK


# New messages per pass of `run --once` over a backlog (see _catch_up); the environment
# variable is for tests that need several slices of a small mailbox.
ONCE_BATCH = int(os.environ.get("MAILRULES_ONCE_BATCH", "") or 100000)


def _catch_up(engine, account: str, mailbox: str, args: argparse.Namespace):
    """One mailbox's arrival pass; a very large backlog in slices of `ONCE_BATCH`, with progress.

    Slices are much larger than the daemon's (`CATCHUP_BATCH`, chosen there so that IDLE
    arrivals wait little): every pass costs its opening, one SEARCH per rule and one command
    per action batch, so slices of 1,000 made a 10,000-message backlog ten passes and its
    run 1.7 times as long; and on a large mailbox each command that changes it costs the
    server a sync of the whole index: 100,000 messages in slices of 25,000 took 36 s against
    18 s in one (peak memory 58 MB against 94 MB, bounded by the slice). Slices only where the checkpoint moves after each (not --dry-run,
    not --rule): elsewhere the next slice would find the same messages again. Returns the
    summed Outcome.
    """
    from .progress import CatchUp

    if args.dry_run or args.rule:
        return engine.process(account, mailbox, since_now=args.since_now)
    outcome = engine.process(account, mailbox, since_now=args.since_now, limit=ONCE_BATCH)
    if not outcome.more:
        return outcome
    progress = CatchUp(account, mailbox, outcome.backlog)
    progress.advance(outcome.candidates)
    total = outcome
    try:
        while outcome.more:
            outcome = engine.process(account, mailbox, limit=ONCE_BATCH, retries=False)
            progress.advance(outcome.candidates, total=progress.done + outcome.backlog)
            if not outcome.candidates:
                break  # no headway (should not happen): never loop on the same messages
            total.add(outcome)
    finally:
        progress.finish()
    total.more = False
    return total


def _sweep_all(config: Config, engine, store, pool, served) -> bool:
    """Every scheduled rule once, now, grouped by schedule (file order kept). True if all went well."""
    ok = True
    groups: dict[str, list] = {}
    for rule in config.rules:
        if rule.schedule is not None and rule.enabled:
            groups.setdefault(rule.schedule.key(), []).append(rule)
    for key, rules in groups.items():
        for account in served:
            mailboxes: list[str] = []
            for rule in rules:
                if rule.account not in (None, account.name):
                    continue
                for mb in rule.mailboxes if rule.mailboxes is not None else account.watch:
                    if mb not in mailboxes:
                        mailboxes.append(mb)
            for mailbox in mailboxes:
                these = [r for r in rules if r.applies_to(account.name, mailbox, account.watch)]
                try:
                    outcome = engine.sweep(account.name, mailbox, these, key)
                except Exception as exc:  # noqa: BLE001
                    ok = False
                    _report_failure(account.name, mailbox, exc, store, config)
                    pool.discard(account.name)
                    continue
                ok &= outcome.ok
    return ok


def _report_failure(account: str, mailbox: str, exc: Exception, store, config: Config) -> None:
    from .state import describe_state_error
    from .wording import in_words, is_missing_mailbox, missing_mailbox

    message = missing_mailbox(config, account, mailbox) if is_missing_mailbox(exc) else in_words(exc)
    log.error("account %s mailbox %s: %s", account, mailbox, message)
    log.debug("details", exc_info=True)
    if store is not None and not store.readonly:
        try:
            for state in store.mailboxes():
                if state.account == account:
                    store.set_error(account, state.mailbox, message)
        except sqlite3.Error as err:  # e.g. the disk is full: the failure is logged all the same
            log.error("%s", describe_state_error(store.path, err, "recording the error"))


# ---------------------------------------------------------------------- check


