"""`mailrules import gmail FILE`: Gmail's filter export (mailFilters.xml) as mailrules rules.

Each `<entry>` is one filter: its `apps:property` elements give the criteria (from, to,
subject, hasTheWord, doesNotHaveTheWord, size) and the actions (label, shouldArchive,
shouldMarkAsRead, shouldStar, shouldTrash, ...). Gmail filters are independent: every filter
that matches acts, so the rules do not stop, and a filter that archives (label + archive is
`move:`, archive alone a move to --archive) is written after the others so that they still
see the message, as Gmail applies them all. Criteria are Gmail search expressions
(`gmail_query`); Gmail matches whole words where IMAP SEARCH (and mailrules) match
substrings, so a converted rule can match a little more than the filter did (docs/switching.md).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from .conditions import Cond, Unconvertible, all_, crit, not_, split
from .emit import Rule, Skipped
from .gmail_query import QueryError, parse_query

ATOM = "{http://www.w3.org/2005/Atom}"
APPS = "{http://schemas.google.com/apps/2006}"

_IGNORED = {"excludeChats", "sizeOperator", "sizeUnit"}  # chats are not mail; size parts read with size
_NO_EQUIVALENT = {
    "forwardTo": "mailrules never sends mail",
    "shouldNeverSpam": "Gmail's spam filter has no IMAP equivalent",
    "shouldSpam": "Gmail's spam filter has no IMAP equivalent (move it to your Junk folder by hand)",
    "shouldAlwaysMarkAsImportant": "Gmail's importance markers have no IMAP equivalent",
    "shouldNeverMarkAsImportant": "Gmail's importance markers have no IMAP equivalent",
    "smartLabelToApply": "Gmail's categories have no IMAP equivalent",
    "cannedResponse": "mailrules never sends mail",
    "hasAttachment": "IMAP SEARCH cannot test for attachments",
}
_SKIP_FILTER = {"hasAttachment"}  # criteria: without them the rule would act on more mail
_SIZE_UNITS = {"s_sb": 1, "s_skb": 1024, "s_smb": 1024 * 1024}


class GmailFormatError(Exception):
    """Not a Gmail filters export."""


def _line_numbers(text: str) -> list[int]:
    """The line of each <entry> (ElementTree keeps none)."""
    lines, pos = [], 0
    while (pos := text.find("<entry", pos)) >= 0:
        lines.append(text.count("\n", 0, pos) + 1)
        pos += 6
    return lines


def convert_gmail(text: str, *, archive: str = "Archive") -> tuple[list[Rule], list[Skipped]]:
    try:
        root = ET.fromstring(text)  # noqa: S314 - no entities are expanded by ElementTree's parser
    except ET.ParseError as exc:
        raise GmailFormatError(f"not XML (line {exc.position[0]}): {exc}") from None
    if root.tag != f"{ATOM}feed":
        raise GmailFormatError("not a Gmail filters export (expected an Atom <feed> of <entry> filters)")
    lines = _line_numbers(text)
    rules: list[Rule] = []
    archiving: list[Rule] = []
    skipped: list[Skipped] = []
    for index, entry in enumerate(root.iter(f"{ATOM}entry")):
        line = lines[index] if index < len(lines) else 0
        props = {p.get("name", ""): p.get("value", "") for p in entry.iter(f"{APPS}property")}
        rule = _filter(props, line, index + 1, archive, skipped)
        if rule is not None:
            (archiving if rule.leaves else rules).append(rule)
    return rules + archiving, skipped


def _filter(props: dict[str, str], line: int, number: int, archive: str, skipped: list[Skipped]) -> Rule | None:
    whole = False  # a criterion that cannot be converted: the rule would match more than the filter
    for name in props:
        if name in _NO_EQUIVALENT:
            whole |= name in _SKIP_FILTER
            skipped.append(Skipped(line, f"filter {number}: {name}", _NO_EQUIVALENT[name]
                                   + (" (the filter is not converted)" if name in _SKIP_FILTER else "")))
        elif name not in _IGNORED and name not in _CRITERIA and name not in _ACTIONS:
            whole = True
            skipped.append(Skipped(line, f"filter {number}: {name}", "not a filter property this importer knows "
                                   "(the filter is not converted)"))
    if whole:
        return None
    try:
        cond = _criteria(props, line)
        parts = split(cond)
    except (QueryError, Unconvertible) as exc:
        skipped.append(Skipped(line, f"filter {number}", str(exc)))
        return None
    actions = _actions(props, archive)
    leaves = _yes(props, "shouldTrash") or _yes(props, "shouldArchive")
    if not actions:
        if any(n in props for n in _ACTIONS):
            return None  # its only actions had no equivalent (reported above)
        skipped.append(Skipped(line, f"filter {number}", "it has no action"))
        return None
    words = [f"{k}: {props[k]}" for k in ("from", "to", "subject", "hasTheWord") if props.get(k)]
    name = f"gmail {number}: " + ("; ".join(words) or "every message")
    name = name if len(name) <= 70 else name[:67] + "..."
    return Rule(name, actions, parts.match, parts.where, comments=[f"Gmail filter {number} (line {line})"],
                leaves=leaves)


_CRITERIA = ("from", "to", "subject", "hasTheWord", "doesNotHaveTheWord", "size")


def _criteria(props: dict[str, str], line: int) -> Cond:
    parts: list[Cond] = []
    for field in ("from", "to", "subject"):
        if props.get(field):
            parts.append(parse_query(props[field], default=field, line=line))
    if props.get("hasTheWord"):
        parts.append(parse_query(props["hasTheWord"], default="text", line=line))
    if props.get("doesNotHaveTheWord"):
        parts.append(not_(parse_query(props["doesNotHaveTheWord"], default="text", line=line)))
    if props.get("size"):
        unit = _SIZE_UNITS.get(props.get("sizeUnit", "s_smb"), 1024 * 1024)
        op = "smaller" if props.get("sizeOperator") == "s_ss" else "larger"
        parts.append(crit({op: int(props["size"]) * unit}))
    return all_(*parts)


_ACTIONS = ("label", "shouldArchive", "shouldMarkAsRead", "shouldStar", "shouldTrash")


def _yes(props: dict[str, str], name: str) -> bool:
    return props.get(name, "").lower() == "true"


def _actions(props: dict[str, str], archive: str) -> list[Any]:
    def yes(name: str) -> bool:
        return _yes(props, name)

    actions: list[Any] = []
    if yes("shouldMarkAsRead"):
        actions.append("seen")
    if yes("shouldStar"):
        actions.append("flag")
    label = props.get("label", "")
    if yes("shouldTrash"):
        if label:
            actions.append({"copy": label})
        actions.append("trash")
    elif yes("shouldArchive"):
        actions.append({"move": label or archive})
    elif label:
        actions.append({"copy": label})
    return actions
