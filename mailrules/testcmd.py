"""`mailrules test [MESSAGES...]`: the rules, offline, on test cases or on messages from files.

Without MESSAGES it runs the rules file's `tests:` cases (`mailrules.rule_tests`); with
MESSAGES (.eml files, mbox files, Maildir folders) it prints what the rules do to each. Both
run the whole rule set (includes resolved) over the message as an arriving message, with the
pass kernel over the in-memory mailbox (`mailrules.memory`): the same semantics as the
daemon's pass, with criteria evaluated as Dovecot's SEARCH does (`mailrules.local_search`)
and `where:` predicates (built-in and plugin) run locally.

`--against ACCOUNT` checks the local evaluation against a real server: the messages are
APPENDed to a scratch mailbox of that account, each rule's criteria are searched there with
the very UID SEARCH the daemon sends, and every disagreement is reported (exit 1). The scratch
mailbox is deleted afterwards, whatever happened.

Exit codes: 0 all pass; 1 a case failed (or could not be evaluated offline, or the server
disagreed); 2 a bad rules file, unreadable MESSAGES or bad usage.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import mailbox as mboxlib
import stat
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TextIO

from .criteria import FLAG_KEYS, compile_search
from .describe import criterion_text, leaves
from .kernel import run_pass
from .local_search import LocalMessage, MessageTooComplex, NotEvaluableOffline, matches
from .memory import MemoryMailbox, MemoryServer
from .message import MessageView
from .mime import MessageTooComplex as UnparsableMessage
from .model import ActionCall, Config, FolderRef, Header, Raw, Rule, RuleTest, Text
from .plugins import Registry
from .rule_tests import MAX_MESSAGE_BYTES
from .uidset import UidSet

EXIT_OK, EXIT_FAILED, EXIT_BAD = 0, 1, 2
MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
WORD_BASED_HOSTS = ("gmail.com", "googlemail.com", "outlook.com", "office365.com", "hotmail.com", "exchange")


class BadInput(Exception):
    """A MESSAGES path that cannot be read (exit 2)."""


# --------------------------------------------------------------------------- one message, in memory


@dataclass
class Outcome:
    """What the rules did to one arriving message."""

    rules: list[tuple[str, list[str]]] = field(default_factory=list)  # (rule, its actions as printed)
    mailbox: str | None = None  # where it ends; None when it was deleted (or a plugin action took it)
    copies: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    deleted: bool = False
    error: str | None = None  # not evaluable offline, a predicate or action that failed
    # actions with an outside effect (a command, a web request...): never run offline, reported
    would_run: list[tuple[str, str]] = field(default_factory=list)  # (rule, the action as printed)

    def as_json(self, message: str) -> dict[str, Any]:
        return {"message": message, "rules": [{"name": n, "actions": a} for n, a in self.rules],
                "mailbox": self.mailbox, "copies": self.copies, "flags": self.flags,
                "keywords": self.keywords, "deleted": self.deleted,
                "would_run": [{"rule": r, "action": a} for r, a in self.would_run]}

    def would_run_lines(self) -> list[str]:
        """One line per action not run because it reaches outside the mailbox."""
        return [f"would run: {action} (rule {rule!r}; not run offline: it acts outside the mailbox)"
                for rule, action in self.would_run]


class _RecordingMailbox(MemoryMailbox):
    """The in-memory mailbox, also recording which rules act and with which actions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acted: list[Rule] = []
        self.calls: list[ActionCall] = []
        self.last: LocalMessage | None = None  # the message as the last action found it

    def present(self, index: int, rule: Rule, targets: UidSet) -> bool:
        self.acted.append(rule)
        return super().present(index, rule, targets)

    def apply(self, index: int, action_index: int, rule: Rule, call: ActionCall, targets: UidSet) -> set[int]:
        self.calls.append(call)
        self.last = next((self.folder.messages[u] for u in targets if u in self.folder.messages), self.last)
        return super().apply(index, action_index, rule, call, targets)


def describe_action(registry: Registry, call: ActionCall) -> str:
    text = registry.actions[call.name].describe(call.arg) if call.name in registry.actions else ""
    return f"{call.name} {text}".strip()


def simulate(config: Config, registry: Registry, message: LocalMessage, *, account: str, mailbox: str,
             rules: Sequence[Rule], now: dt.datetime) -> Outcome:
    """Run `rules` over `message` arriving in `mailbox` of `account`, in memory."""
    server = MemoryServer()
    for name in config.accounts:
        server.folder(name, "INBOX")
    uid = server.deliver(account, mailbox, message)
    box = _RecordingMailbox(server, account, mailbox, registry, now=now)
    outcome = Outcome()
    try:
        run_pass(box, rules, {uid: (0, 0)})
    except NotEvaluableOffline as exc:
        outcome.error = f"not evaluable offline: {exc}"
    except MessageTooComplex as exc:
        outcome.error = f"the message cannot be evaluated: {exc}"
    if box.result.failed:
        outcome.error = outcome.error or f"failed: {box.result.failed[uid]}"
    outcome.rules = [(r.name, [describe_action(registry, c) for c in r.actions]) for r in box.acted]
    outcome.would_run = [(rule, describe_action(registry, call))
                         for calls in box.result.would_run.values() for rule, call in calls]
    final: LocalMessage | None = server.folder(account, mailbox).messages.get(uid)
    outcome.mailbox = mailbox if final is not None else None
    for call in box.calls:
        did = registry.actions[call.name].outcome() if call.name in registry.actions else call.name
        if did == "copied":
            outcome.copies.append(str(call.arg))
        elif final is None and did == "moved" and outcome.mailbox is None:
            ref = call.arg if isinstance(call.arg, FolderRef) else FolderRef(server.trash)
            where = server.folder(ref.account or account, ref.path).messages
            final = where[max(where)] if where else None
            outcome.mailbox = str(ref)
        elif did == "deleted" and final is None:
            outcome.deleted = True
    if final is None and outcome.deleted:
        final = box.last  # its flags and keywords when it was deleted
    if final is not None:
        outcome.flags = sorted(final.flags)
        outcome.keywords = sorted(final.keywords)
    return outcome


def rules_in_play(config: Config, account: str, mailbox: str, names: Sequence[str] | None) -> list[Rule]:
    """The arrival rules of that mailbox, in file order (only `names` if given)."""
    acct = config.accounts[account]
    rules = [r for r in config.rules if r.schedule is None and r.applies_to(account, mailbox, acct.watch)]
    return [r for r in rules if not names or r.name in names]


# --------------------------------------------------------------------------- warnings


def server_dependent(config: Config, rules: Sequence[Rule], out: TextIO) -> None:
    """Warn (stderr) about criteria whose result depends on the server the rules run on."""
    for rule in rules:
        hosts = [a.host.lower() for a in config.accounts.values() if rule.account in (None, a.name)]
        word_based = [h for h in hosts if any(h.endswith(w) or w in h for w in WORD_BASED_HOSTS)]
        for leaf in leaves(rule.match):
            why = ""
            if isinstance(leaf, Raw):
                why = "raw IMAP search keys cannot be evaluated offline (only --against ACCOUNT checks them)"
            elif isinstance(leaf, Text) and leaf.field in ("body", "text"):
                why = ("depends on the server: Cyrus's BODY also matches the headers of MIME parts, and Gmail "
                       "and Exchange match whole words, not substrings (evaluated here as Dovecot does)")
            elif isinstance(leaf, Text | Header) and not leaf.value.isascii():
                why = ("depends on the server: Cyrus stores raw 8-bit header bytes (RFC 6532 mail) as 'X', "
                       "so there a non-ASCII key finds only headers written as encoded words")
            elif word_based and isinstance(leaf, Text):
                why = (f"depends on the server: {word_based[0]} matches whole words, not substrings "
                       "(evaluated here as Dovecot does)")
            if why:
                print(f"mailrules: warning: rule {rule.name!r} ({rule.location}): {criterion_text(leaf)}: {why}",
                      file=out)


# --------------------------------------------------------------------------- tests: cases


def _norm_box(name: str | None) -> str | None:
    if name is None:
        return None
    return "INBOX" if name.upper() == "INBOX" else name.strip("/")


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple | frozenset | set):
        return "[" + ", ".join(sorted(value) if isinstance(value, frozenset | set) else value) + "]"
    return str(value)


def compare(case: RuleTest, outcome: Outcome) -> list[tuple[str, str, str, bool]]:
    """(key, expected, actual, same) for every key the case expects."""
    exp = case.expect
    rows: list[tuple[str, str, str, bool]] = []
    if exp.rules is not None:
        actual = [name for name, _ in outcome.rules]
        rows.append(("rules", _show(list(exp.rules)), _show(actual), list(exp.rules) == actual))
    if exp.mailbox is not None:
        rows.append(("mailbox", exp.mailbox, _show(outcome.mailbox), _norm_box(exp.mailbox) == _norm_box(outcome.mailbox)))
    if exp.copies is not None:
        same = sorted(map(_norm_box, exp.copies)) == sorted(map(_norm_box, outcome.copies))  # type: ignore[arg-type]
        rows.append(("copies", _show(list(exp.copies)), _show(outcome.copies), same))
    if exp.flags is not None:
        rows.append(("flags", _show(exp.flags), _show(outcome.flags), set(exp.flags) == set(outcome.flags)))
    if exp.keywords is not None:
        same = {k.lower() for k in exp.keywords} == {k.lower() for k in outcome.keywords}
        rows.append(("keywords", _show(exp.keywords), _show(outcome.keywords), same))
    if exp.deleted is not None:
        rows.append(("deleted", _show(exp.deleted), _show(outcome.deleted), exp.deleted == outcome.deleted))
    return rows


def case_message(case: RuleTest, now: dt.datetime) -> LocalMessage:
    flags = frozenset(f for f in case.flags if f.startswith("\\"))
    keywords = frozenset(f for f in case.flags if not f.startswith("\\"))
    return LocalMessage(case.raw, flags, keywords, case.arrived or now, case.size)


def run_cases(config: Config, registry: Registry, names: Sequence[str] | None, out: TextIO, err: TextIO,
              now: dt.datetime) -> int:
    if not config.tests:
        print(f"{config.path}: no tests: (add a 'tests:' list, or give MESSAGES)", file=out)
        return EXIT_OK
    rule_names = {r.name for r in config.rules}
    for case in config.tests:
        unknown = [n for n in case.expect.rules or () if n not in rule_names]
        if unknown:
            print(f"mailrules: {case.location}: test {case.name!r}: expect: rules: no rule named "
                  f"{', '.join(map(repr, unknown))}", file=err)
            return EXIT_BAD
    first = next(iter(config.accounts))
    seen: set[int] = set()
    passed = failed = 0
    for case in config.tests:
        account = case.account or first
        rules = rules_in_play(config, account, case.mailbox, names)
        fresh = [r for r in rules if id(r) not in seen]
        seen.update(id(r) for r in rules)
        server_dependent(config, fresh, err)
        outcome = simulate(config, registry, case_message(case, now), account=account, mailbox=case.mailbox,
                           rules=rules, now=now)
        rows = compare(case, outcome)
        if outcome.error is None and all(same for *_, same in rows):
            passed += 1
            # one line per case: the actions not run offline are named on it
            would = "; ".join(f"{action} (rule {rule!r})" for rule, action in outcome.would_run)
            print(f"PASS  {case.name}" + (f"  (would run, not offline: {would})" if would else ""), file=out)
            continue
        failed += 1
        print(f"FAIL  {case.name}  ({case.location})", file=out)
        if outcome.error:
            print(f"      {outcome.error}", file=out)
            rows = [r for r in rows if not r[3]] if rows else []
        width = max([len("expected")] + [len(e) for _, e, _, _ in rows])
        if rows:
            print(f"      {'':9} {'expected':{width}}    actual", file=out)
        for key, expected, actual, same in rows:
            print(f"      {key:9} {expected:{width}} {'  ' if same else '!='} {actual}", file=out)
        for line in outcome.would_run_lines():
            print(f"      {line}", file=out)
    total = passed + failed
    print(f"{passed} of {total} test(s) passed" + (f", {failed} failed" if failed else ""), file=out)
    return EXIT_FAILED if failed else EXIT_OK


# --------------------------------------------------------------------------- MESSAGES


@dataclass
class InputMessage:
    label: str
    message: LocalMessage


def _aware_mtime(path: Path) -> dt.datetime:
    return dt.datetime.fromtimestamp(path.stat().st_mtime).astimezone()


def _read_bounded(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(MAX_MESSAGE_BYTES + 1)
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadInput(f"{path}: larger than {MAX_MESSAGE_BYTES // (1024 * 1024)} MiB")
    return data


def read_messages(paths: Sequence[str]) -> Iterator[InputMessage]:
    """Messages of .eml files, mbox files and Maildir folders, with arrival time and flags."""
    for text in paths:
        path = Path(text)
        try:
            info = path.stat()
        except OSError as exc:
            raise BadInput(f"{text}: {exc.strerror or exc}") from None
        if stat.S_ISDIR(info.st_mode):
            yield from _maildir(path, text)
            continue
        try:
            with path.open("rb") as handle:
                head = handle.read(5)
        except OSError as exc:
            raise BadInput(f"{text}: {exc.strerror or exc}") from None
        if head == b"From ":
            yield from _mbox(path, text)
        else:
            yield InputMessage(text, LocalMessage(_read_bounded(path), internaldate=_aware_mtime(path)))


def _maildir(path: Path, text: str) -> Iterator[InputMessage]:
    if not any((path / sub).is_dir() for sub in ("cur", "new")):
        raise BadInput(f"{text}: a folder, but not a Maildir (no cur/ or new/)")
    for sub in ("new", "cur"):
        folder = path / sub
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            flags = frozenset()
            if ":2," in entry.name:
                letters = entry.name.rsplit(":2,", 1)[1]
                flags = frozenset(MAILDIR_FLAGS[c] for c in letters if c in MAILDIR_FLAGS)
            yield InputMessage(str(Path(text) / sub / entry.name),
                               LocalMessage(_read_bounded(entry), flags, internaldate=_aware_mtime(entry)))


def _mbox_date(from_line: str, fallback: dt.datetime) -> dt.datetime:
    """The date of an mbox `From sender Www Mmm dd hh:mm:ss yyyy` line (local time)."""
    parts = from_line.split(None, 1)
    if len(parts) == 2:
        with contextlib.suppress(ValueError, TypeError, IndexError):
            return dt.datetime.strptime(" ".join(parts[1].split()[:5]), "%a %b %d %H:%M:%S %Y").astimezone()
        with contextlib.suppress(ValueError, TypeError, IndexError):
            when = parsedate_to_datetime(parts[1])
            return when if when.tzinfo else when.astimezone()
    return fallback


def _mbox(path: Path, text: str) -> Iterator[InputMessage]:
    if path.stat().st_size > 16 * MAX_MESSAGE_BYTES:
        raise BadInput(f"{text}: an mbox larger than {16 * MAX_MESSAGE_BYTES // (1024 * 1024)} MiB")
    box = mboxlib.mbox(path, create=False)
    try:
        for number, key in enumerate(box.keys(), 1):
            msg = box.get_message(key)
            raw = box.get_bytes(key)
            arrived = _mbox_date(msg.get_from(), _aware_mtime(path))
            yield InputMessage(f"{text}#{number}", LocalMessage(raw, internaldate=arrived))
    finally:
        box.close()


def message_names(raw: bytes) -> tuple[str, str]:
    """The Subject and the From of a message, decoded (RFC 2047 and raw UTF-8), to name it by."""
    view = MessageView(0, raw=raw)
    try:
        return view.subject, ", ".join(view.header("From"))
    except UnparsableMessage:
        return "", ""


def run_messages(config: Config, registry: Registry, inputs: Sequence[InputMessage], *, account: str,
                 mailbox: str, names: Sequence[str] | None, as_json: bool, out: TextIO, err: TextIO,
                 now: dt.datetime) -> int:
    rules = rules_in_play(config, account, mailbox, names)
    server_dependent(config, rules, err)
    results = []
    code = EXIT_OK
    for item in inputs:
        outcome = simulate(config, registry, item.message, account=account, mailbox=mailbox, rules=rules, now=now)
        if outcome.error:
            print(f"mailrules: {item.label}: {outcome.error}", file=err)
            code = EXIT_FAILED
            if as_json:
                continue
        subject, sender = message_names(item.message.raw)
        if as_json:
            results.append({**outcome.as_json(item.label), "subject": subject, "from": sender})
            continue
        shown = "".join(c if c.isprintable() else "?" for c in sender)  # no terminal escapes from mail
        print(f"{item.label}: {subject!r} from {shown or '(no From)'}", file=out)
        for name, actions in outcome.rules:
            print(f"  rule {name!r}: {', '.join(actions)}", file=out)
        if not outcome.rules:
            print("  no rule acts on it", file=out)
        for line in outcome.would_run_lines():
            print(f"  {line}", file=out)
        where = "deleted" if outcome.deleted else (outcome.mailbox or "-")
        print(f"  -> mailbox: {where}  copies: {_show(outcome.copies)}  flags: {_show(outcome.flags)}  "
              f"keywords: {_show(outcome.keywords)}  deleted: {_show(outcome.deleted)}", file=out)
    if as_json:
        json.dump(results, out, indent=2, ensure_ascii=False)
        out.write("\n")
    return code


# --------------------------------------------------------------------------- --against


def against(config: Config, account_name: str, inputs: Sequence[InputMessage], rules: Sequence[Rule],
            out: TextIO, now: dt.datetime) -> int:
    """Cross-check the local evaluation of each rule's criteria on a real server (see the module doc)."""
    from .connect import connect
    from .imap.session import ImapSession

    account = config.accounts[account_name]
    session = ImapSession(connect(account), account.name)
    session.client.normalise_times = False  # INTERNALDATE with its zone, as local evaluation needs
    scratch = session.server_name(f"mailrules-test-{uuid.uuid4().hex[:12]}")
    created = False
    disagreements = 0
    on_server: dict[int, tuple[str, LocalMessage]] = {}
    try:
        session.client.create_folder(scratch)
        created = True
        appended, refused = _append_all(session, scratch, inputs, out)
        session.select(scratch)
        every = UidSet(session.client.search(["ALL"]))
        fetched = dict(session.fetch(every, ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]))
        for uid, item in _by_uid(appended, sorted(fetched)):
            data = fetched[uid]
            flags = [f.decode() if isinstance(f, bytes) else f for f in data[b"FLAGS"]]
            on_server[uid] = (item.label, LocalMessage(
                item.message.raw, frozenset(f for f in flags if f.startswith("\\") and f in FLAG_KEYS),
                frozenset(f for f in flags if not f.startswith("\\")), data[b"INTERNALDATE"],
                int(data[b"RFC822.SIZE"])))
        for rule in rules:
            found = session.search(compile_search(rule.match, session.capabilities, now=now), every)
            for uid, (label, message) in on_server.items():
                server_says = uid in found
                try:
                    local = matches(rule.match, message, now=now, location=rule.location)
                except NotEvaluableOffline:
                    print(f"rule {rule.name!r} on {label}: server: {'matches' if server_says else 'no match'}; "
                          "local: not evaluable offline (raw)", file=out)
                    continue
                if local != server_says:
                    disagreements += 1
                    print(f"DISAGREEMENT rule {rule.name!r} ({rule.location}) on {label}: server "
                          f"{account.name}: {'matches' if server_says else 'no match'}; local evaluation: "
                          f"{'matches' if local else 'no match'}", file=out)
    finally:
        with contextlib.suppress(Exception):
            session.unselect()
        if created:
            try:
                session.client.delete_folder(scratch)
            except Exception as exc:  # noqa: BLE001 - said loudly: the user must remove it
                print(f"mailrules: could not delete the scratch mailbox {scratch!r} on {account.name}: {exc}",
                      file=sys.stderr)
        session.logout()
    print(f"--against {account.name}: {len(rules)} rule(s) on {len(on_server)} message(s): "
          f"{disagreements} disagreement(s)" + (f"; {refused} message(s) refused by the server, not checked"
                                                if refused else ""), file=out)
    return EXIT_FAILED if disagreements else EXIT_OK


def _append_all(session: Any, scratch: str, inputs: Sequence[InputMessage],
                out: TextIO) -> tuple[list[tuple[int | None, InputMessage]], int]:
    """APPEND each message ((its UID when the server says, the message) for those stored); a
    message the server refuses (a NUL byte on Cyrus, a size limit) is reported and skipped."""
    from .imap.session import ServerRefused

    appended: list[tuple[int | None, InputMessage]] = []
    refused = 0
    for item in inputs:
        m = item.message
        try:
            got = session.append(scratch, m.raw, sorted(m.flags | m.keywords), m.internaldate)
        except ServerRefused as exc:
            refused += 1
            print(f"REFUSED {item.label}: the server would not store it ({exc}); not checked", file=out)
            continue
        appended.append((got[1] if got else None, item))
    return appended, refused


def _by_uid(appended: list[tuple[int | None, InputMessage]], uids: list[int]) -> list[tuple[int, InputMessage]]:
    """The stored messages by UID: from APPENDUID, or in APPEND order where the server did not say."""
    if all(uid is not None for uid, _ in appended):
        return [(uid, item) for uid, item in appended if uid in set(uids)]  # type: ignore[misc]
    return list(zip(uids, (item for _, item in appended), strict=False))


# --------------------------------------------------------------------------- the command


def test_command(config: Config, registry: Registry, args: Any, out: TextIO | None = None,
                 err: TextIO | None = None) -> int:
    """`mailrules test`: see the module docstring. `args`: messages, rule, format, against, account, mailbox."""
    out = out or sys.stdout
    err = err or sys.stderr
    names = args.rule or None
    unknown = [n for n in names or () if n not in {r.name for r in config.rules}]
    if unknown:
        print(f"mailrules: no rule named {', '.join(map(repr, unknown))} in {config.path}", file=err)
        return EXIT_BAD
    for which in (args.against, getattr(args, "account", None)):
        if which is not None and which not in config.accounts:
            print(f"mailrules: no account named {which!r} in {config.path}", file=err)
            return EXIT_BAD
    now = dt.datetime.now(dt.UTC)
    account = getattr(args, "account", None) or args.against or next(iter(config.accounts))
    mailbox = getattr(args, "mailbox", None) or "INBOX"
    if args.messages:
        try:
            inputs = list(read_messages(args.messages))
        except BadInput as exc:
            print(f"mailrules: {exc}", file=err)
            return EXIT_BAD
        code = run_messages(config, registry, inputs, account=account, mailbox=mailbox, names=names,
                            as_json=args.format == "json", out=out, err=err, now=now)
    else:
        if args.format == "json":
            print("mailrules: --format json is for MESSAGES (the tests: cases print a line each)", file=err)
            return EXIT_BAD
        code = run_cases(config, registry, names, out, err, now)
        inputs = [InputMessage(f"test {c.name!r}", case_message(c, now)) for c in config.tests]
    if args.against is None or code == EXIT_BAD:
        return code
    rules = [r for r in config.rules if r.enabled and r.account in (None, args.against)
             and (not names or r.name in names)]
    from .connect import ConnectError

    try:
        verdict = against(config, args.against, inputs, rules, err if args.format == "json" else out, now)
    except (ConnectError, OSError) as exc:
        print(f"mailrules: --against {args.against}: {exc}", file=err)
        return EXIT_FAILED
    return max(code, verdict)


