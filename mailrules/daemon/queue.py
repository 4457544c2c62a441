"""One account's queue of work: mailboxes to pass over, sweeps, retries, a new configuration.

Filled from other threads (change sources, the scheduler, SIGHUP) and emptied by the
account's worker, one item at a time, under one lock. Every addition *kicks* the worker:
the condition wakes a worker waiting without IDLE, and a byte in the kick pipe ends a
worker's IDLE (`mailrules.imap.idle.IdleLink` watches that pipe).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import threading
import time

from ..model import Config

MAX_RETRY_DELAY = 3600.0  # cap of the delay between retries of failed actions


@dataclasses.dataclass
class SweepTask:
    key: str
    fired: dt.datetime
    remaining: list[str] | None = None  # mailboxes still to sweep (None: not planned yet)


@dataclasses.dataclass(frozen=True)
class Arrival:
    """An arrival pass over `mailbox` (`retries`: also retry its failed messages)."""

    mailbox: str
    retries: bool
    noticed: float | None  # when its new mail was first announced (monotonic), for metrics


class StopSignal:
    """The daemon stops: an event for the worker, and a pipe every watcher's poll sees (written once, never drained)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.wake_r, self.wake_w = os.pipe()
        self.closed = False

    def set(self) -> None:
        self.event.set()
        if not self.closed:
            with contextlib.suppress(OSError):
                os.write(self.wake_w, b"x")

    def close(self) -> None:
        self.closed = True
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class WorkQueue:
    """What the worker of one account has to do, and the kick that wakes it."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.dirty: dict[str, bool] = {}  # mailbox -> retry failed messages in this pass
        self.noticed: dict[str, float] = {}  # mailbox -> when its new mail was first announced
        self.sweeps: dict[str, SweepTask] = {}
        self.new_config: Config | None = None
        self.retry_at: dict[str, float] = {}  # mailbox -> monotonic time of its next retry (worker only)
        self.retry_round: dict[str, int] = {}
        self.kick_r, self.kick_w = os.pipe()
        for fd in (self.kick_r, self.kick_w):
            os.set_blocking(fd, False)
        self.closed = False

    def kick(self) -> None:
        """Wake the worker (called with self.cond held)."""
        self.cond.notify_all()
        if not self.closed:
            with contextlib.suppress(OSError):  # full (already kicked) or closed
                os.write(self.kick_w, b"k")

    def drain_kicks(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self.kick_r, 512):
                pass

    def close(self) -> None:
        with self.cond:
            self.closed = True
            for fd in (self.kick_r, self.kick_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    # -------------------------------------------------------------- additions (any thread)

    def arrival(self, mailbox: str, *, retries: bool = False, announced: bool = False) -> None:
        with self.cond:
            if announced:
                self.noticed.setdefault(mailbox, time.monotonic())
            self.dirty[mailbox] = self.dirty.get(mailbox, False) or retries
            self.kick()

    def sweep(self, key: str, fired: dt.datetime) -> None:
        with self.cond:
            task = self.sweeps.get(key)
            if task is None:
                self.sweeps[key] = SweepTask(key, fired)
            elif fired > task.fired:
                task.fired = fired  # coalesced with the sweep already waiting
            self.kick()

    def configure(self, config: Config) -> None:
        with self.cond:
            self.new_config = config
            self.kick()

    # -------------------------------------------------------------- the worker's side

    def take_config(self) -> Config | None:
        with self.cond:
            config, self.new_config = self.new_config, None
            return config

    def take(self) -> Arrival | SweepTask | None:
        """The next work: arrival passes first (in the order announced), then sweeps (left queued)."""
        with self.cond:
            if self.dirty:
                mailbox = next(iter(self.dirty))
                return Arrival(mailbox, self.dirty.pop(mailbox), self.noticed.pop(mailbox, None))
            if self.sweeps:
                return next(iter(self.sweeps.values()))
            return None

    def sweep_done(self, task: SweepTask) -> None:
        with self.cond:
            if self.sweeps.get(task.key) is task:
                del self.sweeps[task.key]

    def pending(self, *, extra: bool = False) -> bool:
        """Whether work is waiting (called with self.cond held); `extra`: the caller knows of more."""
        return bool(extra or self.new_config is not None or self.dirty or self.sweeps)

    def retry_later(self, mailbox: str, first_delay: float) -> None:
        """Retry the failed messages of `mailbox` later, each time twice as late (worker only)."""
        n = self.retry_round.get(mailbox, 0)
        self.retry_round[mailbox] = n + 1
        delay = min(MAX_RETRY_DELAY, max(first_delay, 1.0) * 2 ** min(n, 20))
        self.retry_at[mailbox] = time.monotonic() + delay

    def retry_at_most(self, mailbox: str, when: float) -> None:
        self.retry_at[mailbox] = min(self.retry_at.get(mailbox, when), when)

    def retries_due(self, now: float) -> None:
        """Queue the retries that fell due (worker only)."""
        for mailbox, when in list(self.retry_at.items()):
            if now >= when:
                del self.retry_at[mailbox]
                self.arrival(mailbox, retries=True)
