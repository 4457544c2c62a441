"""Gmail search expressions (the `from`, `to`, `subject`, `hasTheWord` fields of a filter) as
importer conditions.

Understood: words and "quoted phrases" (AND), `OR`, `{a b}` (any), `-x` (not), parentheses,
and the operators from:, to:, cc:, bcc:, subject:, list: (List-Id), deliveredto:
(Delivered-To), rfc822msgid: (Message-ID), larger:, smaller: (10M, 500K), older_than:,
newer_than: (d, m, y), after:, before: (YYYY/MM/DD), each with a word, a phrase or a group.
Anything else (has:, is:, label:, in:, category:, filename:, AROUND...) is a `QueryError`:
Gmail-only searches with no IMAP equivalent.
"""

from __future__ import annotations

import re

from .conditions import Cond, all_, any_, crit, not_

_TEXT_OPS = {"from": "from", "to": "to", "cc": "cc", "bcc": "bcc", "subject": "subject", "text": "text"}
_HEADER_OPS = {"list": "List-Id", "deliveredto": "Delivered-To", "rfc822msgid": "Message-ID"}
_TOKEN = re.compile(r'\s*(?:(?P<op>[A-Za-z_]+):(?=\S)|(?P<p>[(){}])|"(?P<q>[^"]*)"|(?P<w>[^\s(){}"]+))')


class QueryError(Exception):
    """A Gmail search this importer cannot map."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise QueryError(f"cannot read the Gmail search {text!r} at {text[pos:]!r}")
        pos = m.end()
        kind = m.lastgroup or "w"
        out.append((kind, m.group(kind)))
    return out


class _Parser:
    def __init__(self, text: str, default: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0
        self.default = default

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def sequence(self, op: str, close: str | None = None) -> Cond:
        """Terms until `close` (AND; `OR` between two terms binds tighter)."""
        terms: list[Cond] = []
        while (token := self.peek()) is not None and token != ("p", close or ""):
            term = self.unary(op)
            while self.peek() == ("w", "OR"):
                self.take()
                term = any_(term, self.unary(op))
            terms.append(term)
        if close:
            if self.peek() is None:
                raise QueryError(f"unbalanced {close!r} in the Gmail search {self.text!r}")
            self.take()
        return all_(*terms)

    def unary(self, op: str) -> Cond:
        kind, value = self.take()
        if kind == "w" and value.startswith("-") and len(value) > 1:
            self.tokens[self.pos:self.pos] = _tokens(value[1:])
            return not_(self.unary(op))
        if (kind, value) == ("w", "-"):
            return not_(self.unary(op))
        if kind == "p" and value == "(":
            return self.sequence(op, ")")
        if kind == "p" and value == "{":
            group = self.sequence(op, "}")
            return any_(*group[1]) if group[0] == "all" else group
        if kind == "op":
            return self.unary(value.lower())
        if kind == "w" and value.upper() == "AND":
            return self.unary(op)
        return _leaf(op, value)


def _leaf(op: str, value: str) -> Cond:
    if op in _TEXT_OPS:
        return crit({_TEXT_OPS[op]: value})
    if op in _HEADER_OPS:
        return crit({"header": {_HEADER_OPS[op]: value.strip("<>")}})
    if op in ("larger", "smaller", "size"):
        number = re.fullmatch(r"(\d+)([KkMm]?)", value)
        if not number:
            raise QueryError(f"{op}:{value}: expected a size such as 10M")
        factor = {"": 1, "k": 1024, "m": 1024 * 1024}[number.group(2).lower()]
        return crit({"smaller" if op == "smaller" else "larger": int(number.group(1)) * factor})
    if op in ("older_than", "newer_than"):
        number = re.fullmatch(r"(\d+)([dmy])", value)
        if not number:
            raise QueryError(f"{op}:{value}: expected a number of days (d), months (m) or years (y)")
        days = int(number.group(1)) * {"d": 1, "m": 30, "y": 365}[number.group(2)]
        return crit({"older_than" if op == "older_than" else "younger_than": f"{days}d"})
    if op in ("after", "before"):
        date = re.fullmatch(r"(\d{4})[/-](\d{1,2})[/-](\d{1,2})", value)
        if not date:
            raise QueryError(f"{op}:{value}: expected a date YYYY/MM/DD")
        text = "-".join(f"{int(p):02d}" for p in date.groups())
        return crit({"since" if op == "after" else "before": text})
    raise QueryError(f"the Gmail search operator {op}: has no IMAP equivalent")


def parse_query(text: str, *, default: str, line: int = 0) -> Cond:
    """The condition for a Gmail search; `default` is the operator of words without one."""
    return _Parser(text, default).sequence(default)
