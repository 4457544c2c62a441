"""The worker of one account: its turn (connect, due sources, take work, wait), backoff and health reports.

One thread per account owns the account's *action connection* (an `Engine` with its own
`SessionPool` and `StateStore` connection). Every arrival pass, retry and sweep of the
account runs there, one at a time: sweeps and arrival processing never act on the same
mailbox at once, and one slow or failing account never stalls another. What tells it
that mail came is its list of change sources (`mailrules.daemon.sources`); its queue of
work is a `WorkQueue`; while it has nothing to do it waits in IDLE on its home mailbox
(`HomeIdle`, itself one of the sources).
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from .observe import NoObserver, Observer, connect_error_kind
from .plan import plan_sources
from .queue import Arrival, StopSignal, SweepTask, WorkQueue
from .sources import LOGOUT_TIMEOUT, ChangeSource, HomeIdle, StatusPoll

if TYPE_CHECKING:
    import datetime as dt

    from ..plugins import Registry

log = logging.getLogger("mailrules.watcher")

# New messages per pass while catching up on a backlog (the checkpoint advances after each).
CATCHUP_BATCH = int(os.environ.get("MAILRULES_CATCHUP_BATCH", "") or 1000)
# SQLite's page cache of each worker's state connection, in KiB. Its default, 2 MiB, fills
# as the journal grows: what made the daemon's memory grow with time (100 accounts: +22 MB
# in a 10-minute run, up to ~200 MB once the state file passes 2 MB). An account's passes
# read a few pages of each index; measured: a pass is no slower (bench/README.md, "Memory").
STATE_CACHE_KIB = 256


@dataclasses.dataclass(frozen=True)
class WorkerContext:
    """What every account's worker shares with the process."""

    state_dir: str
    registry: Registry
    health: Health
    since_now: bool = False  # the first pass of each watched mailbox starts from now (--since-now)
    observer: Observer = dataclasses.field(default_factory=NoObserver)  # metrics (--metrics), else nothing


@dataclasses.dataclass
class Turn:
    """What the worker's loop carries from one turn to the next (its connection, timers, backoffs)."""

    store: StateStore
    pool: SessionPool
    engine: Engine
    backoff: Backoff
    slow: Backoff
    first_pass: set[str]  # watched mailboxes whose first pass is still to come (--since-now)
    last_used: float = dataclasses.field(default_factory=time.monotonic)
    started_sources: bool = False


class AccountRunner:
    """The worker thread of one account, and its change sources.

    The worker's own connection does every pass and sweep; when there is nothing to do
    it IDLEs on the account's first watched mailbox (its *home*), so that new mail there
    finds a connection already selected and synchronised (the lowest latency). The other
    watched mailboxes are watched by the sources `plan_sources` chose for the server.
    """

    def __init__(self, context: WorkerContext, account: Account, config: Config) -> None:
        self.context = context
        self.account = account
        self.config = config
        self.queue = WorkQueue()
        self.stop_signal = StopSignal()  # at stop: ends the worker's and every watcher's wait for good
        self.home = HomeIdle(self, account.watch[0]) if account.watch else None  # the worker IDLEs there
        self.poll = StatusPoll(self, [])  # the fallback of every other source
        self.change_sources: list[ChangeSource] = [self.poll, *([self.home] if self.home else [])]
        self.broken: set[str] = set()  # mailboxes whose last pass failed as a whole (not per message)
        self.catchups: dict[str, CatchUp] = {}
        self.passes = 0
        self.pool: SessionPool | None = None  # the action connections, while the worker runs (metrics)
        self.failed = False  # the worker died of a bug (liveness)
        self.thread = threading.Thread(target=self._main, name=f"mailrules-{self.name}", daemon=True)

    # what the change sources see of their host (`mailrules.daemon.sources.SourceHost`)

    @property
    def name(self) -> str:
        return self.account.name

    @property
    def stopping(self) -> threading.Event:
        return self.stop_signal.event

    @property
    def wake_r(self) -> int:
        return self.stop_signal.wake_r

    @property
    def health(self) -> Health:
        return self.context.health

    @property
    def observer(self) -> Observer:
        return self.context.observer

    @property
    def kick_r(self) -> int:
        return self.queue.kick_r

    def sources(self) -> list[ChangeSource]:
        with self.queue.cond:
            return list(self.change_sources)

    # -------------------------------------------------------------- from other threads

    def start(self) -> None:
        with self.queue.cond:
            for mailbox in self.account.watch:
                self.queue.dirty[mailbox] = True  # catch up at start (with retries)
        self.thread.start()

    def notify(self, mailbox: str, *, retries: bool = False, announced: bool = False) -> None:
        """New mail may be in `mailbox`: run an arrival pass soon (`announced`: the server said so, now)."""
        self.queue.arrival(mailbox, retries=retries, announced=announced)

    def request_sweep(self, key: str, fired: dt.datetime) -> None:
        self.queue.sweep(key, fired)

    def poll_instead(self, mailbox: str) -> None:
        """A pushing source gave up on `mailbox` (IDLE refused): the STATUS poll takes it over."""
        with self.queue.cond:
            self.poll.add(mailbox)
            self.queue.kick()

    def set_config(self, config: Config) -> None:
        self.queue.configure(config)

    def stop(self) -> None:
        with self.queue.cond:
            self.stop_signal.set()
            self.queue.kick()

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
        with self.queue.cond:
            return self._has_work()

    def _has_work(self) -> bool:
        asked = any(s.next_due() == 0.0 for s in self.change_sources)  # a check asked for now (the poll, at once)
        return self.queue.pending(extra=self.stopping.is_set() or asked)

    # -------------------------------------------------------------- the worker

    def _main(self) -> None:
        store = StateStore(self.context.state_dir)
        store.cap_cache(STATE_CACHE_KIB)
        pool = self.pool = SessionPool(self.config)
        engine = Engine(self.config, self.context.registry, store, pool)
        engine.interrupt = self.stopping.is_set
        try:
            self._loop(Turn(store, pool, engine, Backoff(self.account.reconnect_max), slow_backoff(self.account),
                            set(self.account.watch)))
        except Interrupted:
            log.info("account %s: stopping: the pass in progress was abandoned and resumes at next start",
                     self.name)
        except Exception:  # pragma: no cover - a bug; keep the other accounts going
            self.failed = True
            log.exception("account %s: the worker failed; this account is no longer processed", self.name)
        finally:
            self._shut_down(store, pool, engine)

    def _shut_down(self, store: StateStore, pool: SessionPool, engine: Engine) -> None:
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
            with self.queue.cond:
                self.stop_signal.close()
            self.queue.close()

    def _loop(self, turn: Turn) -> None:
        """Turn after turn: new rules, the connection, due sources and retries, one piece of work or a wait."""
        while not self.stopping.is_set():
            self._apply_new_config(turn)
            session = self._connect(turn)
            if session is None:
                continue
            if not self._check_due_sources(turn, session):
                continue
            self.queue.retries_due(time.monotonic())
            work = self.queue.take()
            if isinstance(work, Arrival):
                ok = self._do_arrival(turn, work)
            elif work is not None:
                ok = self._guard(turn, lambda t=work: self._sweep(turn, t), (work.remaining or [None])[0])
            else:
                ok = self._wait(turn, session)
            turn.last_used = time.monotonic()
            if ok:
                turn.backoff.reset()

    def _apply_new_config(self, turn: Turn) -> None:
        config = self.queue.take_config()
        if config is not None:
            self.config = turn.engine.config = turn.pool.config = config
            log.info("account %s: the new rules apply from the next pass", self.name)

    def _connect(self, turn: Turn) -> ImapSession | None:
        """The action connection (opened if needed; the sources start, or catch up, after); None: retry later."""
        reconnected = turn.pool.current(self.name) is None
        try:
            session = turn.pool.get(self.name)
        except Exception as exc:  # noqa: BLE001 - connection or login failure: retry later
            problem = permanent_problem(exc)
            if problem is not None:  # will not cure itself in seconds: say so, retry slowly
                self.health.problem(self.name, None, problem)
                delay = turn.slow.next()
                log.error("account %s: %s (%s); retrying in %.0fs", self.name, problem, exc, delay)
            else:
                self.health.down(self.name)
                delay = turn.backoff.next()
                log.warning("account %s: cannot connect (%s); retrying in %.1fs", self.name, describe(exc), delay)
            self._record_error(turn.store, describe(exc))
            self.observer.error(connect_error_kind(exc))
            self.stopping.wait(delay)
            return None
        self.health.up(self.name)
        turn.slow.reset()
        if not turn.started_sources:
            turn.started_sources = True
            self._start_sources(session)
        elif reconnected:
            with self.queue.cond:  # catch up after every reconnection
                for source in self.change_sources:
                    source.reconnected()
        return session

    def _check_due_sources(self, turn: Turn, session: ImapSession) -> bool:
        """Run the checks of the sources due now on this connection (polling); False if it was lost."""
        now = time.monotonic()
        for source in self.sources():
            due = source.next_due()
            if due is not None and now >= due:
                if not self._guard(turn, lambda src=source: src.check(session), None):
                    return False
                turn.last_used = time.monotonic()
        return True

    def _do_arrival(self, turn: Turn, work: Arrival) -> bool:
        mailbox = work.mailbox
        since_now = self.context.since_now and mailbox in turn.first_pass
        turn.first_pass.discard(mailbox)
        # IDLE just told this very connection of the new mail: its view is current, no SELECT
        announced = self.home.take_announced() if self.home is not None else False
        current = announced and self.home is not None and mailbox == self.home.mailbox
        return self._guard(
            turn, lambda: self._arrival(turn, work, since_now=since_now, reselect=not current), mailbox,
            requeue=lambda: self.notify(mailbox, retries=work.retries),
        )

    def _wait(self, turn: Turn, session: ImapSession) -> bool:
        """Nothing to do: wait for news (IDLE on home, else the queue) until the next timer."""
        deadline = self._next_timer(turn.last_used)
        home = self.home
        if home is not None and home.enabled and home.mailbox not in self.broken:
            return home.wait(session, turn.store, turn.pool, turn.backoff, deadline)
        with self.queue.cond:
            while not self._has_work() and time.monotonic() < deadline:
                self.queue.cond.wait(deadline - time.monotonic())
        if time.monotonic() - turn.last_used >= min(self.account.idle_interval, 300.0) and not self.has_work():
            return self._guard(turn, session.noop, None)
        return True

    def _next_timer(self, last_used: float) -> float:
        times = [last_used + min(self.account.idle_interval, 300.0)]
        times.extend(t for t in (s.next_due() for s in self.sources()) if t is not None)
        times.extend(self.queue.retry_at.values())
        return min(times)

    def _start_sources(self, session: ImapSession) -> None:
        plan = plan_sources(self, session)
        with self.queue.cond:
            if self.home is not None:
                self.home.enabled = plan.home_idle
            for mailbox in plan.polled:
                self.poll.add(mailbox)
            self.poll.requested = False
            self.change_sources.extend(plan.pushing)
        for source in plan.pushing:
            source.start()

    def _guard(self, turn: Turn, work, mailbox: str | None, *, requeue=None) -> bool:
        """Run `work`; sort a failure into a lost connection (reconnect) or a mailbox problem."""
        try:
            work()
            return True
        except Interrupted:
            raise
        except Exception as exc:  # noqa: BLE001
            if self.stopping.is_set():
                raise Interrupted() from exc
            session = turn.pool.current(self.name)
            if session is None or not self._alive(session):
                turn.pool.drop(self.name)
                if requeue is not None:
                    requeue()
                delay = turn.backoff.next()
                self.observer.error("connection_lost")
                log.warning("account %s: connection lost (%s); reconnecting in %.1fs", self.name,
                            describe(exc), delay)
                self.stopping.wait(delay)
                return False
            self._mailbox_failed(turn.store, session, mailbox, exc)
            return False

    def _mailbox_failed(self, store: StateStore, session: ImapSession, mailbox: str | None,
                        exc: Exception) -> None:
        """A pass or check failed on a working connection: a problem of `mailbox` (retried later)."""
        log.error("account %s mailbox %s: %s", self.name, mailbox or "-", self._in_words(exc, mailbox))
        log.debug("details", exc_info=True)
        missing = None
        if mailbox is not None and mailbox in self.account.watch:
            missing = self._missing_problem(session, mailbox)
            if missing:
                self.health.problem(self.name, mailbox, missing)
        self.observer.error("mailbox_missing" if missing else "mailbox")
        if mailbox is not None:
            with contextlib.suppress(Exception):
                store.set_error(self.name, mailbox, self._in_words(exc, mailbox))
            self.broken.add(mailbox)
            self.queue.retry_later(mailbox, self.account.poll_interval)

    @staticmethod
    def _alive(session: ImapSession) -> bool:
        try:
            session.noop()
            return True
        except Exception:  # noqa: BLE001
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

    # -------------------------------------------------------------- the work

    def _arrival(self, turn: Turn, work: Arrival, *, since_now: bool, reselect: bool = True) -> None:
        mailbox, retries, engine = work.mailbox, work.retries, turn.engine
        started = time.perf_counter()
        outcome = engine.process(self.name, mailbox, since_now=since_now, limit=CATCHUP_BATCH, retries=retries,
                                 reselect=reselect)
        self.observer.pass_done("arrival", time.perf_counter() - started)
        if work.noticed is not None and outcome.candidates:
            self.observer.acted_after(time.monotonic() - work.noticed, outcome.candidates)
        for _ in outcome.failed:
            self.observer.error("action_failed")
        self.broken.discard(mailbox)
        if mailbox in self.account.watch:
            self.health.problem(self.name, mailbox, None)
        log.debug("account %s mailbox %s: pass done in %.1f ms", self.name, mailbox,
                  (time.perf_counter() - started) * 1000)
        self._progress(mailbox, outcome)
        if outcome.candidates:
            log.info("account %s mailbox %s: %d new or retried, %d actions applied, %d failed",
                     self.name, mailbox, outcome.candidates, outcome.applied, len(outcome.failed))
        due = engine.claims.next_due(self.name, outcome.mailbox)  # shared: another's claim may expire
        if due is not None:
            self.queue.retry_at_most(mailbox, time.monotonic() + max(due, 0.2))
        if outcome.failed:
            self.queue.retry_later(mailbox, self.account.poll_interval)
        elif retries:
            self.queue.retry_round.pop(mailbox, None)
        if retries or outcome.candidates:
            state = turn.store.mailbox(self.name, outcome.mailbox)
            if state is not None and state.last_error and outcome.ok:
                turn.store.set_error(self.name, outcome.mailbox, None)
        self.passes += 1

    def _progress(self, mailbox: str, outcome) -> None:
        """A backlog's progress (logged, with a bar on a terminal); the rest of it queued after other work."""
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

    def _sweep(self, turn: Turn, task: SweepTask) -> None:
        engine = turn.engine
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
                started = time.perf_counter()
                try:
                    outcome = engine.sweep(self.name, mailbox, rules, task.key)
                except Exception:
                    if self._connection_ok(engine):
                        task.remaining.pop(0)  # a problem of this mailbox: the next ones still run
                    raise
                self.observer.pass_done("sweep", time.perf_counter() - started)
                log.info("account %s mailbox %s: sweep %s: %d messages, %d actions applied, %d failed",
                         self.name, mailbox, task.key, outcome.candidates, outcome.applied, len(outcome.failed))
            task.remaining.pop(0)
        if not task.remaining:
            self.queue.sweep_done(task)
            record_sweep(turn.store, self.name, task.key, task.fired)

    def _connection_ok(self, engine: Engine) -> bool:
        session = engine.pool.current(self.name)
        return session is not None and self._alive(session)
