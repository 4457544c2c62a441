"""`mailrules status`: progress per account and mailbox, pending and given-up messages, next sweeps."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import TextIO

from .model import Config


def next_sweeps(config: Config, now: dt.datetime | None = None) -> list[tuple[str, dt.datetime | None]]:
    """(schedule description, next fire time) for each distinct schedule of the rules file."""
    from .scheduler import trigger_for

    now = now or dt.datetime.now(dt.UTC)
    seen: dict[str, dt.datetime | None] = {}
    for rule in config.rules:
        if rule.schedule is None or not rule.enabled or rule.schedule.key() in seen:
            continue
        trigger = trigger_for(rule.schedule, config.timezone)
        seen[rule.schedule.key()] = trigger.get_next_fire_time(None, now)
    return list(seen.items())


def print_status(config: Config | None, state_dir: Path, *, out: TextIO) -> int:
    """Print the progress kept in `state_dir`; config None (a broken rules file): no sweeps.

    Opens the state read-only (never creating, migrating or writing it): it works while the
    daemon runs and on a read-only copy. Raises `mailrules.state.StateError` if the state
    file exists but is damaged or unreadable.
    """
    from .state import StateStore, describe_state_error

    store = StateStore.open_readonly(state_dir)
    if store is None:
        print(f"no state yet in {state_dir}: nothing processed yet (mailrules run has not run with this "
              "state directory)", file=out)
        _print_sweeps(config, out)
        return 0
    try:
        _print_progress(store, config, out)
    except sqlite3.Error as exc:
        raise describe_state_error(store.path, exc, "reading it") from None
    finally:
        store.close()
    return 0


def _print_progress(store, config: Config | None, out: TextIO) -> None:
    """The progress of each mailbox, its pending and given-up messages, then the sweeps."""
    pending = store.all_pending()
    for mb in store.mailboxes():
        rows = [p for a, m, p in pending if a == mb.account and m == mb.mailbox]
        retry = sum(1 for p in rows if p.status == "retry")
        given_up = [p for p in rows if p.status == "given_up"]
        when = dt.datetime.fromtimestamp(mb.last_pass).isoformat(timespec="seconds") if mb.last_pass else "never"
        print(f"{mb.account} {mb.mailbox}: processed up to UID {mb.checkpoint} (UIDVALIDITY {mb.uidvalidity}), "
              f"last pass {when}; pending {retry}, given up {len(given_up)}", file=out)
        if mb.last_error:
            print(f"  last error: {mb.last_error}", file=out)
        for p in given_up:
            print(f"  given up: UID {p.uid} Message-ID {p.message_id or '-'} at rule {p.rule_name!r} "
                  f"after {p.attempts} attempts: {p.last_error}", file=out)
        for p in rows:
            if p.status == "retry":
                print(f"  pending: UID {p.uid} at rule {p.rule_name!r} (attempt {p.attempts}): {p.last_error}",
                      file=out)
    _print_sweeps(config, out, store)


def _print_sweeps(config: Config | None, out: TextIO, store=None) -> None:
    """Next sweep of each schedule; with the state, the last sweep of each account and missed ones."""
    if config is None:
        return
    from .scheduler import last_sweep, next_sweep, schedule_groups, sweep_targets

    now = dt.datetime.now(dt.UTC)
    groups = schedule_groups(config)
    for key, when in next_sweeps(config, now):
        lasts = []
        if store is not None and key in groups:
            schedule, rules = groups[key]
            for account in config.accounts:
                if not sweep_targets(config, rules, account):
                    continue
                last = last_sweep(store, account, key)
                due = next_sweep(schedule, config.timezone, last, now) if last else when
                lasts.append((account, last, due))
            dues = [d for _, _, d in lasts if d is not None]
            when = min(dues) if dues else when
        missed = any(last is not None and due is not None and due <= now for _, last, due in lasts)
        shown = when.astimezone().isoformat(timespec="seconds") if when else "none"
        print(f"next sweep {key}: {'at the next start of the daemon (missed)' if missed else shown}", file=out)
        for account, last, _ in lasts:
            text = last.astimezone().isoformat(timespec="seconds") if last else "never"
            print(f"  last sweep of account {account}: {text}", file=out)
