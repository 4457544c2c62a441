"""The built-in `regex` predicate: `{regex: {FIELD: PATTERN}}`.

FIELD is a header name, `body`, `from_address` or `subject`. Patterns are Python `re`
syntax (run by the `regex` module, which enforces a time limit so a catastrophic
pattern from a shared rules file cannot hang the daemon).
"""

from __future__ import annotations

from typing import Any

import regex

from .message import MessageView

REGEX_TIMEOUT = 1.0  # seconds per search


class PredicateTimeout(Exception):
    """A predicate exceeded its time limit on a message."""


def parse_regex_args(args: Any) -> tuple[tuple[str, Any], ...]:
    if not isinstance(args, dict) or not args:
        raise ValueError("expected a mapping {FIELD: PATTERN}, e.g. {body: 'build #\\d+ failed'}")
    out = []
    for fld, pattern in args.items():
        if not isinstance(fld, str) or not fld:
            raise ValueError(f"expected a header name, body, from_address or subject, got {fld!r}")
        if not isinstance(pattern, str):
            raise ValueError(f"the pattern for {fld!r} must be a string, got {pattern!r}")
        try:
            compiled = regex.compile(pattern, flags=regex.VERSION0)
        except regex.error as exc:
            raise ValueError(f"bad regular expression for {fld!r}: {exc}") from None
        out.append((fld, compiled))
    return tuple(out)


def regex_needs(args: tuple[tuple[str, Any], ...]) -> list[str]:
    needs = []
    for fld, _ in args:
        low = fld.lower()
        if low == "body":
            needs.append("message")
        elif low == "from_address":
            needs.append("header:From")
        else:
            needs.append(f"header:{fld}")
    return needs


def _values(message: MessageView, fld: str) -> list[str]:
    low = fld.lower()
    if low == "body":
        return [message.body_text]
    if low == "from_address":
        return message.from_addresses
    if low == "subject":
        return [message.subject]
    return message.header(fld)


def regex_test(message: MessageView, args: tuple[tuple[str, Any], ...]) -> bool:
    """All fields must match; a field that occurs several times matches if any occurrence does."""
    for fld, compiled in args:
        try:
            if not any(compiled.search(v, timeout=REGEX_TIMEOUT) for v in _values(message, fld)):
                return False
        except TimeoutError:
            raise PredicateTimeout(f"regex on {fld!r} exceeded {REGEX_TIMEOUT}s") from None
    return True
