"""Failures in words for logs and `mailrules status`: never a Python class name.

Why: a user reading "AuthenticationError: ..." or "error: select failed: Mailbox doesn't exist"
learns the name of a class (imaplib's is called `error`) instead of what to do. mailrules' own
exceptions already say what happened and what to do; the others (the server's refusals, lost
connections, timeouts) get a few words in front. A mailbox that does not exist on the server
is named with the rules that read it and their file:line, as `mailrules check --connect` does.
"""

from __future__ import annotations

import imaplib
import re
import socket

from imapclient.exceptions import IMAPClientError

from .model import Config

UNEXPECTED = "an unexpected failure with no message (run with -v for the details)"

# What servers answer to SELECT/EXAMINE of a mailbox that is not there: the NONEXISTENT response
# code (RFC 5530), Dovecot's "Mailbox doesn't exist", Cyrus' "Mailbox does not exist", ...
_MISSING = re.compile(r"\[NONEXISTENT\]|mailbox (doesn't|does not) exist|no such mailbox|mailbox not found", re.I)


def in_words(exc: BaseException) -> str:
    """What went wrong, without the exception's class name."""
    text = str(exc).strip()
    if isinstance(exc, imaplib.IMAP4.abort):
        return f"the server closed the connection ({text})" if text else "the server closed the connection"
    if isinstance(exc, imaplib.IMAP4.error | IMAPClientError):
        return f"the server refused: {text}" if text else "the server refused the command"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"timed out ({text})" if text else "timed out"
    if isinstance(exc, ConnectionError):
        return f"the connection was lost ({exc.strerror or text})" if (exc.strerror or text) else \
            "the connection was lost"
    if isinstance(exc, OSError):
        return exc.strerror or text or UNEXPECTED
    return text or UNEXPECTED


def is_missing_mailbox(exc: BaseException) -> bool:
    """Whether the server refused a mailbox because it does not exist."""
    return isinstance(exc, imaplib.IMAP4.error | IMAPClientError) and bool(_MISSING.search(str(exc)))


def missing_mailbox(config: Config, account: str, mailbox: str) -> str:
    """'mailbox X does not exist on the server; ...' with who reads it (watch:, rules) and where."""
    acc = config.accounts.get(account)
    watched = acc.watch if acc is not None else ()
    readers = []
    if mailbox in watched and acc is not None:
        readers.append(f"account {account!r} watches it ({acc.location})")
    for rule in config.rules:
        if rule.applies_to(account, mailbox, watched):
            kind = "a scheduled rule sweeps it" if rule.schedule is not None else "an arrival rule reads it"
            readers.append(f"rule {rule.name!r} ({rule.location}): {kind}")
    who = ("; " + "; ".join(readers)) if readers else ""
    return (f"mailbox {mailbox} does not exist on the server{who}. Create it, or correct the name "
            "(mailrules check --connect lists the folders)")
