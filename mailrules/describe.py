"""Criteria named as the user wrote them (`from: 'x'`, `header: {List-Id: y}`, `not: ...`).

`mailrules test` (its warnings) and `mailrules explain` (the deciding criterion) speak of
criteria in the rules file's own words, not in IMAP's.
"""

from __future__ import annotations

from .criteria import FLAG_KEYS
from .model import (
    Age,
    All,
    AnyOf,
    ArrivalDate,
    Criterion,
    Flag,
    Header,
    Keyword,
    Not,
    Raw,
    SentDate,
    Size,
    Text,
)

FLAG_NAMES = {flag: flag[1:].lower() for flag in FLAG_KEYS}  # '\Seen' -> 'seen', as in match:


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _duration(seconds: int) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def criterion_text(node: Criterion) -> str:
    """One criterion (a subtree) in the rules file's YAML words, on one line."""
    if isinstance(node, Text):
        return f"{node.field}: {_q(node.value)}"
    if isinstance(node, Header):
        return f"header: {{{node.name}: {_q(node.value)}}}"
    if isinstance(node, Size):
        return f"{node.op}: {node.written or node.size}"  # as written: 1MB, not 1048576
    if isinstance(node, Age):
        return f"{node.op}_than: {node.written or _duration(node.seconds)}"
    if isinstance(node, ArrivalDate):
        return f"{node.op}: {node.date.isoformat()}"
    if isinstance(node, SentDate):
        return f"sent_{node.op}: {node.date.isoformat()}"
    if isinstance(node, Flag):
        return f"{FLAG_NAMES.get(node.flag, node.flag)}: {str(node.present).lower()}"
    if isinstance(node, Keyword):
        return f"keyword: {node.name}" if node.present else f"not: {{keyword: {node.name}}}"
    if isinstance(node, Raw):
        return f"raw: {_q(node.text)}"
    if isinstance(node, Not):
        return f"not: {{{criterion_text(node.child)}}}"
    if isinstance(node, All):
        if not node.children:
            return "match: {} (every message)"
        return "all: [" + ", ".join("{" + criterion_text(c) + "}" for c in node.children) + "]"
    if isinstance(node, AnyOf):
        if not node.children:
            return "any: [] (no message)"
        return "any: [" + ", ".join("{" + criterion_text(c) + "}" for c in node.children) + "]"
    return repr(node)


def under_not(root: Criterion, path: tuple[int, ...]) -> int:
    """How many `not:` lie on the way from `root` to the node at `path`."""
    count = 0
    node = root
    for index in path:
        if isinstance(node, Not):
            count += 1
            node = node.child
        elif isinstance(node, All | AnyOf):
            node = node.children[index]
        else:
            break
    return count + (1 if isinstance(node, Not) else 0)


def leaves(node: Criterion):
    """Every leaf criterion of a tree, in order."""
    if isinstance(node, All | AnyOf):
        for child in node.children:
            yield from leaves(child)
    elif isinstance(node, Not):
        yield from leaves(node.child)
    else:
        yield node
