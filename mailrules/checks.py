"""`mailrules check --connect`: log in to each account and check what the rules need.

What it reports must match what a real run would meet, without changing anything:
- keywords are judged from SELECT's PERMANENTFLAGS, as the real run sees them (a read-only
  EXAMINE gets `PERMANENTFLAGS ()` from Dovecot, which says nothing about what SELECT allows).
  SELECT modifies nothing by itself: no STORE is sent, and the mailbox is left with UNSELECT
  (or by the next SELECT, or LOGOUT), never CLOSE, which would expunge \\Deleted messages.
  mailrules does not use \\Recent, which a SELECT may take from other clients.
- every folder that any rule names is checked: watched mailboxes, the `mailbox:` of arrival and
  scheduled rules, and move/copy destinations, cross-account ones on their own account;
- a folder name that cannot exist on this server (a level containing its separator) is a
  reported problem with the rule and its file:line, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TextIO

from imapclient.exceptions import IMAPClientError

from .imap.session import ImapSession
from .model import ActionCall, Config, FolderRef, Location, Rule
from .plugins import Registry

IMPORTANT = ("MOVE", "UIDPLUS", "IDLE", "ESEARCH", "WITHIN", "SPECIAL-USE", "NOTIFY", "CONDSTORE")


@dataclass
class _Source:
    """A mailbox that rules read in one account: watched, and/or named by rules' `mailbox:`."""

    path: str
    watched: bool = False
    rules: list[Rule] = field(default_factory=list)


@dataclass
class _Destination:
    """A move/copy destination in one account and the actions that name it."""

    ref: FolderRef
    uses: list[tuple[Rule, Location]] = field(default_factory=list)


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
            failed |= not _check_account(config, registry, account.name, session, out)
        except IMAPClientError as exc:  # a connection lost mid-check: report, go on
            print(f"  error: the check of account {account.name} stopped: {exc}", file=out)
            failed = True
        finally:
            session.logout()
    return 1 if failed else 0


def _rule_where(rule: Rule, location: Location | None = None) -> str:
    return f"rule {rule.name!r} ({location or rule.location})"


def sources_of(config: Config, account: str) -> list[_Source]:
    """Every mailbox the rules read in `account`: watched ones first, then rules' `mailbox:`."""
    acct = config.accounts[account]
    found: dict[str, _Source] = {}
    for mailbox in acct.watch:
        found.setdefault(mailbox, _Source(mailbox)).watched = True
    for rule in config.rules:
        if not rule.enabled or rule.account not in (None, account):
            continue
        for mailbox in rule.mailboxes if rule.mailboxes is not None else acct.watch:
            found.setdefault(mailbox, _Source(mailbox)).rules.append(rule)
    return list(found.values())


def destinations_in(config: Config, registry: Registry, account: str) -> list[_Destination]:
    """Every folder in `account` that actions put messages in (`Action.destinations`), from the
    rules of any account."""
    found: dict[str, _Destination] = {}
    for rule in config.rules:
        if not rule.enabled:
            continue
        for call in rule.actions:
            for ref in registry.actions[call.name].destinations(call.arg):
                target = ref.account or rule.account  # None: the rule runs (and files) in every account
                if target in (None, account):
                    found.setdefault(str(ref), _Destination(ref)).uses.append((rule, call.location))
    return list(found.values())


def _server_name(session: ImapSession, path: str) -> str | None:
    """The server's name for `path`, or None when no folder can have that name on this server."""
    return None if server_name_problem(session, path) else session.server_name(path)


def server_name_problem(session: ImapSession, path: str) -> str | None:
    """Why `path` names no folder on this server (the form to write, when it is the server's own), or None."""
    try:
        session.server_name(path)
    except ValueError as exc:  # a level contains the server's separator
        return str(exc)
    return None


def _requiring(registry: Registry, rule: Rule, what: str) -> list[ActionCall]:
    """The rule's actions that require `what` of the mailbox (`Action.requires`)."""
    return [call for call in rule.actions if what in registry.actions[call.name].requires(call.arg)]


def _check_account(config: Config, registry: Registry, name: str, session: ImapSession, out: TextIO) -> bool:
    ok = True
    account = config.accounts[name]
    have = [c for c in IMPORTANT if session.has(c)]
    missing = [c for c in IMPORTANT if not session.has(c)]
    print(f"account {name}: connected to {account.host}:{account.port} as {account.username}", file=out)
    print(f"  capabilities: {' '.join(have) or '-'}; missing: {' '.join(missing) or '-'}", file=out)
    prefix, separator = session.namespace()
    print(f"  folders: separator {separator!r}, namespace prefix {prefix!r}", file=out)
    if not session.has("UIDPLUS"):
        print("  warning: no UIDPLUS: moves without MOVE and deletes leave messages marked \\Deleted", file=out)
    if not session.has("IDLE"):
        print("  note: no IDLE: the daemon will poll", file=out)
    if account.shared and not session.has("CONDSTORE"):  # shared mailboxes (mailrules.claims)
        print("  error: 'shared: true' needs CONDSTORE (RFC 7162), which the server does not advertise: "
              "two instances could act on one message twice", file=out)
        ok = False
    unnamable = (f"cannot exist on this server: a level of the name contains the server's separator "
                 f"{separator!r} (rename the folder, or choose another name)")
    selected = False
    for source in sources_of(config, name):
        users = "; ".join(
            _rule_where(r) + (" (scheduled)" if r.schedule is not None else "") for r in source.rules
        )
        server = _server_name(session, source.path)
        if server is None:
            problem = server_name_problem(session, source.path) or ""
            why = unnamable if "rules write folders with" not in problem else problem
            print(f"  mailbox {source.path}: error: {why}", file=out)
            if users:
                print(f"    read by {users}", file=out)
            ok = False
            continue
        if not session.folder_exists(server):
            print(f"  mailbox {source.path}: MISSING on the server" + (" (watched)" if source.watched else ""),
                  file=out)
            for rule in source.rules:
                kind = "a scheduled rule sweeps it" if rule.schedule is not None else "an arrival rule reads it"
                print(f"    error: {_rule_where(rule)}: {kind}, but mailbox {source.path} does not exist",
                      file=out)
            ok = False
            continue
        sel = session.select(server)  # not EXAMINE: see the module docstring
        selected = True
        keyword_rules = [
            r for r in config.rules
            if r.applies_to(name, source.path, account.watch)
            and _requiring(registry, r, "keywords")
        ]
        kw = "yes" if sel.can_store_keyword("$MailrulesProbe") else "NO"
        print(f"  mailbox {source.path} ({server}): {sel.exists} messages, UIDVALIDITY {sel.uidvalidity}, "
              f"keywords: {kw}", file=out)
        if account.shared and source.watched:  # shared mailboxes (mailrules.claims): room for the claim keywords
            ok &= _check_claim_keywords(sel, out)
        if kw == "NO" and keyword_rules:
            for rule in keyword_rules:
                print(f"    error: {_rule_where(rule)} sets keywords, which this mailbox cannot store", file=out)
            ok = False
    if selected:
        session.unselect()
    for dest in destinations_in(config, registry, name):
        server = _server_name(session, dest.ref.path)
        for rule, location in dest.uses:
            where = _rule_where(rule, location)
            if server is None:
                problem = server_name_problem(session, dest.ref.path) or ""
                why = problem if "rules write folders with" in problem else f"folder {dest.ref} {unnamable}"
                print(f"  {where}: error: {why}", file=out)
                ok = False
            elif not session.folder_exists(server):
                print(f"  {where}: folder {dest.ref} does not exist yet (created on first use)", file=out)
    for rule in config.rules:
        if rule.enabled and rule.account in (None, name):
            for call in _requiring(registry, rule, "trash"):
                if session.find_trash() is None:
                    print(f"  {_rule_where(rule, call.location)}: error: no Trash mailbox on this server",
                          file=out)
                    ok = False
    return ok


def _check_claim_keywords(sel, out: TextIO) -> bool:
    """A shared mailbox needs its fixed claim keywords (`keywords_needed`): present, or room for them."""
    from .claims import keywords_needed

    missing = [k for k in keywords_needed(sel.name, sel.uidvalidity) if not sel.can_store_keyword(k)]
    used = sum(1 for f in sel.permanent_flags if not f.startswith("\\"))
    if missing:
        print(f"    error: keyword table full: the server allows no new keyword here, and 'shared: true' needs "
              f"{len(missing)} it does not have yet ({' '.join(missing[:3])}...); {used} keywords are defined "
              "(Cyrus: at most 100 per mailbox, never freed): nothing here would be claimed or acted on", file=out)
        return False
    print(f"    claim keywords: OK ({len(keywords_needed(sel.name, sel.uidvalidity))} fixed keywords; "
          f"{used} defined in this mailbox)", file=out)
    return True
