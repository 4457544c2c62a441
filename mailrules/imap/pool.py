"""`SessionPool`: one IMAP connection per account, opened on first use (or early, in a thread)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from ..model import Account, Config
from . import internals
from .beside import Beside, worth_it
from .identify import ask_namespace_and_id, read_namespace_and_id, send_namespace_and_id
from .reselect import (
    SelectedEarly,
    logged_in,
    read_select_and_search,
    select_and_search_above,
    send_select_and_search,
)
from .session import ImapSession

log = logging.getLogger("mailrules.imap")


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
        self._selected_early: dict[str, SelectedEarly] = {}  # by account: what its opening selected
        self.searches_beside = False  # `run --once`: a pass may search on a second connection (`beside`)
        # by account: (its settings then, a second connection opened as its first mailbox was selected)
        self._beside_early: dict[str, tuple[Account, Beside]] = {}

    @classmethod
    def connecting(cls, config: Config, accounts: Iterable[Account],
                   connect: Callable[[str], ImapSession] | None = None,
                   checkpoint_of: Callable[[str, str], int | None] | None = None) -> SessionPool:
        """A pool already opening (`open_early`) the connection of the first of `accounts` that
        watches a mailbox, and selecting that mailbox: the first pass of `run --once` (which
        may search beside it: `searches_beside`). checkpoint_of(account, server name): that
        mailbox's checkpoint (0: none yet; None: unknown), to search above it behind the SELECT."""
        pool = cls(config, connect)
        pool.searches_beside = True
        pool.adopt(config, accounts, checkpoint_of)
        return pool

    def adopt(self, config: Config, accounts: Iterable[Account],
              checkpoint_of: Callable[[str, str], int | None] | None = None) -> None:
        """Take `config` and open the first of `accounts` that watches a mailbox early (unless it
        already is). `run --once` starts that on the accounts section alone, before the plugins and
        the rules load (`mailrules.runcommand`); a connection opened for settings the whole file does
        not have (it changed in between) is dropped here."""
        for name in [*self._opening, *self.sessions]:
            if config.accounts.get(name) != self.config.accounts.get(name):
                self.discard(name, wait=False)
        self.config = config
        first = next((account for account in accounts if account.watch), None)
        if first is not None:
            name = first.name
            self.open_early(name, first.watch[0], None if checkpoint_of is None else lambda s: checkpoint_of(name, s))

    def _default_connect(self, account: str) -> ImapSession:
        from ..connect import connect

        return ImapSession(connect(self.config.accounts[account]), account)

    def open_early(self, account: str, mailbox: str | None = None,
                   checkpoint_of: Callable[[str], int | None] | None = None) -> None:
        """Start opening `account`'s connection in a thread; the next `get` takes it.

        For `run --once`: its TCP connect, greeting, LOGIN, NAMESPACE with ID (which every pass
        asks first), and the SELECT of `mailbox` with the search above its checkpoint behind it
        (`checkpoint_of(server name)`; None: no search) then overlap the loading of the plugins,
        the rules and the pass's modules and the opening of the state store, instead of
        following them (~70 ms of server time for 10,000 messages on loopback). The first pass
        takes them (`take_early_selection`). A failure to connect is raised by that `get`, as if
        it had connected itself; a SELECT the server refuses is left to the pass to do again.
        """
        if account not in self.sessions and account not in self._opening:
            from .. import connect  # noqa: F401 - loaded here, not by the thread while this one imports too

            def connect_and_ask(name: str) -> ImapSession:
                session = self._connect(name)
                if mailbox is not None and mailbox.upper() == "INBOX":
                    early = identify_and_select_inbox(session, checkpoint_of)
                else:
                    ask_namespace_and_id(session)  # in one round trip
                    early = select_quietly(session, mailbox, checkpoint_of) if mailbox is not None else None
                if early is not None:
                    self._selected_early[name] = early  # read by `get`, after this thread is done
                    self._open_beside_early(name, early)
                return session

            self._opening[account] = _Opening(connect_and_ask, account)

    def take_early_selection(self, account: str, server_name: str) -> SelectedEarly | None:
        """What the account's connection selected (and searched) as it opened (`open_early`), if
        it is `server_name` and still the connection's selection: once (None after, and otherwise)."""
        early = self._selected_early.pop(account, None)
        session = self.sessions.get(account)
        if early is None or session is None or session.selected is not early.selected:
            return None
        return early if early.selected.name == server_name and not early.selected.readonly else None

    def _open_beside_early(self, account: str, early: SelectedEarly) -> None:
        """Over a backlog that will want it, start opening the first pass's second connection
        (`beside`) as soon as the SELECT is answered: it is then logged in when the pass opens.
        Kept with the settings it was opened for (the whole file, read meanwhile, may differ)."""
        login = self._quiet_login(account)
        if login is None or early.above is None or not worth_it(len(early.above)):
            return
        settings, connect_quietly = login
        try:
            self._beside_early[account] = settings, Beside(connect_quietly, early.selected.name,
                                                           early.selected.uidvalidity, account, settings.timeout)
        except Exception as exc:  # noqa: BLE001 - (a thread that cannot start) the pass opens it, or works alone
            log.debug("account %s: the second connection was not opened early: %s", account, exc)

    def _quiet_login(self, account: str) -> tuple[Account, Callable[[], ImapSession]] | None:
        """The settings of `account` and how to log a second connection in with them, quietly;
        None unless `searches_beside` (`run --once`), and for an account whose password comes
        from a program or a keyring (run again for each connection)."""
        from ..secrets import SECRET_SOURCES

        settings = self.config.accounts.get(account)
        if not self.searches_beside or settings is None or SECRET_SOURCES[settings.auth.kind].runs_something:
            return None

        def connect_quietly() -> ImapSession:
            if self._connect != self._default_connect:
                return self._connect(account)
            from ..connect import connect

            return ImapSession(connect(settings, announce=False), account)

        return settings, connect_quietly

    def beside(self, account: str) -> Callable[[str, int], Beside] | None:
        """How to open, for a pass over (server name, UIDVALIDITY), a second read-only connection
        of `account` for its searches (`mailrules.imap.beside`), or None (see `_quiet_login`).
        The one opened early (`_open_beside_early`) is taken if it is for the same settings and
        mailbox."""
        login = self._quiet_login(account)
        if login is None:
            return None
        settings, connect_quietly = login

        def opener(mailbox: str, uidvalidity: int) -> Beside:
            opened_with, early = self._beside_early.pop(account, (None, None))
            if early is not None and opened_with == settings and early.opened_for == (mailbox, uidvalidity):
                return early
            if early is not None:
                early.close()
            return Beside(connect_quietly, mailbox, uidvalidity, account, settings.timeout)

        return opener

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
        self._selected_early.pop(account, None)
        session = self.sessions.pop(account, None)
        if session is not None:
            session.logout(wait)

    def drop(self, account: str) -> None:
        """Forget a dead connection without waiting for a LOGOUT it would never answer."""
        self._selected_early.pop(account, None)
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
        for _settings, beside in self._beside_early.values():
            beside.close()  # opened early, not taken by a pass
        self._beside_early.clear()


def select_quietly(session: ImapSession, mailbox: str,
                   checkpoint_of: Callable[[str], int | None] | None) -> SelectedEarly | None:
    """SELECT `mailbox` (read-write) for the first pass, in the opening's thread, with the search
    above its checkpoint behind it when that is known; None if the server refused the SELECT
    (only logged: the pass selects it again and reports it). A broken connection is raised."""

    def select() -> SelectedEarly:
        server = session.server_name(mailbox)
        checkpoint = checkpoint_of(server) if checkpoint_of is not None else None
        if checkpoint is None:
            return SelectedEarly(session.select(server), None, 0)
        return SelectedEarly(*select_and_search_above(session, server, checkpoint), checkpoint)

    return _quietly(session, mailbox, select)


def identify_and_select_inbox(session: ImapSession,
                              checkpoint_of: Callable[[str], int | None] | None) -> SelectedEarly | None:
    """NAMESPACE and ID, and INBOX's SELECT with the search above its checkpoint, in one round trip
    (INBOX is named so whatever the namespace); as `ask_namespace_and_id` then `select_quietly`
    where the server lacks NAMESPACE or ID, or the checkpoint is not known."""
    checkpoint = checkpoint_of("INBOX") if checkpoint_of is not None else None
    identified = session.has("NAMESPACE") and session.has("ID")
    if checkpoint is None or not identified or not logged_in(session):
        ask_namespace_and_id(session)
        return select_quietly(session, "INBOX", checkpoint_of)
    session.before_select()
    with internals.one_write(internals.imaplib_of(session.client)):
        asked = send_namespace_and_id(session)  # sent: the server has both
        tags = send_select_and_search(session, "INBOX", checkpoint)
    if asked is not None:
        read_namespace_and_id(session, asked)
    return _quietly(session, "INBOX",
                    lambda: SelectedEarly(*read_select_and_search(session, "INBOX", checkpoint, tags), checkpoint))


def _quietly(session: ImapSession, mailbox: str, select: Callable[[], SelectedEarly]) -> SelectedEarly | None:
    """`select()`, or None if the server refused the SELECT (logged only). A broken connection is raised."""
    try:
        return select()
    except IMAPClientAbortError:
        raise
    except IMAPClientError as exc:
        log.debug("account %s: selecting %s early: %s (selected again by the pass)", session.account, mailbox, exc)
    except ValueError as exc:  # a name the server's namespace cannot hold: the pass says so
        log.debug("account %s: selecting %s early: %s", session.account, mailbox, exc)
    return None
