"""What a server stores for an APPENDed message, where that differs from the bytes sent.

A cross-account copy is proven by a digest of the whole message at the destination
(mailrules/actions/copy.py). Cyrus (with its default `munge8bit: yes`) replaces every 8-bit
byte of the header section with `X` as it stores a message (`Größe` becomes `GrXXXXe`; the
body is kept): a digest of the bytes sent never matches the copy, and a resume would append
again. Comparing the form the destination stores keeps the check exact.
"""

from __future__ import annotations

from typing import Any

_HIGH = bytes(range(0x80, 0x100))
_MUNGE = bytes.maketrans(_HIGH, b"X" * len(_HIGH))


def cyrus_stored_form(raw: bytes) -> bytes:
    """`raw` as Cyrus stores it: each byte >= 0x80 in the header section becomes `X`.

    The header section ends, as Cyrus's message_copy_strip sees it, at the first line that
    holds nothing but CRs before its LF (the empty line, or a message of headers only).
    """
    start = 0
    while True:
        end = raw.find(b"\n", start)
        if end < 0:
            return raw.translate(_MUNGE)  # no end of header: all header
        if not raw[start:end].strip(b"\r"):
            return raw[:start].translate(_MUNGE) + raw[start:]
        start = end + 1


def rewrites_8bit_headers(session: Any) -> bool:
    """Whether the server of `session` stores 8-bit header bytes changed: Cyrus, named in its
    greeting (`* OK ... Cyrus IMAP ...`), as mailrules.claims.keyword_cap recognises it."""
    welcome = getattr(getattr(session, "client", None), "welcome", b"") or b""
    text = welcome.decode(errors="replace") if isinstance(welcome, bytes) else str(welcome)
    return "cyrus" in text.lower()


def stored_form(session: Any, raw: bytes) -> bytes:
    """`raw` as the server of `session` will store it (unchanged where not known to differ)."""
    return cyrus_stored_form(raw) if rewrites_8bit_headers(session) else raw
