"""Sieve tests (RFC 5228 `header`, `address`, `exists`, `size`, `allof`, `anyof`, `not`, `true`,
`false`; match types `:contains`, `:is`, `:matches`, `:regex`) as importer conditions.

Sieve compares with `i;ascii-casemap` unless told otherwise: case-insensitive, like IMAP
SEARCH, so `:contains` becomes a plain `header:` criterion. `:is`, `:matches` (a glob, turned
into an anchored regex) and `:regex` have no IMAP SEARCH equivalent: they become a `where:`
regex on the header (case-insensitive, `(?i)`, unless the comparator is `i;octet`), with a
substring criterion the server checks first. `address` tests become regexes over the address
tokens of the header (the local part, the domain or the whole address, as the test's
address part says).
"""

from __future__ import annotations

import re
from typing import Any

from .conditions import FALSE, TRUE, Cond, Unconvertible, all_, any_, crit, not_, regex

# characters that end an address token in a header value ("Name" <a@b>, c@d (comment))
_SEP = r'\s<>(),;:"'
_TOKEN = f"[^{_SEP}]"
_LOCAL = f"[^{_SEP}@]"


def unquote(value: Any) -> Any:
    """sievelib keeps strings as written ("a\\"b", text:...); the string's value, or a list of them."""
    if isinstance(value, list):
        return [unquote(v) for v in value]
    text = str(value)
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return re.sub(r"\\(.)", r"\1", text[1:-1], flags=re.S)
    if text.startswith("text:"):
        body = text.split("\n", 1)[1] if "\n" in text else ""
        body = re.sub(r"\r?\n\.\r?$", "\n", body)
        return re.sub(r"(?m)^\.\.", ".", body)
    return text


def strings(value: Any) -> list[str]:
    got = unquote(value)
    return got if isinstance(got, list) else [got]


def header_name(name: str) -> str:
    """A header name as people write it (list-id -> List-Id): Sieve and IMAP ignore its case."""
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


def size_bytes(value: Any) -> int:
    text = str(value).strip().upper()
    factor = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
    return int(text[:-1] if factor > 1 else text) * factor


def glob_regex(glob: str, star: str = ".*", one: str = ".") -> str:
    """A Sieve :matches pattern (* any run, ? one character, \\ quotes) as a regex body."""
    out, i = [], 0
    while i < len(glob):
        ch = glob[i]
        if ch == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
            continue
        out.append(star if ch == "*" else one if ch == "?" else re.escape(ch))
        i += 1
    return "".join(out)


def _glob_literal(glob: str) -> str:
    """The longest run of the glob without wildcards (what any match contains)."""
    parts = re.split(r"(?<!\\)[*?]", glob)
    return max((p.replace("\\", "") for p in parts), key=len, default="")


def _has_variables(keys: list[str]) -> bool:
    return any("${" in k for k in keys)


def merge_regexes(terms: list[Cond]) -> Cond:
    """Several keys of one header: regex terms joined into one alternation (a `where:` cannot OR)."""
    regexes = [t for t in terms if t[0] == "re"]
    if len(regexes) < 2:
        return any_(*terms)
    flags = re.match(r"(\(\?[a-z]+\))*", regexes[0][2]).group(0)
    if any(not t[2].startswith(flags) or re.match(r"\(\?[a-z]+\)", t[2][len(flags):]) for t in regexes):
        return any_(*terms)
    field, line = regexes[0][1], regexes[0][4]
    pattern = flags + "|".join(f"(?:{t[2][len(flags):]})" for t in regexes)
    prefilter = any_(*(t[3] for t in regexes))
    others = [t for t in terms if t[0] != "re"]
    return any_(*others, regex(field, pattern, prefilter, line))


class TestConverter:
    """Turns one sievelib test command (and its sub-tests) into a condition."""

    def __init__(self, line_of) -> None:
        self.line_of = line_of

    def convert(self, test: Any) -> Cond:
        name = test.name
        line = self.line_of(test)
        if name == "true":
            return TRUE
        if name == "false":
            return FALSE
        if name == "not":
            return not_(self.convert(test.arguments["test"]))
        if name in ("allof", "anyof"):
            parts = [self.convert(t) for t in test.arguments["tests"]]
            return all_(*parts) if name == "allof" else any_(*parts)
        if name == "exists":
            names = strings(test.arguments["header-names"])
            return all_(*(crit({"header": {header_name(h): ""}}) for h in names))
        if name == "size":
            op = "larger" if test.arguments["comparator"] == ":over" else "smaller"
            return crit({op: size_bytes(test.arguments["limit"])})
        if name in ("header", "address"):
            return self._compare(test, line)
        raise Unconvertible(line, f"the test {name!r}", _WHY_NOT.get(name, "no mailrules equivalent"))

    def _compare(self, test: Any, line: int) -> Cond:
        args = test.arguments
        match_type = args.get("match-type", ":is")
        if match_type in (":count", ":value"):
            raise Unconvertible(line, f"{test.name} {match_type}", "relational comparisons have no mailrules "
                                "equivalent (IMAP SEARCH cannot count or compare header values)")
        comparator = unquote(test.extra_arguments.get("comparator", '"i;ascii-casemap"'))
        names = [header_name(n) for n in strings(args.get("header-names", args.get("header-list")))]
        keys = strings(args["key-list"])
        if _has_variables(keys + names):
            raise Unconvertible(line, f"{test.name} with ${{...}}", "variables have no mailrules equivalent")
        fold = comparator != "i;octet"
        if test.name == "address":
            part = args.get("address-part", ":all")
            if match_type == ":regex":
                raise Unconvertible(line, "address :regex", "a regex on one part of an address cannot be "
                                    "written as a regex over the header (use header :regex)")
            return any_(*(merge_regexes([self._address(n, k, part, match_type, fold, line) for k in keys])
                          for n in names))
        return any_(*(merge_regexes([self._header(n, k, match_type, fold, line) for k in keys]) for n in names))

    @staticmethod
    def _header(name: str, key: str, match_type: str, fold: bool, line: int) -> Cond:
        flags = "(?i)" if fold else ""
        if match_type == ":matches":
            inner = key.strip("*")
            if key.startswith("*") and key.endswith("*") and not re.search(r"[*?\\]", inner):
                match_type, key = ":contains", inner  # "*text*" is :contains
            elif not re.search(r"[*?\\]", key):
                match_type = ":is"
        exists = crit({"header": {name: ""}})
        if match_type == ":contains" and fold:
            return crit({"header": {name: key}})
        if match_type == ":contains":
            return regex(name, re.escape(key), crit({"header": {name: key}}), line)
        if match_type == ":is":
            pre = crit({"header": {name: key}}) if key else exists
            return regex(name, f"{flags}^{re.escape(key)}$", pre, line)
        if match_type == ":matches":
            literal = _glob_literal(key)
            pre = crit({"header": {name: literal}}) if literal else exists
            return regex(name, f"{flags}(?s)^{glob_regex(key)}$", pre, line)
        return regex(name, f"{flags}{key}", exists, line)  # :regex (POSIX ERE; the regex module reads it)

    @staticmethod
    def _address(name: str, key: str, part: str, match_type: str, fold: bool, line: int) -> Cond:
        flags = "(?i)" if fold else ""
        before, after = f"(?<!{_TOKEN})", f"(?!{_TOKEN})"
        body = glob_regex(key, f"{_TOKEN}*", _TOKEN) if match_type == ":matches" else re.escape(key)
        exact = match_type in (":is", ":matches")
        if part == ":localpart":
            pattern = (f"(?<!{_LOCAL}){body}@" if exact else f"{body}{_LOCAL}*@")
        elif part == ":domain":
            pattern = f"@{body}(?!{_LOCAL})" if exact else f"@{_LOCAL}*{body}"
        elif exact:
            pattern = f"{before}{body}{after}"
        else:
            pattern = f"{before}(?={_TOKEN}*@){_TOKEN}*{body}"
        literal = _glob_literal(key) if match_type == ":matches" else key
        pre = crit({"header": {name: literal}}) if literal else crit({"header": {name: ""}})
        return regex(name, flags + pattern, pre, line)


_WHY_NOT = {
    "envelope": "the SMTP envelope is not part of a message stored on an IMAP server",
    "body": "the Sieve body extension is not converted (write a `body:` criterion by hand)",
    "hasflag": "flags set earlier in the script are not tested by converted rules",
    "date": "date tests are not converted (use sent_before/sent_since by hand)",
    "currentdate": "the current date is not a message property (use a schedule: by hand)",
    "environment": "the delivery environment does not exist on an IMAP server",
    "string": "variables have no mailrules equivalent",
}
