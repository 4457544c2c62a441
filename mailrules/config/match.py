"""The `match:` criteria: one key per criterion (text, header, size, age, dates, flags,
keywords, raw) and the combinators all/any/not, read into `model` criterion nodes."""

from __future__ import annotations

from yaml.nodes import Node, ScalarNode, SequenceNode

from ..builtins import parse_keywords
from ..criteria import fetchable_header_name, raw_problem
from ..model import (
    MATCH_EVERYTHING,
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
from .errors import ConfigError, prefixed
from .nodes import bool_of, check_keys, is_null, list_of, pairs_of, sendable, string_of, strings_of
from .reading import Doc
from .values import parse_date, parse_duration, parse_size

__all__ = ["CRITERIA_KEYS", "DATE_KEYS", "FLAG_KEYS", "TEXT_KEYS", "read_criteria"]

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


def read_criteria(doc: Doc, node: Node, what: str, *, allow_empty: bool = False) -> Criterion:
    """A criteria mapping: one key -> that criterion; several -> All of them, in written order."""
    expected = "a mapping of criteria such as {from: alice@example.com, seen: false}"
    pairs = pairs_of(doc, node, what, expected)
    if not pairs:
        if allow_empty:
            return MATCH_EVERYTHING
        raise doc.error(node, prefixed(what, f"expected {expected}, found an empty mapping"))
    check_keys(doc, node, pairs, what, CRITERIA_KEYS)
    items: list[Criterion] = []
    for key, (_, value) in pairs.items():
        items.extend(_criterion(doc, key, value))
    return items[0] if len(items) == 1 else All(tuple(items))


def _criterion(doc: Doc, key: str, node: Node) -> list[Criterion]:
    """One `match:` key -> its criteria (several for a multi-entry header: or a keyword list)."""
    if key in TEXT_KEYS:
        if isinstance(node, SequenceNode):
            raise doc.error(
                node, f"{key}: expected a string, found a list (to match any of several, use 'any:')"
            )
        return [Text(key, sendable(doc, node, key, string_of(doc, node, key, "a non-empty string")))]
    if key == "header":
        return _header(doc, node)
    if key in ("larger", "smaller"):
        raw = doc.value(node) if isinstance(node, ScalarNode) else None
        try:
            return [Size(key, parse_size(raw), written=str(raw))]
        except ValueError as exc:
            raise doc.error(node, f"{key}: {exc}, found {doc.describe(node)}") from None
    if key in ("older_than", "younger_than"):
        raw = doc.value(node) if isinstance(node, ScalarNode) else None
        try:
            return [Age(key.removesuffix("_than"), parse_duration(raw), written=str(raw))]
        except ValueError as exc:
            raise doc.error(node, f"{key}: {exc}, found {doc.describe(node)}") from None
    if key in DATE_KEYS:
        cls, op = DATE_KEYS[key]
        try:
            raw = doc.value(node) if isinstance(node, ScalarNode) else None
        except ConfigError:  # an impossible date such as 2024-02-30: say why below
            raw = node.value
        try:
            return [cls(op, parse_date(raw))]
        except ValueError as exc:
            raise doc.error(node, f"{key}: {exc}, found {doc.describe(node)}") from None
    if key in FLAG_KEYS:
        return [Flag(FLAG_KEYS[key], bool_of(doc, node, key))]
    if key == "keyword":
        out: list[Criterion] = []
        for text, item in strings_of(doc, node, key, "a keyword such as $Dev, or a list of them"):
            try:
                (keyword,) = parse_keywords(text)
            except ValueError as exc:
                raise doc.error(item, f"keyword: {exc}") from None
            out.append(Keyword(keyword))
        return out
    if key in ("all", "any"):
        items = list_of(doc, node, key, "a non-empty list of criteria mappings", nonempty=True)
        children = tuple(read_criteria(doc, item, key) for item in items)
        return [All(children) if key == "all" else AnyOf(children)]
    if key == "not":
        return [Not(read_criteria(doc, node, "not"))]
    if key == "raw":
        text = string_of(doc, node, "raw", "IMAP search keys as a string, e.g. 'X-GM-RAW \"has:attachment\"'")
        problem = raw_problem(text)
        if problem:
            raise doc.error(node, f"raw: {problem}, found {text!r}")
        return [Raw(text)]
    raise AssertionError(key)  # pragma: no cover - CRITERIA_KEYS and this function agree


def _header(doc: Doc, node: Node) -> list[Criterion]:
    expected = "a mapping {Header-Name: value}, e.g. {List-Id: dev.lists.example.org}"
    pairs = pairs_of(doc, node, "header", expected)
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
        if is_null(doc, value_node):
            raise doc.error(
                value_node,
                f'header {name}: expected a string, found nothing (write "" to test that it exists)',
            )
        expected_value = 'a string ("" means the header exists)'
        text = string_of(doc, value_node, f"header {name}", expected_value, empty_ok=True)
        out.append(Header(name, sendable(doc, value_node, f"header {name}", text)))
    return out

