"""NAMESPACE and ID in one round trip: what every pass asks first of a new connection.

`run --once` opens its first connection in a thread while it starts (`SessionPool.open_early`),
and the pass waits for it: on a slow link each of its round trips is on the critical path.
Both commands only read and neither depends on the other's answer, so they go in one write
(RFC 3501 5.5) and are read in order; when that first mailbox is INBOX, whose name needs no
namespace, its SELECT goes in the same write (`mailrules.imap.pool.identify_and_select_inbox`).
Whatever goes wrong (a refusal, an answer not understood) leaves that part unknown, and the
session asks it the ordinary way when it needs it.
"""

from __future__ import annotations

import logging
from typing import Any

from . import internals

log = logging.getLogger("mailrules.imap")


def ask_namespace_and_id(session: Any) -> None:
    """Learn `session`'s personal namespace and server name (an `ImapSession`) in one round trip."""
    asked = send_namespace_and_id(session)
    if asked is None:
        session.namespace()
        _ = session.server_software
        return
    read_namespace_and_id(session, asked)


def send_namespace_and_id(session: Any) -> tuple[bytes, bytes] | None:
    """Send NAMESPACE and ID (in the write under way, if any: `internals.one_write`); their tags,
    or None if the server lacks either (then nothing is sent)."""
    if not (session.has("NAMESPACE") and session.has("ID")):
        return None
    imap = internals.imaplib_of(session.client)
    return internals.command(imap, "NAMESPACE"), internals.command(imap, "ID", "NIL")


def read_namespace_and_id(session: Any, asked: tuple[bytes, bytes]) -> None:
    """Read the answers of `send_namespace_and_id` into the session."""
    imap = internals.imaplib_of(session.client)
    namespace, software = (_answer(imap, name, tag) for name, tag in zip(("NAMESPACE", "ID"), asked, strict=True))
    session.adopt_identity(personal_namespace(namespace), server_name(software))


def _answer(imap: Any, name: str, tag: bytes) -> bytes | None:
    """The untagged answer of command `name` (sent with `tag`), or None if it was refused."""
    typ, data = internals.answer(imap, name, tag)
    if typ == "BAD":
        log.debug("%s refused: %s", name, data)
        return None
    lines = internals.untagged(imap).pop(name, [])
    return lines[-1] if typ == "OK" and lines and isinstance(lines[-1], bytes) else None


def personal_namespace(answer: bytes | None) -> tuple[str, str] | None:
    """(prefix, separator) of the first personal namespace in a NAMESPACE answer; None if unknown."""
    if answer is None:
        return None
    try:
        personal = internals.parse_response([answer])[0]
    except Exception:  # noqa: BLE001 - not understood: asked again the ordinary way
        return None
    if not personal:
        return "", "/"
    prefix, sep = personal[0][0] or b"", personal[0][1] or b"/"
    return _text(prefix), _text(sep)


def server_name(answer: bytes | None) -> str | None:
    """The server's name in an ID answer, lower case ("" when it gives none); None if unknown."""
    if answer is None:
        return None
    try:
        return name_of(internals.parse_response([answer]))
    except Exception:  # noqa: BLE001 - not understood: asked again the ordinary way
        return None


def name_of(parsed: Any) -> str:
    """The server's name, lower case, in an ID answer as IMAPClient parses it (`id_()`): one list
    of field, value, field, value... ("" for NIL or no name). Keys are case-insensitive (RFC 2971)."""
    fields = parsed[0] if parsed and isinstance(parsed[0], tuple | list) else parsed or ()
    info = {_text(k).lower(): v for k, v in zip(fields[0::2], fields[1::2], strict=False)}
    return _text(info.get("name") or "").lower()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


__all__ = ["ask_namespace_and_id", "name_of", "personal_namespace", "server_name"]
