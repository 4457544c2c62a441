"""The daemon: `mailrules run` without `--once`.

Design (one process, many accounts):

* **One worker thread per account** owns the account's *action connection* (an
  `Engine` with its own `SessionPool` and `StateStore` connection). Every arrival pass,
  retry and sweep of the account runs there, one at a time: sweeps and arrival
  processing never act on the same mailbox at once, and one slow or failing account
  never stalls another.
* While it has nothing to do, the worker **IDLEs on the account's first watched
  mailbox** (its *home*, usually INBOX) on that same connection: when new mail comes,
  the connection is already selected and synchronised, so the pass starts at once
  (the lowest latency). Before re-entering IDLE it checks that nothing arrived while
  it was busy (anything above the checkpoint, or an EXISTS in the answer to that
  check): IDLE only announces what the connection has not been told yet.
* **The other watched mailboxes** get an IDLE connection each (`MailboxWatcher`, up to
  ``max_connections`` connections in all), which only waits: any EXISTS marks the
  mailbox dirty for the worker, which clears the mark *before* a pass and runs another
  if new mail was announced meanwhile, so no arrival falls in a gap. Mailboxes beyond
  the budget, and every mailbox of a server without IDLE, are **polled** with ``STATUS
  (UIDNEXT)`` every ``poll_interval``.
* **Liveness**: IDLE is re-issued every ``idle_interval`` and the tagged answer to DONE
  must come within ``timeout``; EOF and BYE end it at once. A lost connection is reopened
  with exponential backoff, jitter and a cap (``reconnect_max``), the secret fetched
  afresh, and a catch-up pass follows every (re)connection.
* **Sweeps**: an APScheduler job per schedule (`mailrules.scheduler`) hands each
  account's worker a sweep; a sweep missed while the daemon was down runs once at start.
* **Crash safety** is the engine's journal (`mailrules.state`): a pass interrupted by a
  crash, a signal or a lost connection is resumed, never repeated. A large backlog is
  taken in slices of `CATCHUP_BATCH` messages, so the checkpoint advances steadily and
  progress is logged (`mailrules.progress`).
* **Signals**: SIGTERM/SIGINT abandon the current pass between two steps (its journal
  resumes it next time), log out and exit 0; SIGHUP reloads the rules file in a thread
  beside the main loop, which goes on answering SIGTERM (a broken file, or any failure to
  load, is reported and the old rules stay in force).
* **systemd**: with ``Type=notify`` (``NOTIFY_SOCKET``), READY=1, RELOADING=1,
  STOPPING=1 and STATUS= are sent.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import itertools
import logging
import os
import random
import re
import select
import signal
import socket
import ssl
import sys
import threading
import time
import warnings

import imapclient
from imapclient.exceptions import IMAPClientError

from .criteria import SearchQuery
from .engine import Engine, Interrupted, SessionPool
from .model import Account, Config, Location
from .plugins import Registry
from .progress import CatchUp
from .scheduler import SweepScheduler, record_sweep, schedule_groups, sweep_targets
from .session import ImapSession
from .state import StateStore

log = logging.getLogger("mailrules.watcher")

# New messages per pass while catching up on a backlog (the checkpoint advances after each).
CATCHUP_BATCH = int(os.environ.get("MAILRULES_CATCHUP_BATCH", "") or 1000)
STOP_GRACE = 5.0  # seconds the threads get to finish at SIGTERM before the process exits anyway
LOGOUT_TIMEOUT = 2.0  # seconds for DONE/LOGOUT when stopping
HEALTHY_AFTER = 30.0  # a connection that lived this long resets the reconnection backoff
MAX_RETRY_DELAY = 3600.0  # cap of the delay between retries of failed actions
# A permanent problem (login refused, TLS failure, watched mailbox missing) will not go away by
# itself within seconds: it is retried from this delay, doubling up to PERMANENT_RETRY_MAX (or
# the account's reconnect_max if larger), not with the fast reconnection backoff.
PERMANENT_RETRY_BASE = 30.0
PERMANENT_RETRY_MAX = 900.0
HEALTH_META = "health:"  # state meta keys "health:ACCOUNT" and "health:ACCOUNT:MAILBOX" (for `status`)


# ====================================================================== small helpers


def sd_notify(message: str) -> bool:
    """Send a systemd notification (``READY=1`` ...) if started with ``Type=notify``."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify to %s failed: %s", address, exc)
        return False


class Backoff:
    """Exponential backoff with jitter and a cap: 1 s, 2 s, 4 s ... up to `cap`, each x [0.5, 1)."""

    def __init__(self, cap: float, base: float = 1.0) -> None:
        self.cap = max(cap, 0.05)
        self.base = base
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class MailboxMissing(Exception):
    """A watched mailbox does not exist on the server (a permanent problem, not a lost connection)."""


def permanent_problem(exc: BaseException) -> str | None:
    """A short name for a failure that retrying soon will not cure, or None for a transient one."""
    from .connect import AuthenticationError, InsecureConnectionError, SecretUnavailableError, TLSError

    if isinstance(exc, AuthenticationError):
        return "login refused"
    if isinstance(exc, TLSError):
        return "TLS failure"
    if isinstance(exc, SecretUnavailableError):
        return "password unavailable"
    if isinstance(exc, InsecureConnectionError):
        return "refused to connect without TLS"
    if isinstance(exc, MailboxMissing):
        return str(exc)
    return None


def slow_backoff(account: Account) -> Backoff:
    """The backoff for permanent problems (see PERMANENT_RETRY_BASE)."""
    return Backoff(max(PERMANENT_RETRY_MAX, account.reconnect_max), base=PERMANENT_RETRY_BASE)


def health_key(account: str, mailbox: str | None = None) -> str:
    return f"{HEALTH_META}{account}" + (f":{mailbox}" if mailbox is not None else "")


class Health:
    """What the daemon really does, for sd_notify's STATUS and `mailrules status`.

    An account counts as watched only once its connection is up and while no permanent
    problem is known; a watched mailbox with a problem (missing) is not counted either.
    Every change is sent to systemd at once (STATUS=) and kept in the state's meta table.
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._lock = threading.Lock()
        self.connected: set[str] = set()
        self.problems: dict[tuple[str, str | None], str] = {}
        self._sent: str | None = None
        self._ready = False  # nothing is sent before READY=1 (systemd expects READY first)

    def ready(self, sent: str) -> None:
        """READY=1 went out with STATUS=`sent`: later changes are announced."""
        with self._lock:
            self._ready, self._sent = True, sent
        self.announce()

    def up(self, account: str) -> None:
        """The account's connection works (and its account-level problem, if any, is over)."""
        self._change(account, None, None, connected=True)

    def down(self, account: str) -> None:
        """The account's connection is lost for a transient reason: reconnecting."""
        self._change(account, None, None, connected=False)

    def problem(self, account: str, mailbox: str | None, text: str | None) -> None:
        """Set (text) or clear (None) the permanent problem of an account or one of its mailboxes."""
        self._change(account, mailbox, text, connected=False if mailbox is None and text else None)

    def _change(self, account: str, mailbox: str | None, text: str | None, *, connected: bool | None) -> None:
        with self._lock:
            before = (account in self.connected, self.problems.get((account, mailbox)))
            if connected is True:
                self.connected.add(account)
            elif connected is False:
                self.connected.discard(account)
            if text is None:
                if mailbox is not None or connected is True:
                    self.problems.pop((account, mailbox), None)
            else:
                self.problems[(account, mailbox)] = text
            after = (account in self.connected, self.problems.get((account, mailbox)))
        if before[1] != after[1]:
            self._persist(account, mailbox, after[1])
        if before != after:
            self.announce()

    def _persist(self, account: str, mailbox: str | None, text: str | None) -> None:
        value = f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}\t{text}" if text else ""
        try:
            store = StateStore(self.daemon.state_dir)
            try:
                store.set_meta(health_key(account, mailbox), value)
            finally:
                store.close()
        except Exception as exc:  # noqa: BLE001 - systemd still gets it
            log.debug("cannot record the health of account %s: %s", account, exc)

    def summary(self) -> str:
        config = self.daemon.config
        with self._lock:
            problems = dict(self.problems)
            connected = set(self.connected)
        watching, mailboxes, connecting, parts = 0, 0, [], []
        for name, account in config.accounts.items():
            trouble = problems.get((name, None))
            if trouble:
                parts.append(f"account {name!r}: {trouble}")
                continue
            missing = [m for m in account.watch if problems.get((name, m))]
            parts += [f"account {name!r}: {problems[(name, m)]}" for m in missing]
            if name not in connected:
                connecting.append(repr(name))
                continue
            watching += 1
            mailboxes += len(account.watch) - len(missing)
        text = f"watching {mailboxes} mailbox(es) of {watching} account(s)"
        if connecting:
            text += f"; connecting to {', '.join(connecting)}"
        return "; ".join([text, *parts])

    def announce(self) -> None:
        """Send the STATUS line to systemd when it changed."""
        text = self.summary()
        with self._lock:
            if not self._ready or text == self._sent:
                return
            self._sent = text
        sd_notify(f"STATUS={text}")


# ====================================================================== IDLE, read by hand


_TAGS = itertools.count(1)
_LITERAL = re.compile(rb"\{(\d+)\+?\}$")
_EXISTS = re.compile(rb"^\* (\d+) EXISTS\b", re.I)
_BYE = re.compile(rb"^\* BYE\b", re.I)


class ConnectionLost(Exception):
    """The server closed the connection, said BYE, or did not answer in time."""


class IdleRefused(Exception):
    """The server answered IDLE with NO or BAD."""


class IdleLink:
    """IDLE / DONE / NOOP over the socket of a logged-in IMAPClient with a mailbox selected.

    IMAPClient's ``idle_check()`` polls the socket only, so a response already in
    imaplib's read buffer (or in the TLS layer) waits for the next packet, an EOF comes
    back as an empty list, and the wait cannot also watch a wake-up pipe. This class
    takes over what imaplib buffered, reads the socket itself (TLS-pending bytes
    included) and hands the connection back in sync once the IDLE command completed.
    """

    def __init__(self, client: imapclient.IMAPClient, wake_fd: int, timeout: float) -> None:
        self.imap = client._imap
        self.sock = client.socket()
        self.wake_fd = wake_fd
        self.timeout = timeout
        self.buf = bytearray(self._take_imaplib_buffer())
        self.tag: bytes | None = None

    # -------------------------------------------------------------- reading

    def _take_imaplib_buffer(self) -> bytes:
        """Bytes imaplib's buffered reader already holds (read without blocking)."""
        file = getattr(self.imap, "file", None)
        if file is None or not hasattr(file, "peek"):
            return b""
        old = self.sock.gettimeout()
        self.sock.setblocking(False)
        try:
            data = file.peek(1 << 16)
        except (OSError, ValueError):  # nothing buffered (EAGAIN, or a TLS want-read)
            data = b""
        finally:
            self.sock.settimeout(old)
        if data:
            file.read(len(data))
        return bytes(data)

    def _line(self) -> bytes | None:
        """The next complete response line (literals included), if the buffer holds one."""
        start = 0
        while True:
            end = self.buf.find(b"\r\n", start)
            if end < 0:
                return None
            m = _LITERAL.search(self.buf, start, end)
            if m is None:
                line = bytes(self.buf[:end])
                del self.buf[: end + 2]
                return line
            start = end + 2 + int(m.group(1))
            if start > len(self.buf):
                return None

    def _fill(self, deadline: float | None, *, wakeable: bool) -> bool:
        """Read more bytes; False if woken, or the deadline passed, before any arrived."""
        tls_pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0
        if not tls_pending:
            poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
            if wakeable:
                poller.register(self.wake_fd, select.POLLIN)
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = poller.poll(None if wait is None else int(wait * 1000) + 1)
            fds = {fd for fd, _ in events}
            if self.sock.fileno() not in fds:
                return False
        try:
            self.sock.settimeout(self.timeout)
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            raise ConnectionLost(f"the server stopped in the middle of a response ({self.timeout:g}s)") from None
        except OSError as exc:
            raise ConnectionLost(f"connection error: {exc}") from None
        if not data:
            raise ConnectionLost("the server closed the connection")
        self.buf += data
        return True

    def lines(self, deadline: float | None, *, wakeable: bool = True) -> list[bytes] | None:
        """Response lines that arrived by `deadline` ([] if none), or None if woken first."""
        out: list[bytes] = []
        while True:
            line = self._line()
            if line is not None:
                out.append(line)
                continue
            if out:
                return out
            if not self._fill(deadline, wakeable=wakeable):
                if deadline is not None and time.monotonic() >= deadline:
                    return out
                if wakeable:
                    return None

    def _until_tagged(self, tag: bytes, what: str, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + timeout
        untagged: list[bytes] = []
        while True:
            got = self.lines(deadline, wakeable=False)
            if not got:
                raise ConnectionLost(f"no answer to {what} within {timeout:g}s")
            for i, line in enumerate(got):
                if line.startswith(tag + b" "):
                    self._hand_back(got[i + 1:])
                    _check_bye(untagged)
                    status = line[len(tag) + 1:].split(b" ", 1)[0].upper()
                    if status != b"OK":
                        raise ConnectionLost(f"{what} failed: {line.decode('utf-8', 'replace')}")
                    return untagged
                untagged.append(line)

    def _hand_back(self, lines: list[bytes]) -> None:
        """Give imaplib whatever was read past the end of our command (the connection goes back)."""
        rest = b"".join(line + b"\r\n" for line in lines) + bytes(self.buf)
        self.buf.clear()
        file = self.imap.file
        while isinstance(file, _Replay) and not file.data:
            file = file.file  # nothing left to replay: unwrap
        self.imap.file = _Replay(rest, file) if rest else file

    # -------------------------------------------------------------- commands

    def _send(self, data: bytes) -> None:
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(data)
        except OSError as exc:
            raise ConnectionLost(f"connection error: {exc}") from None

    def start(self) -> list[bytes]:
        """Send IDLE; returns the untagged responses that came before the server's '+'."""
        tag = b"mri%d" % next(_TAGS)
        self._send(tag + b" IDLE\r\n")
        deadline = time.monotonic() + self.timeout
        untagged: list[bytes] = []
        while True:
            got = self.lines(deadline, wakeable=False)
            if not got:
                raise ConnectionLost(f"no answer to IDLE within {self.timeout:g}s")
            for i, line in enumerate(got):
                if line.startswith(b"+"):
                    self.tag = tag
                    rest = got[i + 1:]  # already part of the idle period: keep for wait()
                    if rest:
                        self.buf[:0] = b"".join(r + b"\r\n" for r in rest)
                    _check_bye(untagged)
                    return untagged
                if line.startswith(tag + b" "):
                    raise IdleRefused(line.decode("utf-8", "replace"))
                untagged.append(line)

    def wait(self, deadline: float) -> list[bytes] | None:
        """While idling: responses by `deadline` ([] if none), None if woken. Raises on BYE/EOF."""
        got = self.lines(deadline)
        if got:
            _check_bye(got)
        return got

    def done(self, timeout: float | None = None) -> list[bytes]:
        """End IDLE; its tagged OK must come within the timeout (proof the link is alive)."""
        tag, self.tag = self.tag, None
        if tag is None:
            return []
        self._send(b"DONE\r\n")
        return self._until_tagged(tag, "DONE", timeout or self.timeout)

    def noop(self, timeout: float | None = None) -> list[bytes]:
        tag = b"mrn%d" % next(_TAGS)
        self._send(tag + b" NOOP\r\n")
        return self._until_tagged(tag, "NOOP", timeout or self.timeout)


class _Replay:
    """A read-only file for imaplib that first returns `data`, then reads on from `file`."""

    def __init__(self, data: bytes, file) -> None:
        self.data = bytearray(data)
        self.file = file

    def readline(self, limit: int = -1) -> bytes:
        if not self.data:
            return self.file.readline(limit)
        end = self.data.find(b"\n")
        if end >= 0 and (limit < 0 or end < limit):
            line = bytes(self.data[: end + 1])
            del self.data[: end + 1]
            return line
        if limit >= 0 and len(self.data) >= limit:
            line = bytes(self.data[:limit])
            del self.data[:limit]
            return line
        line = bytes(self.data)
        self.data.clear()
        return line + self.file.readline(limit - len(line) if limit >= 0 else -1)

    def read(self, size: int = -1) -> bytes:
        if not self.data:
            return self.file.read(size)
        if size < 0:
            chunk = bytes(self.data)
            self.data.clear()
            return chunk + self.file.read()
        chunk = bytes(self.data[:size])
        del self.data[:size]
        return chunk + (self.file.read(size - len(chunk)) if len(chunk) < size else b"")

    def peek(self, size: int = 0) -> bytes:
        return bytes(self.data) if self.data else self.file.peek(size)

    def close(self) -> None:
        self.file.close()

    def __getattr__(self, name: str):
        return getattr(self.file, name)


def _check_bye(lines: list[bytes]) -> None:
    for line in lines:
        if _BYE.match(line):
            raise ConnectionLost("the server said " + line.decode("utf-8", "replace"))


def exists_in(lines: list[bytes]) -> bool:
    """Whether any of these untagged responses announces new messages (EXISTS)."""
    return any(_EXISTS.match(line) for line in lines)


def _close(client: imapclient.IMAPClient | None, *, logout: bool) -> None:
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


def _drop(pool: SessionPool, account: str) -> None:
    """Forget a dead connection without waiting for a LOGOUT it would never answer."""
    session = pool.sessions.pop(account, None)
    if session is not None:
        _close(session.client, logout=False)


# ====================================================================== one watched mailbox


class MailboxWatcher:
    """A thread holding one IDLE connection on one mailbox; wakes the account's worker."""

    def __init__(self, runner: AccountRunner, mailbox: str) -> None:
        self.runner = runner
        self.mailbox = mailbox
        self.thread = threading.Thread(
            target=self._main, name=f"mailrules-idle-{runner.name}-{mailbox}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        from .connect import connect

        runner, account = self.runner, self.runner.account
        backoff = Backoff(account.reconnect_max)
        slow = slow_backoff(account)
        health = runner.daemon.health
        first = True
        while not runner.stopping.is_set():
            client = None
            connected = time.monotonic()
            try:
                client = connect(account)
                connected = time.monotonic()
                session = ImapSession(client, account.name)
                if not session.has("IDLE"):
                    raise IdleRefused("the server does not advertise IDLE")
                self._select(session)
                health.problem(account.name, self.mailbox, None)
                slow.reset()
                link = IdleLink(client, runner.wake_r, account.timeout)
                if first:
                    log.info("account %s mailbox %s: watching with IDLE", account.name, self.mailbox)
                else:
                    log.info("account %s mailbox %s: reconnected; watching with IDLE again",
                             account.name, self.mailbox)
                first = False
                runner.notify(self.mailbox)  # catch up on what arrived while not watching
                self._idle(link, backoff)
                _close(client, logout=True)
                return  # stopping
            except IdleRefused as exc:
                log.warning("account %s mailbox %s: IDLE refused (%s): polling this mailbox instead",
                            account.name, self.mailbox, exc)
                _close(client, logout=True)
                runner.poll_instead(self.mailbox)
                return
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                _close(client, logout=False)
                if runner.stopping.is_set():
                    return
                problem = permanent_problem(exc)
                if problem is not None:  # the worker reports account-level ones; this mailbox's here
                    if isinstance(exc, MailboxMissing):
                        health.problem(account.name, self.mailbox, problem)
                    delay = slow.next()
                    log.error("account %s mailbox %s: not watched: %s; checking again in %.0fs",
                              account.name, self.mailbox, _describe(exc) if not isinstance(exc, MailboxMissing)
                              else problem, delay)
                    runner.stopping.wait(delay)
                    continue
                if time.monotonic() - connected >= HEALTHY_AFTER:
                    backoff.reset()
                delay = backoff.next()
                log.warning("account %s mailbox %s: IDLE connection lost (%s); reconnecting in %.1fs",
                            account.name, self.mailbox, _describe(exc), delay)
                runner.stopping.wait(delay)

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
                raise MailboxMissing(f"mailbox {self.mailbox!r} does not exist") from None
            raise

    def _idle(self, link: IdleLink, backoff: Backoff) -> None:
        interval = self.runner.account.idle_interval
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
            log.debug("account %s mailbox %s: new mail announced", self.runner.name, self.mailbox)
            self.runner.notify(self.mailbox)


# ====================================================================== one account


@dataclasses.dataclass
class SweepTask:
    key: str
    fired: dt.datetime
    remaining: list[str] | None = None  # mailboxes still to sweep (None: not planned yet)


class AccountRunner:
    """The worker thread of one account, and its IDLE watchers.

    The worker's own connection does every pass and sweep; when there is nothing to do
    it IDLEs on the account's first watched mailbox (its *home*), so that new mail there
    finds a connection already selected and synchronised (the lowest latency), and the
    other watched mailboxes get IDLE connections of their own (`MailboxWatcher`) up to
    ``max_connections`` in all; any further ones are polled.
    """

    def __init__(self, daemon: Daemon, account: Account, config: Config) -> None:
        self.daemon = daemon
        self.name = account.name
        self.account = account
        self.config = config
        self.home = account.watch[0] if account.watch else None
        self.home_idle = False  # the worker IDLEs on `home` while waiting
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
        self.watchers: dict[str, MailboxWatcher] = {}
        self.polled: list[str] = []
        self._poll_now = False
        self.known_uidnext: dict[str, int] = {}
        self.retry_at: dict[str, float] = {}
        self.retry_round: dict[str, int] = {}
        self.broken: set[str] = set()  # mailboxes whose last pass failed as a whole (not per message)
        self.catchups: dict[str, CatchUp] = {}
        self._idle_session: ImapSession | None = None  # the connection the home IDLE was announced on
        self._idle_logged_once = False
        self._home_announced = False  # the worker's IDLE on home reported new mail
        self.thread = threading.Thread(target=self._main, name=f"mailrules-{self.name}", daemon=True)

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
            self.watchers.pop(mailbox, None)
            if mailbox not in self.polled:
                self.polled.append(mailbox)
            self._poll_now = True
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
        threads = [self.thread, *(w.thread for w in list(self.watchers.values()))]
        for thread in threads:
            if thread.is_alive() or thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            log.warning("account %s: still busy at exit (%s): abandoned; the journal resumes it at next start",
                        self.name, ", ".join(alive))
        return not alive

    def _has_work(self) -> bool:
        return bool(self.stopping.is_set() or self._new_config is not None or self.dirty or self.sweeps
                    or self._poll_now)

    # -------------------------------------------------------------- the worker

    def _main(self) -> None:
        store = StateStore(self.daemon.state_dir)
        pool = SessionPool(self.config)
        engine = Engine(self.config, self.daemon.registry, store, pool)
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
            for watcher in list(self.watchers.values()):
                watcher.thread.join(LOGOUT_TIMEOUT + 0.5)
            for catchup in self.catchups.values():
                catchup.finish()
            with contextlib.suppress(Exception):
                engine.close()
            with contextlib.suppress(Exception):
                pool.close()
            store.close()
            if not any(w.thread.is_alive() for w in list(self.watchers.values())):
                with self.cond:
                    self._pipe_closed = True
                    for fd in (self.wake_r, self.wake_w, self.kick_r, self.kick_w):
                        with contextlib.suppress(OSError):
                            os.close(fd)

    def _next_timer(self, last_used: float, next_poll: float) -> float:
        times = [last_used + min(self.account.idle_interval, 300.0)]
        if self.polled:
            times.append(next_poll)
        times.extend(self.retry_at.values())
        return min(times)

    def _loop(self, store: StateStore, pool: SessionPool, engine: Engine) -> None:
        backoff = Backoff(self.account.reconnect_max)
        slow = slow_backoff(self.account)
        health = self.daemon.health
        started_watchers = False
        next_poll = 0.0
        last_used = time.monotonic()
        first_pass = set(self.account.watch)
        since_now = bool(getattr(self.daemon.args, "since_now", False))

        while not self.stopping.is_set():
            with self.cond:
                new_config, self._new_config = self._new_config, None
            if new_config is not None:
                self.config = engine.config = pool.config = new_config
                log.info("account %s: the new rules apply from the next pass", self.name)

            # the action connection
            reconnected = self.name not in pool.sessions
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
                    log.warning("account %s: cannot connect (%s); retrying in %.1fs", self.name, _describe(exc),
                                delay)
                self._record_error(store, _describe(exc))
                self.stopping.wait(delay)
                continue
            health.up(self.name)
            slow.reset()
            if not started_watchers:
                started_watchers = True
                self._start_watchers(session)
            elif reconnected:
                with self.cond:  # catch up after every reconnection
                    self._poll_now = bool(self.polled)
                    if self.home_idle and self.home is not None:
                        self.dirty.setdefault(self.home, False)
            now = time.monotonic()

            # timers: polling, retries
            if self.polled and (self._poll_now or now >= next_poll):
                self._poll_now = False
                next_poll = now + self.account.poll_interval
                if not self._guard(store, pool, lambda s=session: self._poll(s), backoff, None):
                    continue
                last_used = time.monotonic()
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
                current = mailbox == self.home and self._home_announced
                self._home_announced = False
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
                deadline = self._next_timer(last_used, next_poll)
                if self.home_idle and self.home is not None and self.home not in self.broken:
                    ok = self._idle_home(session, store, pool, backoff, deadline)
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

    def _idle_home(self, session: ImapSession, store: StateStore, pool: SessionPool, backoff: Backoff,
                   deadline: float) -> bool:
        """IDLE on the home mailbox until news, new work, or `deadline` (at most idle_interval)."""
        assert self.home is not None
        try:
            if self._home_needs_pass(session, store):
                self.notify(self.home)
                return True
        except Exception as exc:  # noqa: BLE001 - let the pass meet (and sort out) the problem
            log.debug("account %s: checking %s before IDLE failed: %s", self.name, self.home, exc)
            self.notify(self.home)
            return True
        with contextlib.suppress(OSError):
            while os.read(self.kick_r, 512):
                pass
        with self.cond:
            if self._has_work():
                return True
        deadline = min(deadline, time.monotonic() + self.account.idle_interval)
        try:
            link = IdleLink(session.client, self.kick_r, self.account.timeout)
            seen = link.start()
            if self._idle_session is not session:
                self._idle_session = session
                again = "reconnected; watching with IDLE again" if self._idle_logged_once else "watching with IDLE"
                self._idle_logged_once = True
                log.info("account %s mailbox %s: %s", self.name, self.home, again)
            if not exists_in(seen):
                seen = seen + (link.wait(deadline) or [])  # None: woken for other work
            seen = seen + link.done()  # answered in time: the connection is alive
        except IdleRefused as exc:
            log.warning("account %s mailbox %s: IDLE refused (%s): polling this mailbox instead",
                        self.name, self.home, exc)
            self.home_idle = False
            self.poll_instead(self.home)
            return True
        except Exception as exc:  # noqa: BLE001 - the connection is gone
            if self.stopping.is_set():
                return True
            _drop(pool, self.name)
            self.notify(self.home)  # catch up once reconnected
            delay = backoff.next()
            log.warning("account %s mailbox %s: IDLE connection lost (%s); reconnecting in %.1fs",
                        self.name, self.home, _describe(exc), delay)
            self.stopping.wait(delay)
            return False
        if exists_in(seen):
            log.debug("account %s mailbox %s: new mail announced", self.name, self.home)
            self._home_announced = True
            self.notify(self.home)
        return True

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
            session = pool.sessions.get(self.name)
            alive = False
            if session is not None:
                try:
                    session.noop()
                    alive = True
                except Exception:  # noqa: BLE001
                    alive = False
            if not alive:
                _drop(pool, self.name)
                if requeue is not None:
                    requeue()
                delay = backoff.next()
                log.warning("account %s: connection lost (%s); reconnecting in %.1fs", self.name,
                            _describe(exc), delay)
                self.stopping.wait(delay)
                return False
            log.error("account %s mailbox %s: %s", self.name, mailbox or "-", _describe(exc))
            log.debug("details", exc_info=True)
            if mailbox is not None and mailbox in self.account.watch and session is not None:
                missing = self._missing_problem(session, mailbox)
                if missing:
                    self.daemon.health.problem(self.name, mailbox, missing)
            if mailbox is not None:
                with contextlib.suppress(Exception):
                    store.set_error(self.name, mailbox, _describe(exc))
                self.broken.add(mailbox)
                self._retry_later(mailbox)
            return False

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

    def _home_needs_pass(self, session: ImapSession, store: StateStore) -> bool:
        """Whether home may hold mail that no arrival pass took yet (so IDLE would not announce it).

        IDLE reports only what this connection has not been told of. Mail that arrived
        while it ran other commands (a pass's MOVE, a sweep) was announced then, in an
        EXISTS that is gone: look for anything above the checkpoint, and for an EXISTS
        in the answer to that very search.
        """
        assert self.home is not None
        server = session.server_name(self.home)
        selected = session.selected
        if selected is None or selected.name != server or selected.readonly:
            return True  # another mailbox was selected since: a pass re-selects home
        state = store.mailbox(self.name, server)
        if state is None or state.uidvalidity != selected.uidvalidity:
            return True
        found = session.search(SearchQuery((b"UID", f"{state.checkpoint + 1}:*".encode())))
        if any(uid > state.checkpoint for uid in found):
            return True
        return bool(session.client._imap.untagged_responses.get("EXISTS"))

    def _start_watchers(self, session: ImapSession) -> None:
        watch = list(self.account.watch)
        if not session.has("IDLE"):
            log.info("account %s: the server does not offer IDLE: polling %s every %gs", self.name,
                     ", ".join(watch), self.account.poll_interval)
            idle, polled = [], watch
        else:
            self.home_idle = True
            others = watch[1:]
            slots = max(0, self.account.max_connections - 1)
            idle, polled = others[:slots], others[slots:]
            if polled:
                log.info("account %s: IDLE on %s (max_connections %d): polling %s every %gs", self.name,
                         ", ".join(watch[: 1 + len(idle)]), self.account.max_connections, ", ".join(polled),
                         self.account.poll_interval)
        with self.cond:
            self.polled = polled
            for mailbox in idle:
                watcher = MailboxWatcher(self, mailbox)
                self.watchers[mailbox] = watcher
                watcher.start()

    def _poll(self, session: ImapSession) -> None:
        if session.selected is not None:
            # STATUS of the selected mailbox reports this session's (stale) view: sync it first
            session.noop()
        for mailbox in list(self.polled):
            uidnext = session.status_uidnext(session.server_name(mailbox))
            if self.known_uidnext.get(mailbox) != uidnext:
                self.known_uidnext[mailbox] = uidnext
                self.notify(mailbox)

    def _arrival(self, store: StateStore, engine: Engine, mailbox: str, *, retries: bool, since_now: bool,
                 reselect: bool = True) -> None:
        started = time.perf_counter()
        outcome = engine.process(self.name, mailbox, since_now=since_now, limit=CATCHUP_BATCH, retries=retries,
                                 reselect=reselect)
        self.broken.discard(mailbox)
        if mailbox in self.account.watch:
            self.daemon.health.problem(self.name, mailbox, None)
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
        self.daemon.passes += 1

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
        session = engine.pool.sessions.get(self.name)
        if session is None:
            return False
        try:
            session.noop()
            return True
        except Exception:  # noqa: BLE001
            return False


# ====================================================================== the daemon


def _account_signature(account: Account) -> Account:
    return dataclasses.replace(account, location=Location(""))


class Daemon:
    def __init__(self, config: Config, registry: Registry, store: StateStore, args: argparse.Namespace) -> None:
        self.config = config
        self.registry = registry
        self.store = store
        self.args = args
        self.state_dir = store.dir
        self.runners: dict[str, AccountRunner] = {}
        self.scheduler: SweepScheduler | None = None
        self.passes = 0
        self._wake = threading.Event()
        self._stop_signal: str | None = None
        self._reload = False
        self.health = Health(self)
        self._reload_job: _ReloadJob | None = None

    # -------------------------------------------------------------- signals

    def _on_stop(self, signum, frame) -> None:  # noqa: ARG002
        self._stop_signal = signal.Signals(signum).name
        self._wake.set()

    def _on_hup(self, signum, frame) -> None:  # noqa: ARG002
        self._reload = True
        self._wake.set()

    # -------------------------------------------------------------- life cycle

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, handler)
            for sig, handler in ((signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop),
                                 (signal.SIGHUP, self._on_hup))
        }
        self.registry.notify("mailrules_started", config=self.config)
        try:
            self.store.set_meta("daemon:started", dt.datetime.now(dt.UTC).isoformat())
            self._forget_health()
            self._start_runners(self.config)
            self.scheduler = SweepScheduler(self.config, self.store, self._dispatch_sweep)
            self.scheduler.start()
            self._initial_sweeps()
            summary = self._summary()
            log.info("mailrules daemon started (pid %d): %s", os.getpid(), summary)
            sd_notify(f"READY=1\nSTATUS={summary}\nMAINPID={os.getpid()}")
            self.health.ready(summary)
            while self._stop_signal is None:
                self._wake.wait(5.0)
                self._wake.clear()
                if self._stop_signal is not None:
                    break
                job = self._reload_job
                if job is not None and job.finished:
                    self._reload_job = None
                    self._end_reload(job)
                if self._reload and self._reload_job is None:  # a SIGHUP during a load: load again after it
                    self._reload = False
                    self._reload_job = self._begin_reload()
            if self._reload_job is not None:
                log.info("%s: the reload of the rules file under way is abandoned", self._stop_signal)
            log.info("%s: stopping", self._stop_signal)
        finally:
            sd_notify("STOPPING=1")
            if self.scheduler is not None:
                self.scheduler.shutdown()
            self._stop_runners()
            self.registry.notify("mailrules_stopping")
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("mailrules daemon stopped")
        return 0

    def _summary(self) -> str:
        """What is really watched, and every known permanent problem (see `Health`)."""
        return self.health.summary()

    def _forget_health(self) -> None:
        """The previous run's problems are not this run's: each is found (and recorded) again."""
        for name, account in self.config.accounts.items():
            for mailbox in (None, *account.watch):
                if self.store.get_meta(health_key(name, mailbox)):
                    self.store.set_meta(health_key(name, mailbox), "")

    def _start_runners(self, config: Config) -> None:
        for account in config.accounts.values():
            runner = AccountRunner(self, account, config)
            self.runners[account.name] = runner
            runner.start()

    def _stop_runners(self) -> None:
        runners = list(self.runners.values())
        self.runners = {}
        for runner in runners:
            runner.stop()
        deadline = time.monotonic() + STOP_GRACE
        for runner in runners:
            runner.join(deadline)

    # -------------------------------------------------------------- sweeps

    def _dispatch_sweep(self, key: str, fired: dt.datetime) -> None:
        group = schedule_groups(self.config).get(key)
        if group is None:
            return
        for name, runner in list(self.runners.items()):
            if sweep_targets(self.config, group[1], name):
                runner.request_sweep(key, fired)

    def _initial_sweeps(self) -> None:
        assert self.scheduler is not None
        now = dt.datetime.now(dt.UTC)
        for name, runner in self.runners.items():
            for key in self.scheduler.missed(name, now):
                log.info("account %s: sweep %s was missed while the daemon was down: running it now", name, key)
                runner.request_sweep(key, now)
        if getattr(self.args, "sweep", False):
            for key in schedule_groups(self.config):
                self._dispatch_sweep(key, now)

    # -------------------------------------------------------------- SIGHUP

    def reload(self) -> None:
        """Load the rules file and apply it now (blocking); the main loop uses the two halves."""
        job = self._begin_reload()
        job.thread.join()
        self._end_reload(job)

    def _begin_reload(self) -> _ReloadJob:
        """Start loading the rules file in a thread: the main loop goes on answering signals.

        The load itself is bounded (the limits of `mailrules.config`: size, depth, aliases), so
        it ends within seconds whatever the file holds; a SIGTERM meanwhile stops the daemon at
        once, abandoning the load (its thread is a daemon thread).
        """
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        log.info("SIGHUP: loading %s", self.config.path)
        job = _ReloadJob(self.config.path, self.registry, self._wake)
        job.thread.start()
        return job

    def _end_reload(self, job: _ReloadJob) -> None:
        """Apply what the load gave, on the main thread; on any failure the old rules stay."""
        try:
            config = job.config
            if config is None:
                log.error("SIGHUP: %s; the old rules stay in force", job.error)
                return
            for message in config.warnings:
                log.warning("%s", message)
            old = {n: _account_signature(a) for n, a in self.config.accounts.items()}
            new = {n: _account_signature(a) for n, a in config.accounts.items()}
            self.config = config
            if old != new:
                log.info("SIGHUP: the accounts changed: reconnecting")
                self._stop_runners()
                self._start_runners(config)
            else:
                for runner in self.runners.values():
                    runner.set_config(config)
            if self.scheduler is not None:
                self.scheduler.reload(config)
            log.info("SIGHUP: reloaded %s: %d rule(s), %d account(s)", config.path, len(config.rules),
                     len(config.accounts))
        finally:
            sd_notify(f"READY=1\nSTATUS={self._summary()}")


class _ReloadJob:
    """One load of the rules file for SIGHUP, in a thread of its own.

    Whatever goes wrong (a ConfigError with file:line, or anything unexpected from a plugin's
    validator) ends as `error`, never as an exception in the daemon: the old rules stay.
    """

    def __init__(self, path: str, registry: Registry, wake: threading.Event) -> None:
        self.path = path
        self.registry = registry
        self.wake = wake
        self.config: Config | None = None
        self.error = ""
        self.finished = False
        self.thread = threading.Thread(target=self._run, name="mailrules-reload", daemon=True)

    def _run(self) -> None:
        from .config import ConfigError, ConfigWarning, load

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConfigWarning)
                self.config = load(self.path, registry=self.registry)
        except ConfigError as exc:
            self.error = f"the rules file has an error: {exc}"
        except Exception as exc:  # noqa: BLE001 - the daemon and its old rules go on, whatever happened
            self.error = f"cannot load the rules file {self.path} ({type(exc).__name__}: {exc})"
            log.debug("details", exc_info=True)
        finally:
            self.finished = True
            self.wake.set()


def run_daemon(config: Config, registry: Registry, store: StateStore, args: argparse.Namespace) -> int:
    """`mailrules run` without --once: watch every account until SIGTERM/SIGINT. Returns the exit code."""
    if getattr(args, "rule", None):
        print("mailrules: --rule needs --once or --dry-run: a daemon running only some rules would skip the "
              "others for good on the messages it processes", file=sys.stderr)
        return 2
    return Daemon(config, registry, store, args).run()
