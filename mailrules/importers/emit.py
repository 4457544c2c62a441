"""Write imported rules as a rules file: commented YAML that `mailrules check` accepts.

The output is a whole rules file (version, a placeholder account, rules), so that
`mailrules check -c FILE` and `mailrules test -c FILE` work on it as it is; the account is
the one thing the user must fill in. With `rules_only` it is an include file instead
(`rules:` only), for `include:` in an existing rules file that has the accounts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TextIO

import yaml

PLACEHOLDER_ACCOUNT = """\
accounts:
  # A placeholder: replace it with your server and login (see README, "Accounts").
  mail:
    host: imap.example.com
    username: me@example.com
    password_command: pass show mail/imap
"""


@dataclass
class Rule:
    """One rule as a rules file writes it: match/where/actions are YAML-ready values."""

    name: str
    actions: list[Any]
    match: dict[str, Any] | None = None
    where: list[dict[str, Any]] = field(default_factory=list)
    stop: bool = False
    comments: list[str] = field(default_factory=list)
    leaves: bool = False  # the last action takes the message out of the mailbox (stop is implied)

    def mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.match:
            out["match"] = self.match
        if self.where:
            out["where"] = self.where
        out["actions"] = self.actions
        if self.stop and not self.leaves:
            out["stop"] = True
        return out


@dataclass(frozen=True)
class Skipped:
    """A construct that was not converted: where it was, what it was, and why."""

    line: int
    what: str
    why: str


def unique_names(rules: list[Rule]) -> None:
    """Rule names must be unique in a rules file: later duplicates get ' (2)', ' (3)'..."""
    seen: dict[str, int] = {}
    for rule in rules:
        base = rule.name
        if base in seen:
            seen[base] += 1
            rule.name = f"{base} ({seen[base]})"
        else:
            seen[base] = 1


def write_rules(rules: list[Rule], source: str, kind: str, out: TextIO, *, rules_only: bool = False) -> None:
    """The rules file text on `out`: a header saying where it came from, then each rule."""
    unique_names(rules)
    out.write(f"# Converted by `mailrules import {kind}` from {source}.\n")
    out.write("# Review it, then run `mailrules check` and `mailrules test` (see docs/switching.md).\n")
    if not rules_only:
        out.write("version: 1\n\n" + PLACEHOLDER_ACCOUNT)
    out.write("\nrules:\n" if rules else "\nrules: []\n")
    for rule in rules:
        for comment in rule.comments:
            out.write(f"  # {comment}\n")
        text = yaml.safe_dump([rule.mapping()], sort_keys=False, allow_unicode=True, default_flow_style=False,
                              width=100)
        out.write("".join(f"  {line}\n" for line in text.splitlines()))
        out.write("\n")


def report_skipped(skipped: list[Skipped], source: str, err: TextIO) -> None:
    for item in sorted(skipped, key=lambda s: s.line):
        where = f"{source}:{item.line}" if item.line else source
        err.write(f"{where}: not converted: {item.what}: {item.why}\n")
    if skipped:
        err.write(f"mailrules: {len(skipped)} construct(s) not converted (listed above); "
                  "the rules written do not include them\n")
