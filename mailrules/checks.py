"""`mailrules check --connect`: log in to each account and check what the rules need."""

from __future__ import annotations

from typing import TextIO

from .model import Config, FolderRef
from .plugins import Registry
from .session import ImapSession

IMPORTANT = ("MOVE", "UIDPLUS", "IDLE", "ESEARCH", "WITHIN", "SPECIAL-USE", "NOTIFY", "CONDSTORE")


def check_accounts(config: Config, registry: Registry, *, out: TextIO) -> int:
    """Returns 0 when every account was reachable and every check passed, else 1."""
    from .connect import connect

    failed = False
    for account in config.accounts.values():
        try:
            session = ImapSession(connect(account), account.name)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next account
            print(f"account {account.name}: FAILED to connect: {exc}", file=out)
            failed = True
            continue
        try:
            failed |= not _check_account(config, account.name, session, out)
        finally:
            session.logout()
    return 1 if failed else 0


def _check_account(config: Config, name: str, session: ImapSession, out: TextIO) -> bool:
    ok = True
    account = config.accounts[name]
    have = [c for c in IMPORTANT if session.has(c)]
    missing = [c for c in IMPORTANT if not session.has(c)]
    print(f"account {name}: connected to {account.host}:{account.port} as {account.username}", file=out)
    print(f"  capabilities: {' '.join(have) or '-'}; missing: {' '.join(missing) or '-'}", file=out)
    if not session.has("UIDPLUS"):
        print("  warning: no UIDPLUS: moves without MOVE and deletes leave messages marked \\Deleted", file=out)
    if not session.has("IDLE"):
        print("  note: no IDLE: the daemon will poll", file=out)
    rules = [r for r in config.rules if r.account in (None, name) and r.enabled]
    for mailbox in account.watch:
        server = session.server_name(mailbox)
        if not session.folder_exists(server):
            print(f"  mailbox {mailbox}: MISSING on the server (watched)", file=out)
            ok = False
            continue
        sel = session.select(server, readonly=True)
        keyword_rules = [
            r.name for r in rules
            if r.applies_to(name, mailbox, account.watch)
            and any(a.name in ("add_keyword", "remove_keyword") for a in r.actions)
        ]
        kw = "yes" if sel.can_store_keyword("$MailrulesProbe") else "NO"
        print(f"  mailbox {mailbox} ({server}): {sel.exists} messages, UIDVALIDITY {sel.uidvalidity}, "
              f"keywords: {kw}", file=out)
        if kw == "NO" and keyword_rules:
            print(f"    error: rules {', '.join(map(repr, keyword_rules))} set keywords, which this mailbox "
                  "cannot store", file=out)
            ok = False
    for rule in rules:
        for call in rule.actions:
            if isinstance(call.arg, FolderRef) and call.arg.account in (None, name):
                server = session.server_name(call.arg.path)
                if not session.folder_exists(server):
                    print(f"  rule {rule.name!r}: folder {call.arg.path} does not exist yet (created on first "
                          "use)", file=out)
            if call.name == "trash" and session.find_trash() is None:
                print(f"  rule {rule.name!r}: error: no Trash mailbox on this server", file=out)
                ok = False
    return ok
