"""`where:` predicate calls and `actions:` calls: a name (or {name: argument}) looked up in
the plugin registry, its argument checked by the predicate's or action's own validator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..api import rules_directory
from ..builtins import parse_folder
from ..model import ActionCall, FolderRef, PredicateCall
from .context import LoadState
from .errors import did_you_mean
from .nodes import is_null, list_of, pairs_of, string_of
from .reading import Doc

__all__ = ["read_actions", "read_where"]

def _call(doc: Doc, item: Node, what: str, expected: str) -> tuple[str, Node, Node | None]:
    """A list item `name` or `{name: argument}` -> (name, name node, argument node or None)."""
    if isinstance(item, ScalarNode):
        return string_of(doc, item, what, expected), item, None
    pairs = pairs_of(doc, item, what, expected)
    if len(pairs) != 1:
        raise doc.error(
            item, f"{what}: expected {expected}, found a mapping with {len(pairs)} keys (one per list item)"
        )
    ((name, (key_node, value_node)),) = pairs.items()
    return name, key_node, value_node


def _parsed(doc: Doc, parse: Any, what: str, node: Node | None, at: Node) -> Any:
    """Run a plugin's argument validator; its ValueError becomes a ConfigError at the argument."""
    raw = None if node is None else doc.value(node)
    try:
        with rules_directory(doc.path.parent):  # `mailrules.resolve_path`: relative to this file
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


def read_where(doc: Doc, node: Node, state: LoadState) -> tuple[PredicateCall, ...]:
    if is_null(doc, node):
        return ()
    expected = "a list of {predicate: arguments}, e.g. [{regex: {subject: '^\\[dev\\]'}}]"
    calls = []
    for item in list_of(doc, node, "where", expected):
        name, name_node, arg_node = _call(doc, item, "where", "one {predicate: arguments} per list item")
        predicate = state.plugins().predicates.get(name)
        if predicate is None:
            known = ", ".join(sorted(state.plugins().predicates)) or "none"
            raise doc.error(
                name_node,
                f"where: unknown predicate {name!r} (known predicates: {known})"
                f"{did_you_mean(name, state.plugins().predicates)}",
            )
        args = _parsed(doc, predicate.validate, f"where: {name}", arg_node, item)
        calls.append(PredicateCall(name, args, doc.loc(item)))
    return tuple(calls)


def read_actions(doc: Doc, node: Node, state: LoadState) -> tuple[tuple[ActionCall, ...], str | None]:
    """The action list, and the name of its terminal action (move/trash/delete) if any."""
    expected = "a non-empty list of actions, e.g. [flag, {move: Lists/dev}]"
    calls = []
    terminal: str | None = None
    for item in list_of(doc, node, "actions", expected, nonempty=True):
        name, name_node, arg_node = _call(
            doc, item, "actions", "a bare action name or one {action: argument}"
        )
        action = state.plugins().actions.get(name)
        if action is None:
            known = ", ".join(sorted(state.plugins().actions))
            raise doc.error(
                name_node,
                f"actions: unknown action {name!r} (known actions: {known})"
                f"{did_you_mean(name, state.plugins().actions)}",
            )
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


def _resolve_folder(doc: Doc, ref: FolderRef, action: str, node: Node, state: LoadState) -> FolderRef:
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

