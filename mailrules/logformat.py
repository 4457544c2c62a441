"""How log records are written: bounded human lines by default, or one JSON object per line.

Log calls name what they are about through ``extra=`` fields (see `FIELDS`), for example
``log.info("...", rule, account, ..., extra={"event": "action", "rule": ..., "uids": [...]})``.
The formatters here turn them into output:

* `HumanFormatter`: ``TIME LEVEL LOGGER: MESSAGE``, one line per event, never longer than
  `MAX_LINE` characters whatever the content (long rule names, server texts, lists of
  thousands of messages). A batch of messages is stated as its count and the first
  `SAMPLE` messages ("and N more"); with ``-v`` the whole list follows on further lines,
  each bounded too. A traceback (logged with ``exc_info``) follows its line unshortened.
  Control characters are escaped as in JSON (`escape_controls`): content from messages and
  servers never reaches a terminal raw.
* `JsonFormatter`: one JSON object per line with the stable keys of `JSON_KEYS` (null when
  not applicable) and the complete lists of UIDs and Message-IDs.

Secrets are redacted from everything written, ``extra=`` fields included (the log record
factory of `mailrules.connect.install_log_redaction` cleans only the message and traceback,
and ``extra=`` fields are set on the record after it ran).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from .secrets import known_secrets, redact_secrets

MAX_LINE = 500  # characters of one human log line, at most
SAMPLE = 3  # messages named on the line of a batch (the rest: "and N more")
FIELD_MAX = 80  # characters of one rule name, mailbox, Message-ID or action on a human line
SUBJECT_MAX = 40  # characters of a subject on a human line

# The keys of every JSON log line, in this order (README: "Logs").
JSON_KEYS = ("time", "level", "logger", "event", "rule", "account", "mailbox", "uid", "message_id",
             "subject", "action", "count", "error", "message")
# The ``extra=`` fields log calls may pass; `uids`, `message_ids` and `subjects` are parallel lists.
FIELDS = ("event", "rule", "account", "mailbox", "uids", "message_ids", "subjects", "action", "count",
          "error")


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, the cut marked with an ellipsis."""
    text = " ".join(str(text).split()) if ("\n" in str(text) or "\r" in str(text)) else str(text)
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def bound(line: str, limit: int = MAX_LINE) -> str:
    """One line of at most `limit` characters; a cut says how much was left out."""
    if len(line) <= limit:
        return line
    cut = max(limit - len(f" … ({len(line)} more characters)"), 0)
    return line[:cut] + f" … ({len(line) - cut} more characters)"


def _redact(text: str) -> str:
    return redact_secrets(text) if known_secrets() else text


def _one_line(text: str) -> str:
    """Line breaks inside a message (server texts, exception texts) become visible ``⏎`` marks."""
    if "\n" not in text and "\r" not in text:
        return text
    return " ⏎ ".join(part for part in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))


# C0 controls (ESC starts terminal escape sequences), DEL and C1 controls (0x9B is a one-byte CSI).
_CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """Control characters written as JSON writes them (``\\u001b``), so that no content from a
    message or a server (a Message-ID with an ESC) can drive the reader's terminal; line
    breaks, which only tracebacks keep, stay."""
    return _CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in FIELDS if getattr(record, name, None) is not None}


def _message_text(uid: int, mids: Sequence[str] | None, subjects: Sequence[str] | None, i: int) -> str:
    text = f"UID {uid}"
    mid = mids[i] if mids is not None and i < len(mids) else None
    if mid is not None:
        text += f" {shorten(mid, FIELD_MAX) if mid else '-'}"
    subject = subjects[i] if subjects is not None and i < len(subjects) else None
    if subject:
        text += f" {json.dumps(shorten(subject, SUBJECT_MAX), ensure_ascii=False)}"
    return text


def message_list(fields: dict[str, Any], start: int = 0, stop: int | None = None) -> str:
    """"UID 1 <id> "subject", UID 2 ..." for the messages start:stop of a record's lists."""
    uids = list(fields.get("uids") or ())
    mids, subjects = fields.get("message_ids"), fields.get("subjects")
    stop = len(uids) if stop is None else min(stop, len(uids))
    return ", ".join(_message_text(uids[i], mids, subjects, i) for i in range(start, stop))


def sample(fields: dict[str, Any]) -> str:
    """The first `SAMPLE` messages of a batch, then "and N more"."""
    uids = fields.get("uids") or ()
    text = message_list(fields, 0, SAMPLE)
    return text + (f" and {len(uids) - SAMPLE} more" if len(uids) > SAMPLE else "")


def _where(fields: dict[str, Any]) -> str:
    parts = []
    if fields.get("rule") is not None:
        parts.append(f"rule {shorten(fields['rule'], FIELD_MAX)!r}")
    if fields.get("account") is not None:
        parts.append(f"account {shorten(fields['account'], FIELD_MAX)}")
    if fields.get("mailbox") is not None:
        parts.append(f"mailbox {shorten(fields['mailbox'], FIELD_MAX)}")
    return " ".join(parts)


def human_message(record: logging.LogRecord) -> str:
    """The message of a record for people: a batch of messages stated by its count and a sample.

    Records without a list of messages keep the text of their log call.
    """
    fields = _fields(record)
    uids = fields.get("uids")
    event = fields.get("event")
    if uids is None or len(uids) <= 1 or event not in ("action", "action_failed"):
        return record.getMessage()
    action = shorten(fields.get("action") or "?", FIELD_MAX)
    count = fields.get("count", len(uids))
    if event == "action":
        return f"{_where(fields)}: {action}: {count} messages: {sample(fields)}"
    error = fields.get("error") or ""
    return f"{_where(fields)}: {action} failed for {count} messages ({sample(fields)}): {error}"


class HumanFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE`` lines of at most `max_line` characters (see the module doc).

    verbose >= 1: a batch of messages is followed by lines listing all of them.
    """

    def __init__(self, verbose: int = 0, max_line: int = MAX_LINE) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.verbose = verbose
        self.max_line = max_line

    def format(self, record: logging.LogRecord) -> str:
        record.asctime = self.formatTime(record, self.datefmt)
        prefix = f"{record.asctime} {record.levelname} {record.name}: "
        lines = [prefix + _one_line(human_message(record))]
        if self.verbose:
            lines += [prefix + line for line in self._full_list(record, len(prefix))]
        text = "\n".join(bound(escape_controls(_redact(line)), self.max_line) for line in lines)
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + escape_controls(_redact(record.exc_text or self.formatException(record.exc_info)))
        if record.stack_info:
            text += "\n" + escape_controls(_redact(self.formatStack(record.stack_info)))
        return text

    def _full_list(self, record: logging.LogRecord, prefix: int) -> list[str]:
        """All the messages of a batch, as many per line as fit in the line's bound."""
        fields = _fields(record)
        uids = fields.get("uids")
        if not uids or len(uids) <= SAMPLE or fields.get("event") not in ("action", "action_failed"):
            return []
        head = f"{_where(fields)}: {shorten(fields.get('action') or '?', FIELD_MAX)}: messages "
        lines: list[str] = []
        start = 0
        while start < len(uids):
            stop, parts, length = start, [], prefix + len(head) + 40
            while stop < len(uids):
                piece = message_list(fields, stop, stop + 1)
                if parts and length + len(piece) + 2 > self.max_line:
                    break
                parts.append(piece)
                length += len(piece) + 2
                stop += 1
            lines.append(f"{head}{start + 1}-{stop} of {len(uids)}: {', '.join(parts)}")
            start = stop
        return lines


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the keys of `JSON_KEYS` (see the README, "Logs")."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        uids = fields.get("uids")
        mids = fields.get("message_ids")
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).astimezone().isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": fields.get("event", "log"),
            "rule": fields.get("rule"),
            "account": fields.get("account"),
            "mailbox": fields.get("mailbox"),
            "uid": [int(u) for u in uids] if uids is not None else None,
            "message_id": [m or None for m in mids] if mids is not None else None,
            "subject": list(fields["subjects"]) if fields.get("subjects") is not None else None,
            "action": fields.get("action"),
            "count": fields.get("count", len(uids) if uids is not None else None),
            "error": fields.get("error"),
            "message": _one_line(human_message(record)),
        }
        if record.exc_info and record.exc_info[0] is not None:
            out["traceback"] = record.exc_text or self.formatException(record.exc_info)
        return _redact(json.dumps(_plain(out), ensure_ascii=False, default=str))


def _plain(value: Any) -> Any:
    """Values JSON can hold (tuples, sets and UidSets become lists; other objects their text)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return str(value)


class ProtocolLines(logging.Filter):
    """At -vv: of imaplib's debug output keep the protocol lines, not its internal parse notes.

    imaplib (through IMAPClient's ``imapclient.imaplib`` logger) writes what it sends
    (``> ...``) and receives (``< ...``) next to its internal notes on untagged responses
    and ``matched ... => ...``; only the first two are the protocol log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "imapclient.imaplib":
            return True
        try:
            text = record.getMessage().lstrip()
        except Exception:  # noqa: BLE001 - a broken record is not ours to drop
            return True
        return text.startswith(("> ", "< "))
