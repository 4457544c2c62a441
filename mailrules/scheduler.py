"""Schedules of scheduled rules, as APScheduler 3 triggers."""

from __future__ import annotations

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .model import Schedule


def trigger_for(schedule: Schedule, timezone: str | None = None):
    """The APScheduler trigger for a rule's `schedule:` (cron in local time unless `timezone:`)."""
    if schedule.cron is not None:
        return CronTrigger.from_crontab(schedule.cron, timezone=timezone)
    return IntervalTrigger(seconds=schedule.every_seconds, timezone=timezone)
