"""The main file's top level: its keys, its version and its accounts.

All that `run --once` needs to start opening its first connection (`load_accounts`), so this
module leaves out what reads the rules, and the plugins: they load meanwhile
(`mailrules.runcommand.early_pool`). `load` reads the rest of the file after `read_top`.
"""

from __future__ import annotations

import os
from pathlib import Path

from yaml.nodes import Node, ScalarNode

from ..model import Account, Location
from .accounts import read_accounts
from .context import LoadState
from .errors import ConfigError
from .nodes import check_keys, top_pairs
from .reading import Doc, Unreadable, expand_path, gc_paused, resolved_path

__all__ = ["TOP_KEYS", "load_accounts", "read_top"]

TOP_KEYS = ("version", "accounts", "include", "timezone", "history_days", "rules", "tests")
_EXPECTED = "a mapping with 'version: 1', 'accounts:' and 'rules:'"


def load_accounts(path: str | os.PathLike[str]) -> dict[str, Account]:
    """The accounts of the rules file at `path` alone, checked as `load` checks them.

    For `run --once`: its first connection's LOGIN and SELECT then overlap the loading of the
    plugins and of the rest of the file (~40 ms). Raises ConfigError on a problem in what it
    reads; `load` reports that one, and any other, the usual way. Issues no warning (`load` does).
    """
    with gc_paused():
        return read_top(os.fspath(path), LoadState(registry=None))[3]


def read_top(display: str, state: LoadState) -> tuple[Doc, dict[str, tuple[Node, Node]], Path, dict[str, Account]]:
    """The main file's node tree, its top-level keys (checked), its real path, and its accounts."""
    try:
        where = expand_path(display)
        real = resolved_path(where)
        doc = Doc(display, where, state.budget)
    except Unreadable as exc:
        raise ConfigError(f"cannot read the rules file: {exc}", Location(display)) from None
    if doc.root is None:
        raise ConfigError(f"the file is empty (expected {_EXPECTED})", Location(display, 1, 1))
    top = top_pairs(doc, _EXPECTED, TOP_KEYS)
    check_keys(doc, doc.root, top, "", TOP_KEYS)
    _version(doc, doc.root, top)
    if "accounts" not in top:
        raise doc.error(doc.root, "missing key 'accounts' (at least one IMAP account is needed)")
    return doc, top, real, read_accounts(doc, top["accounts"][1], state)


def _version(doc: Doc, root: Node, top: dict[str, tuple[Node, Node]]) -> None:
    if "version" not in top:
        raise doc.error(root, "missing key 'version' (write 'version: 1' at the top of the file)")
    node = top["version"][1]
    value = doc.value(node) if isinstance(node, ScalarNode) else None
    if type(value) is not int or value != 1:
        raise doc.error(node, f"version: expected 1 (the only format version), found {doc.describe(node)}")
