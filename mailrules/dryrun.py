"""What `mailrules run --dry-run` prints: one table per account and mailbox.

The pass collects, per rule, how many messages it would act on and a few samples
(`DryRunReport.add`, called by the IMAP pass where a real run would act); the engine renders
the report when the mailbox's pass ends (`DryRunReport.render`). Every rule that applies to
the mailbox is listed, 0 included, with the actions it would take (each action object
describes its argument: `mailrules.api.Action.describe`), so a rule that matches nothing is
visible, and the heading names the account and the mailbox, so a sweep of another folder is
told apart from the inbox.

One format for terminals, pipes and tests: plain text laid out by `rich` (no colour, no
markup read from messages, a fixed width), lines stripped of trailing blanks.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # rich is imported when a table is drawn: every run imports this module
    from rich.table import Table

from .model import Rule

SAMPLES = 3  # sample messages shown per rule: enough to recognise them, bounded for large mailboxes
WIDTH = 120  # the table's width: fixed, so that the output is the same on a terminal, a pipe, a test
FROM_CHARS = 40
SUBJECT_CHARS = 60


@dataclass
class RuleLine:
    """One rule's row: how many messages it would act on, and the first few of them."""

    rule: Rule
    count: int = 0
    samples: list[tuple[int, str, str]] = field(default_factory=list)  # (UID, From, Subject)


@dataclass
class DryRunReport:
    """The dry run of one mailbox of one account: its rules' rows and what the heading says.

    `scope` says which messages the rules ran over ("arrival rules over 3 new messages");
    `notes` are printed under the table (messages already processed, refused searches).
    """

    account: str
    mailbox: str
    rules: Sequence[Rule]
    actions: Mapping[str, Any]  # action name -> `mailrules.api.Action` (the registry's), each describes itself
    scope: str
    notes: list[str] = field(default_factory=list)
    lines: dict[str, RuleLine] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lines = {rule.name: RuleLine(rule) for rule in self.rules}

    def sample_uids(self, uids: Iterable[int]) -> list[int]:
        """The UIDs whose From and Subject `add` will show (the first few, UID order)."""
        return sorted(uids)[:SAMPLES]

    def add(self, rule: Rule, uids: Iterable[int], headers: Mapping[int, tuple[str, str]]) -> None:
        """The rule would act on `uids`; `headers` gives (From, Subject) of at least the samples."""
        uids = sorted(uids)
        line = self.lines.setdefault(rule.name, RuleLine(rule))
        line.count += len(uids)
        for uid in uids[:SAMPLES]:
            sender, subject = headers.get(uid, ("", ""))
            line.samples.append((uid, sender, subject))
        del line.samples[SAMPLES:]

    def actions_text(self, rule: Rule) -> str:
        """The rule's actions as logs show them (`move Done`, `add_keyword $CI`), in order."""
        return ", ".join(f"{c.name} {self.actions[c.name].describe(c.arg)}".strip() for c in rule.actions)

    def render(self, out: TextIO) -> None:
        """Print the heading, the table (or a line saying no rule applies) and the notes."""
        print(f"dry run: account {self.account!r}, mailbox {self.mailbox!r}: {self.scope}", file=out)
        if not self.lines:
            print("  no rule applies to this mailbox", file=out)
        else:
            for text in _table_lines(self._table()):
                print(f"  {text}", file=out)
        for note in self.notes:
            print(textwrap.fill(note, WIDTH, initial_indent="  ", subsequent_indent="  ",
                                break_long_words=False, break_on_hyphens=False), file=out)
        print(file=out)

    def _table(self) -> Table:
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, show_edge=False, pad_edge=False, header_style=None)
        table.add_column("rule", overflow="fold")
        table.add_column("messages", justify="right", no_wrap=True)
        table.add_column("would do / sample messages", overflow="fold")
        for line in self.lines.values():
            table.add_row(Text(line.rule.name), str(line.count), Text(self.actions_text(line.rule) or "-"))
            for uid, sender, subject in line.samples:
                sample = f"  UID {uid}  {_short(sender, FROM_CHARS)}  {_short(subject, SUBJECT_CHARS)!r}"
                table.add_row("", "", Text(sample))
            if line.count > len(line.samples):
                table.add_row("", "", Text(f"  ... and {line.count - len(line.samples)} more"))
        return table


def _table_lines(table: Table) -> list[str]:
    """The table as plain text lines: no colour, no terminal codes, no trailing blanks."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=WIDTH, color_system=None, force_terminal=False, no_color=True,
                      highlight=False, emoji=False, markup=False, legacy_windows=False)
    console.print(table)
    return [text.rstrip() for text in buffer.getvalue().splitlines()]


def _short(text: str, limit: int) -> str:
    """`text` on one line (white space and control characters made single spaces), at most `limit` chars."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def arrival_report(account: str, mailbox: str, rules: Sequence[Rule], actions: Mapping[str, Any], new: int,
                   retried: int) -> DryRunReport:
    """The report of an arrival pass (`run --dry-run`): its rules over the new (and retried) messages."""
    scope = f"arrival rules over {_count(new, 'new message')}"
    if retried:
        scope += f" and {_count(retried, 'message')} to retry"
    return DryRunReport(account, mailbox, rules, actions, scope)


def sweep_report(account: str, mailbox: str, rules: Sequence[Rule], actions: Mapping[str, Any],
                 total: int, *, kind: str | None = None) -> DryRunReport:
    """The report of a sweep (`run --sweep --dry-run`): scheduled rules over every message of the mailbox;
    with a `kind` (`mailrules apply`), the chosen rules over every message."""
    scope = f"sweep of the scheduled rules over the whole mailbox ({_count(total, 'message')})"
    if kind is not None:
        scope = f"{kind}: the chosen rules over every message of the mailbox ({_count(total, 'message')})"
    return DryRunReport(account, mailbox, rules, actions, scope)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def already_processed_note(count: int) -> str:
    """Why messages already in the mailbox are not in the table, and how to preview rules on them today."""
    verb = "is" if count == 1 else "are"
    return (f"{_count(count, 'message')} already processed by an earlier run {verb} not re-evaluated: a dry "
            "run shows what the rules would do to mail that is new since then. To preview the rules on every "
            "message in the mailbox, use `mailrules apply --dry-run`.")


__all__ = ["DryRunReport", "SAMPLES", "already_processed_note", "arrival_report", "sweep_report"]
