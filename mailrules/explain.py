"""`mailrules explain ACCOUNT MAILBOX UID`: why each rule did or did not match one message.

The message is fetched from the server (BODY.PEEK[], FLAGS, INTERNALDATE, RFC822.SIZE, in a
mailbox opened with EXAMINE: nothing on the server changes, not even \\Seen). For each rule
that applies to that account and mailbox, in file order: matched or not, and what decided,
named as the user wrote it (`mailrules.describe`): for a match the criterion that made it
true, for a non-match the first failing part of its criteria tree, or the `where:` predicate
that said no. Criteria are evaluated locally (`mailrules.local_search.explain`) and checked
against the server's own answer, `UID SEARCH UID n <the rule's criteria>`; a disagreement is
reported loudly and makes the exit status 1.

It explains the message as it is now: the daemon's rules see it as earlier rules left it, so
a rule after one that changed flags or moved the message may have seen something else.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import TextIO

from .criteria import FLAG_KEYS, compile_search
from .describe import criterion_text, under_not
from .imap.session import ImapSession
from .local_search import LocalMessage, MessageTooComplex, NotEvaluableOffline
from .local_search import explain as local_explain
from .message import MessageView
from .model import Config, Rule
from .plugins import Registry
from .uidset import UidSet

EXIT_OK, EXIT_FAILED, EXIT_BAD = 0, 1, 2


def explain_command(config: Config, registry: Registry, account_name: str, mailbox: str, uid: int,
                    out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if account_name not in config.accounts:
        print(f"mailrules: no account named {account_name!r} in {config.path}", file=err)
        return EXIT_BAD
    if uid < 1:
        print(f"mailrules: UID must be a positive number, found {uid}", file=err)
        return EXIT_BAD
    from .connect import ConnectError, connect

    account = config.accounts[account_name]
    try:
        session = ImapSession(connect(account), account.name)
    except ConnectError as exc:
        print(f"mailrules: {exc}", file=err)
        return EXIT_FAILED
    try:
        return _explain(config, registry, session, account_name, mailbox, uid, out, err)
    except Exception as exc:  # noqa: BLE001 - a server refusal or a lost connection: said, exit 1
        print(f"mailrules: {account_name} {mailbox} UID {uid}: {type(exc).__name__}: {exc}", file=err)
        return EXIT_FAILED
    finally:
        session.logout()


def _explain(config: Config, registry: Registry, session: ImapSession, account: str, mailbox: str, uid: int,
             out: TextIO, err: TextIO) -> int:
    session.client.normalise_times = False  # INTERNALDATE with the server's zone
    selected = session.select(session.server_name(mailbox), readonly=True)  # EXAMINE
    found = dict(session.fetch(UidSet([uid]), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE", "RFC822.SIZE"]))
    if uid not in found:
        print(f"mailrules: {account} {mailbox}: no message with UID {uid} (UIDVALIDITY {selected.uidvalidity})",
              file=err)
        return EXIT_FAILED
    data = found[uid]
    raw = data.get(b"BODY[]") or b""
    flags = [f.decode() if isinstance(f, bytes) else str(f) for f in data.get(b"FLAGS", ())]
    arrived = data[b"INTERNALDATE"]
    if arrived.tzinfo is None:
        arrived = arrived.astimezone()
    message = LocalMessage(raw, frozenset(f for f in flags if f in FLAG_KEYS),
                           frozenset(f for f in flags if not f.startswith("\\")), arrived,
                           int(data[b"RFC822.SIZE"]))
    now = dt.datetime.now(dt.UTC)
    acct = config.accounts[account]
    rules = [r for r in config.rules if r.applies_to(account, mailbox, acct.watch)]
    view = MessageView(uid, raw=raw, size=message.rfc822_size, flags=tuple(flags), arrived=arrived)
    print(f"{account} {mailbox} UID {uid} (UIDVALIDITY {selected.uidvalidity}): "
          f"{len(raw)} bytes, flags [{' '.join(flags)}], arrived {arrived.isoformat()}", file=out)
    if not rules:
        print(f"  no rule of {config.path} applies to {mailbox} of {account}", file=out)
    disagreements = 0
    for rule in rules:
        line, disagrees = _one_rule(rule, message, view, session, uid, registry, now)
        disagreements += disagrees
        print(line, file=out)
    if disagreements:
        print(f"WARNING: the server and the local evaluation disagree on {disagreements} rule(s): the "
              "outcome above follows the server; please report this", file=err)
    return EXIT_FAILED if disagreements else EXIT_OK


def _one_rule(rule: Rule, message: LocalMessage, view: MessageView, session: ImapSession, uid: int,
              registry: Registry, now: dt.datetime) -> tuple[str, int]:
    """The line for one rule, and 1 if the server disagreed with the local evaluation."""
    kind = " (scheduled)" if rule.schedule is not None else ""
    head = f"rule {rule.name!r} ({rule.location}){kind}"
    server = uid in session.search(compile_search(rule.match, session.capabilities, now=now), UidSet([uid]))
    try:
        verdict = local_explain(rule.match, message, now=now, location=rule.location)
    except (NotEvaluableOffline, MessageTooComplex) as exc:
        reason = f"criteria decided by the server only ({exc})"
        criteria_ok, why, disagrees = server, reason, 0
    else:
        nots = under_not(rule.match, verdict.path)
        decided = criterion_text(verdict.decided_by) + (" (under not:)" if nots % 2 else "")
        criteria_ok, why = verdict.matched, decided
        disagrees = int(verdict.matched != server)
    check = "server agrees" if not disagrees else (
        f"DISAGREEMENT: the server says {'matched' if server else 'not matched'}, the local evaluation "
        f"{'matched' if verdict.matched else 'not matched'}")
    if disagrees:
        criteria_ok = server  # what the daemon would do
    if not criteria_ok:
        return f"{head}: NOT matched, decided by {why}; {check}", disagrees
    for call in rule.where:
        try:
            accepted = registry.predicates[call.name].test(view, call.args)
        except Exception as exc:  # noqa: BLE001 - the daemon would retry it: said as it is
            return (f"{head}: UNDECIDED, where: {call.name} ({call.location}) failed: {exc}; criteria matched "
                    f"by {why}; {check}", disagrees)
        if not accepted:
            return (f"{head}: NOT matched, decided by where: {call.name} {call.args!r} ({call.location}); "
                    f"criteria matched by {why}; {check}", disagrees)
    where = f", and all {len(rule.where)} where: predicate(s) hold" if rule.where else ""
    return f"{head}: MATCHED, decided by {why}{where}; {check}", disagrees
