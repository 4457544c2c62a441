"""`mailrules explain ACCOUNT MAILBOX UID`: why each rule did or did not match one message.

The message is fetched from the server (BODY.PEEK[], FLAGS, INTERNALDATE, RFC822.SIZE, in a
mailbox opened with EXAMINE: nothing on the server changes, not even \\Seen). For each rule
that applies to that account and mailbox, in file order: matched or not, and what decided,
named as the user wrote it (`mailrules.describe`): for a match the criterion that made it
true (or the last `where:` predicate, all of them named), for a non-match the first failing
part of its criteria tree (a failed `any:` with every alternative), or the `where:` predicate
that said no. The verdict and the deciding criterion are the server's
(`mailrules.server_verdict`: one `UID SEARCH UID n <criterion>` per criterion on the path it
names); the local evaluation (`mailrules.local_search.explain`) is checked against it, a
different verdict is reported loudly and makes the exit status 1, a different decider is
named. Where the server cannot name a decider, the local one is given and the line says so.
`where:` predicates run now: the line says that their verdict may differ from run time.

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
from .local_search import LocalMessage, MessageTooComplex, NotEvaluableOffline, Verdict
from .local_search import explain as local_explain
from .message import MessageView
from .model import AnyOf, Config, Criterion, Rule
from .plugins import Registry
from .server_verdict import server_verdict
from .uidset import UidSet
from .wording import in_words

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
        print(f"mailrules: {account_name} {mailbox} UID {uid}: {in_words(exc)}", file=err)
        return EXIT_FAILED
    finally:
        session.logout()


def _explain(config: Config, registry: Registry, session: ImapSession, account: str, mailbox: str, uid: int,
             out: TextIO, err: TextIO) -> int:
    session.client.normalise_times = False  # INTERNALDATE with the server's zone
    try:
        server_name = session.server_name(mailbox)
    except ValueError as exc:
        if "rules write folders with" not in str(exc):
            print(f"mailrules: {account}: {exc}", file=err)
            return EXIT_BAD
        server_name, mailbox = mailbox, session.rules_name(mailbox)  # the server's own name: understood
    selected = session.select(server_name, readonly=True)  # EXAMINE
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

    def ask(node: Criterion) -> bool:
        return uid in session.search(compile_search(node, session.capabilities, now=now), UidSet([uid]))

    server = ask(rule.match)
    why, disagrees, local_matched = _decider(rule, message, server, ask, now)
    check = "server agrees" if not disagrees else (
        f"DISAGREEMENT: the server says {'matched' if server else 'not matched'}, the local evaluation "
        f"{'matched' if local_matched else 'not matched'}")
    if not server:  # what the daemon does follows the server
        return f"{head}: NOT matched, decided by {why}; {check}", disagrees
    held = []
    for call in rule.where:
        spec = registry.predicates[call.name]
        arg = "" if call.args is None else f" {argument_text(call.args)}"
        named = f"where: {call.name}{arg} ({call.location})"
        try:
            accepted = spec.test(view, call.args)
        except Exception as exc:  # noqa: BLE001 - the daemon would retry it: said as it is
            return (f"{head}: UNDECIDED, {named} failed: {exc}; criteria matched by {why}; {check}; "
                    f"{PREDICATE_NOW}", disagrees)
        if not accepted:
            return (f"{head}: NOT matched, decided by {named}; criteria matched by {why}; {check}; "
                    f"{PREDICATE_NOW}", disagrees)
        held.append(named)
    if held:
        return (f"{head}: MATCHED, decided by {held[-1]} (the last where: predicate; "
                f"{', '.join(held[:-1]) + ' and ' if held[:-1] else ''}the criteria, by {why}, hold too); "
                f"{check}; {PREDICATE_NOW}", disagrees)
    return f"{head}: MATCHED, decided by {why}; {check}", disagrees


def argument_text(args: object) -> str:
    """A `where:` predicate's argument for people: its `str()` (as the plugin guide promises), with
    the built-in forms, (field, compiled pattern) pairs, written as the rules file writes them."""
    pairs = args.items() if isinstance(args, dict) else args
    if isinstance(pairs, list | tuple) or isinstance(args, dict):
        try:
            items = [(str(k), getattr(v, "pattern", v)) for k, v in pairs]  # type: ignore[misc]
        except (TypeError, ValueError):
            return str(args)
        quoted = ["'" + v.replace("'", "''") + "'" if isinstance(v, str) else str(v) for _, v in items]
        return "{" + ", ".join(f"{k}: {v}" for (k, _), v in zip(items, quoted, strict=True)) + "}"
    return str(args)


PREDICATE_NOW = ("where: predicates are run now, on the message as it is now: at run time they may have "
                 "said otherwise (a changed file, service or message)")


def _named(root: Criterion, verdict: Verdict) -> str:
    """The deciding criterion in the rules file's words (every alternative of a failed any:)."""
    nots = under_not(root, verdict.path)
    text = criterion_text(verdict.decided_by)
    if isinstance(verdict.decided_by, AnyOf):
        text += " (no alternative matched)"
    return text + (" (under not:)" if nots % 2 else "")


def _decider(rule: Rule, message: LocalMessage, server: bool, ask, now: dt.datetime) -> tuple[str, int, bool]:
    """(the decider as said, 1 if the local verdict disagrees, the local verdict).

    The decider comes from the server's answers (`mailrules.server_verdict`); when the server
    cannot say, from the local evaluation, and the line says so.
    """
    try:
        local: Verdict | None = local_explain(rule.match, message, now=now, location=rule.location)
        local_note = ""
    except (NotEvaluableOffline, MessageTooComplex) as exc:
        local, local_note = None, f"; not evaluable offline: {exc}"
    try:
        verdict, _asked = server_verdict(rule.match, server, ask)
    except Exception as exc:  # noqa: BLE001 - a refused sub-search, a lost connection: said, local decider used
        if local is None:
            return f"the server's answer (it could not name a criterion: {exc}){local_note}", 0, server
        reason = f"{_named(rule.match, local)} (from the local evaluation: the server could not name one: {exc})"
        return reason, int(local.matched != server), local.matched
    why = f"{_named(rule.match, verdict)} (the server's answer)"
    if local is None:
        return why + local_note, 0, server
    if local.path[: len(verdict.path)] != verdict.path:
        why += f"; the local evaluation names {_named(rule.match, local)}"
    return why, int(local.matched != server), local.matched
