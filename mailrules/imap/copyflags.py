"""`UID COPY` or `UID MOVE` with the messages' flags and keywords read in the same round trip.

Undo removes only the copies nobody changed since, and moves back only the moved messages
nobody changed since (`mailrules.actions.reverse`): it compares each one's flags with those
it was copied or moved with, which are its source's at the COPY or MOVE. A
`UID FETCH (FLAGS)` of the same UIDs, sent just before the `UID COPY` (`UID MOVE`) and
answered before it, reads them without a round trip of its own (the backlog benchmark's copy
rule, and tests/test_pipelining.py's "a copy costs one round trip"). Both commands go raw:
imaplib's `uid` would hand the FETCH answers to the COPY, and IMAPClient's `copy` keep only
the first.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

import imapclient
from imapclient.exceptions import IMAPClientError

from . import internals


def copy_reading_flags(client: imapclient.IMAPClient, uid_set: str, folder: str,
                       verb: str = "COPY") -> dict[int, frozenset[str]]:
    """UID COPY (`verb` "MOVE": UID MOVE) `uid_set` to `folder`; returns source UID -> its flags
    and keywords but \\Recent (none when the server refused the FETCH). A refused COPY raises
    IMAPClientError, as IMAPClient's `copy` does (the caller reads TRYCREATE and EXPUNGEISSUED
    from its text); its COPYUID is left with imaplib's response codes, as after `copy`."""
    reading, copying = send_reading_flags(client, uid_set, folder, verb)
    return read_reading_flags(client, reading, copying, verb)


def send_reading_flags(client: imapclient.IMAPClient, uid_set: str, folder: str, verb: str) -> tuple[bytes, bytes]:
    """Send the UID FETCH (FLAGS) and the UID COPY or MOVE without waiting; their tags."""
    imap = internals.imaplib_of(client)
    with internals.one_write(imap):  # both in one write, or the second may wait for the first's answer
        reading = internals.command(imap, "UID", "FETCH", uid_set, "(FLAGS)")
        copying = internals.command(imap, "UID", verb, uid_set, internals.normalise_folder(client, folder))
    return reading, copying


def read_reading_flags(client: imapclient.IMAPClient, reading: bytes, copying: bytes, verb: str,
                       uids: Collection[int] | None = None) -> dict[int, frozenset[str]]:
    """The answers of `send_reading_flags` (as `copy_reading_flags` returns or raises). uids: the
    messages sent; FETCH answers of others (another command's, read in passing) are left for it."""
    imap = internals.imaplib_of(client)
    typ, data = internals.complete(imap, verb, copying)
    flags = _flags_answer(client, imap, reading, uids)
    if typ != "OK":
        text = " ".join(x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in data if x)
        raise IMAPClientError(f"{verb} command error: {typ} [{text}]")
    return flags


def _flags_answer(client: imapclient.IMAPClient, imap, tag: bytes,
                  uids: Collection[int] | None = None) -> dict[int, frozenset[str]]:
    typ, _data = internals.answer(imap, "FETCH", tag)
    data = internals.untagged(imap).pop("FETCH", [])
    if uids is not None:  # another command's FETCH answers stay for it
        wanted = set(uids)
        others = [line for line in data if uid_of(line) not in wanted]
        if others:
            internals.untagged(imap)["FETCH"] = others
            data = [line for line in data if uid_of(line) in wanted]
    if typ != "OK":
        return {}
    names: dict[int, Iterable[str]] = {}
    other: list = []
    for line in data:  # the usual answer by one regular expression; anything else by IMAPClient's parser
        m = _USUAL.fullmatch(line) if isinstance(line, bytes) and len(line) < 8192 else None
        if m is None:
            other.append(line)
        else:
            uid, flags = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
            names[int(uid)] = flags.decode(errors="replace").split()
    if other:
        for uid, item in internals.parse_fetch_response(other, client.normalise_times).items():
            names[uid] = [f.decode() if isinstance(f, bytes) else str(f) for f in item.get(b"FLAGS", ())]
    return {uid: frozenset(f for f in flags if f.lower() != "\\recent") for uid, flags in names.items()}  # not copied


# `n (UID u FLAGS (...))` or `n (FLAGS (...) UID u)`: what servers answer a UID FETCH (FLAGS)
_USUAL = re.compile(rb"\d+ \((?:UID (\d+) FLAGS \(([^()]*)\)|FLAGS \(([^()]*)\) UID (\d+))\)")


def uid_of(line) -> int | None:
    """The UID a FETCH answer (as imaplib keeps it: a line, or a (line, literal) pair) is about."""
    head = line[0] if isinstance(line, tuple) else line
    m = _UID.search(head) if isinstance(head, bytes) else None
    return int(m.group(1)) if m else None


_UID = re.compile(rb"\bUID (\d+)")

__all__ = ["copy_reading_flags", "read_reading_flags", "send_reading_flags", "uid_of"]
