"""Each subcommand's `--help`: a description (what it does, and when to use it) and examples.

Why a module of its own: the words are long and change more often than the options; cli.py
registers the options, this module adds the prose afterwards (`describe_subcommands`), without
overriding a description a subcommand's own registration already gives (e.g. `init`).
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

HELP: dict[str, tuple[str, str]] = {
    "run": (
        "The daemon: catch up on what arrived since the last run (the first run processes what is already "
        "there, unless --since-now), then watch the mailboxes (IDLE, else polling) and run the scheduled "
        "sweeps. --once catches up and exits; --dry-run changes nothing and prints what each rule would do.",
        "examples:\n"
        "  mailrules run --once --dry-run            preview: what each rule would do now\n"
        "  mailrules run --once                      catch up once, then exit (e.g. from cron)\n"
        "  mailrules run --once --sweep --rule 'old newsletters'   one scheduled rule, now\n"
        "  mailrules run                             the daemon (Ctrl-C or SIGTERM stops it)",
    ),
    "check": (
        "Validate the rules file offline: its keys and values, plugins, cron expressions, with file:line for "
        "each problem. --connect also logs in to each account and checks folders and capabilities.",
        "examples:\n"
        "  mailrules check\n"
        "  mailrules check --connect -c ~/mail/rules.yaml",
    ),
    "status": (
        "Per account and mailbox: the progress kept in the state directory, pending and given-up messages, "
        "the last error, the next sweeps. Reads the state only; works while the daemon runs.",
        "examples:\n"
        "  mailrules status\n"
        "  mailrules status --state ./tour-state -c tour.yaml",
    ),
    "plugins": (
        "The installed plugins (entry points in the group 'mailrules'), with the predicates and actions "
        "each provides, and any plugin that failed to load.",
        "example:\n"
        "  mailrules plugins",
    ),
    "test": (
        "Offline, no server: which rules match which messages (.eml files, mbox files, Maildirs), evaluated "
        "locally with IMAP SEARCH semantics; without MESSAGES, run the rules file's tests: cases.",
        "examples:\n"
        "  mailrules test                          the rules file's tests:\n"
        "  mailrules test ~/exported/Inbox.mbox    what the rules would do to each message\n"
        "  mailrules test --rule 'dev list' message.eml",
    ),
    "explain": (
        "For one message on the server (its account, mailbox and UID): each rule in order, whether it "
        "matched, and which criterion or predicate decided. Changes nothing.",
        "example:\n"
        "  mailrules explain personal INBOX 4711",
    ),
    "demo": (
        "The example rules at work on a throwaway Dovecot on 127.0.0.1, filled with sample mail; needs no "
        "server and no configuration, exits by itself. --keep leaves the server running for your own rules "
        "(the rules file it writes is kept in ~/.config/mailrules/demo); --load puts your own mail into it.",
        "examples:\n"
        "  mailrules demo\n"
        "  mailrules demo --keep --port 14300\n"
        "  mailrules demo --load ~/exported/Inbox.mbox --load ~/Maildir",
    ),
    "suggest": (
        "Proposed rules that reproduce how you filed your mail by hand: for each folder, the header values "
        "its messages share, with coverage and precision. Reads headers only; changes nothing.",
        "examples:\n"
        "  mailrules suggest personal\n"
        "  mailrules suggest personal --from INBOX --folders Lists/dev Receipts --min-messages 5",
    ),
    "import": (
        "A Sieve script or a Gmail filters export (mailFilters.xml) as a mailrules rules file on stdout; "
        "what cannot be converted is listed with its line (exit 1). Offline; needs no rules file.",
        "examples:\n"
        "  mailrules import sieve ~/sieve/filter.sieve > from-sieve.yaml\n"
        "  mailrules import gmail mailFilters.xml --rules-only > gmail-rules.yaml",
    ),
    "apply": (
        "Run the chosen rules (default: every arrival rule) over the messages already in the mailboxes "
        "(default: the watched ones): the plan first, then a question on a terminal (--yes skips it). "
        "Each run gets an id that `mailrules undo` takes.",
        "examples:\n"
        "  mailrules apply --rule 'file lists' --dry-run   the plan: per rule, count, actions, samples\n"
        "  mailrules apply --rule 'file lists' --yes       do it; prints the run's id",
    ),
    "undo": (
        "Reverse what one run did (moves, trash, copies, flags, keywords), from the journal: a run's id, "
        "or --last. --dry-run shows what would be reversed.",
        "examples:\n"
        "  mailrules undo --last --dry-run\n"
        "  mailrules undo RUN --yes",
    ),
    "history": (
        "What mailrules did, per message and action (or per run with --runs), from the journal kept in "
        "the state directory.",
        "examples:\n"
        "  mailrules history --runs\n"
        "  mailrules history --rule 'dev list' --since 7d --format json",
    ),
    "login": (
        "Store an account's password in the system keyring (for an account with 'keyring: true'); asks "
        "for it without echoing it.",
        "example:\n"
        "  mailrules login personal",
    ),
}


def describe_subcommands(subparsers: Any) -> None:
    """Give each subcommand without one a description and examples (shown by `--help`)."""
    for name, parser in subparsers.choices.items():
        description, epilog = HELP.get(name, (None, None))
        if description and not parser.description:
            parser.description = textwrap.fill(description, 100)
        if epilog and not parser.epilog:
            parser.epilog = epilog
            parser.formatter_class = argparse.RawDescriptionHelpFormatter
