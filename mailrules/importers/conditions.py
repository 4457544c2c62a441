"""Conditions of imported filters, and how they become `match:` criteria and `where:` regexes.

Importers build a small tree (`all`, `any`, `not`, constants, plain criteria, and regex terms
for what IMAP SEARCH cannot say, such as Sieve's `:is` or `:regex`). A rule's `match:` is the
tree without its regex terms; a regex term can only be a `where:` predicate, and `where:` is
a list that must all hold, so a regex term is convertible only at the top level of a rule's
condition (not under `any`/`not`): elsewhere `Unconvertible` says so, with its line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TRUE: tuple = ("T",)
FALSE: tuple = ("F",)

Cond = tuple  # ("T",) ("F",) ("crit", dict) ("re", field, pattern, prefilter, line) ("all"|"any", tuple) ("not", c)


class Unconvertible(Exception):
    """A condition mailrules cannot express; `line` is where it was written."""

    def __init__(self, line: int, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")
        self.line, self.what, self.why = line, what, why


def crit(mapping: dict[str, Any]) -> Cond:
    return ("crit", mapping)


def regex(field: str, pattern: str, prefilter: Cond, line: int) -> Cond:
    """A regex on a header (`where: regex`), with criteria every match meets (server-side)."""
    return ("re", field, pattern, prefilter, line)


def all_(*items: Cond) -> Cond:
    flat: list[Cond] = []
    for item in items:
        if item == FALSE:
            return FALSE
        if item == TRUE:
            continue
        flat.extend(item[1] if item[0] == "all" else (item,))
    # absorption: a and (a or b) is a; repeated terms once
    flat = [c for i, c in enumerate(flat) if c not in flat[:i]
            and not (c[0] == "any" and any(x in flat for x in c[1]))]
    if not flat:
        return TRUE
    return flat[0] if len(flat) == 1 else ("all", tuple(flat))


def any_(*items: Cond) -> Cond:
    flat: list[Cond] = []
    for item in items:
        if item == TRUE:
            return TRUE
        if item == FALSE:
            continue
        flat.extend(item[1] if item[0] == "any" else (item,))
    if not flat:
        return FALSE
    return flat[0] if len(flat) == 1 else ("any", tuple(flat))


def not_(item: Cond) -> Cond:
    if item == TRUE:
        return FALSE
    if item == FALSE:
        return TRUE
    if item[0] == "not":
        return item[1]
    return ("not", item)


@dataclass
class Split:
    """A rule's condition as a rules file writes it."""

    match: dict[str, Any] | None
    where: list[dict[str, Any]]


def split(cond: Cond) -> Split:
    """`match:` and `where:` for `cond` (not FALSE); Unconvertible for a regex under any/not."""
    terms = list(cond[1]) if cond[0] == "all" else [cond]
    plain: list[Cond] = []
    where: list[dict[str, Any]] = []
    for term in terms:
        if term[0] == "re":
            _, field, pattern, prefilter, _line = term
            where.append({"regex": {field: pattern}})
            plain.append(prefilter)
        else:
            plain.append(term)
    return Split(to_match(all_(*plain)), where)


def to_match(cond: Cond) -> dict[str, Any] | None:
    """The `match:` mapping of a condition without regex terms (None: every message)."""
    kind = cond[0]
    if kind == "T":
        return None
    if kind == "crit":
        return dict(cond[1])
    if kind == "re":
        raise Unconvertible(cond[4], "a test that needs a regular expression",
                            "mailrules applies a regex (where:) to a whole rule only, never inside "
                            "anyof or not (an elsif needs `not` of the tests before it unless the "
                            "branches before it end with stop)")
    if kind == "not":
        inner = to_match(cond[1])
        return {"not": inner if inner is not None else {}}
    if kind == "any":
        return {"any": [to_match(c) or {} for c in cond[1]]}
    if kind == "all":
        return _merged([to_match(c) or {} for c in cond[1]])
    raise Unconvertible(0, "a condition that is never true", "the rule can never act")


def _merged(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One mapping (keys mean AND) where the keys do not clash, else `all: [...]`."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key not in out:
                out[key] = value
            elif key == "header" and not set(out[key]) & set(value):
                out[key] = {**out[key], **value}
            else:
                return {"all": [p for p in parts if p]}
    return out


def has_regex(cond: Cond) -> bool:
    kind = cond[0]
    if kind == "re":
        return True
    if kind in ("all", "any"):
        return any(has_regex(c) for c in cond[1])
    return kind == "not" and has_regex(cond[1])


MAX_DISJUNCTS = 16  # a condition is not expanded into more rules than this


def disjuncts(cond: Cond) -> list[Cond]:
    """`cond` as an OR of conditions each convertible by `split` (regex terms only at their top
    level), for a rule written as several rules. Unconvertible for a regex under `not`, or when
    it would take more than MAX_DISJUNCTS rules."""
    if not has_regex(cond):
        return [cond]
    kind = cond[0]
    if kind == "re":
        return [cond]
    if kind == "any":
        out = [d for c in cond[1] for d in disjuncts(c)]
    elif kind == "all":
        out = [TRUE]
        for child in cond[1]:
            out = [all_(a, b) for a in out for b in disjuncts(child)]
            if len(out) > MAX_DISJUNCTS:
                break
    else:  # not over a regex
        raise Unconvertible(_first_line(cond), "a test that needs a regular expression, under not",
                            "mailrules applies a regex (where:) to a whole rule only, never under not: (an "
                            "elsif needs `not` of the tests before it unless the branches before it end with stop)")
    if len(out) > MAX_DISJUNCTS:
        raise Unconvertible(_first_line(cond), "a condition with many regular expressions under anyof",
                            f"it would take more than {MAX_DISJUNCTS} rules")
    return out


def _first_line(cond: Cond) -> int:
    if cond[0] == "re":
        return cond[4]
    children = cond[1] if cond[0] in ("all", "any") else (cond[1],) if cond[0] == "not" else ()
    return next((line for c in children if (line := _first_line(c))), 0)
