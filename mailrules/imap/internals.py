"""Every use of imaplib's and IMAPClient's private internals, in one place.

mailrules speaks most IMAP through IMAPClient, but a few things IMAPClient cannot do:
commands with literals without LITERAL+ placed where we need them, pipelined commands
(several sent before the first answer is read), compact UID sets (IMAPClient expands
them), reading tens of thousands of FETCH responses faster than imaplib's general reader,
IDLE that also watches a wake-up pipe, and capabilities taken from the greeting
(no CAPABILITY round trip). For those we work on the imaplib object under
IMAPClient. Each reach below says why it is needed; nothing else in mailrules touches a
private name of either library. (imaplib's public methods, ``send``, ``readline``, ``read``
and the ``abort``/``error`` exception classes, are used directly where needed.)

`pyproject.toml` pins IMAPClient to the major versions tested; `problems()` (run by
tests/test_imap_internals.py) names whatever of this a new version changed, so that an
upgrade fails loudly in the tests instead of quietly in a user's daemon.
"""

from __future__ import annotations

import contextlib
import imaplib
import inspect
import logging
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import imapclient
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.response_parser import parse_fetch_response as _parse_fetch_response
from imapclient.response_parser import parse_response as _parse_response
from imapclient.tls import IMAP4_TLS

IMAP4 = imaplib.IMAP4


def imaplib_of(client: imapclient.IMAPClient) -> imaplib.IMAP4:
    """The imaplib connection under an IMAPClient (``client._imap``): everything below works on it."""
    return client._imap


def quiet_unless_logged(client: imapclient.IMAPClient) -> None:
    """imaplib's debug text only when the protocol log (-vv) would write it.

    IMAPClient sets imaplib's ``debug`` to 5, so imaplib formats every line it sends and reads
    (``'%r' % line``) for the ``imapclient.imaplib`` logger, which drops it below DEBUG: ~3 us a
    line, and a 10,000-message pass reads ~11,000 lines of MOVE answers alone.
    """
    if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
        imaplib_of(client).debug = 0


def untagged(imap: imaplib.IMAP4) -> dict[str, list]:
    """imaplib's collected untagged responses, by name (``untagged_responses``).

    Read for ESEARCH/SEARCH results, response codes such as COPYUID, and EXISTS seen in
    passing; cleared before our commands so that stale ones are not taken for new ones.
    """
    return imap.untagged_responses


def new_tag(imap: imaplib.IMAP4) -> bytes:
    """A tag from imaplib's allocator (``_new_tag``), registered for `complete` to wait on.

    Commands whose answer imaplib reads must carry imaplib's tags: its reader recognises
    only those as tagged answers.
    """
    return imap._new_tag()


def release_tag(imap: imaplib.IMAP4, tag: bytes) -> Any:
    """Stop imaplib waiting for `tag` (``tagged_commands``); returns its answer if it came."""
    return imap.tagged_commands.pop(tag, None)


def tagged_answer(imap: imaplib.IMAP4, tag: bytes) -> Any:
    """The tagged answer imaplib has read for `tag`, or None (``tagged_commands``)."""
    return imap.tagged_commands.get(tag)


def command(imap: imaplib.IMAP4, name: str, *args: Any) -> bytes:
    """Send a command without waiting for its answer (``_command``); returns its tag.

    Used to pipeline CREATE/SUBSCRIBE with a COPY, and for UID FETCH with a compact set.
    """
    return imap._command(name, *args)


def complete(imap: imaplib.IMAP4, name: str, tag: bytes) -> tuple[str, list]:
    """Read until `tag`'s tagged answer (``_command_complete``); raises imap.error on BAD.

    The plain untagged lines before it (`_PLAIN_STATUS`: a MOVE's `* n EXPUNGE` for each
    message, a FETCH (FLAGS)'s `* n FETCH (...)`) are taken from the buffer in bulk and stored
    as imaplib's reader stores them; every other response is read by imaplib's reader. imaplib
    reads, matches and logs each line on its own, ~8 us a line: a 10,000-message pass's MOVEs
    and their flag reads answer ~9,000 such lines. Not while imaplib logs the protocol (-vv)."""
    if not imap.debug and name != "LOGOUT" and tag in imap.tagged_commands:
        try:
            _skim_until(imap, tag)
        except imap.abort as exc:
            raise imap.abort(f"command: {name} => {exc}") from None  # as imaplib words it
    return imap._command_complete(name, tag)


# `* n TYPE[ data]` with no literal and no response code: imaplib's Untagged_status, which it
# stores as (TYPE, b"n data"), checking for nothing else
_PLAIN_STATUS = re.compile(rb"\* (\d+) ([A-Z-]+)(?: ([^\r\n{]*))?\r\n")
_SKIM_LINE = 8192  # a longer line (or the start of one) goes to imaplib's reader and its limit


def _skim_until(imap: imaplib.IMAP4, tag: bytes) -> None:
    """Read responses until `tag`'s tagged answer is in (see `complete`)."""
    stored = imap.untagged_responses
    buf, pos = b"", 0
    try:
        while imap.tagged_commands.get(tag) is None:
            m = _PLAIN_STATUS.match(buf, pos)
            if m is not None:
                number, kind, rest = m.groups()
                stored.setdefault(kind.decode("ascii"), []).append(number + b" " + rest if rest else number)
                pos = m.end()
            elif buf.find(b"\n", pos) >= 0 or len(buf) - pos > _SKIM_LINE:
                hand_back(imap, buf[pos:])  # another kind of response: imaplib's, as in its own loop
                buf, pos = b"", 0
                imap._check_bye()
                imap._get_response()
            else:
                imap._check_bye()
                data = read_some(imap)
                if not data:
                    raise imap.abort("socket error: EOF")
                buf, pos = buf[pos:] + data, 0
    finally:
        hand_back(imap, buf[pos:])


def answer(imap: imaplib.IMAP4, name: str, tag: bytes) -> tuple[str, list]:
    """`complete`, with a BAD answer returned as ("BAD", [its text]) like a NO instead of raised;
    a lost connection (imap.abort, itself an imap.error) still raises."""
    try:
        return complete(imap, name, tag)
    except imap.abort:
        raise
    except imap.error as exc:
        return "BAD", [str(exc).encode()]


def next_response(imap: imaplib.IMAP4) -> bytes | None:
    """Read one response with imaplib's reader (``_get_response``); None for a continuation ('+')."""
    return imap._get_response()


@contextlib.contextmanager
def one_write(imap: imaplib.IMAP4) -> Iterator[None]:
    """The commands sent inside (``command``, `send_select`) leave in one write, at the end.

    Pipelined commands sent one write each let the kernel run the server as soon as the
    first arrives, and the client wait for the CPU before the second: the pipeline then
    costs a round trip after all (measured: 0.35 ms per write on loopback under load).
    Only for commands without literals (imaplib would wait for the server's '+').
    """
    parts: list[bytes] = []
    hooked = vars(imap).get("send")  # `on_send`'s hook, if any: it sees the one write
    imap.send = parts.append  # type: ignore[method-assign] - imaplib's _command calls self.send
    try:
        yield
    finally:
        if hooked is None:
            del imap.send
        else:
            imap.send = hooked  # type: ignore[method-assign]
        if parts:
            imap.send(b"".join(parts))


def send_select(client: imapclient.IMAPClient, name: str, *, readonly: bool) -> bytes:
    """Send SELECT (EXAMINE if `readonly`) without waiting for its answer; returns its tag.

    What imaplib's ``select()`` does before sending (flush the untagged responses, note
    read-only), so that a command can be pipelined behind it (`mailrules.imap.reselect`).
    """
    imap = client._imap
    imap.untagged_responses = {}
    imap.is_readonly = readonly
    tag = imap._command("EXAMINE" if readonly else "SELECT", client._normalise_folder(name))
    imap.state = "SELECTED"  # imaplib sends UID commands only then; `finish_select` sets the outcome's
    return tag


def finish_select(client: imapclient.IMAPClient, tag: bytes, *, readonly: bool) -> tuple[str, Any]:
    """Read a `send_select`'s answer, set imaplib's state as its ``select()`` does; ("OK", IMAPClient's
    ``select_folder`` dict) or (NO's type, its text). Raises imap.error on BAD, imap.readonly as imaplib does."""
    imap = client._imap
    typ, data = imap._command_complete("EXAMINE" if readonly else "SELECT", tag)
    if typ != "OK":
        imap.state = "AUTH"
        return typ, data
    imap.state = "SELECTED"
    if "READ-ONLY" in imap.untagged_responses and not readonly:
        raise imap.readonly("mailbox is not writable")
    return typ, client._process_select_response(imap.untagged_responses)


def on_send(imap: imaplib.IMAP4, after: Callable[[], None]) -> None:
    """Call `after()` each time a command has gone out on this connection: an instance attribute
    over imaplib's public ``send``, through which every command goes (ours, IMAPClient's, a
    pipeline's). Used to read a command's answer late, when the next command is already sent
    (`mailrules.imap.later`); `off_send` removes it."""

    def send(data: bytes) -> None:
        type(imap).send(imap, data)  # the class's, looked up now (the tests' round-trip counter wraps it)
        after()

    imap.send = send  # type: ignore[method-assign]


def off_send(imap: imaplib.IMAP4) -> None:
    """Remove `on_send`'s hook (nothing when there is none)."""
    vars(imap).pop("send", None)


def normalise_folder(client: imapclient.IMAPClient, name: str) -> bytes:
    """A folder name as IMAPClient would send it (``_normalise_folder``: modified UTF-7, quoted)."""
    return client._normalise_folder(name)


def parse_response(data: list[bytes]) -> list:
    """IMAPClient's parser of a response's data (``imapclient.response_parser``): atoms, strings,
    NIL and parenthesised lists as bytes, None and tuples."""
    return list(_parse_response(data))


def parse_fetch_response(data: list, normalise_times: bool) -> dict[int, dict]:
    """IMAPClient's FETCH parser (``imapclient.response_parser``, not exported at the top level)."""
    return _parse_fetch_response(data, normalise_times, True)


def take_buffered(imap: Any, sock: socket.socket) -> bytes:
    """Bytes imaplib's buffered reader (``imap.file``) already holds, taken out of it without blocking.

    IDLE reads the socket itself (to watch a wake-up pipe too); a response already in
    imaplib's buffer would otherwise wait there unseen.
    """
    file = getattr(imap, "file", None)
    if file is None or not hasattr(file, "peek"):
        return b""
    old = sock.gettimeout()
    sock.setblocking(False)
    try:
        data = file.peek(1 << 16)
    except (OSError, ValueError):  # nothing buffered (EAGAIN, or a TLS want-read)
        data = b""
    finally:
        sock.settimeout(old)
    if data:
        file.read(len(data))
    return bytes(data)


def read_some(imap: Any, size: int = 1 << 18) -> bytes:
    """The next bytes of the connection, up to `size`, waiting for at least one (b"" at EOF):
    first what `hand_back` left to replay, then what imaplib's buffered reader (``imap.file``)
    holds or one read of the socket (``read1``), so that a fast reader asks once per chunk,
    not once per line. Bytes read past the caller's last response go back with `hand_back`."""
    file = imap.file
    while isinstance(file, _Replay):
        if file.data:
            data = bytes(file.data[:size])
            del file.data[:size]
            return data
        file = file.file
    imap.file = file  # nothing left to replay: unwrapped
    return file.read1(size)


def hand_back(imap: Any, data: bytes) -> None:
    """Give imaplib bytes we read past the end of our command: its reader (``imap.file``) replays them first."""
    file = imap.file
    while isinstance(file, _Replay) and not file.data:
        file = file.file  # nothing left to replay: unwrap
    imap.file = _Replay(data, file) if data else file


class _Replay:
    """A read-only file for imaplib that first returns `data`, then reads on from `file`."""

    def __init__(self, data: bytes, file: Any) -> None:
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

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


# ---------------------------------------------------------------------- the greeting's capabilities

class _GreetingCapabilities(imaplib.IMAP4):
    """imaplib's connection, taking the capabilities from the greeting when it carries them
    (``_get_capabilities`` overridden; IMAPClient's ``_create_IMAP4`` makes it).

    imaplib asks CAPABILITY right after the greeting, even when the greeting's response code
    already listed them (``* OK [CAPABILITY ...]``, as Dovecot sends): one round trip
    of every connection (20 ms on a 20 ms link). Only the greeting's list is used this way;
    after STARTTLS the capabilities are asked again, as RFC 2595 says, and after login
    IMAPClient takes LOGIN's own list (or asks).
    """

    _greeting_read = False

    def _get_capabilities(self) -> None:
        if self._greeting_read:
            return super()._get_capabilities()
        self._greeting_read = True
        # popped as the CAPABILITY command would pop it: IMAPClient must not mistake it later
        # for the list that login sends
        listed = self.untagged_responses.pop("CAPABILITY", None)
        if not listed or not listed[-1]:
            return super()._get_capabilities()
        self.capabilities = tuple(str(listed[-1], self._encoding).upper().split())
        return None


class _PlainIMAP4(_GreetingCapabilities, IMAP4WithTimeout):
    pass


class _TlsIMAP4(_GreetingCapabilities, IMAP4_TLS):
    pass


class GreetingCapabilitiesClient(imapclient.IMAPClient):
    """IMAPClient on `_GreetingCapabilities` connections (the one `mailrules.connect` opens)."""

    def _create_IMAP4(self) -> imaplib.IMAP4:  # noqa: N802 - IMAPClient's name
        connect_timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _TlsIMAP4(self.host, self.port, self.ssl_context, connect_timeout)
        return _PlainIMAP4(self.host, self.port, connect_timeout)


# ---------------------------------------------------------------------- what the above relies on

# (owner, name, parameters after self, or None for an attribute set in __init__)
_METHODS: tuple[tuple[type | Callable, str, tuple[str, ...]], ...] = (
    (imaplib.IMAP4, "_get_capabilities", ()),
    (imapclient.IMAPClient, "_create_IMAP4", ()),
    (imaplib.IMAP4, "_new_tag", ()),
    (imaplib.IMAP4, "_command", ("name", "*args")),
    (imaplib.IMAP4, "_command_complete", ("name", "tag")),
    (imaplib.IMAP4, "_get_response", ()),
    (imaplib.IMAP4, "_check_bye", ()),
    (imaplib.IMAP4, "send", ("data",)),
    (imaplib.IMAP4, "readline", ()),
    (imaplib.IMAP4, "read", ("size",)),
    (imapclient.IMAPClient, "_normalise_folder", ("folder_name",)),
    (imapclient.IMAPClient, "_process_select_response", ("resp",)),
)
# attributes the constructors set: (class, attribute, text that sets it in the class's source)
_ATTRIBUTES: tuple[tuple[type, str, str], ...] = (
    (imaplib.IMAP4, "tagged_commands", "self.tagged_commands ="),
    (imaplib.IMAP4, "untagged_responses", "self.untagged_responses ="),
    (imaplib.IMAP4, "debug", "self.debug ="),
    (imaplib.IMAP4, "file", "self.file ="),
    (imapclient.IMAPClient, "_imap", "self._imap ="),
    (imapclient.IMAPClient, "normalise_times", "self.normalise_times ="),
)


def _parameters(func: Callable) -> tuple[str, ...]:
    out = []
    for p in list(inspect.signature(func).parameters.values())[1:]:
        out.append("*" + p.name if p.kind is p.VAR_POSITIONAL else p.name)
    return tuple(out)


def problems(client: imapclient.IMAPClient | None = None) -> list[str]:
    """What of the internals used here is missing or changed in the installed libraries ([] if none).

    client: a logged-in connection, to check the attributes on a live object too.
    """
    found: list[str] = []
    for owner, name, params in _METHODS:
        func = getattr(owner, name, None)
        if func is None:
            found.append(f"{owner.__module__}.{owner.__qualname__}.{name} is gone")
        elif _parameters(func) != params:
            found.append(f"{owner.__module__}.{owner.__qualname__}.{name} now takes {_parameters(func)}, "
                         f"not {params}")
    for owner, name, setter in _ATTRIBUTES:
        try:
            source = inspect.getsource(owner)
        except (OSError, TypeError):
            continue
        if setter not in source:
            found.append(f"{owner.__module__}.{owner.__qualname__} no longer sets {name}")
    if _parameters(_parse_fetch_response)[:2] != ("normalise_times", "uid_is_key"):
        found.append(f"imapclient.response_parser.parse_fetch_response now takes {_parameters(_parse_fetch_response)}")
    if client is not None:
        imap = getattr(client, "_imap", None)
        if imap is None:
            found.append("IMAPClient has no _imap")
        else:
            for attr, kind in (("tagged_commands", dict), ("untagged_responses", dict)):
                if not isinstance(getattr(imap, attr, None), kind):
                    found.append(f"imaplib.IMAP4.{attr} is not a {kind.__name__}")
            if not all(hasattr(getattr(imap, "file", None), m) for m in ("peek", "read1")):
                found.append("imaplib.IMAP4.file is not a buffered reader with peek() and read1()")
    return found
