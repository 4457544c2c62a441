"""The built-in `regex` predicate and the built-in actions, registered like any plugin.

The built-in actions are carried out by `mailrules.actions` (they need server-side
batching that plugin actions do not); here they are declared so that the rules file is
validated and `mailrules plugins` lists them through one registry.
"""

from __future__ import annotations

from typing import Any

from .criteria import unsendable
from .model import FolderRef
from .plugins import Action, Predicate, hookimpl
from .predicates import parse_regex_args, regex_needs, regex_prefilter, regex_test

SYSTEM_FLAGS = {
    "\\seen": "\\Seen",
    "\\answered": "\\Answered",
    "\\flagged": "\\Flagged",
    "\\draft": "\\Draft",
    "\\deleted": "\\Deleted",
}

_ATOM_SPECIALS = set('(){ %*"\\]') | {chr(c) for c in range(0, 32)} | {chr(127)}


def parse_system_flags(value: Any, action: str = "add_flag") -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("expected a system flag such as \\Answered, or a list of them")
    out = []
    for v in values:
        if not isinstance(v, str) or v.lower() not in SYSTEM_FLAGS:
            raise ValueError(
                f"expected a system flag (\\Seen, \\Answered, \\Flagged, \\Draft), got {v!r}; "
                "keywords go in add_keyword/remove_keyword"
            )
        flag = SYSTEM_FLAGS[v.lower()]
        if flag == "\\Deleted":
            raise ValueError(f"{action}: \\Deleted is refused: use the 'delete' action")
        out.append(flag)
    return tuple(out)


def parse_keywords(value: Any) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("expected a keyword such as $Dev, or a list of them")
    out = []
    for v in values:
        if not isinstance(v, str) or not v or v.startswith("\\") or any(c in _ATOM_SPECIALS for c in v):
            raise ValueError(
                f"expected a keyword (an IMAP atom such as $Dev or Work, no spaces, no backslash), got {v!r}"
            )
        if any(ord(c) > 126 for c in v):
            raise ValueError(f"keywords must be ASCII, got {v!r}")
        out.append(v)
    return tuple(out)


def parse_folder(value: Any) -> FolderRef:
    """A folder written 'A/B' or 'account:A/B'; the loader resolves the account part."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a folder name such as Lists/dev (or account:Folder)")
    if value.startswith("/") or value.endswith("/") or "//" in value:
        raise ValueError(f"expected a folder name with '/' between levels, got {value!r}")
    problem = unsendable(value)  # a CR LF inside the pipelined LIST aborted the session on every run
    if problem:
        raise ValueError(f"{problem}, got {value!r}")
    return FolderRef(path=value)


def _fixed(flag: str):
    def parse(value: Any) -> tuple[str, ...]:
        if value is not None:
            raise ValueError("takes no argument (write it as a bare word)")
        return (flag,)

    return parse


@hookimpl
def mailrules_predicates():
    return [
        Predicate(
            name="regex",
            description="Python regular expression on a header, subject, from_address or the body text",
            test=regex_test,
            parse=parse_regex_args,
            needs=regex_needs,
            prefilter=regex_prefilter,
        )
    ]


@hookimpl
def mailrules_actions():
    return [
        Action("flag", "set \\Flagged", parse=_fixed("\\Flagged"), builtin=True),
        Action("unflag", "clear \\Flagged", parse=_fixed("\\Flagged"), builtin=True),
        Action("seen", "set \\Seen", parse=_fixed("\\Seen"), builtin=True),
        Action("unseen", "clear \\Seen", parse=_fixed("\\Seen"), builtin=True),
        Action("add_flag", "set system flags", parse=parse_system_flags, builtin=True),
        Action("remove_flag", "clear system flags", parse=lambda v: parse_system_flags(v, "remove_flag"),
               builtin=True),
        Action("add_keyword", "set keywords", parse=parse_keywords, builtin=True),
        Action("remove_keyword", "clear keywords", parse=parse_keywords, builtin=True),
        Action("copy", "copy to a folder (created if missing)", parse=parse_folder, builtin=True),
        Action("move", "move to a folder (created if missing)", parse=parse_folder, terminal=True, builtin=True),
        Action("trash", "move to the Trash mailbox", terminal=True, builtin=True),
        Action("delete", "mark \\Deleted and UID EXPUNGE", terminal=True, builtin=True),
    ]
