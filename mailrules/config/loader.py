"""`load()`: the main file (version, accounts, timezone), its includes in order, its rules.

Includes are followed relative to the including file, each at most once, cycles refused;
all files of one load share one budget of the reading limits (`reading`).
"""

from __future__ import annotations

import os
import warnings

from yaml.nodes import Node

from ..model import Config, Location, Rule
from ..plugins import Registry
from ..rule_tests import parse_tests
from .context import LoadState
from .errors import ConfigError, ConfigWarning, did_you_mean
from .nodes import check_keys, int_of, is_null, list_of, string_of, strings_of, top_pairs
from .reading import Doc, Unreadable, expand_path, gc_paused, resolved_path
from .rules import check_unique_names, read_rule, warn_unwatched
from .top import TOP_KEYS, read_top

__all__ = ["INCLUDED_KEYS", "TOP_KEYS", "load"]

INCLUDED_KEYS = ("include", "rules", "tests")


def load(path: str | os.PathLike[str], *, registry: Registry | None = None) -> Config:
    """Read, validate and return the configuration at `path` (and the files it includes).

    Raises ConfigError (with .location) on the first problem. Warnings (an inline password,
    a rules file readable by others, an arrival rule on an unwatched mailbox) are issued as
    ConfigWarning and also listed in Config.warnings.
    """
    state = LoadState(registry=registry if registry is not None else Registry.load())
    with gc_paused():
        return _load(os.fspath(path), state)


def _load(display: str, state: LoadState) -> Config:
    doc, top, real, state.accounts = read_top(display, state)
    if "timezone" in top:
        state.timezone = _timezone(doc, top["timezone"][1])
    history_days = _history_days(doc, top["history_days"][1]) if "history_days" in top else 30

    state.files.append(str(real))
    state.chain.append((real, display))
    rules = _file_rules(doc, top, state)
    state.chain.pop()

    check_unique_names(rules)
    warn_unwatched(rules, state)
    for message in state.warnings:
        warnings.warn(message, ConfigWarning, stacklevel=3)  # the caller of load()
    return Config(
        accounts=state.accounts,
        rules=tuple(rule for rule, _ in rules),
        path=display,
        timezone=state.timezone,
        files=tuple(state.files),
        warnings=tuple(state.warnings),
        tests=tuple(state.tests),
        history_days=history_days,
    )


def _history_days(doc: Doc, node: Node) -> int:
    """How long the journal keeps finished runs for `undo` and `history` (mailrules.journal)."""
    days = int_of(doc, node, "history_days", "a number of days, 0 or more")
    if days < 0:
        raise doc.error(node, f"history_days: expected a number of days, 0 or more, found {days}")
    return days


def _timezone(doc: Doc, node: Node) -> str:
    import zoneinfo  # only for a schedule's time zone: ~1 ms of every start otherwise

    name = string_of(doc, node, "timezone", "an IANA time zone name such as Europe/Paris")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise doc.error(
            node,
            f"timezone: unknown time zone {name!r} (expected an IANA name such as Europe/Paris or UTC)"
            f"{did_you_mean(name, zoneinfo.available_timezones())}",
        ) from None
    return name



def _file_rules(doc: Doc, top: dict[str, tuple[Node, Node]], state: LoadState) -> list[tuple[Rule, Node]]:
    """The included files' rules, in the order listed, then this file's own rules."""
    rules: list[tuple[Rule, Node]] = []
    if "include" in top and not is_null(doc, top["include"][1]):
        node = top["include"][1]
        for text, item in strings_of(doc, node, "include", "a list of file paths"):
            rules.extend(_include(doc, text, item, state))
    if "rules" in top and not is_null(doc, top["rules"][1]):
        items = list_of(doc, top["rules"][1], "rules", "a list of rules")
        for index, item in enumerate(items, 1):
            rules.append((read_rule(doc, item, index, state), item))
    if "tests" in top:
        parse_tests(doc, top["tests"][1], state.tests, state.accounts)
    return rules


def _include(doc: Doc, text: str, node: Node, state: LoadState) -> list[tuple[Rule, Node]]:
    try:
        rel = expand_path(text)
        display = (
            str(rel) if rel.is_absolute() else os.path.normpath(os.path.join(os.path.dirname(doc.display), rel))
        )
        path = rel if rel.is_absolute() else doc.path.parent / rel
        real = resolved_path(path)
    except Unreadable as exc:
        raise doc.error(node, f"include: cannot read {text!r}: {exc}") from None
    chain = [shown for _, shown in state.chain]
    for index, (seen, _) in enumerate(state.chain):
        if seen == real:
            cycle = " -> ".join([*chain[index:], display])
            raise doc.error(node, f"include: {text!r} includes itself: cycle {cycle}")
    if real in state.included:
        raise doc.error(node, f"include: {text!r} is already included at {state.included[real]}")
    try:
        included = Doc(display, path, state.budget)
    except Unreadable as exc:
        raise doc.error(node, f"include: cannot read {text!r} ({path}): {exc}") from None
    state.included[real] = doc.loc(node)
    state.files.append(str(real))
    if included.root is None:
        raise ConfigError("the included file is empty (expected 'rules:')", Location(display, 1, 1))
    top = top_pairs(included, "a mapping with 'rules:' (an included file holds rules)", TOP_KEYS)
    for key, (key_node, _) in top.items():
        if key in ("version", "accounts", "timezone"):
            raise included.error(
                key_node,
                f"'{key}:' is not allowed in an included file (it holds only 'rules:', 'include:' and 'tests:'; "
                f"'{key}:' belongs in the main file {state.chain[0][1]})",
            )
    check_keys(included, included.root, top, "", INCLUDED_KEYS)
    state.chain.append((real, display))
    rules = _file_rules(included, top, state)
    state.chain.pop()
    return rules

