"""`SessionPool`: one IMAP connection per account, opened on first use (or early, in a thread)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable

from ..model import Account, Config
from .identify import ask_namespace_and_id
from .session import ImapSession


class _Opening:
    """A connection being opened in a thread of its own (`SessionPool.open_early`).

    `result` waits for it and returns the session or raises what connecting raised, as a
    direct call would have. Abandoned before it is done, it logs out by itself when it is.
    """

    def __init__(self, connect: Callable[[str], ImapSession], account: str) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._session: ImapSession | None = None
        self._error: BaseException | None = None
        self._abandoned = False
        threading.Thread(target=self._open, args=(connect, account), name=f"mailrules-connect-{account}",
                         daemon=True).start()

    def _open(self, connect: Callable[[str], ImapSession], account: str) -> None:
        try:
            session = connect(account)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of result()
            self._error = exc
            self._done.set()
            return
        with self._lock:
            self._session = session
            abandoned = self._abandoned
        self._done.set()
        if abandoned:
            session.logout()

    def result(self) -> ImapSession:
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._session is not None
        return self._session

    def abandon(self) -> None:
        """Nobody will take the connection: log out of it now, or once it is open."""
        with self._lock:
            self._abandoned = True
            session = self._session
        if session is not None:
            session.logout()


class SessionPool:
    """One connection per account, opened on first use.

    The engine takes connections with `get`; the daemon, which knows when a connection
    died, forgets it with `drop` (no LOGOUT: a dead link would not answer it) and learns
    whether one is open with `current`.
    """

    def __init__(self, config: Config, connect: Callable[[str], ImapSession] | None = None) -> None:
        self.config = config
        self._connect = connect or self._default_connect
        self.sessions: dict[str, ImapSession] = {}
        self._opening: dict[str, _Opening] = {}

    @classmethod
    def connecting(cls, config: Config, accounts: Iterable[Account],
                   connect: Callable[[str], ImapSession] | None = None) -> SessionPool:
        """A pool already opening (`open_early`) the connection of the first of `accounts` that
        watches a mailbox: the first that `run --once` will take."""
        pool = cls(config, connect)
        first = next((account.name for account in accounts if account.watch), None)
        if first is not None:
            pool.open_early(first)
        return pool

    def _default_connect(self, account: str) -> ImapSession:
        from ..connect import connect

        return ImapSession(connect(self.config.accounts[account]), account)

    def open_early(self, account: str) -> None:
        """Start opening `account`'s connection in a thread; the next `get` takes it.

        For `run --once`: its TCP connect, greeting, LOGIN, and NAMESPACE with ID (which every
        pass asks first; ~20 ms of server time on loopback, four round trips on a slow link) then
        overlap the opening of the state store and the loading of the pass's modules instead
        of following them. A failure is raised by that `get`, as if it had connected itself.
        """
        if account not in self.sessions and account not in self._opening:
            from .. import connect  # noqa: F401 - loaded here, not by the thread while this one imports too

            def connect_and_ask(name: str) -> ImapSession:
                session = self._connect(name)
                ask_namespace_and_id(session)  # in one round trip
                return session

            self._opening[account] = _Opening(connect_and_ask, account)

    def get(self, account: str) -> ImapSession:
        if account not in self.sessions:
            opening = self._opening.pop(account, None)
            self.sessions[account] = opening.result() if opening is not None else self._connect(account)
        return self.sessions[account]

    def current(self, account: str) -> ImapSession | None:
        """The account's open connection, or None (never connects)."""
        return self.sessions.get(account)

    def discard(self, account: str, wait: bool = True) -> None:
        """Log out of the account's connection (if open) and forget it (wait: for the BYE)."""
        opening = self._opening.pop(account, None)
        if opening is not None:
            opening.abandon()
        session = self.sessions.pop(account, None)
        if session is not None:
            session.logout(wait)

    def drop(self, account: str) -> None:
        """Forget a dead connection without waiting for a LOGOUT it would never answer."""
        session = self.sessions.pop(account, None)
        if session is not None:
            with contextlib.suppress(Exception):
                session.client.shutdown()

    def close(self) -> None:
        """Log out of every connection. The engine has read every answer by now (a pass never
        ends with a command in flight), so the LOGOUT is sent without waiting for its BYE: on
        a slow link that is one round trip less at the end of `run --once`."""
        for account in list(self.sessions) + list(self._opening):
            self.discard(account, wait=False)
