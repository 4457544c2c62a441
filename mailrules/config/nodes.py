"""Typed reads of nodes: a mapping with known keys, a list, a string, a boolean... each
raising a `ConfigError` at the node that is wrong, saying what was expected and what was
found. Every section of the loader (accounts, rules, match, where, actions, schedule) is
written with these.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..criteria import unsendable
from .errors import ConfigError, did_you_mean, prefixed
from .reading import MAP_TAG, SEQ_TAG, Doc

__all__ = [
    "bool_of",
    "check_keys",
    "expected_error",
    "int_of",
    "is_null",
    "list_of",
    "mapping_of",
    "pairs_of",
    "sendable",
    "string_of",
    "strings_of",
    "top_pairs",
]

_SHORT_NAME = re.compile(r"[\w.$-]{1,40}")


def top_pairs(doc: Doc, expected: str, known: Sequence[str]) -> dict[str, tuple[Node, Node]]:
    """The top-level mapping of a rules file (the main one or an included one) -> its pairs.

    A file that does not look like a rules file is refused without quoting it: it may be
    anything, a password file or a private key too, and nothing of it may reach the log.
    Not like a rules file: its top level is not a mapping, or it is a mapping without any
    key of a rules file and with a key that is not a short name (a typo such as 'rulez:'
    is still named, as everywhere else).
    """
    root = doc.root
    assert root is not None
    if isinstance(root, MappingNode):
        keys = [key.value if isinstance(key, ScalarNode) else None for key, _ in root.value]
        if any(key in known or key == "<<" for key in keys) or all(
            key is not None and _SHORT_NAME.fullmatch(key) for key in keys
        ):
            if doc.duplicate is not None:
                raise doc.duplicate
            return pairs_of(doc, root, "", expected)
        found = f"a mapping with none of the keys {', '.join(known)}"
    else:
        found = doc.kind(root)
    raise doc.error(
        root, f"expected {expected}, found {found}: is this a rules file? (its content is not shown)"
    )



def expected_error(doc: Doc, node: Node, what: str, expected: str, *, hint: bool = True) -> ConfigError:
    found = doc.describe(node)
    return doc.error(
        node, prefixed(what, f"expected {expected}, found {found}{doc.quote_hint(node) if hint else ''}")
    )


def pairs_of(doc: Doc, node: Node, what: str, expected: str = "a mapping") -> dict[str, tuple[Node, Node]]:
    """A mapping node -> {key text: (key node, value node)}, in written order.

    Keys are taken as written ('on' stays 'on', not YAML 1.1's True). '<<' merge keys are applied.
    """
    if not isinstance(node, MappingNode):
        raise expected_error(doc, node, what, expected, hint=False)
    if node.tag != MAP_TAG:
        raise doc.error(node, prefixed(what, f"unsupported tag {node.tag!r} (expected {expected})"))
    try:
        doc.loader.flatten_mapping(node)
    except yaml.YAMLError as exc:
        raise doc.error(node, prefixed(what, f"invalid merge: {getattr(exc, 'problem', exc)}")) from None
    out: dict[str, tuple[Node, Node]] = {}
    for key, value in node.value:
        if not isinstance(key, ScalarNode) or not key.value:
            raise doc.error(key, prefixed(what, f"expected a name as key, found {doc.describe(key)}"))
        out[key.value] = (key, value)
    return out


def check_keys(
    doc: Doc,
    node: Node,
    pairs: dict[str, tuple[Node, Node]],
    what: str,
    allowed: Sequence[str],
    required: Sequence[str] = (),
) -> None:
    for key, (key_node, _) in pairs.items():
        if key not in allowed:
            raise doc.error(
                key_node,
                prefixed(
                    what,
                    f"unknown key {key!r} (expected one of: {', '.join(allowed)})"
                    f"{did_you_mean(key, allowed)}",
                ),
            )
    for key in required:
        if key not in pairs:
            raise doc.error(node, prefixed(what, f"missing key {key!r}"))


def mapping_of(
    doc: Doc, node: Node, what: str, allowed: Sequence[str], required: Sequence[str] = ()
) -> dict[str, tuple[Node, Node]]:
    """A mapping whose keys must be among `allowed`; returns {key: (key node, value node)}."""
    pairs = pairs_of(doc, node, what)
    check_keys(doc, node, pairs, what, allowed, required)
    return pairs


def list_of(
    doc: Doc, node: Node, what: str, expected: str = "a list", *, nonempty: bool = False
) -> list[Node]:
    if not isinstance(node, SequenceNode):
        raise expected_error(doc, node, what, expected, hint=False)
    if node.tag != SEQ_TAG:
        raise doc.error(node, prefixed(what, f"unsupported tag {node.tag!r} (expected {expected})"))
    if nonempty and not node.value:
        raise doc.error(node, prefixed(what, f"expected {expected}, found an empty list"))
    return list(node.value)


def string_of(doc: Doc, node: Node, what: str, expected: str = "a string", *, empty_ok: bool = False) -> str:
    if isinstance(node, ScalarNode):
        value = doc.value(node)
        if isinstance(value, str) and (empty_ok or value.strip()):
            return value
    raise expected_error(doc, node, what, expected)


def sendable(doc: Doc, node: Node, what: str, text: str) -> str:
    """`text` if it can go to the server (no CR, LF, NUL or other control character), else a ConfigError."""
    problem = unsendable(text)
    if problem:
        raise doc.error(node, prefixed(what, f"{problem}, found {text!r}"))
    return text


def bool_of(doc: Doc, node: Node, what: str) -> bool:
    value = doc.value(node) if isinstance(node, ScalarNode) else None
    if isinstance(value, bool):
        return value
    raise expected_error(doc, node, what, "true or false", hint=False)


def int_of(doc: Doc, node: Node, what: str, expected: str) -> int:
    value = doc.value(node) if isinstance(node, ScalarNode) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise expected_error(doc, node, what, expected, hint=False)


def strings_of(doc: Doc, node: Node, what: str, expected: str) -> list[tuple[str, Node]]:
    """A string or a non-empty list of strings -> [(string, node)]."""
    if isinstance(node, SequenceNode):
        items = list_of(doc, node, what, expected, nonempty=True)
        return [(string_of(doc, item, what, expected), item) for item in items]
    return [(string_of(doc, node, what, expected), node)]


def is_null(doc: Doc, node: Node) -> bool:
    return isinstance(node, ScalarNode) and doc.value(node) is None

