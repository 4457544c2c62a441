"""Change sources: what tells an account's worker that a mailbox may hold new mail.

Every source reports through its host (the account's worker, `mailrules.daemon.worker`)
with ``host.notify(mailbox)``; the worker does the passes. A source is one of two kinds,
behind one interface (`ChangeSource`):

* it **pushes** from a thread and a connection of its own (`IdleWatch`: IDLE on one
  mailbox; `mailrules.daemon.notify.NotifyWatch`: NOTIFY, RFC 5465, for many mailboxes
  on one connection): ``next_due()`` is None;
* or it is **checked** by the worker on the worker's own connection when due
  (`StatusPoll`: ``STATUS (UIDNEXT)`` every ``poll_interval``).

`mailrules.daemon.plan` decides who watches what (NOTIFY, or IDLE up to ``max_connections``;
the rest polled);
`HomeIdle` is how the worker itself waits: IDLE on its first watched mailbox on the
action connection, so that new mail there finds a connection already selected.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Protocol

import imapclient
from imapclient.exceptions import IMAPClientError

from ..criteria import SearchQuery
from ..imap.idle import IdleLink, IdleRefused, exists_in
from ..imap.pool import SessionPool
from ..imap.session import ImapSession
from ..model import Account
from ..state import StateStore
from .backoff import HEALTHY_AFTER, Backoff, slow_backoff
from .health import Health, MailboxMissing, describe, permanent_problem
from .observe import Observer, connect_error_kind

log = logging.getLogger("mailrules.watcher")

LOGOUT_TIMEOUT = 2.0  # seconds for DONE/LOGOUT when stopping


class SourceHost(Protocol):
    """What a change source needs from the account's worker."""

    name: str
    account: Account
    stopping: threading.Event
    wake_r: int  # readable once the daemon stops: ends every wait for good
    health: Health
    observer: Observer

    def notify(self, mailbox: str, *, retries: bool = False, announced: bool = False) -> None:
        """New mail may be in `mailbox`: run an arrival pass soon (`announced`: the server just said so)."""

    def poll_instead(self, mailbox: str) -> None:
        """Pushing failed for good (IDLE refused): poll `mailbox` from now on."""


class ChangeSource(Protocol):
    """One way of learning that watched mailboxes changed."""

    def start(self) -> None:
        """Begin watching (a pushing source starts its thread)."""

    def next_due(self) -> float | None:
        """The monotonic time the worker must call `check` at; None if the source pushes by itself."""

    def check(self, session: ImapSession) -> None:
        """Look for changes on the worker's connection (a pushing source does nothing)."""

    def reconnected(self) -> None:
        """The worker's connection was reopened: what changed meanwhile was not seen."""

    def threads(self) -> list[threading.Thread]:
        """The threads to wait for at stop."""


def close_client(client: imapclient.IMAPClient | None, *, logout: bool) -> None:
    """Log out within LOGOUT_TIMEOUT (logout=True), or just close the socket."""
    if client is None:
        return
    if logout:
        try:
            sock = client.socket()
            sock.settimeout(LOGOUT_TIMEOUT)
            client.logout()
            return
        except Exception:  # noqa: BLE001 - already gone: just close
            pass
    with contextlib.suppress(Exception):
        client.shutdown()


# ====================================================================== polling


class StatusPoll:
    """``STATUS (UIDNEXT)`` of some mailboxes every ``poll_interval``, on the worker's connection.

    The mailbox list only grows (`add`, from an IDLE source that was refused), under the
    worker's lock; a change of UIDNEXT notifies the worker.
    """

    def __init__(self, host: SourceHost, mailboxes: list[str]) -> None:
        self.host = host
        self.mailboxes = list(mailboxes)
        self.known_uidnext: dict[str, int] = {}
        self.requested = False  # check at the next turn (after a reconnection, or a new mailbox)
        self.next_at = 0.0

    def start(self) -> None:
        pass

    def add(self, mailbox: str) -> None:
        if mailbox not in self.mailboxes:
            self.mailboxes.append(mailbox)
        self.requested = True

    def next_due(self) -> float | None:
        if not self.mailboxes:
            return None
        return 0.0 if self.requested else self.next_at

    def check(self, session: ImapSession) -> None:
        self.requested = False
        self.next_at = time.monotonic() + self.host.account.poll_interval
        if session.selected is not None:
            # STATUS of the selected mailbox reports this session's (stale) view: sync it first
            session.noop()
        for mailbox in list(self.mailboxes):
            uidnext = session.status_uidnext(session.server_name(mailbox))
            known = self.known_uidnext.get(mailbox)
            if known != uidnext:
                self.known_uidnext[mailbox] = uidnext
                self.host.notify(mailbox, announced=known is not None)

    def reconnected(self) -> None:
        self.requested = bool(self.mailboxes)

    def threads(self) -> list[threading.Thread]:
        return []


# ====================================================================== IDLE on a connection of its own


class ThreadedSource:
    """A ChangeSource that watches on a connection and thread of its own (IDLE per mailbox,
    NOTIFY): nothing is due on the worker's side, and the worker has nothing to check; the
    thread wakes the worker through its host."""

    def __init__(self, host: SourceHost, thread_name: str) -> None:
        self.host = host
        self.connected = False  # its connection is open (metrics)
        self.thread = threading.Thread(target=self._main, name=thread_name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def next_due(self) -> float | None:
        return None

    def check(self, session: ImapSession) -> None:
        pass

    def reconnected(self) -> None:
        pass

    def threads(self) -> list[threading.Thread]:
        return [self.thread]

    def _main(self) -> None:
        raise NotImplementedError


class IdleWatch(ThreadedSource):
    """A thread holding one IDLE connection on one mailbox; wakes the account's worker."""

    def __init__(self, host: SourceHost, mailbox: str) -> None:
        self.mailbox = mailbox
        super().__init__(host, f"mailrules-idle-{host.name}-{mailbox}")

    def _main(self) -> None:
        from ..connect import connect

        host, account = self.host, self.host.account
        backoff = Backoff(account.reconnect_max)
        slow = slow_backoff(account)
        health = host.health
        first = True
        while not host.stopping.is_set():
            client = None
            connected = time.monotonic()
            try:
                client = connect(account)
                connected = time.monotonic()
                session = ImapSession(client, account.name)
                if not session.has("IDLE"):
                    raise IdleRefused("the server does not advertise IDLE")
                self._select(session)
                self.connected = True
                health.problem(account.name, self.mailbox, None)
                slow.reset()
                link = IdleLink(client, host.wake_r, account.timeout)
                if first:
                    log.info("account %s mailbox %s: watching with IDLE", account.name, self.mailbox)
                else:
                    log.info("account %s mailbox %s: reconnected; watching with IDLE again",
                             account.name, self.mailbox)
                first = False
                host.notify(self.mailbox)  # catch up on what arrived while not watching
                self._idle(link, backoff)
                self.connected = False
                close_client(client, logout=True)
                return  # stopping
            except IdleRefused as exc:
                self.connected = False
                log.warning("account %s mailbox %s: IDLE refused (%s): polling this mailbox instead",
                            account.name, self.mailbox, exc)
                close_client(client, logout=True)
                host.poll_instead(self.mailbox)
                return
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                self.connected = False
                close_client(client, logout=False)
                if host.stopping.is_set():
                    return
                problem = permanent_problem(exc)
                host.observer.error("watch_lost" if problem is None else connect_error_kind(exc))
                if problem is not None:  # the worker reports account-level ones; this mailbox's here
                    if isinstance(exc, MailboxMissing):
                        health.problem(account.name, self.mailbox, problem)
                    delay = slow.next()
                    log.error("account %s mailbox %s: not watched: %s; checking again in %.0fs",
                              account.name, self.mailbox, describe(exc) if not isinstance(exc, MailboxMissing)
                              else problem, delay)
                    host.stopping.wait(delay)
                    continue
                if time.monotonic() - connected >= HEALTHY_AFTER:
                    backoff.reset()
                delay = backoff.next()
                log.warning("account %s mailbox %s: IDLE connection lost (%s); reconnecting in %.1fs",
                            account.name, self.mailbox, describe(exc), delay)
                host.stopping.wait(delay)

    def _select(self, session: ImapSession) -> None:
        """EXAMINE the watched mailbox; a missing one raises MailboxMissing (not a lost connection)."""
        try:
            server = session.server_name(self.mailbox)
        except ValueError as exc:  # a level contains the server's separator
            raise MailboxMissing(f"mailbox {self.mailbox!r} cannot exist on this server ({exc})") from None
        try:
            session.select(server, readonly=True)
        except IMAPClientError:
            if not session.folder_exists(server):
                account = self.host.account
                raise MailboxMissing(f"mailbox {self.mailbox!r} does not exist; 'watch:' of account "
                                     f"{account.name!r} names it ({account.location})") from None
            raise

    def _idle(self, link: IdleLink, backoff: Backoff) -> None:
        interval = self.host.account.idle_interval
        while True:
            self._seen(link.start())
            deadline = time.monotonic() + interval
            while True:
                got = link.wait(deadline)
                if got is None:  # woken: the daemon is stopping
                    with contextlib.suppress(Exception):
                        link.done(LOGOUT_TIMEOUT)
                    return
                self._seen(got)
                if time.monotonic() >= deadline:
                    break
            self._seen(link.done())  # answered in time: the connection is alive
            backoff.reset()

    def _seen(self, lines: list[bytes]) -> None:
        if exists_in(lines):
            log.debug("account %s mailbox %s: new mail announced", self.host.name, self.mailbox)
            self.host.notify(self.mailbox, announced=True)


# ====================================================================== the worker's own IDLE


class HomeHost(SourceHost, Protocol):
    kick_r: int  # readable when new work came: ends the worker's IDLE

    def has_work(self) -> bool:
        """Whether work is waiting (takes the worker's lock)."""


class HomeIdle:
    """The worker's wait: IDLE on its home mailbox, on the action connection.

    When new mail comes there, the connection is already selected and synchronised, so
    the pass starts at once (`announced`: no SELECT needed). Before each IDLE it checks that
    nothing arrived while the connection was busy (IDLE announces only what this
    connection has not been told yet).
    """

    def __init__(self, host: HomeHost, mailbox: str) -> None:
        self.host = host
        self.mailbox = mailbox
        self.enabled = False  # True once the server is known to offer IDLE; False again if it refused it
        self.announced = False  # the last IDLE reported new mail on this very connection
        self._session: ImapSession | None = None  # the connection the IDLE was announced on
        self._logged_once = False

    # as a ChangeSource: it pushes on the worker's own connection, from the worker's wait

    def start(self) -> None:
        pass

    def next_due(self) -> float | None:
        return None

    def check(self, session: ImapSession) -> None:
        pass

    def reconnected(self) -> None:
        """The worker's connection was reopened: home is passed over again (IDLE announces only news)."""
        if self.enabled:
            self.host.notify(self.mailbox)

    def threads(self) -> list[threading.Thread]:
        return []

    def take_announced(self) -> bool:
        """Whether the IDLE just told this connection of new mail (so its view is current); clears it."""
        announced, self.announced = self.announced, False
        return announced

    def wait(self, session: ImapSession, store: StateStore, pool: SessionPool, backoff: Backoff,
             deadline: float) -> bool:
        """IDLE until news, new work, or `deadline` (at most idle_interval); False if the connection died."""
        host, name, home = self.host, self.host.name, self.mailbox
        try:
            if self._needs_pass(session, store):
                host.notify(home)
                return True
        except Exception as exc:  # noqa: BLE001 - let the pass meet (and sort out) the problem
            log.debug("account %s: checking %s before IDLE failed: %s", name, home, exc)
            host.notify(home)
            return True
        with contextlib.suppress(OSError):
            while os.read(host.kick_r, 512):
                pass
        if host.has_work():
            return True
        deadline = min(deadline, time.monotonic() + host.account.idle_interval)
        try:
            link = IdleLink(session.client, host.kick_r, host.account.timeout)
            seen = link.start()
            if self._session is not session:
                self._session = session
                again = "reconnected; watching with IDLE again" if self._logged_once else "watching with IDLE"
                self._logged_once = True
                log.info("account %s mailbox %s: %s", name, home, again)
            if not exists_in(seen):
                seen = seen + (link.wait(deadline) or [])  # None: woken for other work
            seen = seen + link.done()  # answered in time: the connection is alive
        except IdleRefused as exc:
            log.warning("account %s mailbox %s: IDLE refused (%s): polling this mailbox instead", name, home, exc)
            self.enabled = False
            host.poll_instead(home)
            return True
        except Exception as exc:  # noqa: BLE001 - the connection is gone
            if host.stopping.is_set():
                return True
            pool.drop(name)
            host.notify(home)  # catch up once reconnected
            host.observer.error("connection_lost")
            delay = backoff.next()
            log.warning("account %s mailbox %s: IDLE connection lost (%s); reconnecting in %.1fs",
                        name, home, describe(exc), delay)
            host.stopping.wait(delay)
            return False
        if exists_in(seen):
            log.debug("account %s mailbox %s: new mail announced", name, home)
            self.announced = True
            host.notify(home, announced=True)
        return True

    def _needs_pass(self, session: ImapSession, store: StateStore) -> bool:
        """Whether home may hold mail that no arrival pass took yet (so IDLE would not announce it).

        IDLE reports only what this connection has not been told of. Mail that arrived
        while it ran other commands (a pass's MOVE, a sweep) was announced then, in an
        EXISTS that is gone: look for anything above the checkpoint, and for an EXISTS
        in the answer to that very search.
        """
        server = session.server_name(self.mailbox)
        selected = session.selected
        if selected is None or selected.name != server or selected.readonly:
            return True  # another mailbox was selected since: a pass re-selects home
        state = store.mailbox(self.host.name, server)
        if state is None or state.uidvalidity != selected.uidvalidity:
            return True
        found = session.search(SearchQuery((b"UID", f"{state.checkpoint + 1}:*".encode())))
        if any(uid > state.checkpoint for uid in found):
            return True
        return session.exists_announced()
