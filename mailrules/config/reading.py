"""Reading a rules file, bounded: the bytes of a regular file, then libyaml's events composed
into a node tree within limits of size, depth and aliases.

Whatever a file holds, reading it ends quickly, in bounded memory, with a `ConfigError` that
names file:line:column and never quotes the file's text (an included file may be anything, a
secret too): the parser's messages name token kinds, not content. `Doc` is one file's node
tree plus the ways to describe a node in a message without its text.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
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

from ..model import Location
from .errors import ConfigError
from .syntax import plain_syntax_error

__all__ = [
    "MAP_TAG",
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "MAX_TEXT",
    "MERGE_TAG",
    "SEQ_TAG",
    "Budget",
    "Doc",
    "Unreadable",
    "expand_path",
    "gc_paused",
    "resolved_path",
]

MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"
MERGE_TAG = "tag:yaml.org,2002:merge"

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
Only its *events* are used: `Doc._compose` builds the node tree itself, iteratively and
within the limits above (libyaml's own composer recurses in C and crashes the process on
deep nesting)."""

# What YAML refuses to read (PyYAML's Reader.NON_PRINTABLE): found before parsing, so that
# the error names the line, the column and the character's code, never the text around it.
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

class Unreadable(Exception):
    """A file that cannot be read as a rules file: str() says why, never what it holds."""

@dataclass
class Budget:
    """What one load has used of the limits so far (shared by the main file and its includes)."""

    bytes: int = 0
    nodes: int = 0
    text: int = 0
    aliases: int = 0

def expand_path(text: str) -> Path:
    """A path as written in the rules file or on the command line, '~' expanded."""
    if "\0" in text:
        raise Unreadable("the path contains a NUL character")
    try:
        return Path(text).expanduser()
    except RuntimeError:  # ~nosuchuser
        head = text.split("/", 1)[0]
        raise Unreadable(f"cannot expand {head!r}: no such user or no home directory") from None

def resolved_path(path: Path) -> Path:
    """The real path (symbolic links followed), for include cycles and duplicates."""
    try:
        return path.resolve()
    except RuntimeError:  # Python < 3.13 raises it for a symbolic link loop
        raise Unreadable("a loop of symbolic links") from None
    except (OSError, ValueError) as exc:
        raise Unreadable(getattr(exc, "strerror", None) or str(exc)) from None

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)

def _not_regular(mode: int) -> Unreadable:
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    return Unreadable(f"it is {kind}, not a regular file" if kind.startswith("a ") else kind)

def _read_file(path: Path, budget: Budget) -> bytes:
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
        raise Unreadable(exc.strerror or str(exc)) from None
    except ValueError as exc:  # a NUL in the path
        raise Unreadable(str(exc)) from None
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
        raise Unreadable(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if size > room:
        raise Unreadable(
            f"it is larger than the {MAX_FILE_BYTES // (1024 * 1024)} MiB allowed for the rules file and "
            "its includes together"
        )
    budget.bytes += size
    return b"".join(chunks)

def _anchor_name(anchor: str, sigil: str = "*") -> str:
    """An anchor or alias for a message, cut short: it is part of the file's text."""
    return sigil + (anchor if len(anchor) <= 40 else anchor[:40] + "...")

@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
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



class Doc:
    """One YAML file: its name as shown in messages, its node tree, and a scalar constructor.

    Reading and parsing are bounded (`_read_file`, `_compose`): every problem, whatever the
    file holds, is a ConfigError with file:line:column, and no message quotes the file's
    text beyond a single character's code (an included file may be anything, a secret too).
    """

    def __init__(self, display: str, path: Path, budget: Budget) -> None:
        self.display = display
        self.path = path
        data = _read_file(path, budget)  # Unreadable: the caller knows where the file was named
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

    def _char_at(self, mark: Any) -> str:
        """The character at a parser's mark ('' past the end), to tell a tab from an '@'."""
        if mark is None:
            return ""
        start = 0
        for _ in range(mark.line):
            start = self.text.find("\n", start) + 1
            if start == 0:
                return ""
        end = self.text.find("\n", start)
        line = self.text[start:] if end < 0 else self.text[start:end]
        return line[mark.column] if 0 <= mark.column < len(line) else ""

    def _at(self, mark: Any) -> Location:
        return Location(self.display, mark.line + 1, mark.column + 1)

    def _compose(self, budget: Budget) -> Node | None:
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
                node: Node = self._scalar(event, budget, anchors)
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
                node, height = self._alias(event, len(stack), anchors, budget)
            elif kind is DocumentEndEvent:
                break
            else:  # pragma: no cover - the parser emits nothing else inside a document
                raise ConfigError(f"invalid YAML: unexpected {kind.__name__}", self._at(event.start_mark))
            if not stack:
                root = node
                continue
            self._attach(stack[-1], node, height)
        event = get_event()
        if not isinstance(event, StreamEndEvent):
            raise ConfigError(
                "invalid YAML: a second document ('---') in the file; a rules file is one document",
                self._at(event.start_mark),
            )
        return root

    def _scalar(self, event: Any, budget: Budget, anchors: dict[str, list[Any]]) -> Node:
        """A scalar's node, counted against the budget (and remembered under its anchor)."""
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(ScalarNode, event.value, event.implicit)
        style = event.style or None  # libyaml writes '' for a plain scalar, PyYAML None
        # No end marks: nothing reads them, and a 28,000-rule file has 400,000 scalars.
        node = ScalarNode(tag, event.value, event.start_mark, None, style=style)
        budget.nodes += 1
        budget.text += len(event.value)
        self._check_budget(budget, event)
        if event.anchor is not None:
            self._anchor(anchors, event, node)
            anchors[event.anchor] = [node, True, 1, len(event.value), 1]
        return node

    def _alias(self, event: Any, depth: int, anchors: dict[str, list[Any]], budget: Budget) -> tuple[Node, int]:
        """The node an alias names and its height; its expanded size counted against the budget.

        Refused: an undefined alias, one inside the node it names, one nesting beyond MAX_DEPTH.
        """
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
        if depth + height > MAX_DEPTH:
            raise ConfigError(
                f"invalid YAML: the alias {name} nests more than {MAX_DEPTH} levels deep "
                "(mappings and lists)",
                self._at(event.start_mark),
            )
        budget.aliases += 1
        budget.nodes += nodes
        budget.text += text
        self._check_budget(budget, event)
        return node, height

    def _attach(self, top: list[Any], node: Node, height: int) -> None:
        """Add a finished node to the open mapping or list `top` (a stack entry of `_compose`).

        A mapping's first duplicate key is remembered (`self.duplicate`), not raised here.
        """
        top[4] = max(top[4], height)
        parent = top[0]
        if isinstance(parent, SequenceNode):
            parent.value.append(node)
        elif top[1] is None:
            top[1] = node
            if isinstance(node, ScalarNode) and node.tag != MERGE_TAG and self.duplicate is None:
                first = top[6].setdefault((node.tag, node.value), node)
                if first is not node:
                    self.duplicate = self.error(
                        node,
                        f"duplicate key {node.value!r} (first written at line {first.start_mark.line + 1})",
                    )
        else:
            parent.value.append((top[1], node))
            top[1] = None

    def _anchor(self, anchors: dict[str, list[Any]], event: Any, node: Node) -> None:
        first = anchors.get(event.anchor)
        if first is not None:
            raise ConfigError(
                f"invalid YAML: the anchor {_anchor_name(event.anchor, '&')} is defined twice (first at line "
                f"{first[0].start_mark.line + 1})",
                self._at(event.start_mark),
            )

    def _check_budget(self, budget: Budget, event: Any) -> None:
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
        """The parser's error, with its position, in plain words (`plain_syntax_error`) where the
        case is known, else as the parser says it (libyaml's messages name token kinds, not text)."""
        if isinstance(exc, yaml.MarkedYAMLError):
            mark = exc.problem_mark or exc.context_mark
            loc = self._at(mark) if mark else Location(self.display)
            plain = plain_syntax_error(
                exc.problem or "", exc.context or "", exc.context_mark, self._char_at(exc.problem_mark), MAX_DEPTH
            )
            if plain is not None:
                return ConfigError(f"invalid YAML: {plain}", loc)
            text = exc.problem or exc.context or "invalid YAML"
            if exc.context and exc.problem:
                cm = exc.context_mark
                where = f" that starts at line {cm.line + 1}, column {cm.column + 1}" if cm else ""
                text += f" ({exc.context}{where})"
            return ConfigError(f"invalid YAML: {text}", loc)
        if isinstance(exc, yaml.reader.ReaderError):
            offset = exc.position
            if _LOADER is not yaml.SafeLoader:  # libyaml counts bytes of the UTF-8 text
                offset = len(self.text.encode("utf-8")[: exc.position].decode("utf-8", "ignore"))
            code = f" U+{exc.character:04X}" if isinstance(exc.character, int) else ""
            return ConfigError(f"invalid YAML: {exc.reason}{code}", self._location_of(offset))
        return ConfigError("invalid YAML", Location(self.display))

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

