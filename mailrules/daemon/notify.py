"""`NotifyWatch`: one connection learns of new mail in many mailboxes (IMAP NOTIFY, RFC 5465).

Where the server advertises NOTIFY (Dovecot does), the account's watched mailboxes other
than home share one connection instead of an IDLE connection each: after
``NOTIFY SET STATUS (mailboxes (A B ...) (MessageNew MessageExpunge))`` the server sends
``* STATUS A (MESSAGES n UIDNEXT u ...)`` when A changes, and at once for every mailbox
(the ``STATUS`` indicator). A UIDNEXT that moved marks the mailbox for the worker.

Guarantees, as for `IdleWatch`:

* **no gap**: every (re)connection marks every mailbox for a catch-up pass (the worker
  takes everything above its checkpoint), so mail that came while the connection was
  down is not missed;
* **liveness**: the connection sits in IDLE (NOTIFY's events arrive during it), which is
  re-issued every ``idle_interval``; DONE must be answered within ``timeout``; EOF and
  BYE end it at once; a lost connection is reopened with backoff and jitter;
* a watched mailbox the server does not know gets no initial STATUS: it is reported
  (``mailbox 'X' does not exist``), the others stay watched, and the connection is
  renewed once it appears (checked on the slow schedule of permanent problems);
* a server that refuses NOTIFY SET hands its mailboxes to the STATUS poll;
* **NOTIFY set up again after activity**: Dovecot 2.3 (src/lib-storage/list/
  mailbox-list-index-notify.c) adds its inotify watch on ``dovecot.list.index.log`` once,
  at NOTIFY SET, by path. The log rotates (link to ``.log.2``, a new file renamed over it)
  once it passes 64 KB (8 KB after 5 minutes); the watch stays on the old file, so from
  then on, for the rest of the connection, changes are announced only by its
  ``mailbox_idle_check_interval`` timer (30 s) or when a NOOP makes it look (its flush).
  Dovecot rotates right after writing a change to the old file, so the change that rotates
  is still announced if NOTIFY covers its mailbox; most writes follow a change we see (an
  arrival announced here; our own moves after it). Home is in the NOTIFY SET too, for its
  activity only (the worker's IDLE serves it): the worker's moves out of home write the
  list index log (the target's counts) and may rotate it. So `REARM_AFTER`
  seconds after an announced change (UIDNEXT or MESSAGES moved), the connection sends
  ``NOTIFY NONE`` then ``NOTIFY SET`` again: the new watch is on the current file, and the
  STATUS answer of the new SET reports any mailbox that moved meanwhile (no gap). A SET
  that finds a change schedules one more. NOTIFY NONE first matters: a second SET alone
  makes Dovecot add the new watch (the same inotify descriptor for the same file) before
  it removes the old one, which removes both, and the connection goes deaf (measured:
  p50 13 s).
* **a probe while quiet**: a rotation caused by a write we do not see (another client's
  changes in other mailboxes or to flags; our moves finishing after the new SET) leaves the watch on
  the old file with nothing to re-arm it; every `PROBE_EVERY` seconds without activity a
  NOOP makes Dovecot compare the log with what it last saw and announce at once; a change
  found that way means the watch was lost: NOTIFY is set up again at once.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time

import imapclient
from imapclient import imap_utf7

from ..imap.idle import CommandRefused, IdleLink
from ..imap.session import ImapSession
from ..imap.wire import quote_mailbox
from .backoff import HEALTHY_AFTER, Backoff, slow_backoff
from .health import describe, permanent_problem
from .observe import connect_error_kind
from .sources import LOGOUT_TIMEOUT, SourceHost, ThreadedSource, close_client

log = logging.getLogger("mailrules.watcher")

_STATUS = re.compile(rb'^\* STATUS (?:"((?:[^"\\]|\\.)*)"|\{\d+\+?\}\r\n(.*)|([^ ]+)) \((.*)\)\s*$', re.I | re.S)
_UIDNEXT = re.compile(rb"\bUIDNEXT (\d+)", re.I)
_MESSAGES = re.compile(rb"\bMESSAGES (\d+)", re.I)

REARM_AFTER = 1.0  # seconds after an announced change before NOTIFY is set up again (0: never)
PROBE_EVERY = 10.0  # seconds without activity between NOOPs that look for a lost watch (0: never)
EVENTS = b"(MessageNew MessageExpunge)"


class Renew(Exception):
    """A mailbox that was missing exists now: set up NOTIFY again (no backoff)."""


def parse_status(line: bytes) -> tuple[str, int] | None:
    """``* STATUS name (... UIDNEXT n ...)`` -> (the server's mailbox name, n); None for any other line."""
    status = parse_status_counts(line)
    return None if status is None else (status[0], status[1][0])


def parse_status_counts(line: bytes) -> tuple[str, tuple[int, int | None]] | None:
    """``* STATUS name (MESSAGES m UIDNEXT n ...)`` -> (name, (n, m)); m None when not given."""
    match = _STATUS.match(line)
    if match is None:
        return None
    uidnext = _UIDNEXT.search(match.group(4))
    if uidnext is None:
        return None
    messages = _MESSAGES.search(match.group(4))
    quoted, literal, atom = match.group(1), match.group(2), match.group(3)
    if quoted is not None:
        raw = re.sub(rb"\\(.)", rb"\1", quoted)
    else:
        raw = literal if literal is not None else atom
    return imap_utf7.decode(raw), (int(uidnext.group(1)), None if messages is None else int(messages.group(1)))


class NotifyWatch(ThreadedSource):
    """A thread holding one NOTIFY connection for several mailboxes of one account; wakes its worker."""

    def __init__(self, host: SourceHost, mailboxes: list[str], home: str | None = None) -> None:
        self.mailboxes = list(mailboxes)
        self.home = home  # watched by the worker's IDLE; NOTIFY hears it for its activity only (see the module)
        self.heard: set[str] = set()  # home's server name, once connected
        super().__init__(host, f"mailrules-notify-{host.name}")

    # the thread

    def _main(self) -> None:
        from ..connect import connect

        host, account = self.host, self.host.account
        backoff, slow = Backoff(account.reconnect_max), slow_backoff(account)
        first = True
        while not host.stopping.is_set():
            client = None
            connected = time.monotonic()
            try:
                client = connect(account)
                connected = time.monotonic()
                self._watch(client, first, backoff, slow)
                close_client(client, logout=True)
                return  # stopping
            except CommandRefused as exc:
                self.connected = False
                close_client(client, logout=True)
                log.warning("account %s: NOTIFY refused (%s): polling %s instead", account.name, exc,
                            ", ".join(self.mailboxes))
                for mailbox in self.mailboxes:
                    host.poll_instead(mailbox)
                return
            except Renew:
                self.connected = False
                close_client(client, logout=True)
                first = False
                continue
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                self.connected = False
                close_client(client, logout=False)
                if host.stopping.is_set():
                    return
                first = False
                problem = permanent_problem(exc)
                host.observer.error("watch_lost" if problem is None else connect_error_kind(exc))
                if problem is not None:  # the worker reports the account's problem
                    delay = slow.next()
                    log.error("account %s: NOTIFY not set up: %s; trying again in %.0fs", account.name,
                              describe(exc), delay)
                    host.stopping.wait(delay)
                    continue
                if time.monotonic() - connected >= HEALTHY_AFTER:
                    backoff.reset()
                delay = backoff.next()
                log.warning("account %s: NOTIFY connection lost (%s); reconnecting in %.1fs", account.name,
                            describe(exc), delay)
                host.stopping.wait(delay)

    def _watch(self, client: imapclient.IMAPClient, first: bool, backoff: Backoff, slow: Backoff) -> None:
        """NOTIFY SET, then IDLE until stopped; raises when the connection is lost, Renew to set up again."""
        host, account = self.host, self.host.account
        session = ImapSession(client, account.name)
        if not session.has("NOTIFY"):
            raise CommandRefused("the server does not advertise NOTIFY")
        names: dict[str, str] = {}  # the server's name -> the watched mailbox
        for mailbox in self.mailboxes:
            try:
                names[session.server_name(mailbox)] = mailbox
            except ValueError as exc:
                host.health.problem(account.name, mailbox, f"mailbox {mailbox!r} cannot exist on this server ({exc})")
        self.heard = set()
        if self.home is not None:
            with contextlib.suppress(ValueError):  # the worker reports a home that cannot exist
                self.heard = {session.server_name(self.home)} - set(names)
        answer = self._notify_set(client, names)
        known = {name: counts for name, counts in filter(None, map(parse_status_counts, answer))
                 if name in names or name in self.heard}
        missing = [name for name in names if name not in known]
        for name, mailbox in names.items():
            host.health.problem(account.name, mailbox,
                                f"mailbox {mailbox!r} does not exist" if name in missing else None)
        if missing:
            log.error("account %s: not watched: %s (no such mailbox); checking again later", account.name,
                      ", ".join(names[n] for n in missing))
        self.connected = True
        watched = [names[n] for n in names if n not in missing]
        log.info("account %s: %swatching %s with NOTIFY%s", account.name, "" if first else "reconnected; ",
                 ", ".join(watched) or "nothing", "" if first else " again")
        for mailbox in watched:
            host.notify(mailbox)  # catch up on what arrived while not watching
        self._listen(client, names, known, missing, backoff, slow)

    def _notify_set(self, client: imapclient.IMAPClient, names: dict[str, str]) -> list[bytes]:
        """NOTIFY SET for these mailboxes (server names); the answer's lines (a STATUS for each that exists)."""
        listed = b" ".join(quote_mailbox(name) for name in [*names, *sorted(self.heard)])
        link = IdleLink(client, self.host.wake_r, self.host.account.timeout)
        return link.command(b"NOTIFY SET STATUS (mailboxes (" + listed + b") " + EVENTS + b")", "NOTIFY SET")

    def _rearm(self, client: imapclient.IMAPClient, names: dict[str, str],
               known: dict[str, tuple[int, int | None]], why: str) -> bool:
        """NOTIFY NONE, then NOTIFY SET again (a fresh watch, see the module); whether its STATUS showed a change."""
        log.debug("account %s: NOTIFY set up again (%s)", self.host.name, why)
        link = IdleLink(client, self.host.wake_r, self.host.account.timeout)
        moved = self._seen(link.command(b"NOTIFY NONE", "NOTIFY NONE"), names, known)
        return self._seen(self._notify_set(client, names), names, known) or moved

    def _listen(self, client: imapclient.IMAPClient, names: dict[str, str], known: dict[str, tuple[int, int | None]],
                missing: list[str], backoff: Backoff, slow: Backoff) -> None:
        host, account = self.host, self.host.account
        recheck = time.monotonic() + slow.next() if missing else None
        rearm: float | None = None  # when to set NOTIFY up again (after activity)
        probe = time.monotonic() + PROBE_EVERY if PROBE_EVERY > 0 else None
        while True:
            link = IdleLink(client, host.wake_r, account.timeout)
            if self._seen(link.start(), names, known) and REARM_AFTER > 0:
                rearm = rearm or time.monotonic() + REARM_AFTER
            deadline = min(t for t in (time.monotonic() + account.idle_interval, recheck, probe) if t is not None)
            while True:
                until = min(deadline, rearm) if rearm is not None else deadline
                got = link.wait(until)
                if got is None:  # woken: the daemon is stopping
                    with contextlib.suppress(Exception):  # closing anyway
                        link.done(LOGOUT_TIMEOUT)
                    return
                if self._seen(got, names, known) and REARM_AFTER > 0:
                    rearm = rearm or time.monotonic() + REARM_AFTER
                if time.monotonic() >= until:
                    break
            self._seen(link.done(), names, known)  # answered in time: the connection is alive
            backoff.reset()
            now = time.monotonic()
            if rearm is not None and now >= rearm:
                rearm = now + REARM_AFTER if self._rearm(client, names, known, "after activity") else None
            elif probe is not None and now >= probe:
                noop = IdleLink(client, host.wake_r, account.timeout).command(b"NOOP", "NOOP")
                if self._seen(noop, names, known):  # a change Dovecot had not announced: its watch is lost
                    rearm = now + REARM_AFTER if self._rearm(client, names, known, "a NOOP found news") else None
            if probe is not None and (rearm is not None or now >= probe):
                probe = time.monotonic() + PROBE_EVERY
            if recheck is not None and time.monotonic() >= recheck:
                if self._any_exists(client, missing):
                    raise Renew()
                recheck = time.monotonic() + slow.next()

    def _any_exists(self, client: imapclient.IMAPClient, missing: list[str]) -> bool:
        """Whether one of the `missing` mailboxes exists now (LIST, on the NOTIFY connection)."""
        host = self.host
        return any(IdleLink(client, host.wake_r, host.account.timeout).command(b'LIST "" ' + quote_mailbox(name),
                                                                               "LIST")
                   for name in missing)

    def _seen(self, lines: list[bytes], names: dict[str, str], known: dict[str, tuple[int, int | None]]) -> bool:
        """Wake the worker for each watched mailbox whose UIDNEXT moved; whether any UIDNEXT or MESSAGES did (home too)."""
        moved = False
        for line in lines:
            status = parse_status_counts(line)
            if status is None or (status[0] not in names and status[0] not in self.heard):
                continue
            name, counts = status
            before = known.get(name)
            if before == counts:
                continue
            known[name] = counts
            moved = True
            if name in names and (before is None or before[0] != counts[0]):
                log.debug("account %s mailbox %s: new mail announced (NOTIFY)", self.host.name, names[name])
                self.host.notify(names[name], announced=True)
        return moved
