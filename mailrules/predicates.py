"""The built-in `regex` predicate: `{regex: {FIELD: PATTERN}}`.

FIELD is a header name, `body`, `from_address` or `subject`. Patterns are Python `re`
syntax (run by the `regex` module, which enforces a time limit so a catastrophic
pattern from a shared rules file cannot hang the daemon).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .message import MessageView

REGEX_TIMEOUT = 1.0  # seconds of searching per message, in total over its fields and their occurrences
_clock = time.monotonic


class PredicateTimeout(Exception):
    """A predicate exceeded its time limit on a message."""


def parse_regex_args(args: Any) -> tuple[tuple[str, Any], ...]:
    if not isinstance(args, dict) or not args:
        raise ValueError("expected a mapping {FIELD: PATTERN}, e.g. {body: 'build #\\d+ failed'}")
    from .criteria import fetchable_header_name

    out = []
    for fld, pattern in args.items():
        if not isinstance(fld, str) or not fld:
            raise ValueError(f"expected a header name, body, from_address or subject, got {fld!r}")
        if fld.lower() not in ("body", "from_address", "subject") and not fetchable_header_name(fld):
            # the header is fetched by name: one IMAP cannot name had its FETCH refused on every pass
            raise ValueError(
                "expected a header name (printable ASCII without spaces, ':' or any of ( ) { % * \" \\ ]), "
                f"body, from_address or subject, got {fld!r}"
            )
        if not isinstance(pattern, str):
            raise ValueError(f"the pattern for {fld!r} must be a string, got {pattern!r}")
        import regex  # imported when a rule uses it: ~40 ms of start-up otherwise

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


def regex_prefilter(args: tuple[tuple[str, Any], ...]):
    """Server-side criteria every message matching these body patterns meets, or None.

    A pattern's longest literal run that any match must contain (e.g. "build #" in
    'build #\\d+ failed') becomes a BODY search: the server's case-insensitive substring
    search over the decoded body finds every message the pattern can match, and more.
    """
    from .model import All, Text

    keys = []
    for fld, compiled in args:
        if fld.lower() != "body":
            continue
        literal = required_literal(compiled.pattern)
        if literal:
            keys.append(Text("body", literal))
    return All(tuple(keys)) if keys else None


def required_literal(pattern: str, min_length: int = 3) -> str | None:
    """The longest run of literal characters that every match of `pattern` contains.

    Only the top level of the pattern is read: a literal inside a group, an alternative
    or a repetition is not required. None when there is no such run of min_length.
    """
    import re._constants as sre_constants
    import re._parser as sre_parse

    try:
        parsed = sre_parse.parse(pattern)
    except Exception:  # noqa: BLE001 - syntax only the `regex` module knows: no prefilter
        return None
    best, run = "", ""
    for op, arg in parsed:
        if op is sre_constants.LITERAL:
            run += chr(arg)
            continue
        best = max(best, run, key=len)
        run = ""
    best = max(best, run, key=len)
    if len(best.strip()) < min_length or any(ord(c) < 32 or ord(c) == 127 for c in best):
        return None  # a control character cannot be searched for on the server (NUL matched everything)
    return best


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
    """All fields must match; a field that occurs several times matches if any occurrence does.

    The time limit is for the whole message: a sender can repeat a header (60 copies of
    it made a per-search limit 60 times longer), so each search gets what is left of
    REGEX_TIMEOUT. Parsing the message is bounded apart (`mailrules.mime`) and not counted.
    """
    left = REGEX_TIMEOUT
    for fld, compiled in args:
        values = _values(message, fld)
        for count, value in enumerate(values, 1):
            if left <= 0:
                raise PredicateTimeout(_overrun(fld, count - 1))
            start = _clock()
            try:
                found = compiled.search(value, timeout=left)
            except TimeoutError:
                raise PredicateTimeout(_overrun(fld, count)) from None
            finally:
                left -= _clock() - start
            if found:
                break
        else:
            return False
    return True


def _overrun(fld: str, searched: int) -> str:
    return f"regex on {fld!r} exceeded {REGEX_TIMEOUT:g}s in total on this message ({searched} values searched)"
