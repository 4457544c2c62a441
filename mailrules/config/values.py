"""Values written in a rules file that are more than YAML scalars: durations, sizes, dates,
mailbox names. The parsers raise ValueError with what was expected; the caller adds where.

`parse_duration` and `parse_size` are public API (re-exported by `mailrules.config`): plugins
use them to read their own arguments the way the rules file reads its own.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

from ..criteria import MAX_NUMBER

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_DURATION",
    "MAX_TIMEOUT",
    "normalize_mailbox",
    "parse_date",
    "parse_duration",
    "parse_size",
]

_DURATION_UNITS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
_DURATION_FORM = "a duration with a unit such as '45s', '90m', '12h', '30d', '2w' or '1h30m'"
MAX_DURATION = 2**31 - 1
"""Seconds (about 68 years): what OLDER/YOUNGER (32-bit), dates and the scheduler's arithmetic take."""
MAX_TIMEOUT = 7 * 86400
"""Seconds: timeouts and intervals go to socket timeouts and poll(), which takes at most ~24 days."""
MAX_CONNECTIONS = 1000
_DURATION_RE = re.compile(r"(?:\s*\d+\s*[A-Za-z]+)+\s*")
_DURATION_PART_RE = re.compile(r"(\d+)\s*([A-Za-z]+)")


def parse_duration(text: str) -> int:
    """'45s', '90m', '12h', '30d', '2w' (or combined: '1h30m') -> seconds (> 0).

    Units are s, m, h, d, w (or their English words); 'm' is minutes. Months and years
    are refused: their length varies. Raises ValueError saying what was expected.
    """
    if not isinstance(text, str) or not _DURATION_RE.fullmatch(text):
        raise ValueError(f"expected {_DURATION_FORM}")
    total = 0
    too_long = f"at most {MAX_DURATION} seconds (about 68 years)"
    for number, unit in _DURATION_PART_RE.findall(text):
        if len(number.lstrip("0")) > 12:
            raise ValueError(too_long)
        if unit not in _DURATION_UNITS and unit.lower() in _DURATION_UNITS and len(unit) > 1:
            unit = unit.lower()  # 'Days', 'HOURS': unambiguous
        if unit not in _DURATION_UNITS:
            if unit.lower() in ("mo", "mon", "month", "months", "y", "yr", "year", "years") or unit == "M":
                raise ValueError(f"unit {unit!r}: months and years vary in length; write days (e.g. '90d')")
            raise ValueError(f"unknown unit {unit!r}: expected {_DURATION_FORM}")
        total += int(number) * _DURATION_UNITS[unit]
    if total <= 0:
        raise ValueError(f"a duration must be longer than zero; expected {_DURATION_FORM}")
    if total > MAX_DURATION:
        raise ValueError(too_long)
    return total


_SIZE_FORM = (
    "a number of bytes, or a size such as '100KB', '2MB', '1.5M' (K = 1024 bytes, M = 1024 K, G = 1024 M)"
)
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmg])(?:i?b)?|(b))?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: Any) -> int:
    """An int number of bytes or '100B', '100K', '100KB', '2MiB', '1.5M', '1G' -> bytes.

    Case-insensitive; K = 1024. A fraction needs a unit and is rounded down to whole bytes.
    At most 4294967295 (4G - 1): LARGER and SMALLER take an IMAP number, 32-bit unsigned.
    """
    too_large = f"at most {MAX_NUMBER} bytes (4G - 1: IMAP sizes are 32-bit numbers)"
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a size cannot be negative; expected {_SIZE_FORM}")
        if value > MAX_NUMBER:
            raise ValueError(too_large)
        return value
    m = _SIZE_RE.fullmatch(value) if isinstance(value, str) else None
    if not m or ("." in m[1] and not m[2]):
        raise ValueError(f"expected {_SIZE_FORM}")
    if len(m[1]) > 30:
        raise ValueError(too_large)
    size = int(Decimal(m[1]) * _SIZE_UNITS[(m[2] or "").lower()])
    if size > MAX_NUMBER:
        raise ValueError(too_large)
    return size


def parse_date(value: Any) -> dt.date:
    """A YAML date or a string YYYY-MM-DD -> the date; a date with a time is refused."""
    if isinstance(value, dt.datetime):
        raise ValueError("expected a date YYYY-MM-DD without a time")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"expected a date YYYY-MM-DD: {exc}") from None
    raise ValueError("expected a date YYYY-MM-DD, e.g. 2024-01-31")


def normalize_mailbox(name: str) -> str:
    """INBOX is case-insensitive in IMAP: 'inbox' and 'Inbox' are INBOX."""
    return "INBOX" if name.upper() == "INBOX" else name
