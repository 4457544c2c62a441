"""`mailrules suggest ACCOUNT`: propose rules that reproduce how the user filed their mail.

Reads headers only: each folder is opened with EXAMINE (nothing changes, not even \\Seen) and
its From and List-Id fields are fetched with one batched `UID FETCH BODY.PEEK[HEADER.FIELDS
(FROM LIST-ID)]`. `mailrules.learning` chooses the values and measures each proposed rule
with the local evaluator. The proposals are printed as a rules-file snippet (`rules:` items,
each with a comment giving its coverage and precision); the rules file and the mailboxes are
never changed. Special-use folders (Sent, Drafts, Trash, Junk, All) are not learnt from.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TextIO

import yaml

from .learning import Proposal, Seen, propose
from .local_search import matches
from .model import Config, FolderRef
from .wording import in_words

log = logging.getLogger("mailrules.suggest")

EXIT_OK, EXIT_FAILED, EXIT_BAD = 0, 1, 2
HEADER_ITEM = "BODY.PEEK[HEADER.FIELDS (FROM LIST-ID)]"
SKIP_FOLDERS = {b"\\Sent", b"\\Drafts", b"\\Trash", b"\\Junk", b"\\All", b"\\Flagged", b"\\Noselect",
                b"\\NonExistent"}
PROGRESS_FROM = 5000  # messages: a progress line/bar from this size on


def suggest_command(config: Config, args: argparse.Namespace, out: TextIO | None = None,
                    err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if args.account not in config.accounts:
        print(f"mailrules: no account named {args.account!r} in {config.path}", file=err)
        return EXIT_BAD
    if args.min_messages < 1:
        print("mailrules: --min-messages must be at least 1", file=err)
        return EXIT_BAD
    from .connect import ConnectError, connect
    from .imap.session import ImapSession

    account = config.accounts[args.account]
    try:
        session = ImapSession(connect(account), account.name)
    except ConnectError as exc:
        print(f"mailrules: {exc}", file=err)
        return EXIT_FAILED
    try:
        messages, folders = read_account(session, args.source, args.folders)
    except Exception as exc:  # noqa: BLE001 - a server refusal or a lost connection: said, exit 1
        print(f"mailrules: {args.account}: {in_words(exc)}", file=err)
        return EXIT_FAILED
    finally:
        session.logout()
    explained = already_filed(config, args.account, messages)
    proposals = propose(messages, [f for f in folders if f != args.source], min_messages=args.min_messages,
                        explained=explained)
    write_proposals(proposals, config, args, len(messages), len(folders), out)
    return EXIT_OK


def read_account(session, source: str, only: list[str] | None) -> tuple[list[Seen], list[str]]:
    """Every message's From/List-Id of the source mailbox and the filing folders (paths with '/')."""
    prefix, sep = session.namespace()
    folders: list[tuple[str, str]] = []  # (path, server name)
    for flags, _sep, name in session.client.list_folders():
        name = name.decode() if isinstance(name, bytes) else name
        if SKIP_FOLDERS & {f if isinstance(f, bytes) else f.encode() for f in flags}:
            continue
        path = name[len(prefix):] if prefix and name.startswith(prefix) else name
        path = path.replace(sep, "/") if sep else path
        if path.upper() == "INBOX":
            path = "INBOX"
        if path == source or only is None or path in only:
            folders.append((path, name))
    if source not in {p for p, _ in folders}:
        folders.append((source, session.server_name(source)))
    counts = {}
    for path, name in folders:
        counts[path] = session.client.folder_status(name, ["MESSAGES"]).get(b"MESSAGES", 0)
    total = sum(counts.values())
    progress = None
    if total >= PROGRESS_FROM:
        from .progress import CatchUp

        progress = CatchUp(session.account, "(headers of every folder, for suggest)", total)
    messages: list[Seen] = []
    try:
        for path, name in folders:
            if not counts[path]:
                continue
            messages.extend(_read_folder(session, path, name))
            if progress is not None:
                progress.advance(counts[path])
    finally:
        if progress is not None:
            progress.finish()
    return messages, [p for p, _ in folders]


def _read_folder(session, path: str, name: str) -> list[Seen]:
    from .uidset import UidSet

    session.select(name, readonly=True)  # EXAMINE
    uids = UidSet(session.client.search(["ALL"]))
    found = []
    for _uid, data in session.fetch(uids, [HEADER_ITEM]):
        raw = next((v for k, v in data.items() if isinstance(k, bytes) and k.startswith(b"BODY[")), b"") or b""
        found.append(Seen.from_headers(path, raw))
    session.unselect()
    return found


def already_filed(config: Config, account: str, messages: list[Seen]) -> dict[str, set[int]]:
    """Per folder, the messages an existing rule of the account moves or copies there."""
    out: dict[str, set[int]] = {}
    for rule in config.rules:
        if rule.account not in (None, account) or rule.schedule is not None:
            continue
        targets = {str(call.arg) for call in rule.actions if isinstance(call.arg, FolderRef)}
        for index, seen in enumerate(messages):
            if seen.folder in targets:
                try:
                    if matches(rule.match, seen.message):
                        out.setdefault(seen.folder, set()).add(index)
                except Exception:  # noqa: BLE001 - criteria only the server decides (raw): not counted
                    continue
    return out


def write_proposals(proposals: list[Proposal], config: Config, args: argparse.Namespace, n_messages: int,
                    n_folders: int, out: TextIO) -> None:
    names = {r.name for r in config.rules}
    out.write(f"# Proposed by `mailrules suggest {args.account}` from the headers of {n_messages} messages in "
              f"{n_folders} folders.\n# Review them; copy the ones you want into the rules: list of "
              f"{config.path}. Nothing was changed.\n")
    if not proposals:
        out.write("# No folder is explained by a List-Id, sender or domain (or existing rules already do).\n")
        return
    out.write("rules:\n")
    for proposal in proposals:
        name = f"filed into {proposal.folder}"
        while name in names:
            name += " (suggested)"
        names.add(name)
        share = proposal.covered / max(proposal.folder_size, 1)
        out.write(f"  # covers {proposal.covered} of the {proposal.folder_size} messages in {proposal.folder} "
                  f"({share:.0%}); would take {proposal.wrong} message(s) from elsewhere "
                  f"(precision {proposal.precision:.1%})\n")
        rule = {"name": name, "account": args.account, "mailbox": args.source, "match": proposal.match(),
                "actions": [{"move": proposal.folder}]}
        text = yaml.safe_dump([rule], sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
        out.write("".join(f"  {line}\n" for line in text.splitlines()) + "\n")


