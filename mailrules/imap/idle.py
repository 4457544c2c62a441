"""IDLE, DONE and NOOP read by hand (`IdleLink`), so that a wait also watches a wake-up pipe.

IMAPClient's ``idle_check()`` polls the socket only: a response already in imaplib's read
buffer (or in the TLS layer) waits for the next packet, an EOF comes back as an empty
list, and the wait cannot also watch a pipe that says "stop" or "new work". `IdleLink`
takes over what imaplib buffered, reads the socket itself (TLS-pending bytes included)
with the wire layer's literal-aware scanner (`mailrules.imap.wire.response_end`), and
hands the connection back to imaplib in sync once its command completed.
"""

from __future__ import annotations

import re
import select
import ssl
import time

import imapclient

from . import internals
from .wire import TAGS, response_end

_EXISTS = re.compile(rb"^\* (\d+) EXISTS\b", re.I)
_BYE = re.compile(rb"^\* BYE\b", re.I)


class ConnectionLost(Exception):
    """The server closed the connection, said BYE, or did not answer in time."""


class IdleRefused(Exception):
    """The server answered IDLE with NO or BAD."""


class CommandRefused(Exception):
    """The server answered a `IdleLink.command` with NO or BAD (the connection itself works)."""


class IdleLink:
    """IDLE / DONE / NOOP over the socket of a logged-in IMAPClient with a mailbox selected (see above)."""

    def __init__(self, client: imapclient.IMAPClient, wake_fd: int, timeout: float) -> None:
        self.imap = internals.imaplib_of(client)
        self.sock = client.socket()
        self.wake_fd = wake_fd
        self.timeout = timeout
        self.buf = bytearray(internals.take_buffered(self.imap, self.sock))
        self.tag: bytes | None = None

    # -------------------------------------------------------------- reading

    def _line(self) -> bytes | None:
        """The next complete response line (literals included), if the buffer holds one."""
        end = response_end(self.buf)
        if end is None:
            return None
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

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

    def _until_tagged(self, tag: bytes, what: str, timeout: float,
                      refused: type[Exception] = ConnectionLost) -> list[bytes]:
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
                        raise refused(f"{what} failed: {line.decode('utf-8', 'replace')}")
                    return untagged
                untagged.append(line)

    def _hand_back(self, lines: list[bytes]) -> None:
        """Give imaplib whatever was read past the end of our command (the connection goes back)."""
        rest = b"".join(line + b"\r\n" for line in lines) + bytes(self.buf)
        self.buf.clear()
        internals.hand_back(self.imap, rest)

    # -------------------------------------------------------------- commands

    def _send(self, data: bytes) -> None:
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(data)
        except OSError as exc:
            raise ConnectionLost(f"connection error: {exc}") from None

    def start(self) -> list[bytes]:
        """Send IDLE; returns the untagged responses that came before the server's '+'."""
        tag = TAGS.next(b"i")
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

    def command(self, text: bytes, what: str) -> list[bytes]:
        """One command without literals (e.g. NOTIFY SET ...); its untagged answers. CommandRefused on NO/BAD."""
        tag = TAGS.next(b"c")
        self._send(tag + b" " + text + b"\r\n")
        return self._until_tagged(tag, what, self.timeout, CommandRefused)

    def noop(self, timeout: float | None = None) -> list[bytes]:
        tag = TAGS.next(b"n")
        self._send(tag + b" NOOP\r\n")
        return self._until_tagged(tag, "NOOP", timeout or self.timeout)


def _check_bye(lines: list[bytes]) -> None:
    for line in lines:
        if _BYE.match(line):
            raise ConnectionLost("the server said " + line.decode("utf-8", "replace"))


def exists_in(lines: list[bytes]) -> bool:
    """Whether any of these untagged responses announces new messages (EXISTS)."""
    return any(_EXISTS.match(line) for line in lines)
