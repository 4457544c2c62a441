"""`mailrules status`: progress per account and mailbox, pending and given-up messages, next sweeps."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import TextIO

from .model import Config
from .refused import waiting_lines


def next_sweeps(config: Config, now: dt.datetime | None = None) -> list[tuple[str, dt.datetime | None]]:
    """(schedule key, next fire time) for each distinct schedule, knowing no past sweep.

    A cron schedule has a fixed next time; an interval schedule has none (None) until the
    daemon has run with it: its first sweep is one interval after the daemon's start.
    """
    from .scheduler import schedule_groups, trigger_for

    now = now or dt.datetime.now(dt.UTC)
    out = []
    for key, (schedule, _rules) in schedule_groups(config).items():
        when = None
        if schedule.cron is not None:
            when = trigger_for(schedule, config.timezone).get_next_fire_time(None, now)
        out.append((key, when))
    return out


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
    from .daemon.shard import SHARD_META

    shard = store.get_meta(SHARD_META)
    if shard:  # run --shard: this state directory holds only that shard's accounts
        print(f"{shard} (as the daemon last started)", file=out)
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
        for line in waiting_lines(store, mb.account, mb.mailbox):  # rules the server refused (mailrules.refused)
            print(line, file=out)
        for p in given_up:
            print(f"  given up: UID {p.uid} Message-ID {p.message_id or '-'} at rule {p.rule_name!r} "
                  f"after {p.attempts} attempts: {p.last_error}", file=out)
        for p in rows:
            if p.status == "retry":
                print(f"  pending: UID {p.uid} at rule {p.rule_name!r} (attempt {p.attempts}): {p.last_error}",
                      file=out)
    _print_health(config, out, store)
    _print_sweeps(config, out, store)


def _print_health(config: Config | None, out: TextIO, store) -> None:
    """The permanent problems the daemon last reported (login refused, a watched mailbox missing)."""
    if config is None:
        return
    from .daemon.health import health_key

    for name, account in config.accounts.items():
        for mailbox in (None, *account.watch):
            value = store.get_meta(health_key(name, mailbox))
            if value:
                since, _, text = value.partition("\t")
                when = dt.datetime.fromisoformat(since).astimezone().isoformat(timespec="seconds")
                print(f"account {name}: {text} (reported by the daemon since {when})", file=out)


def _print_sweeps(config: Config | None, out: TextIO, store=None) -> None:
    """Per schedule: its rules, next sweep and each account's last sweep.

    The next time is computed from what the state recorded (the last sweep, else the
    daemon's first run with the schedule), never from "now": without a daemon it must
    not move forward on every call.
    """
    if config is None:
        return
    from .scheduler import (
        describe_schedule,
        last_sweep,
        next_sweep,
        schedule_groups,
        sweep_reference,
        sweep_targets,
    )

    now = dt.datetime.now(dt.UTC)
    groups = schedule_groups(config)
    for key, when in next_sweeps(config, now):
        schedule, rules = groups[key]
        lasts = []
        if store is not None:
            for account in config.accounts:
                if not sweep_targets(config, rules, account):
                    continue
                reference = sweep_reference(store, account, key)
                due = next_sweep(schedule, config.timezone, reference, now) if reference else when
                lasts.append((account, last_sweep(store, account, key), reference, due))
            dues = [d for *_, d in lasts if d is not None]
            when = min(dues) if dues else when
        missed = any(ref is not None and due is not None and due <= now for _, _, ref, due in lasts)
        if missed:
            shown = "at the next start of the daemon (missed)"
        elif when is not None:
            shown = when.astimezone().isoformat(timespec="seconds")
        else:
            shown = "first sweep one interval after the daemon starts"
        names = ", ".join(repr(r.name) for r in rules)
        label = "rule" if len(rules) == 1 else "rules"
        print(f"next sweep of {label} {names} ({describe_schedule(schedule)}): {shown}", file=out)
        for account, last, _, _ in lasts:
            text = last.astimezone().isoformat(timespec="seconds") if last else "never"
            print(f"  last sweep of account {account}: {text}", file=out)
