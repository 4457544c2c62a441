"""Load and validate a rules file (the contract is the rules-format spec) into `model` objects.

The file is read with PyYAML's safe loader, but only *composed* into a node tree: every
node carries its position, so every error names file:line:column, what was found and what
was expected. Validation walks the nodes with a few small helpers (`_pairs`, `_str`,
`_bool`, `_list`, ...) and one function per section (accounts, include, rules, match,
where, actions, schedule). Unknown keys are errors: a typo must never disable a rule.

Public API: `load()`, `ConfigError`, `ConfigWarning`, `default_config_path()`, and the
value parsers `parse_duration()`, `parse_size()`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import os
import re
import stat
import warnings
import zoneinfo
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .builtins import parse_folder, parse_keywords
from .criteria import MAX_NUMBER, fetchable_header_name, raw_problem, unsendable
from .model import (
    MATCH_EVERYTHING,
    Account,
    ActionCall,
    Age,
    All,
    AnyOf,
    ArrivalDate,
    Auth,
    Config,
    Criterion,
    Flag,
    FolderRef,
    Header,
    Keyword,
    Location,
    Not,
    PredicateCall,
    Raw,
    Rule,
    Schedule,
    SentDate,
    Size,
    Text,
)
from .netutil import is_loopback
from .plugins import Registry

__all__ = [
    "ConfigError",
    "ConfigWarning",
    "default_config_path",
    "load",
    "parse_duration",
    "parse_size",
]


class ConfigError(Exception):
    """The rules file is invalid. str() is 'file:line:column: message'."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        super().__init__(f"{location}: {message}" if location else message)
        self.message = message
        self.location = location

    def within(self, context: str) -> ConfigError:
        """The same error, its message prefixed by `context` (e.g. "rule 'dev list'")."""
        return ConfigError(f"{context}: {self.message}", self.location)


class ConfigWarning(UserWarning):
    """Something in the rules file works but is unwise (e.g. an inline password)."""


def default_config_path() -> Path:
    """$MAILRULES_CONFIG, else ~/.config/mailrules/rules.yaml."""
    env = os.environ.get("MAILRULES_CONFIG")
    if env:
        try:
            return Path(env).expanduser()
        except RuntimeError:  # ~nosuchuser/...: load() says so, with the path as written
            return Path(env)
    return Path.home() / ".config" / "mailrules" / "rules.yaml"


# --------------------------------------------------------------------------- keys

TOP_KEYS = ("version", "accounts", "include", "timezone", "rules")
INCLUDED_KEYS = ("include", "rules")
ACCOUNT_KEYS = (
    "host",
    "port",
    "tls",
    "username",
    "password_command",
    "password_env",
    "keyring",
    "oauth2",
    "password",
    "ca_file",
    "insecure",
    "watch",
    "timeout",
    "max_connections",
    "poll_interval",
    "idle_interval",
    "reconnect_max",
)
SECRET_KEYS = ("password_command", "password_env", "keyring", "oauth2", "password")
RULE_KEYS = ("name", "account", "mailbox", "match", "where", "actions", "stop", "enabled", "schedule")
TLS_MODES = ("implicit", "starttls", "none")

TEXT_KEYS = ("from", "to", "cc", "bcc", "subject", "body", "text")
FLAG_KEYS = {
    "seen": "\\Seen",
    "answered": "\\Answered",
    "flagged": "\\Flagged",
    "deleted": "\\Deleted",
    "draft": "\\Draft",
}
DATE_KEYS = {
    "before": (ArrivalDate, "before"),
    "on": (ArrivalDate, "on"),
    "since": (ArrivalDate, "since"),
    "sent_before": (SentDate, "before"),
    "sent_on": (SentDate, "on"),
    "sent_since": (SentDate, "since"),
}
CRITERIA_KEYS = (
    *TEXT_KEYS,
    "header",
    "larger",
    "smaller",
    "older_than",
    "younger_than",
    *DATE_KEYS,
    *FLAG_KEYS,
    "keyword",
    "all",
    "any",
    "not",
    "raw",
)

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# --------------------------------------------------------------------------- value parsers

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


def _parse_date(value: Any) -> dt.date:
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


def _normalize_mailbox(name: str) -> str:
    """INBOX is case-insensitive in IMAP: 'inbox' and 'Inbox' are INBOX."""
    return "INBOX" if name.upper() == "INBOX" else name


# --------------------------------------------------------------------------- cron

_CRON_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * sun",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_FORM = (
    "a cron expression of 5 fields (minute hour day-of-month month day-of-week, e.g. '0 3 * * *') "
    "or {every: DURATION}"
)


def _dow_number(text: str) -> int:
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    if text.lower() in _DOW_NAMES:
        return _DOW_NAMES.index(text.lower())
    raise ValueError(f"day of week {text!r}: expected 0-7 (0 and 7 are Sunday) or sun..sat")


def _cron_day_of_week(field_text: str) -> str:
    """Crontab day-of-week (0 or 7 = Sunday) -> day names, which APScheduler reads the same way.

    APScheduler 3 numbers days from Monday = 0, so numbers are never passed through.
    """
    if field_text == "*":
        return "*"
    days: set[int] = set()
    for part in field_text.split(","):
        m = re.fullmatch(r"(?:(\*)|(\w+)(?:-(\w+))?)(?:/(\d+))?", part)
        if not m:
            raise ValueError(f"day of week {part!r}: expected 0-7, sun..sat, a range such as 1-5, or */N")
        step = int(m[4]) if m[4] else 1
        if step == 0:
            raise ValueError(f"day of week {part!r}: a step of 0")
        if m[1]:
            lo, hi = 0, 6
        else:
            lo = _dow_number(m[2])
            hi = _dow_number(m[3]) if m[3] else (7 if m[4] else lo)
        if lo > hi:
            raise ValueError(f"day of week {part!r}: the range goes backwards")
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return ",".join(_DOW_NAMES[d] for d in sorted(days))


def _normalize_cron(expr: str, timezone: str | None) -> str:
    """Validate a 5-field cron expression; return it with the day of week as names."""
    from apscheduler.triggers.cron import CronTrigger

    text = expr.strip()
    if text.startswith("@"):
        if text.lower() not in _CRON_MACROS:
            raise ValueError(f"unknown macro {text!r} (known: {', '.join(_CRON_MACROS)})")
        text = _CRON_MACROS[text.lower()]
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"{len(fields)} fields")
    if not fields[2].startswith("*") and not fields[4].startswith("*"):
        raise ValueError(
            "both the day of the month and the day of the week are restricted (cron would run when "
            "either matches); restrict only one of them"
        )
    fields[4] = _cron_day_of_week(fields[4])
    normalized = " ".join(fields)
    CronTrigger.from_crontab(normalized, timezone=timezone or "UTC")
    return normalized


# --------------------------------------------------------------------------- reading and parsing, bounded

# Limits for one load (the rules file and all its includes together). A rules file is
# outside input: whatever it holds, loading it must end within seconds, in bounded memory,
# with a ConfigError (README, "Limits of a rules file").
MAX_FILE_BYTES = 8 * 1024 * 1024
"""Bytes of the rules file and its includes together: half as much again as a 28,000-rule file
(5.6 MB); a log, a device or /dev/zero is refused before it is read into memory."""
MAX_NODES = 1_000_000
"""YAML nodes (keys, values, list items), each alias counted as the nodes it stands for: a
28,000-rule file has about 600,000. Bounds the time and memory validation takes ("billion
laughs"), and the node tree itself (about 0.4 KB per node)."""
MAX_TEXT = 16 * 1024 * 1024
"""Characters of all scalars, aliases expanded: an alias of a long string costs its length."""
MAX_ALIASES = 100_000
"""Alias uses (``*name``): one merge (``<<: *defaults``) per rule of a 28,000-rule file fits."""
MAX_DEPTH = 64
"""Nesting of mappings and lists, aliases expanded: a rule is at depth 3, each `not:`/`any:`
adds one or two levels. Keeps every recursive walk (validation, plugins) far from Python's
recursion limit."""

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML was built with it (several times faster than the pure-Python one).
Only its *events* are used: `_Doc._compose` builds the node tree itself, iteratively and
within the limits above (libyaml's own composer recurses in C and crashes the process on
deep nesting)."""

# What YAML refuses to read (PyYAML's Reader.NON_PRINTABLE): found before parsing, so that
# the error names the line, the column and the character's code, never the text around it.
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class _Unreadable(Exception):
    """A file that cannot be read as a rules file: str() says why, never what it holds."""


@dataclass
class _Budget:
    """What one load has used of the limits so far (shared by the main file and its includes)."""

    bytes: int = 0
    nodes: int = 0
    text: int = 0
    aliases: int = 0


def _expand(text: str) -> Path:
    """A path as written in the rules file or on the command line, '~' expanded."""
    if "\0" in text:
        raise _Unreadable("the path contains a NUL character")
    try:
        return Path(text).expanduser()
    except RuntimeError:  # ~nosuchuser
        head = text.split("/", 1)[0]
        raise _Unreadable(f"cannot expand {head!r}: no such user or no home directory") from None


def _resolved(path: Path) -> Path:
    """The real path (symbolic links followed), for include cycles and duplicates."""
    try:
        return path.resolve()
    except RuntimeError:  # Python < 3.13 raises it for a symbolic link loop
        raise _Unreadable("a loop of symbolic links") from None
    except (OSError, ValueError) as exc:
        raise _Unreadable(getattr(exc, "strerror", None) or str(exc)) from None


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> _Unreadable:
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    return _Unreadable(f"it is {kind}, not a regular file" if kind.startswith("a ") else kind)


def _read_file(path: Path, budget: _Budget) -> bytes:
    """The bytes of a regular file, at most what is left of MAX_FILE_BYTES.

    A FIFO, a device or a directory is refused before it is opened (reading /dev/zero would
    never end; opening a FIFO without a writer would block); O_NONBLOCK covers a file swapped
    for one between the stat and the open.
    """
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(mode)
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
    except OSError as exc:
        raise _Unreadable(exc.strerror or str(exc)) from None
    except ValueError as exc:  # a NUL in the path
        raise _Unreadable(str(exc)) from None
    room = MAX_FILE_BYTES - budget.bytes
    chunks: list[bytes] = []
    size = 0
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(mode)
        while size <= room:
            chunk = os.read(fd, min(1 << 20, room + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise _Unreadable(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if size > room:
        raise _Unreadable(
            f"it is larger than the {MAX_FILE_BYTES // (1024 * 1024)} MiB allowed for the rules file and "
            "its includes together"
        )
    budget.bytes += size
    return b"".join(chunks)


_SHORT_NAME = re.compile(r"[\w.$-]{1,40}")


def _anchor_name(anchor: str, sigil: str = "*") -> str:
    """An anchor or alias for a message, cut short: it is part of the file's text."""
    return sigil + (anchor if len(anchor) <= 40 else anchor[:40] + "...")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """A load builds hundreds of thousands of nodes and few cycles: without a pause, the
    cyclic garbage collector walks the growing tree again and again (two thirds of the time
    of a 5 MB file). Reference counting frees the rest; the collector runs again afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# --------------------------------------------------------------------------- the node layer


def _msg(what: str, text: str) -> str:
    return f"{what}: {text}" if what else text


class _Doc:
    """One YAML file: its name as shown in messages, its node tree, and a scalar constructor.

    Reading and parsing are bounded (`_read_file`, `_compose`): every problem, whatever the
    file holds, is a ConfigError with file:line:column, and no message quotes the file's
    text beyond a single character's code (an included file may be anything, a secret too).
    """

    def __init__(self, display: str, path: Path, budget: _Budget) -> None:
        self.display = display
        self.path = path
        data = _read_file(path, budget)  # _Unreadable: the caller knows where the file was named
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            raise ConfigError(
                f"the file is not UTF-8 text (found byte 0x{data[exc.start]:02x})",
                Location(display, line, column),
            ) from None
        self.text = text
        bad = _NON_PRINTABLE.search(text)
        if bad:
            raise ConfigError(
                f"invalid YAML: control character U+{ord(bad[0]):04X} is not allowed (only tab, newline "
                "and carriage return are)",
                self._location_of(bad.start()),
            )
        self.loader = _LOADER(text)
        # Duplicate keys are an error in every mapping, even inside plugin arguments; the first
        # one found is raised once the file is known to be a rules file (`top_pairs`).
        self.duplicate: ConfigError | None = None
        try:
            self.root: Node | None = self._compose(budget)
        except yaml.YAMLError as exc:
            raise self._yaml_error(exc) from None

    def _location_of(self, offset: int) -> Location:
        """The line and column of a character offset into the text."""
        line = self.text.count("\n", 0, offset) + 1
        return Location(self.display, line, offset - (self.text.rfind("\n", 0, offset) + 1) + 1)

    def _at(self, mark: Any) -> Location:
        return Location(self.display, mark.line + 1, mark.column + 1)

    def _compose(self, budget: _Budget) -> Node | None:
        """The document's node tree, built from the parser's events without recursion.

        What yaml's composer does, plus the limits: nesting depth, alias uses, and the size of
        the tree with every alias expanded (nodes and characters), counted as it grows, so that
        a "billion laughs" file is refused at the alias that crosses the limit, in
        milliseconds. An alias inside the node it names (a recursive structure) is refused too:
        every later walk of the tree may then assume a finite tree.
        """
        loader = self.loader
        get_event = loader.get_event
        resolve = loader.resolve
        event = get_event()
        assert isinstance(event, StreamStartEvent)
        event = get_event()
        if isinstance(event, StreamEndEvent):
            return None
        assert isinstance(event, DocumentStartEvent)
        # One entry per open mapping or list: [node, pending key, nodes and text at its start,
        # height of its tallest child, anchor, {(tag, key): key node} of a mapping].
        # An anchor maps to [node, closed?, nodes, text, height].
        stack: list[list[Any]] = []
        anchors: dict[str, list[Any]] = {}
        root: Node | None = None
        while True:
            event = get_event()
            kind = type(event)
            height = 1
            if kind is ScalarEvent:
                tag = event.tag
                if tag is None or tag == "!":
                    tag = resolve(ScalarNode, event.value, event.implicit)
                style = event.style or None  # libyaml writes '' for a plain scalar, PyYAML None
                # No end marks: nothing reads them, and a 28,000-rule file has 400,000 scalars.
                node: Node = ScalarNode(tag, event.value, event.start_mark, None, style=style)
                budget.nodes += 1
                budget.text += len(event.value)
                self._check_budget(budget, event)
                if event.anchor is not None:
                    self._anchor(anchors, event, node)
                    anchors[event.anchor] = [node, True, 1, len(event.value), 1]
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                if len(stack) >= MAX_DEPTH:
                    raise ConfigError(
                        f"invalid YAML: nested more than {MAX_DEPTH} levels deep (mappings and lists)",
                        self._at(event.start_mark),
                    )
                tag = event.tag
                cls = MappingNode if kind is MappingStartEvent else SequenceNode
                if tag is None or tag == "!":
                    tag = resolve(cls, None, event.implicit)
                node = cls(tag, [], event.start_mark, None, flow_style=event.flow_style)
                budget.nodes += 1
                self._check_budget(budget, event)
                if event.anchor is not None:
                    self._anchor(anchors, event, node)
                    anchors[event.anchor] = [node, False, 0, 0, 0]
                keys = {} if cls is MappingNode else None
                stack.append([node, None, budget.nodes - 1, budget.text, 0, event.anchor, keys])
                continue
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                node, _, nodes0, text0, below, anchor, _ = stack.pop()
                height = below + 1
                if anchor is not None:
                    anchors[anchor] = [node, True, budget.nodes - nodes0, budget.text - text0, height]
            elif kind is AliasEvent:
                target = anchors.get(event.anchor)
                name = _anchor_name(event.anchor)
                if target is None:
                    raise ConfigError(f"invalid YAML: undefined alias {name}", self._at(event.start_mark))
                node, closed, nodes, text, height = target
                if not closed:
                    raise ConfigError(
                        f"invalid YAML: the alias {name} is inside the node it refers to "
                        f"(line {node.start_mark.line + 1}): a recursive structure",
                        self._at(event.start_mark),
                    )
                if len(stack) + height > MAX_DEPTH:
                    raise ConfigError(
                        f"invalid YAML: the alias {name} nests more than {MAX_DEPTH} levels deep "
                        "(mappings and lists)",
                        self._at(event.start_mark),
                    )
                budget.aliases += 1
                budget.nodes += nodes
                budget.text += text
                self._check_budget(budget, event)
            elif kind is DocumentEndEvent:
                break
            else:  # pragma: no cover - the parser emits nothing else inside a document
                raise ConfigError(f"invalid YAML: unexpected {kind.__name__}", self._at(event.start_mark))
            if not stack:
                root = node
                continue
            top = stack[-1]
            top[4] = max(top[4], height)
            parent = top[0]
            if isinstance(parent, SequenceNode):
                parent.value.append(node)
            elif top[1] is None:
                top[1] = node
                if isinstance(node, ScalarNode) and node.tag != _MERGE_TAG and self.duplicate is None:
                    first = top[6].setdefault((node.tag, node.value), node)
                    if first is not node:
                        self.duplicate = self.error(
                            node,
                            f"duplicate key {node.value!r} (first written at line {first.start_mark.line + 1})",
                        )
            else:
                parent.value.append((top[1], node))
                top[1] = None
        event = get_event()
        if not isinstance(event, StreamEndEvent):
            raise ConfigError(
                "invalid YAML: a second document ('---') in the file; a rules file is one document",
                self._at(event.start_mark),
            )
        return root

    def _anchor(self, anchors: dict[str, list[Any]], event: Any, node: Node) -> None:
        first = anchors.get(event.anchor)
        if first is not None:
            raise ConfigError(
                f"invalid YAML: the anchor {_anchor_name(event.anchor, '&')} is defined twice (first at line "
                f"{first[0].start_mark.line + 1})",
                self._at(event.start_mark),
            )

    def _check_budget(self, budget: _Budget, event: Any) -> None:
        problem = None
        if budget.nodes > MAX_NODES:
            problem = f"more than {MAX_NODES:,} values"
        elif budget.text > MAX_TEXT:
            problem = f"more than {MAX_TEXT // (1024 * 1024)} MiB of text"
        elif budget.aliases > MAX_ALIASES:
            problem = f"more than {MAX_ALIASES:,} aliases"
        if problem:
            expanded = " with aliases expanded" if budget.aliases and "alias" not in problem else ""
            raise ConfigError(
                f"too large: {problem}{expanded} in the rules file and its includes (see the limits "
                "in the README)",
                self._at(event.start_mark),
            )

    def loc(self, node: Node) -> Location:
        mark = node.start_mark
        return Location(self.display, mark.line + 1, mark.column + 1)

    def error(self, node: Node, message: str) -> ConfigError:
        return ConfigError(message, self.loc(node))

    def _yaml_error(self, exc: yaml.YAMLError) -> ConfigError:
        """The parser's error, with its position. libyaml's messages name token kinds, not text."""
        if isinstance(exc, yaml.MarkedYAMLError):
            mark = exc.problem_mark or exc.context_mark
            text = exc.problem or exc.context or "invalid YAML"
            if exc.context and exc.problem:
                cm = exc.context_mark
                where = f" that starts at line {cm.line + 1}, column {cm.column + 1}" if cm else ""
                text += f" ({exc.context}{where})"
            loc = self._at(mark) if mark else Location(self.display)
            return ConfigError(f"invalid YAML: {text}", loc)
        if isinstance(exc, yaml.reader.ReaderError):
            offset = exc.position
            if _LOADER is not yaml.SafeLoader:  # libyaml counts bytes of the UTF-8 text
                offset = len(self.text.encode("utf-8")[: exc.position].decode("utf-8", "ignore"))
            code = f" U+{exc.character:04X}" if isinstance(exc.character, int) else ""
            return ConfigError(f"invalid YAML: {exc.reason}{code}", self._location_of(offset))
        return ConfigError("invalid YAML", Location(self.display))

    def top_pairs(self, expected: str) -> dict[str, tuple[Node, Node]]:
        """The top-level mapping of a rules file (the main one or an included one) -> its pairs.

        A file that does not look like a rules file is refused without quoting it: it may be
        anything, a password file or a private key too, and nothing of it may reach the log.
        Not like a rules file: its top level is not a mapping, or it is a mapping without any
        key of a rules file and with a key that is not a short name (a typo such as 'rulez:'
        is still named, as everywhere else).
        """
        root = self.root
        assert root is not None
        if isinstance(root, MappingNode):
            keys = [key.value if isinstance(key, ScalarNode) else None for key, _ in root.value]
            if any(key in TOP_KEYS or key == "<<" for key in keys) or all(
                key is not None and _SHORT_NAME.fullmatch(key) for key in keys
            ):
                if self.duplicate is not None:
                    raise self.duplicate
                return _pairs(self, root, "", expected)
            found = f"a mapping with none of the keys {', '.join(TOP_KEYS)}"
        else:
            found = self.kind(root)
        raise self.error(
            root, f"expected {expected}, found {found}: is this a rules file? (its content is not shown)"
        )

    def kind(self, node: Node) -> str:
        """What a node is, without its text: 'a list', 'a string', 'a number'..."""
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        try:
            value = self.value(node)
        except ConfigError:
            return "a value"
        if value is None:
            return "nothing (null)"
        for cls, name in ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"),
                          (dt.date, "a date")):
            if isinstance(value, cls):
                return name
        return "a value"

    def value(self, node: Node) -> Any:
        """The Python value of a node, as yaml.safe_load would build it."""
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            raise self.error(node, f"invalid value: {problem}") from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise self.error(node, f"invalid value {getattr(node, 'value', '')!r}: {exc}") from None

    def describe(self, node: Node) -> str:
        """What was found, for messages: 'a list', 'the number 30', "'abc'"..."""
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        try:
            value = self.value(node)
        except ConfigError:
            return repr(node.value)
        if value is None:
            return "nothing (null)"
        if isinstance(value, bool):
            return f"the boolean {str(value).lower()}"
        if isinstance(value, int | float):
            return f"the number {node.value}"
        if isinstance(value, dt.datetime):
            return f"the date and time {node.value}"
        if isinstance(value, dt.date):
            return f"the date {node.value}"
        if isinstance(value, str):
            return "an empty string" if not value else repr(value)
        return repr(node.value)

    def quote_hint(self, node: Node) -> str:
        """A hint for plain scalars YAML read as something other than a string (30, yes, 1:30)."""
        if isinstance(node, ScalarNode) and node.style is None and node.value:
            try:
                value = self.value(node)
            except ConfigError:
                return ""
            if value is not None and not isinstance(value, str):
                return f" (to use it as text, write it in quotes: '{node.value}')"
        return ""


def _expected(doc: _Doc, node: Node, what: str, expected: str, *, hint: bool = True) -> ConfigError:
    found = doc.describe(node)
    return doc.error(
        node, _msg(what, f"expected {expected}, found {found}{doc.quote_hint(node) if hint else ''}")
    )


def _pairs(doc: _Doc, node: Node, what: str, expected: str = "a mapping") -> dict[str, tuple[Node, Node]]:
    """A mapping node -> {key text: (key node, value node)}, in written order.

    Keys are taken as written ('on' stays 'on', not YAML 1.1's True). '<<' merge keys are applied.
    """
    if not isinstance(node, MappingNode):
        raise _expected(doc, node, what, expected, hint=False)
    if node.tag != _MAP_TAG:
        raise doc.error(node, _msg(what, f"unsupported tag {node.tag!r} (expected {expected})"))
    try:
        doc.loader.flatten_mapping(node)
    except yaml.YAMLError as exc:
        raise doc.error(node, _msg(what, f"invalid merge: {getattr(exc, 'problem', exc)}")) from None
    out: dict[str, tuple[Node, Node]] = {}
    for key, value in node.value:
        if not isinstance(key, ScalarNode) or not key.value:
            raise doc.error(key, _msg(what, f"expected a name as key, found {doc.describe(key)}"))
        out[key.value] = (key, value)
    return out


def _check_keys(
    doc: _Doc,
    node: Node,
    pairs: dict[str, tuple[Node, Node]],
    what: str,
    allowed: Sequence[str],
    required: Sequence[str] = (),
) -> None:
    for key, (key_node, _) in pairs.items():
        if key not in allowed:
            raise doc.error(
                key_node, _msg(what, f"unknown key {key!r} (expected one of: {', '.join(allowed)})")
            )
    for key in required:
        if key not in pairs:
            raise doc.error(node, _msg(what, f"missing key {key!r}"))


def _mapping(
    doc: _Doc, node: Node, what: str, allowed: Sequence[str], required: Sequence[str] = ()
) -> dict[str, tuple[Node, Node]]:
    """A mapping whose keys must be among `allowed`; returns {key: (key node, value node)}."""
    pairs = _pairs(doc, node, what)
    _check_keys(doc, node, pairs, what, allowed, required)
    return pairs


def _list(
    doc: _Doc, node: Node, what: str, expected: str = "a list", *, nonempty: bool = False
) -> list[Node]:
    if not isinstance(node, SequenceNode):
        raise _expected(doc, node, what, expected, hint=False)
    if node.tag != _SEQ_TAG:
        raise doc.error(node, _msg(what, f"unsupported tag {node.tag!r} (expected {expected})"))
    if nonempty and not node.value:
        raise doc.error(node, _msg(what, f"expected {expected}, found an empty list"))
    return list(node.value)


def _str(doc: _Doc, node: Node, what: str, expected: str = "a string", *, empty_ok: bool = False) -> str:
    if isinstance(node, ScalarNode):
        value = doc.value(node)
        if isinstance(value, str) and (empty_ok or value.strip()):
            return value
    raise _expected(doc, node, what, expected)


def _sendable(doc: _Doc, node: Node, what: str, text: str) -> str:
    """`text` if it can go to the server (no CR, LF, NUL or other control character), else a ConfigError."""
    problem = unsendable(text)
    if problem:
        raise doc.error(node, _msg(what, f"{problem}, found {text!r}"))
    return text


def _bool(doc: _Doc, node: Node, what: str) -> bool:
    value = doc.value(node) if isinstance(node, ScalarNode) else None
    if isinstance(value, bool):
        return value
    raise _expected(doc, node, what, "true or false", hint=False)


def _int(doc: _Doc, node: Node, what: str, expected: str) -> int:
    value = doc.value(node) if isinstance(node, ScalarNode) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _expected(doc, node, what, expected, hint=False)


def _str_or_list(doc: _Doc, node: Node, what: str, expected: str) -> list[tuple[str, Node]]:
    """A string or a non-empty list of strings -> [(string, node)]."""
    if isinstance(node, SequenceNode):
        items = _list(doc, node, what, expected, nonempty=True)
        return [(_str(doc, item, what, expected), item) for item in items]
    return [(_str(doc, node, what, expected), node)]


def _is_null(doc: _Doc, node: Node) -> bool:
    return isinstance(node, ScalarNode) and doc.value(node) is None


# --------------------------------------------------------------------------- loading


@dataclass
class _State:
    """What the whole load shares across files."""

    registry: Registry
    accounts: dict[str, Account] = field(default_factory=dict)
    timezone: str | None = None
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    chain: list[tuple[Path, str]] = field(default_factory=list)  # files being loaded, for cycles
    included: dict[Path, Location] = field(default_factory=dict)
    budget: _Budget = field(default_factory=_Budget)  # the limits, for all files together

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def load(path: str | os.PathLike[str], *, registry: Registry | None = None) -> Config:
    """Read, validate and return the configuration at `path` (and the files it includes).

    Raises ConfigError (with .location) on the first problem. Warnings (an inline password,
    a rules file readable by others, an arrival rule on an unwatched mailbox) are issued as
    ConfigWarning and also listed in Config.warnings.
    """
    state = _State(registry=registry if registry is not None else Registry.load())
    with _gc_paused():
        return _load(os.fspath(path), state)


def _load(display: str, state: _State) -> Config:
    try:
        where = _expand(display)
        real = _resolved(where)
        doc = _Doc(display, where, state.budget)
    except _Unreadable as exc:
        raise ConfigError(f"cannot read the rules file: {exc}", Location(display)) from None
    if doc.root is None:
        raise ConfigError(
            "the file is empty (expected a mapping with 'version: 1', 'accounts:' and 'rules:')",
            Location(display, 1, 1),
        )
    top = doc.top_pairs("a mapping with 'version: 1', 'accounts:' and 'rules:'")
    _check_keys(doc, doc.root, top, "", TOP_KEYS)
    _version(doc, doc.root, top)
    if "accounts" not in top:
        raise doc.error(doc.root, "missing key 'accounts' (at least one IMAP account is needed)")
    state.accounts = _accounts(doc, top["accounts"][1], state)
    if "timezone" in top:
        state.timezone = _timezone(doc, top["timezone"][1])

    state.files.append(str(real))
    state.chain.append((real, display))
    rules = _file_rules(doc, top, state)
    state.chain.pop()

    _check_unique_names(rules)
    _warn_unwatched(rules, state)
    for message in state.warnings:
        warnings.warn(message, ConfigWarning, stacklevel=3)  # the caller of load()
    return Config(
        accounts=state.accounts,
        rules=tuple(rule for rule, _ in rules),
        path=display,
        timezone=state.timezone,
        files=tuple(state.files),
        warnings=tuple(state.warnings),
    )


def _version(doc: _Doc, root: Node, top: dict[str, tuple[Node, Node]]) -> None:
    if "version" not in top:
        raise doc.error(root, "missing key 'version' (write 'version: 1' at the top of the file)")
    node = top["version"][1]
    value = doc.value(node) if isinstance(node, ScalarNode) else None
    if type(value) is not int or value != 1:
        raise doc.error(node, f"version: expected 1 (the only format version), found {doc.describe(node)}")


def _timezone(doc: _Doc, node: Node) -> str:
    name = _str(doc, node, "timezone", "an IANA time zone name such as Europe/Paris")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise doc.error(
            node, f"timezone: unknown time zone {name!r} (expected an IANA name such as Europe/Paris or UTC)"
        ) from None
    return name


# --------------------------------------------------------------------------- accounts


def _accounts(doc: _Doc, node: Node, state: _State) -> dict[str, Account]:
    expected = "a mapping of account names to account settings"
    pairs = _pairs(doc, node, "accounts", expected)
    if not pairs:
        raise doc.error(node, f"accounts: expected {expected}, found an empty mapping")
    accounts = {}
    for name, (key_node, value_node) in pairs.items():
        if ":" in name or not name.strip():
            raise doc.error(key_node, f"account name {name!r}: expected a non-empty name without ':'")
        try:
            accounts[name] = _account(doc, name, value_node, state)
        except ConfigError as exc:
            raise exc.within(f"account {name!r}") from None
    return accounts


def _account(doc: _Doc, name: str, node: Node, state: _State) -> Account:
    pairs = _mapping(doc, node, "", ACCOUNT_KEYS, required=("host", "username"))
    value = {key: v for key, (_, v) in pairs.items()}

    host = _str(doc, value["host"], "host", "a host name such as imap.example.com")
    if "://" in host or " " in host.strip() or re.fullmatch(r"[^:\[\]]+:\d+", host):
        raise doc.error(
            value["host"],
            f"host: expected a bare host name such as imap.example.com (a port goes in port:), found {host!r}",
        )
    host = _sendable(doc, value["host"], "host", host.strip())
    username = _sendable(doc, value["username"], "username", _str(doc, value["username"], "username",
                                                                   "the login name"))

    tls = "implicit"
    if "tls" in pairs:
        tls = _str(doc, value["tls"], "tls", "one of implicit, starttls, none")
        if tls not in TLS_MODES:
            raise _expected(doc, value["tls"], "tls", "one of implicit, starttls, none", hint=False)
    insecure = _bool(doc, value["insecure"], "insecure") if "insecure" in pairs else False
    if tls == "none" and not insecure and not is_loopback(host):
        raise doc.error(
            value["tls"],
            f"tls: none would send the password unencrypted to {host!r}; it is allowed only for a loopback "
            "host (localhost, 127.0.0.0/8, ::1) or with 'insecure: true'",
        )

    port = 993 if tls == "implicit" else 143
    if "port" in pairs:
        port = _int(doc, value["port"], "port", "a port number from 1 to 65535")
        if not 1 <= port <= 65535:
            raise _expected(doc, value["port"], "port", "a port number from 1 to 65535", hint=False)

    ca_file = None
    if "ca_file" in pairs:
        text = _str(doc, value["ca_file"], "ca_file", "the path of a PEM file of CA certificates")
        ca_path = (doc.path.parent / Path(text).expanduser()).absolute()
        if not ca_path.is_file():
            raise doc.error(value["ca_file"], f"ca_file: no such file {text!r} (looked for {ca_path})")
        ca_file = str(ca_path)

    watch: tuple[str, ...] = ("INBOX",)
    if "watch" in pairs:
        names = _str_or_list(
            doc, value["watch"], "watch", "a mailbox name or a list of them, such as [INBOX]"
        )
        watch = tuple(dict.fromkeys(_normalize_mailbox(_sendable(doc, n_node, "watch", n)) for n, n_node in names))

    timeout = 60.0
    if "timeout" in pairs:
        timeout = _timeout(doc, value["timeout"])
    daemon: dict[str, Any] = {}
    for key in ("poll_interval", "idle_interval", "reconnect_max"):
        if key in pairs:
            daemon[key] = _timeout(doc, value[key], key)
    if "max_connections" in pairs:
        daemon["max_connections"] = _int(doc, value["max_connections"], "max_connections",
                                         "a number of connections, at least 1")
        if not 1 <= daemon["max_connections"] <= MAX_CONNECTIONS:
            raise _expected(doc, value["max_connections"], "max_connections",
                            f"a number of connections, at least 1 and at most {MAX_CONNECTIONS}", hint=False)

    auth = _auth(doc, node, pairs, name, state)
    return Account(
        name=name,
        host=host,
        username=username,
        auth=auth,
        port=port,
        tls=tls,
        ca_file=ca_file,
        insecure=insecure,
        watch=watch,
        timeout=timeout,
        **daemon,
        location=doc.loc(node),
    )


def _timeout(doc: _Doc, node: Node, what: str = "timeout") -> float:
    """Seconds > 0 and at most 7 days: socket timeouts and poll() overflow beyond (.inf did, every run)."""
    expected = "a number of seconds greater than zero and at most 7 days, or a duration such as '90s'"
    raw = doc.value(node) if isinstance(node, ScalarNode) else None
    if isinstance(raw, str):
        try:
            seconds = float(parse_duration(raw))
        except ValueError:
            raise _expected(doc, node, what, expected) from None
        if seconds <= MAX_TIMEOUT:
            return seconds
        raise _expected(doc, node, what, expected, hint=False)
    if isinstance(raw, int | float) and not isinstance(raw, bool) and 0 < raw <= MAX_TIMEOUT:
        return float(raw)
    raise _expected(doc, node, what, expected, hint=False)


def _auth(doc: _Doc, node: Node, pairs: dict[str, tuple[Node, Node]], name: str, state: _State) -> Auth:
    """Exactly one of password_command, password_env, keyring: true, oauth2, password."""
    given = [key for key in SECRET_KEYS if key in pairs]
    choices = "password_command, password_env, keyring: true, oauth2: {token_command: ...} or password"
    if not given:
        raise doc.error(node, f"no way to obtain the password: give exactly one of {choices}")
    if len(given) > 1:
        second = min((pairs[k][0] for k in given[1:]), key=lambda n: (n.start_mark.line, n.start_mark.column))
        raise doc.error(second, f"both {given[0]} and {given[1]} are given: give exactly one of {choices}")
    kind = given[0]
    value_node = pairs[kind][1]
    command_form = "a command: a string, or a list of program and arguments"
    if kind == "password_command":
        commands = _str_or_list(doc, value_node, kind, command_form)
        value: Any = commands[0][0] if isinstance(value_node, ScalarNode) else [c for c, _ in commands]
    elif kind == "password_env":
        value = _str(doc, value_node, kind, "the name of an environment variable")
        if not re.fullmatch(r"[^=\s]+", value):
            raise _expected(doc, value_node, kind, "the name of an environment variable")
    elif kind == "keyring":
        if not _bool(doc, value_node, kind):
            raise doc.error(
                value_node, f"keyring: false is not a way to obtain the password: give one of {choices}"
            )
        value = True
    elif kind == "oauth2":
        oauth = _mapping(doc, value_node, "oauth2", ("token_command",), required=("token_command",))
        token_node = oauth["token_command"][1]
        commands = _str_or_list(doc, token_node, "token_command", command_form)
        token = commands[0][0] if isinstance(token_node, ScalarNode) else [c for c, _ in commands]
        value = {"token_command": token}
    else:
        value = _str(doc, value_node, kind, "the password", empty_ok=True)
        state.warn(
            f"{doc.loc(value_node)}: account {name!r}: the password is written in the rules file; "
            "prefer password_command, password_env, keyring or oauth2"
        )
        _warn_if_readable(doc, state)
    return Auth(kind, value)


def _warn_if_readable(doc: _Doc, state: _State) -> None:
    try:
        mode = doc.path.stat().st_mode
    except OSError:
        return
    if os.name == "posix" and mode & 0o044:
        state.warn(
            f"{doc.display}: holds a password and is readable by group or others "
            f"(mode {mode & 0o777:04o}): chmod 600 {doc.display}"
        )


# --------------------------------------------------------------------------- include + rules


def _file_rules(doc: _Doc, top: dict[str, tuple[Node, Node]], state: _State) -> list[tuple[Rule, Node]]:
    """The included files' rules, in the order listed, then this file's own rules."""
    rules: list[tuple[Rule, Node]] = []
    if "include" in top and not _is_null(doc, top["include"][1]):
        node = top["include"][1]
        for text, item in _str_or_list(doc, node, "include", "a list of file paths"):
            rules.extend(_include(doc, text, item, state))
    if "rules" in top and not _is_null(doc, top["rules"][1]):
        items = _list(doc, top["rules"][1], "rules", "a list of rules")
        for index, item in enumerate(items, 1):
            rules.append((_rule(doc, item, index, state), item))
    return rules


def _include(doc: _Doc, text: str, node: Node, state: _State) -> list[tuple[Rule, Node]]:
    try:
        rel = _expand(text)
        display = (
            str(rel) if rel.is_absolute() else os.path.normpath(os.path.join(os.path.dirname(doc.display), rel))
        )
        path = rel if rel.is_absolute() else doc.path.parent / rel
        real = _resolved(path)
    except _Unreadable as exc:
        raise doc.error(node, f"include: cannot read {text!r}: {exc}") from None
    chain = [shown for _, shown in state.chain]
    for index, (seen, _) in enumerate(state.chain):
        if seen == real:
            cycle = " -> ".join([*chain[index:], display])
            raise doc.error(node, f"include: {text!r} includes itself: cycle {cycle}")
    if real in state.included:
        raise doc.error(node, f"include: {text!r} is already included at {state.included[real]}")
    try:
        included = _Doc(display, path, state.budget)
    except _Unreadable as exc:
        raise doc.error(node, f"include: cannot read {text!r} ({path}): {exc}") from None
    state.included[real] = doc.loc(node)
    state.files.append(str(real))
    if included.root is None:
        raise ConfigError("the included file is empty (expected 'rules:')", Location(display, 1, 1))
    top = included.top_pairs("a mapping with 'rules:' (an included file holds rules)")
    for key, (key_node, _) in top.items():
        if key in ("version", "accounts", "timezone"):
            raise included.error(
                key_node,
                f"'{key}:' is not allowed in an included file (it holds only 'rules:' and 'include:'; "
                f"'{key}:' belongs in the main file {state.chain[0][1]})",
            )
    _check_keys(included, included.root, top, "", INCLUDED_KEYS)
    state.chain.append((real, display))
    rules = _file_rules(included, top, state)
    state.chain.pop()
    return rules


def _rule(doc: _Doc, node: Node, index: int, state: _State) -> Rule:
    label = f"rule #{index}"
    pairs = _pairs(doc, node, label, "a rule: a mapping with name: and actions:")
    if "name" not in pairs:
        raise doc.error(node, f"{label}: missing key 'name' (every rule needs a unique name)")
    name_node = pairs["name"][1]
    name = _str(doc, name_node, label + ": name", "a non-empty name")
    try:
        return _rule_body(doc, node, name.strip(), pairs, state)
    except ConfigError as exc:
        raise exc.within(f"rule {name.strip()!r}") from None


def _rule_body(doc: _Doc, node: Node, name: str, pairs: dict[str, tuple[Node, Node]], state: _State) -> Rule:
    _check_keys(doc, node, pairs, "", RULE_KEYS, required=("actions",))
    value = {key: v for key, (_, v) in pairs.items()}

    account = None
    if "account" in pairs:
        account = _str(doc, value["account"], "account", "the name of a configured account")
        if account not in state.accounts:
            raise doc.error(
                value["account"],
                f"account: unknown account {account!r} (configured: {', '.join(state.accounts)})",
            )

    mailboxes = None
    if "mailbox" in pairs:
        names = _str_or_list(doc, value["mailbox"], "mailbox", "a mailbox name or a list of them")
        mailboxes = tuple(dict.fromkeys(_normalize_mailbox(_sendable(doc, n_node, "mailbox", n))
                                        for n, n_node in names))

    match: Criterion = MATCH_EVERYTHING
    if "match" in pairs and not _is_null(doc, value["match"]):
        match = _criteria(doc, value["match"], "match", allow_empty=True)

    where = _where(doc, value["where"], state) if "where" in pairs else ()
    actions, terminal = _actions(doc, value["actions"], state)

    stop = False
    if "stop" in pairs:
        stop = _bool(doc, value["stop"], "stop")
        if not stop and terminal:
            raise doc.error(
                value["stop"],
                f"stop: false contradicts '{terminal}', which removes the message from the mailbox "
                "(later rules cannot see it); remove 'stop: false'",
            )
    stop = stop or terminal is not None

    enabled = _bool(doc, value["enabled"], "enabled") if "enabled" in pairs else True
    schedule = _schedule(doc, value["schedule"], state) if "schedule" in pairs else None
    return Rule(
        name=name,
        match=match,
        actions=actions,
        where=where,
        account=account,
        mailboxes=mailboxes,
        stop=stop,
        enabled=enabled,
        schedule=schedule,
        location=doc.loc(node),
    )


def _check_unique_names(rules: list[tuple[Rule, Node]]) -> None:
    first: dict[str, Rule] = {}
    for rule, _ in rules:
        if rule.name in first:
            raise ConfigError(
                f"rule {rule.name!r}: duplicate rule name (first defined at {first[rule.name].location}); "
                "rule names must be unique",
                rule.location,
            )
        first[rule.name] = rule


def _warn_unwatched(rules: list[tuple[Rule, Node]], state: _State) -> None:
    """An arrival rule on a mailbox no account watches would never run: say so."""
    for rule, _ in rules:
        if rule.schedule is not None or rule.mailboxes is None or not rule.enabled:
            continue
        names = [rule.account] if rule.account else list(state.accounts)
        for mailbox in rule.mailboxes:
            if not any(mailbox in state.accounts[a].watch for a in names):
                state.warn(
                    f"{rule.location}: rule {rule.name!r}: mailbox {mailbox!r} is not in any 'watch:' list, "
                    "so this arrival rule never runs there; add it to 'watch:' or give the rule a 'schedule:'"
                )


# --------------------------------------------------------------------------- match


def _criteria(doc: _Doc, node: Node, what: str, *, allow_empty: bool = False) -> Criterion:
    """A criteria mapping: one key -> that criterion; several -> All of them, in written order."""
    expected = "a mapping of criteria such as {from: alice@example.com, seen: false}"
    pairs = _pairs(doc, node, what, expected)
    if not pairs:
        if allow_empty:
            return MATCH_EVERYTHING
        raise doc.error(node, _msg(what, f"expected {expected}, found an empty mapping"))
    _check_keys(doc, node, pairs, what, CRITERIA_KEYS)
    items: list[Criterion] = []
    for key, (_, value) in pairs.items():
        items.extend(_criterion(doc, key, value))
    return items[0] if len(items) == 1 else All(tuple(items))


def _criterion(doc: _Doc, key: str, node: Node) -> list[Criterion]:
    """One `match:` key -> its criteria (several for a multi-entry header: or a keyword list)."""
    if key in TEXT_KEYS:
        if isinstance(node, SequenceNode):
            raise doc.error(
                node, f"{key}: expected a string, found a list (to match any of several, use 'any:')"
            )
        return [Text(key, _sendable(doc, node, key, _str(doc, node, key, "a non-empty string")))]
    if key == "header":
        return _header(doc, node)
    if key in ("larger", "smaller"):
        raw = doc.value(node) if isinstance(node, ScalarNode) else None
        try:
            return [Size(key, parse_size(raw))]
        except ValueError as exc:
            raise doc.error(node, f"{key}: {exc}, found {doc.describe(node)}") from None
    if key in ("older_than", "younger_than"):
        raw = doc.value(node) if isinstance(node, ScalarNode) else None
        try:
            return [Age(key.removesuffix("_than"), parse_duration(raw))]
        except ValueError as exc:
            raise doc.error(node, f"{key}: {exc}, found {doc.describe(node)}") from None
    if key in DATE_KEYS:
        cls, op = DATE_KEYS[key]
        try:
            raw = doc.value(node) if isinstance(node, ScalarNode) else None
        except ConfigError:  # an impossible date such as 2024-02-30: say why below
            raw = node.value
        try:
            return [cls(op, _parse_date(raw))]
        except ValueError as exc:
            raise doc.error(node, f"{key}: {exc}, found {doc.describe(node)}") from None
    if key in FLAG_KEYS:
        return [Flag(FLAG_KEYS[key], _bool(doc, node, key))]
    if key == "keyword":
        out: list[Criterion] = []
        for text, item in _str_or_list(doc, node, key, "a keyword such as $Dev, or a list of them"):
            try:
                (keyword,) = parse_keywords(text)
            except ValueError as exc:
                raise doc.error(item, f"keyword: {exc}") from None
            out.append(Keyword(keyword))
        return out
    if key in ("all", "any"):
        items = _list(doc, node, key, "a non-empty list of criteria mappings", nonempty=True)
        children = tuple(_criteria(doc, item, key) for item in items)
        return [All(children) if key == "all" else AnyOf(children)]
    if key == "not":
        return [Not(_criteria(doc, node, "not"))]
    if key == "raw":
        text = _str(doc, node, "raw", "IMAP search keys as a string, e.g. 'X-GM-RAW \"has:attachment\"'")
        problem = raw_problem(text)
        if problem:
            raise doc.error(node, f"raw: {problem}, found {text!r}")
        return [Raw(text)]
    raise AssertionError(key)  # pragma: no cover - CRITERIA_KEYS and this function agree


def _header(doc: _Doc, node: Node) -> list[Criterion]:
    expected = "a mapping {Header-Name: value}, e.g. {List-Id: dev.lists.example.org}"
    pairs = _pairs(doc, node, "header", expected)
    if not pairs:
        raise doc.error(node, f"header: expected {expected}, found an empty mapping")
    out: list[Criterion] = []
    for name, (key_node, value_node) in pairs.items():
        if not fetchable_header_name(name):
            raise doc.error(
                key_node,
                "header: expected a header field name (printable ASCII without spaces, ':' or any of "
                f"( ) {{ % * \" \\ ]), found {name!r}",
            )
        if _is_null(doc, value_node):
            raise doc.error(
                value_node,
                f'header {name}: expected a string, found nothing (write "" to test that it exists)',
            )
        expected_value = 'a string ("" means the header exists)'
        text = _str(doc, value_node, f"header {name}", expected_value, empty_ok=True)
        out.append(Header(name, _sendable(doc, value_node, f"header {name}", text)))
    return out


# --------------------------------------------------------------------------- where + actions


def _call(doc: _Doc, item: Node, what: str, expected: str) -> tuple[str, Node, Node | None]:
    """A list item `name` or `{name: argument}` -> (name, name node, argument node or None)."""
    if isinstance(item, ScalarNode):
        return _str(doc, item, what, expected), item, None
    pairs = _pairs(doc, item, what, expected)
    if len(pairs) != 1:
        raise doc.error(
            item, f"{what}: expected {expected}, found a mapping with {len(pairs)} keys (one per list item)"
        )
    ((name, (key_node, value_node)),) = pairs.items()
    return name, key_node, value_node


def _parsed(doc: _Doc, parse: Any, what: str, node: Node | None, at: Node) -> Any:
    """Run a plugin's argument validator; its ValueError becomes a ConfigError at the argument."""
    raw = None if node is None else doc.value(node)
    try:
        return parse(raw)
    except ValueError as exc:
        node = _node_at(node, getattr(exc, "path", ()), getattr(exc, "at_key", False))  # ArgumentError
        hint = doc.quote_hint(node) if node is not None else ""
        text = str(exc)
        if not text.startswith(f"{what.rsplit(': ', 1)[-1]}:"):  # the validator may name itself already
            text = f"{what}: {text}"
        raise doc.error(node if node is not None else at, f"{text}{hint}") from None


def _node_at(node: Node | None, path: Sequence[Any], at_key: bool = False) -> Node | None:
    """The node at `path` (mapping keys, list indexes) inside `node`, as deep as it exists.

    at_key: the last step is a key that is wrong itself (unknown): its key node, not its value.
    """
    for n, step in enumerate(path):
        if isinstance(node, MappingNode):
            pairs = [(k, v) for k, v in node.value if isinstance(k, ScalarNode) and k.value == str(step)]
            found = (pairs[0][0] if at_key and n == len(path) - 1 else pairs[0][1]) if pairs else None
        elif isinstance(node, SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
            found = node.value[step]
        else:
            found = None
        if found is None:
            break
        node = found
    return node


def _where(doc: _Doc, node: Node, state: _State) -> tuple[PredicateCall, ...]:
    if _is_null(doc, node):
        return ()
    expected = "a list of {predicate: arguments}, e.g. [{regex: {subject: '^\\[dev\\]'}}]"
    calls = []
    for item in _list(doc, node, "where", expected):
        name, name_node, arg_node = _call(doc, item, "where", "one {predicate: arguments} per list item")
        predicate = state.registry.predicates.get(name)
        if predicate is None:
            known = ", ".join(sorted(state.registry.predicates)) or "none"
            raise doc.error(name_node, f"where: unknown predicate {name!r} (known predicates: {known})")
        args = _parsed(doc, predicate.validate, f"where: {name}", arg_node, item)
        calls.append(PredicateCall(name, args, doc.loc(item)))
    return tuple(calls)


def _actions(doc: _Doc, node: Node, state: _State) -> tuple[tuple[ActionCall, ...], str | None]:
    """The action list, and the name of its terminal action (move/trash/delete) if any."""
    expected = "a non-empty list of actions, e.g. [flag, {move: Lists/dev}]"
    calls = []
    terminal: str | None = None
    for item in _list(doc, node, "actions", expected, nonempty=True):
        name, name_node, arg_node = _call(
            doc, item, "actions", "a bare action name or one {action: argument}"
        )
        action = state.registry.actions.get(name)
        if action is None:
            known = ", ".join(sorted(state.registry.actions))
            raise doc.error(name_node, f"actions: unknown action {name!r} (known actions: {known})")
        if terminal is not None:
            raise doc.error(
                item,
                f"actions: {name!r} comes after {terminal!r}, which removes the message from the mailbox, "
                f"so nothing can follow it (put {name!r} before {terminal!r})",
            )
        arg = _parsed(doc, action.validate, name, arg_node, item)
        if isinstance(arg, FolderRef):
            arg = _resolve_folder(doc, arg, name, arg_node or item, state)
        calls.append(ActionCall(name, arg, doc.loc(item)))
        if action.terminal:
            terminal = name
    return tuple(calls), terminal


def _resolve_folder(doc: _Doc, ref: FolderRef, action: str, node: Node, state: _State) -> FolderRef:
    """'work:Archive' -> FolderRef('Archive', 'work') if account 'work' exists; else a plain path."""
    if ref.account is not None or ":" not in ref.path:
        return ref
    account, rest = ref.path.split(":", 1)
    if account not in state.accounts:
        return ref
    try:
        inner = parse_folder(rest)
    except ValueError as exc:
        raise doc.error(node, f"{action}: account {account!r}: {exc}") from None
    return FolderRef(inner.path, account)


# --------------------------------------------------------------------------- schedule


def _schedule(doc: _Doc, node: Node, state: _State) -> Schedule:
    if isinstance(node, MappingNode):
        pairs = _mapping(doc, node, "schedule", ("every",), required=("every",))
        every_node = pairs["every"][1]
        raw = doc.value(every_node) if isinstance(every_node, ScalarNode) else None
        try:
            return Schedule(every_seconds=parse_duration(raw))
        except ValueError as exc:
            raise doc.error(every_node, f"schedule: every: {exc}, found {doc.describe(every_node)}") from None
    expr = _str(doc, node, "schedule", _CRON_FORM)
    try:
        return Schedule(cron=_normalize_cron(expr, state.timezone))
    except ValueError as exc:
        raise doc.error(
            node, f"schedule: invalid cron expression {expr!r}: {exc} (expected {_CRON_FORM})"
        ) from None
