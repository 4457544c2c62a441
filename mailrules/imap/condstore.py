"""Pipelined conditional STOREs (CONDSTORE, RFC 7162): one per message, one round trip per batch.

Shared mailboxes (`mailrules.claims`) change each message's claim keywords with its own
MODSEQ as `UNCHANGEDSINCE`, never one MODSEQ for a batch; sending them one at a time cost a
round trip per message, which under load stretched a holder's re-check past half of
`claim_timeout`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..uidset import UidSet
from . import internals
from .session import ImapSession, ServerRefused, text_of


def store_unchangedsince_many(session: ImapSession, stores: list[tuple[int, int, list[str]]],
                              written: dict[int, int] | None = None) -> set[int]:
    """`UID STORE <uid> (UNCHANGEDSINCE <modseq>) FLAGS.SILENT (<flags>)` for each (uid, modseq,
    flags), all sent before any answer is read; returns the UIDs the server left alone because
    they changed since (`[MODIFIED]`). Each keyword is sent once. `written` receives, per UID
    changed, the MODSEQ the server gave the change (RFC 7162 sends it even with .SILENT)."""
    imap = internals.imaplib_of(session.client)
    untagged = internals.untagged(imap)
    untagged.pop("MODIFIED", None)
    untagged.pop("FETCH", None)  # only this batch's answers are read below
    tags = []
    try:
        for uid, modseq, flags in stores:
            tags.append((uid, internals.command(imap, "UID", "STORE", str(uid), f"(UNCHANGEDSINCE {int(modseq)})",
                                                "FLAGS.SILENT", "(" + " ".join(dict.fromkeys(flags)) + ")")))
        answers = [(uid, internals.complete(imap, "STORE", tag)) for uid, tag in tags]
    except imap.abort:
        raise
    except imap.error as exc:
        raise ServerRefused("STORE", str(exc)) from None
    modified: set[int] = set()
    for uid, (typ, data) in answers:
        text = " ".join(x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in data if x)
        if typ != "OK":
            raise ServerRefused("STORE", text)
        if re.search(r"\[MODIFIED\s+[0-9:,]+\]", text):
            modified.add(uid)
    for item in untagged.pop("MODIFIED", []):  # a server that sends it untagged
        modified |= set(UidSet.parse((item.decode() if isinstance(item, bytes) else str(item)).strip()))
    for item in untagged.pop("FETCH", []):  # "n (UID u MODSEQ (m))": what each change was numbered
        text = item.decode(errors="replace") if isinstance(item, bytes) else str(item)
        uid, seq = re.search(r"UID (\d+)", text), re.search(r"MODSEQ \((\d+)\)", text)
        if written is not None and uid and seq and int(uid.group(1)) not in modified:
            written[int(uid.group(1))] = int(seq.group(1))
    return modified


def store_unchangedsince(session: ImapSession, uid_set: str, modseq: int, op: str, flags: Iterable[str]) -> UidSet:
    """CONDSTORE (RFC 7162): `UID STORE uid_set (UNCHANGEDSINCE modseq) op.SILENT (flags)`.

    op is "+FLAGS", "-FLAGS" or "FLAGS". Only messages whose mod-sequence is still at most
    `modseq` change; returns the UIDs the server left alone because they changed since
    (its MODIFIED response code). Used by shared mailboxes (`mailrules.claims`).
    """
    imap = internals.imaplib_of(session.client)
    internals.untagged(imap).pop("MODIFIED", None)
    data = session.uid_command("STORE", uid_set, f"(UNCHANGEDSINCE {int(modseq)})", f"{op}.SILENT",
                               "(" + " ".join(dict.fromkeys(flags)) + ")")  # each keyword once
    texts = [text_of(data)] + [x.decode() if isinstance(x, bytes) else str(x)
                             for x in internals.untagged(imap).pop("MODIFIED", [])]
    modified = UidSet()
    for text in texts:
        m = re.search(r"\[MODIFIED\s+([0-9:,]+)\]", text) or re.fullmatch(r"\s*([0-9:,]+)\s*", text)
        if m:
            modified = modified | UidSet.parse(m.group(1))
    session.clear_untagged()
    return modified


__all__ = ["store_unchangedsince", "store_unchangedsince_many"]
