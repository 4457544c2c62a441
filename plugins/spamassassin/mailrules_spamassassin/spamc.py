"""A small client for spamd's protocol (what ``spamc`` speaks), over TCP or a Unix socket.

Protocol (SpamAssassin's ``spamd/PROTOCOL``): one request per connection::

    SYMBOLS SPAMC/1.5\\r\\n
    Content-length: 1234\\r\\n
    User: alice\\r\\n            (optional)
    \\r\\n
    <the message>

and spamd answers, then closes the connection::

    SPAMD/1.1 0 EX_OK\\r\\n
    Content-length: 25\\r\\n
    Spam: True ; 1002.7 / 5.0\\r\\n
    \\r\\n
    GTUBE,MISSING_DATE,...

``TELL`` (learning; spamd must run with ``--allow-tell``) sends ``Message-class: spam|ham``
and ``Set: local``; the answer carries ``DidSet: local`` when the database changed.

Every call has one deadline (`timeout` seconds) covering connect, send and receive.
Errors are `SpamdError`.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from dataclasses import dataclass

__all__ = ["DEFAULT_ADDRESS", "CheckResult", "SpamdClient", "SpamdError", "parse_address"]

DEFAULT_ADDRESS = "localhost:783"
MAX_RESPONSE = 1 << 20  # bytes; the answers we ask for are small

_STATUS_RE = re.compile(rb"SPAMD/(\d+\.\d+) +(\d+) +(.*)")
_SPAM_RE = re.compile(r"(True|False|Yes|No)\s*;\s*(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


class SpamdError(Exception):
    """spamd could not be reached, timed out, or refused the request."""


@dataclass(frozen=True)
class CheckResult:
    """spamd's verdict on one message."""

    is_spam: bool  # spamd's own verdict (score >= its required score)
    score: float
    threshold: float  # spamd's required score
    symbols: tuple[str, ...] = ()  # the rules that hit (SYMBOLS only)


def parse_address(address: str) -> tuple[str, str | tuple[str, int]]:
    """'host:port', '[v6]:port', 'host' (port 783) or '/path/to/socket' -> (family, target)."""
    if address.startswith("/"):
        return "unix", address
    host, port = address, 783
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise ValueError(f"spamd address {address!r}: missing ']'")
        host, rest = address[1:end], address[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"spamd address {address!r}: expected [ADDRESS]:PORT")
            port = _port(rest[1:], address)
    elif address.count(":") == 1:
        host, text = address.split(":")
        port = _port(text, address)
    if not host:
        raise ValueError(f"spamd address {address!r}: no host")
    return "inet", (host, port)


def _port(text: str, address: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"spamd address {address!r}: the port must be a number from 1 to 65535")
    return int(text)


class SpamdClient:
    """Talks to one spamd. Thread-safe: every request uses its own connection."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, timeout: float = 10.0, user: str | None = None) -> None:
        self.address = address
        self.family, self.target = parse_address(address)
        self.timeout = timeout
        self.user = user

    # ------------------------------------------------------------------ requests

    def ping(self) -> bool:
        """True if spamd answers PING with PONG."""
        status, _headers, _body = self._request("PING", {}, None)
        return "PONG" in status

    def check(self, message: bytes) -> CheckResult:
        """Score `message` (CHECK: verdict and score only)."""
        return self._verdict("CHECK", message)

    def symbols(self, message: bytes) -> CheckResult:
        """Score `message` and list the rules that hit (SYMBOLS)."""
        return self._verdict("SYMBOLS", message)

    def tell(self, message: bytes, message_class: str) -> bool:
        """Learn `message` as 'spam' or 'ham' (TELL). True if the database changed."""
        if message_class not in ("spam", "ham"):
            raise ValueError("message_class must be 'spam' or 'ham'")
        _status, headers, _body = self._request(
            "TELL", {"Message-class": message_class, "Set": "local"}, message
        )
        return "local" in headers.get("didset", "").lower()

    # ------------------------------------------------------------------ the protocol

    def _verdict(self, method: str, message: bytes) -> CheckResult:
        _status, headers, body = self._request(method, {}, message)
        spam = headers.get("spam")
        match = _SPAM_RE.search(spam or "")
        if not match:
            raise SpamdError(f"spamd at {self.address}: no verdict in the answer to {method} (Spam: {spam!r})")
        symbols: tuple[str, ...] = ()
        if method == "SYMBOLS":
            text = body.decode("ascii", "replace").strip()
            symbols = tuple(s.strip() for s in text.split(",") if s.strip())
        return CheckResult(
            is_spam=match.group(1).lower() in ("true", "yes"),
            score=float(match.group(2)),
            threshold=float(match.group(3)),
            symbols=symbols,
        )

    def _request(self, method: str, extra: dict[str, str], body: bytes | None) -> tuple[str, dict[str, str], bytes]:
        lines = [f"{method} SPAMC/1.5"]
        if body is not None:
            lines.append(f"Content-length: {len(body)}")
        if self.user:
            lines.append(f"User: {self.user}")
        lines.extend(f"{name}: {value}" for name, value in extra.items())
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (body or b"")
        deadline = time.monotonic() + self.timeout
        try:
            sock = self._connect(deadline)
        except OSError as exc:
            raise SpamdError(f"cannot reach spamd at {self.address}: {_reason(exc)}") from None
        try:
            with sock:
                _settimeout(sock, deadline)
                sock.sendall(request)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                data = bytearray()
                while True:
                    _settimeout(sock, deadline)
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    if len(data) > MAX_RESPONSE:
                        raise SpamdError(f"spamd at {self.address}: answer too long")
        except TimeoutError:
            raise SpamdError(f"spamd at {self.address} did not answer {method} within {self.timeout:g}s") from None
        except OSError as exc:
            raise SpamdError(f"spamd at {self.address}: {method} failed: {_reason(exc)}") from None
        return self._parse(method, bytes(data))

    def _connect(self, deadline: float) -> socket.socket:
        if self.family == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                _settimeout(sock, deadline)
                sock.connect(self.target)
            except BaseException:
                sock.close()
                raise
            return sock
        return socket.create_connection(self.target, timeout=max(0.001, deadline - time.monotonic()))

    def _parse(self, method: str, data: bytes) -> tuple[str, dict[str, str], bytes]:
        head, _sep, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        match = _STATUS_RE.match(lines[0]) if lines and lines[0] else None
        if not match:
            shown = lines[0][:80] if lines and lines[0] else b"nothing"
            raise SpamdError(f"spamd at {self.address}: unexpected answer to {method}: {shown!r}")
        code, text = int(match.group(2)), match.group(3).decode("ascii", "replace").strip()
        if code != 0:
            raise SpamdError(f"spamd at {self.address} refused {method}: {code} {text}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.decode("ascii", "replace").partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return text, headers, body


def _settimeout(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    sock.settimeout(remaining)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
