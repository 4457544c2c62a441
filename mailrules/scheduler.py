"""Schedules of scheduled rules, as APScheduler 3 triggers, and the daemon's sweep timer.

Rules that share a schedule (`Schedule.key()`) sweep together, in file order. The daemon
runs one APScheduler job per schedule key; a job only *asks* each account's worker for a
sweep (the worker runs it through the engine on its own connection, so a sweep never
runs at the same time as other processing of that mailbox). Jobs coalesce (runs missed
while the process was suspended run once) and have no misfire limit: a late sweep runs
late rather than never.

The time of the last completed sweep of each account and schedule is kept in the state
store (``meta`` key ``sweep:<account>:<schedule key>``): a sweep that fell due while the
daemon was down runs once at start, and interval schedules keep their cadence across
restarts.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .model import Config, Rule, Schedule

log = logging.getLogger("mailrules.scheduler")

MISFIRE_GRACE: int | None = None  # APScheduler: None = a late run always happens (coalesced to one)


def trigger_for(schedule: Schedule, timezone: str | None = None, *, start: dt.datetime | None = None):
    """The APScheduler trigger for a rule's `schedule:` (cron in local time unless `timezone:`).

    `start` anchors an interval schedule (its first run; later ones follow every interval).
    """
    if schedule.cron is not None:
        return CronTrigger.from_crontab(schedule.cron, timezone=timezone)
    return IntervalTrigger(seconds=schedule.every_seconds, start_date=start, timezone=timezone)


# ---------------------------------------------------------------------- planning


def schedule_groups(config: Config) -> dict[str, tuple[Schedule, list[Rule]]]:
    """The enabled scheduled rules by schedule key, in file order."""
    groups: dict[str, tuple[Schedule, list[Rule]]] = {}
    for rule in config.rules:
        if rule.schedule is not None and rule.enabled:
            groups.setdefault(rule.schedule.key(), (rule.schedule, []))[1].append(rule)
    return groups


def sweep_targets(config: Config, rules: list[Rule], account: str) -> list[tuple[str, list[Rule]]]:
    """(mailbox, rules) that a sweep of these rules covers in `account`, in a stable order."""
    acct = config.accounts[account]
    mailboxes: list[str] = []
    for rule in rules:
        if rule.account not in (None, account):
            continue
        for mb in rule.mailboxes if rule.mailboxes is not None else acct.watch:
            if mb not in mailboxes:
                mailboxes.append(mb)
    out = []
    for mb in mailboxes:
        these = [r for r in rules if r.applies_to(account, mb, acct.watch)]
        if these:
            out.append((mb, these))
    return out


# ---------------------------------------------------------------------- last sweeps


def meta_key(account: str, key: str) -> str:
    return f"sweep:{account}:{key}"


def last_sweep(store, account: str, key: str) -> dt.datetime | None:
    text = store.get_meta(meta_key(account, key))
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def baseline_key(account: str, key: str) -> str:
    return f"sweep-since:{account}:{key}"


def sweep_baseline(store, account: str, key: str) -> dt.datetime | None:
    """When the daemon first ran with this schedule for `account` (no sweep needed to be missed)."""
    text = store.get_meta(baseline_key(account, key))
    try:
        when = dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return when if when is None or when.tzinfo else when.replace(tzinfo=dt.UTC)


def sweep_reference(store, account: str, key: str) -> dt.datetime | None:
    """The time the schedule counts from: the last sweep, else the daemon's first run with it."""
    return last_sweep(store, account, key) or sweep_baseline(store, account, key)


def describe_schedule(schedule: Schedule) -> str:
    """'every 1h' or "cron '0 3 * * *'", as a person reads it (not `Schedule.key()`)."""
    if schedule.cron is not None:
        return f"cron {schedule.cron!r}"
    seconds = schedule.every_seconds or 0
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"every {seconds // size}{unit}"
    return f"every {seconds}s"


def record_sweep(store, account: str, key: str, when: dt.datetime) -> None:
    previous = last_sweep(store, account, key)
    if previous is None or when > previous:
        store.set_meta(meta_key(account, key), when.astimezone(dt.UTC).isoformat())


def due_since(schedule: Schedule, timezone: str | None, last: dt.datetime, now: dt.datetime) -> bool:
    """Whether a run of `schedule` fell due after `last` and by `now` (a missed sweep)."""
    if schedule.every_seconds is not None:
        return (now - last).total_seconds() >= schedule.every_seconds
    nxt = trigger_for(schedule, timezone).get_next_fire_time(None, last + dt.timedelta(microseconds=1))
    return nxt is not None and nxt <= now


def next_sweep(schedule: Schedule, timezone: str | None, last: dt.datetime | None,
               now: dt.datetime) -> dt.datetime | None:
    """When the next sweep of `schedule` is due (`now` if one was missed since `last`)."""
    if last is not None and due_since(schedule, timezone, last, now):
        return now
    start = last + dt.timedelta(seconds=schedule.every_seconds) if (last and schedule.every_seconds) else None
    if schedule.every_seconds is not None and start is None:
        start = now + dt.timedelta(seconds=schedule.every_seconds)
    return trigger_for(schedule, timezone, start=start).get_next_fire_time(None, now)


# ---------------------------------------------------------------------- the daemon's timer


class SweepScheduler:
    """One APScheduler job per schedule key; each run calls `dispatch(key, fire_time)`.

    `dispatch` must return at once (it hands the sweep to the accounts' workers).
    """

    def __init__(self, config: Config, store, dispatch: Callable[[str, dt.datetime], None]) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.config = config
        self.store = store
        self.dispatch = dispatch
        self.scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "misfire_grace_time": MISFIRE_GRACE, "max_instances": 1},
        )
        self._started = False

    def start(self) -> None:
        self._add_jobs()
        self.scheduler.start()
        self._started = True

    def _add_jobs(self) -> None:
        now = dt.datetime.now(dt.UTC)
        for key, (schedule, _rules) in schedule_groups(self.config).items():
            start = None
            if schedule.every_seconds is not None:
                lasts = [sweep_reference(self.store, a, key) for a in self.config.accounts]
                known = [t for t in lasts if t is not None]
                anchor = max(known) if known else now
                start = anchor + dt.timedelta(seconds=schedule.every_seconds)
                while start <= now:  # the missed run happens at start (see missed()); keep the cadence
                    start += dt.timedelta(seconds=schedule.every_seconds)
            self.scheduler.add_job(
                self._fire, trigger_for(schedule, self.config.timezone, start=start), args=[key], id=key,
                name=f"sweep {key}", replace_existing=True,
            )

    def _fire(self, key: str) -> None:
        log.info("schedule %s: sweep due", key)
        self.dispatch(key, dt.datetime.now(dt.UTC))

    def missed(self, account: str, now: dt.datetime | None = None) -> list[str]:
        """Schedule keys whose sweep of `account` fell due while the daemon was down.

        A schedule never swept before (new, or the first start) is not missed: its
        first sweep is its next scheduled time. The time it was first seen is recorded as
        its baseline (not as a sweep: `status` must not show a sweep that never ran), and
        a sweep that fell due after the baseline while the daemon was down is missed.
        """
        now = now or dt.datetime.now(dt.UTC)
        out = []
        for key, (schedule, rules) in schedule_groups(self.config).items():
            if not sweep_targets(self.config, rules, account):
                continue
            last = sweep_reference(self.store, account, key)
            if last is None:
                self.store.set_meta(baseline_key(account, key), now.astimezone(dt.UTC).isoformat())
            elif due_since(schedule, self.config.timezone, last, now):
                out.append(key)
        return out

    def reload(self, config: Config) -> None:
        self.config = config
        for job in self.scheduler.get_jobs():
            job.remove()
        self._add_jobs()

    def shutdown(self) -> None:
        if self._started:
            self.scheduler.shutdown(wait=False)
            self._started = False
