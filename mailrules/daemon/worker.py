"""The worker of one account: its queue of work, its timers, backoff and health reports.

One thread per account owns the account's *action connection* (an `Engine` with its own
`SessionPool` and `StateStore` connection). Every arrival pass, retry and sweep of the
account runs there, one at a time: sweeps and arrival processing never act on the same
mailbox at once, and one slow or failing account never stalls another. What tells it
that mail came is its change sources (`mailrules.daemon.sources`); while it has nothing
to do it waits in IDLE on its home mailbox (`HomeIdle`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from ..engine import Engine, Interrupted
from ..imap.pool import SessionPool
from ..imap.session import ImapSession
from ..model import Account, Config
from ..progress import CatchUp
from ..scheduler import record_sweep, schedule_groups, sweep_targets
from ..state import StateStore
from .backoff import Backoff, slow_backoff
from .health import Health, describe, permanent_problem
from .sources import LOGOUT_TIMEOUT, ChangeSource, HomeIdle, IdleWatch, StatusPoll, plan_sources

if TYPE_CHECKING:
    from ..plugins import Registry

log = logging.getLogger("mailrules.watcher")

# New messages per pass while catching up on a backlog (the checkpoint advances after each).
CATCHUP_BATCH = int(os.environ.get("MAILRULES_CATCHUP_BATCH", "") or 1000)
MAX_RETRY_DELAY = 3600.0  # cap of the delay between retries of failed actions


@dataclasses.dataclass(frozen=True)
class WorkerContext:
    """What every account's worker shares with the process."""

    state_dir: str
    registry: Registry
    health: Health
    since_now: bool = False  # the first pass of each watched mailbox starts from now (--since-now)


@dataclasses.dataclass
class SweepTask:
    key: str
    fired: dt.datetime
    remaining: list[str] | None = None  # mailboxes still to sweep (None: not planned yet)


class AccountRunner:
    """The worker thread of one account, and its change sources.

    The worker's own connection does every pass and sweep; when there is nothing to do
    it IDLEs on the account's first watched mailbox (its *home*), so that new mail there
    finds a connection already selected and synchronised (the lowest latency), and the
    other watched mailboxes get IDLE connections of their own (`IdleWatch`) up to
    ``max_connections`` in all; any further ones are polled (`StatusPoll`).
    """

    def __init__(self, context: WorkerContext, account: Account, config: Config) -> None:
        self.context = context
        self.health = context.health
        self.name = account.name
        self.account = account
        self.config = config
        self.home = HomeIdle(self, account.watch[0]) if account.watch else None  # the worker IDLEs there
        self._new_config: Config | None = None
        self.cond = threading.Condition()
        self.dirty: dict[str, bool] = {}  # mailbox -> retry failed messages in this pass
        self.sweeps: dict[str, SweepTask] = {}
        self.stopping = threading.Event()
        self.wake_r, self.wake_w = os.pipe()  # written once, at stop: wakes every watcher for good
        self.kick_r, self.kick_w = os.pipe()  # written on new work: wakes the worker from IDLE
        for fd in (self.kick_r, self.kick_w):
            os.set_blocking(fd, False)
        self._pipe_closed = False
        self.watches: dict[str, IdleWatch] = {}
        self.poll = StatusPoll(self, [])
        self.retry_at: dict[str, float] = {}
        self.retry_round: dict[str, int] = {}
        self.broken: set[str] = set()  # mailboxes whose last pass failed as a whole (not per message)
        self.catchups: dict[str, CatchUp] = {}
        self.passes = 0
        self.thread = threading.Thread(target=self._main, name=f"mailrules-{self.name}", daemon=True)

    def sources(self) -> list[ChangeSource]:
        with self.cond:
            return [self.poll, *self.watches.values()]

    # -------------------------------------------------------------- from other threads

    def start(self) -> None:
        with self.cond:
            for mailbox in self.account.watch:
                self.dirty[mailbox] = True  # catch up at start (with retries)
        self.thread.start()

    def _kick(self) -> None:
        """Wake the worker (called with self.cond held)."""
        self.cond.notify_all()
        if not self._pipe_closed:
            with contextlib.suppress(OSError):  # full (already kicked) or closed
                os.write(self.kick_w, b"k")

    def notify(self, mailbox: str, *, retries: bool = False) -> None:
        """New mail may be in `mailbox`: run an arrival pass soon."""
        with self.cond:
            self.dirty[mailbox] = self.dirty.get(mailbox, False) or retries
            self._kick()

    def request_sweep(self, key: str, fired: dt.datetime) -> None:
        with self.cond:
            task = self.sweeps.get(key)
            if task is None:
                self.sweeps[key] = SweepTask(key, fired)
            elif fired > task.fired:
                task.fired = fired  # coalesced with the sweep already waiting
            self._kick()

    def poll_instead(self, mailbox: str) -> None:
        with self.cond:
            self.watches.pop(mailbox, None)
            self.poll.add(mailbox)
            self._kick()

    def set_config(self, config: Config) -> None:
        with self.cond:
            self._new_config = config
            self._kick()

    def stop(self) -> None:
        self.stopping.set()
        with self.cond:
            if not self._pipe_closed:
                with contextlib.suppress(OSError):
                    os.write(self.wake_w, b"x")  # never drained: every watcher's poll sees it
            self._kick()

    def join(self, deadline: float) -> bool:
        threads = [self.thread, *(t for s in self.sources() for t in s.threads())]
        for thread in threads:
            if thread.is_alive() or thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            log.warning("account %s: still busy at exit (%s): abandoned; the journal resumes it at next start",
                        self.name, ", ".join(alive))
        return not alive

    def has_work(self) -> bool:
        with self.cond:
            return self._has_work()

    def _has_work(self) -> bool:
        return bool(self.stopping.is_set() or self._new_config is not None or self.dirty or self.sweeps
                    or self.poll.requested)

    # -------------------------------------------------------------- the worker

    def _main(self) -> None:
        store = StateStore(self.context.state_dir)
        pool = SessionPool(self.config)
        engine = Engine(self.config, self.context.registry, store, pool)
        engine.interrupt = self.stopping.is_set
        try:
            self._loop(store, pool, engine)
        except Interrupted:
            log.info("account %s: stopping: the pass in progress was abandoned and resumes at next start",
                     self.name)
        except Exception:  # pragma: no cover - a bug; keep the other accounts going
            log.exception("account %s: the worker failed; this account is no longer processed", self.name)
        finally:
            self.stop()
            threads = [t for s in self.sources() for t in s.threads()]
            for thread in threads:
                thread.join(LOGOUT_TIMEOUT + 0.5)
            for catchup in self.catchups.values():
                catchup.finish()
            with contextlib.suppress(Exception):
                engine.close()
            with contextlib.suppress(Exception):
                pool.close()
            store.close()
            if not any(t.is_alive() for t in threads):
                with self.cond:
                    self._pipe_closed = True
                    for fd in (self.wake_r, self.wake_w, self.kick_r, self.kick_w):
                        with contextlib.suppress(OSError):
                            os.close(fd)

    def _next_timer(self, last_used: float) -> float:
        times = [last_used + min(self.account.idle_interval, 300.0)]
        times.extend(t for t in (s.next_due() for s in self.sources()) if t is not None)
        times.extend(self.retry_at.values())
        return min(times)

    def _loop(self, store: StateStore, pool: SessionPool, engine: Engine) -> None:
        backoff = Backoff(self.account.reconnect_max)
        slow = slow_backoff(self.account)
        health = self.health
        started_sources = False
        last_used = time.monotonic()
        first_pass = set(self.account.watch)
        since_now = self.context.since_now

        while not self.stopping.is_set():
            with self.cond:
                new_config, self._new_config = self._new_config, None
            if new_config is not None:
                self.config = engine.config = pool.config = new_config
                log.info("account %s: the new rules apply from the next pass", self.name)

            # the action connection
            reconnected = pool.current(self.name) is None
            try:
                session = pool.get(self.name)
            except Exception as exc:  # noqa: BLE001 - connection or login failure: retry later
                problem = permanent_problem(exc)
                if problem is not None:  # will not cure itself in seconds: say so, retry slowly
                    health.problem(self.name, None, problem)
                    delay = slow.next()
                    log.error("account %s: %s (%s); retrying in %.0fs", self.name, problem, exc, delay)
                else:
                    health.down(self.name)
                    delay = backoff.next()
                    log.warning("account %s: cannot connect (%s); retrying in %.1fs", self.name, describe(exc),
                                delay)
                self._record_error(store, describe(exc))
                self.stopping.wait(delay)
                continue
            health.up(self.name)
            slow.reset()
            if not started_sources:
                started_sources = True
                self._start_sources(session)
            elif reconnected:
                with self.cond:  # catch up after every reconnection
                    for source in [self.poll, *self.watches.values()]:
                        source.reconnected()
                    if self.home is not None and self.home.enabled:
                        self.dirty.setdefault(self.home.mailbox, False)
            now = time.monotonic()

            # timers: sources checked on this connection (polling), retries
            lost = False
            for source in self.sources():
                due = source.next_due()
                if due is not None and now >= due:
                    if not self._guard(store, pool, lambda s=session, src=source: src.check(s), backoff, None):
                        lost = True
                        break
                    last_used = time.monotonic()
            if lost:
                continue
            for mailbox, when in list(self.retry_at.items()):
                if now >= when:
                    del self.retry_at[mailbox]
                    self.notify(mailbox, retries=True)

            with self.cond:
                if self.dirty:
                    mailbox = next(iter(self.dirty))
                    retries = self.dirty.pop(mailbox)
                    task = None
                elif self.sweeps:
                    mailbox, retries = None, False
                    task = next(iter(self.sweeps.values()))
                else:
                    mailbox, task = None, None

            if mailbox is not None:
                sn = since_now and mailbox in first_pass
                first_pass.discard(mailbox)
                # IDLE just told this very connection of the new mail: its view is current, no SELECT
                announced = self.home.take_announced() if self.home is not None else False
                current = announced and self.home is not None and mailbox == self.home.mailbox
                ok = self._guard(
                    store, pool,
                    lambda m=mailbox, r=retries, sn=sn, c=current: self._arrival(
                        store, engine, m, retries=r, since_now=sn, reselect=not c),
                    backoff, mailbox, requeue=lambda m=mailbox, r=retries: self.notify(m, retries=r),
                )
            elif task is not None:
                ok = self._guard(store, pool, lambda t=task: self._sweep(store, engine, t), backoff,
                                 (task.remaining or [None])[0])
            else:  # nothing to do: wait for news
                deadline = self._next_timer(last_used)
                home = self.home
                if home is not None and home.enabled and home.mailbox not in self.broken:
                    ok = home.wait(session, store, pool, backoff, deadline)
                else:
                    with self.cond:
                        while not self._has_work() and time.monotonic() < deadline:
                            self.cond.wait(deadline - time.monotonic())
                    ok = True
                    if time.monotonic() - last_used >= min(self.account.idle_interval, 300.0) and not self._has_work():
                        ok = self._guard(store, pool, session.noop, backoff, None)
            last_used = time.monotonic()
            if ok:
                backoff.reset()

    def _start_sources(self, session: ImapSession) -> None:
        home_idle, idle, polled = plan_sources(self.account, session.has("IDLE"))
        if self.home is not None:
            self.home.enabled = home_idle
        with self.cond:
            for mailbox in polled:
                self.poll.add(mailbox)
            self.poll.requested = False
            for mailbox in idle:
                watch = IdleWatch(self, mailbox)
                self.watches[mailbox] = watch
                watch.start()

    def _guard(self, store: StateStore, pool: SessionPool, work, backoff: Backoff, mailbox: str | None,
               *, requeue=None) -> bool:
        """Run `work`; sort a failure into a lost connection (reconnect) or a mailbox problem."""
        try:
            work()
            return True
        except Interrupted:
            raise
        except Exception as exc:  # noqa: BLE001
            if self.stopping.is_set():
                raise Interrupted() from exc
            session = pool.current(self.name)
            alive = False
            if session is not None:
                try:
                    session.noop()
                    alive = True
                except Exception:  # noqa: BLE001
                    alive = False
            if not alive:
                pool.drop(self.name)
                if requeue is not None:
                    requeue()
                delay = backoff.next()
                log.warning("account %s: connection lost (%s); reconnecting in %.1fs", self.name,
                            describe(exc), delay)
                self.stopping.wait(delay)
                return False
            log.error("account %s mailbox %s: %s", self.name, mailbox or "-", self._in_words(exc, mailbox))
            log.debug("details", exc_info=True)
            if mailbox is not None and mailbox in self.account.watch and session is not None:
                missing = self._missing_problem(session, mailbox)
                if missing:
                    self.health.problem(self.name, mailbox, missing)
            if mailbox is not None:
                with contextlib.suppress(Exception):
                    store.set_error(self.name, mailbox, self._in_words(exc, mailbox))
                self.broken.add(mailbox)
                self._retry_later(mailbox)
            return False

    def _in_words(self, exc: BaseException, mailbox: str | None) -> str:
        """The failure in words; a missing mailbox with the rules (file:line) that read it."""
        from ..wording import is_missing_mailbox, missing_mailbox

        if mailbox is not None and is_missing_mailbox(exc):
            return missing_mailbox(self.config, self.name, mailbox)
        return describe(exc)

    def _missing_problem(self, session: ImapSession, mailbox: str) -> str | None:
        """'mailbox ... does not exist' when a watched mailbox's pass failed because it is missing."""
        try:
            server = session.server_name(mailbox)
        except ValueError as exc:
            return f"mailbox {mailbox!r} cannot exist on this server ({exc})"
        try:
            return None if session.folder_exists(server) else f"mailbox {mailbox!r} does not exist"
        except Exception:  # noqa: BLE001 - cannot tell: not reported as missing
            return None

    def _record_error(self, store: StateStore, message: str) -> None:
        with contextlib.suppress(Exception):
            for state in store.mailboxes():
                if state.account == self.name:
                    store.set_error(self.name, state.mailbox, message)

    def _retry_later(self, mailbox: str) -> None:
        n = self.retry_round.get(mailbox, 0)
        self.retry_round[mailbox] = n + 1
        delay = min(MAX_RETRY_DELAY, max(self.account.poll_interval, 1.0) * 2 ** min(n, 20))
        self.retry_at[mailbox] = time.monotonic() + delay

    def _arrival(self, store: StateStore, engine: Engine, mailbox: str, *, retries: bool, since_now: bool,
                 reselect: bool = True) -> None:
        started = time.perf_counter()
        outcome = engine.process(self.name, mailbox, since_now=since_now, limit=CATCHUP_BATCH, retries=retries,
                                 reselect=reselect)
        self.broken.discard(mailbox)
        if mailbox in self.account.watch:
            self.health.problem(self.name, mailbox, None)
        log.debug("account %s mailbox %s: pass done in %.1f ms", self.name, mailbox,
                  (time.perf_counter() - started) * 1000)
        catchup = self.catchups.get(mailbox)
        if outcome.more and catchup is None:
            catchup = self.catchups[mailbox] = CatchUp(self.name, mailbox, outcome.backlog)
        if catchup is not None:
            catchup.advance(outcome.candidates, total=catchup.done + outcome.backlog)
            if not outcome.more:
                catchup.finish()
                del self.catchups[mailbox]
        if outcome.more:
            self.notify(mailbox)  # the rest of the backlog, after any other waiting work
        if outcome.candidates:
            log.info("account %s mailbox %s: %d new or retried, %d actions applied, %d failed",
                     self.name, mailbox, outcome.candidates, outcome.applied, len(outcome.failed))
        due = engine.claims.next_due(self.name, outcome.mailbox)  # shared: another's claim may expire
        if due is not None:
            when = time.monotonic() + max(due, 0.2)
            self.retry_at[mailbox] = min(self.retry_at.get(mailbox, when), when)
        if outcome.failed:
            self._retry_later(mailbox)
        elif retries:
            self.retry_round.pop(mailbox, None)
        if retries or outcome.candidates:
            state = store.mailbox(self.name, outcome.mailbox)
            if state is not None and state.last_error and outcome.ok:
                store.set_error(self.name, outcome.mailbox, None)
        self.passes += 1

    def _sweep(self, store: StateStore, engine: Engine, task: SweepTask) -> None:
        group = schedule_groups(self.config).get(task.key)
        if task.remaining is None:
            task.remaining = [mb for mb, _ in sweep_targets(self.config, group[1], self.name)] if group else []
            if task.remaining:
                log.info("account %s: sweep %s of %s", self.name, task.key, ", ".join(task.remaining))
        if task.remaining and group is not None:
            mailbox = task.remaining[0]
            targets = dict(sweep_targets(self.config, group[1], self.name))
            rules = targets.get(mailbox, [])
            if rules:
                try:
                    outcome = engine.sweep(self.name, mailbox, rules, task.key)
                except Exception:
                    if self._connection_ok(engine):
                        task.remaining.pop(0)  # a problem of this mailbox: the next ones still run
                    raise
                log.info("account %s mailbox %s: sweep %s: %d messages, %d actions applied, %d failed",
                         self.name, mailbox, task.key, outcome.candidates, outcome.applied, len(outcome.failed))
            task.remaining.pop(0)
        if not task.remaining:
            with self.cond:
                if self.sweeps.get(task.key) is task:
                    del self.sweeps[task.key]
            record_sweep(store, self.name, task.key, task.fired)

    def _connection_ok(self, engine: Engine) -> bool:
        session = engine.pool.current(self.name)
        if session is None:
            return False
        try:
            session.noop()
            return True
        except Exception:  # noqa: BLE001
            return False
