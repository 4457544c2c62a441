"""One body per built-in action: the same rules over the same messages give the same mailboxes
in memory (dry runs, ``mailrules test``, ``tests:`` cases) and on Dovecot (a real run).

Every built-in action has a single `execute`, written against `mailrules.mailstore.MailStore`;
`ImapSession` and `mailrules.memory.MemoryStore` implement it. These tests hold the two ends
together: every built-in action, each message compared by content (folder, flags, keywords),
and `mailrules test`'s per-message answer compared with where the real run put the message.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from test_equivalence import ACCOUNT, OTHER, EngineUser, Msg, action, assert_same_state, registry, render
from test_memory_equivalence import run_in_memory

from mailrules.actions import all_actions
from mailrules.actions.base import BuiltinAction
from mailrules.imap.session import ServerRefused
from mailrules.local_search import LocalMessage
from mailrules.memory import MemoryServer, MemoryStore
from mailrules.model import All, Flag, FolderRef, Rule, Text
from mailrules.testcmd import simulate
from mailrules.testing.daemon import content_digest
from mailrules.uidset import UidSet

# One rule per built-in action (and argument form), each on the messages whose Subject names it.
CASES = {
    "flag": action("flag"),
    "unflag": action("unflag"),
    "seen": action("seen"),
    "unseen": action("unseen"),
    "addflag": action("add_flag", "\\Answered"),
    "removeflag": action("remove_flag", "\\Answered"),
    "addkeyword": action("add_keyword", "$A"),
    "removekeyword": action("remove_keyword", "$B"),
    "copyhere": action("copy", "Copies"),
    "copyinbox": action("copy", "INBOX"),
    "copyother": action("copy", FolderRef("Kopien", OTHER)),
    "movehere": action("move", "Lists/dev"),
    "moveother": action("move", FolderRef("Archiv", OTHER)),
    "trash": action("trash"),
    "delete": action("delete"),
}
FLAG_SETS = [(), ("\\Flagged", "\\Answered", "$B"), ("\\Seen", "$A"), ("\\Deleted", "$B")]


def rules() -> list[Rule]:
    """A rule per case, then a chain: a later rule sees the flags an earlier one set."""
    out = [Rule(f"r-{name}", All((Text("subject", f"case {name}"),)), actions=(call,)) for name, call in CASES.items()]
    out.insert(0, Rule("mark", All((Text("subject", "chain"),)), actions=(action("flag"), action("add_keyword", "$C"))))
    out.append(Rule("chained", All((Flag("\\Flagged"), Text("subject", "chain"))),
                    actions=(action("copy", "Flagged"), action("move", FolderRef("Chained", OTHER)))))
    return out


def messages() -> list[Msg]:
    """Each case twice or more, with flags and keywords already there or not."""
    out = []
    for i, name in enumerate([*CASES, "chain", "none"]):
        for k, flags in enumerate(FLAG_SETS[: 2 + i % 3]):
            out.append(Msg(("Alice", "alice@example.com"), "me@example.com", f"case {name}", None,
                           f"message {i}.{k}", 0, flags))
    return out


def test_every_builtin_action_leaves_the_same_mailboxes_in_memory_as_on_dovecot(dovecot):
    msgs, rule_list = messages(), rules()
    eng = EngineUser(dovecot, rule_list)
    try:
        eng.deliver(msgs)
        eng.process()
        on_dovecot = eng.snapshot()
    finally:
        eng.close()
    assert_same_state(run_in_memory(msgs, rule_list), on_dovecot, msgs)


def where_on_dovecot(snapshot: dict[str, Counter]) -> dict[str, dict[str, frozenset[str]]]:
    """digest -> folder -> its flags and keywords there (each message here is unique by content)."""
    out: dict[str, dict[str, frozenset[str]]] = {}
    for folder, found in snapshot.items():
        for (digest, flags), _n in found.items():
            out.setdefault(digest, {})[folder] = frozenset(flags)
    return out


def test_mailrules_test_tells_of_each_message_what_the_real_run_does_to_it(dovecot):
    msgs, rule_list = messages(), rules()
    eng = EngineUser(dovecot, rule_list)
    try:
        eng.deliver(msgs)
        eng.process()
        placed = where_on_dovecot(eng.snapshot())
        config = eng.config
    finally:
        eng.close()
    now = dt.datetime.now(dt.UTC)
    for i, msg in enumerate(msgs):
        raw = render(msg, i)
        flags = frozenset(f for f in msg.flags if f.startswith("\\"))
        keywords = frozenset(f for f in msg.flags if not f.startswith("\\"))
        told = simulate(config, registry(), LocalMessage(raw, flags, keywords, now), account=ACCOUNT,
                        mailbox="INBOX", rules=rule_list, now=now)
        assert told.error is None, told.error
        real = placed.get(content_digest(raw), {})
        expected = {told.mailbox, *told.copies} - {None}
        assert set(real) == expected, (msg.subject, msg.flags, real, told)
        if told.mailbox is not None:
            assert real[told.mailbox] == frozenset(told.flags) | frozenset(told.keywords), (msg.subject, told)


def test_no_builtin_action_has_a_second_body_for_memory():
    builtins = all_actions()
    assert builtins and all(isinstance(a, BuiltinAction) for a in builtins)
    assert [a.name for a in builtins if type(a).perform is not BuiltinAction.perform] == []


# --------------------------------------------------------------------------- the memory store's IMAP semantics


def store_with(*flag_sets: frozenset[str]) -> MemoryStore:
    server = MemoryServer()
    for flags in flag_sets:
        server.deliver("a", "INBOX", LocalMessage(b"Subject: x\r\n\r\nx\r\n", flags,
                                                  internaldate=dt.datetime.now(dt.UTC)))
    store = MemoryStore(server, "a")
    store.select("INBOX")
    return store


def test_memory_uid_expunge_removes_only_the_given_messages_marked_deleted():
    store = store_with(frozenset({"\\Deleted"}), frozenset(), frozenset({"\\Deleted"}))
    store.uid_expunge(UidSet([1, 2]))
    assert store.existing(UidSet([1, 2, 3])) == UidSet([2, 3])


def test_memory_copy_to_a_missing_folder_is_refused_with_trycreate_as_dovecot_does():
    store = store_with(frozenset())
    with pytest.raises(ServerRefused) as refused:
        store.copy(UidSet([1]), "Nowhere")
    assert refused.value.trycreate
    assert store.copy(UidSet([1]), "Nowhere", create=True).mapping == {1: 1}


def test_memory_search_answers_the_keys_the_actions_send():
    from mailrules.criteria import SearchQuery

    store = store_with(frozenset({"\\Seen"}), frozenset(), frozenset({"\\Seen"}))
    store.store(UidSet([2]), ["$Work"], add=True)
    assert store.search(SearchQuery((b"UNSEEN",)), within=UidSet([1, 2, 3])) == UidSet([2])
    assert store.search(SearchQuery((b"KEYWORD", b"$work"))) == UidSet([2])
    assert store.search(SearchQuery((b"UID", b"2:*"))) == UidSet([2, 3])


def test_the_imap_session_and_the_memory_store_both_offer_every_mail_store_operation():
    import inspect

    from mailrules.imap.session import ImapSession
    from mailrules.mailstore import MailStore

    operations = [name for name, member in vars(MailStore).items()
                  if callable(member) and not name.startswith("_")]
    assert {"store", "search", "copy", "move", "uid_expunge", "append", "create_folder"} <= set(operations)
    for implementation in (ImapSession, MemoryStore):
        for name in operations:
            wanted = list(inspect.signature(getattr(MailStore, name)).parameters)
            assert list(inspect.signature(getattr(implementation, name)).parameters) == wanted, (implementation, name)


# --------------------------------------------------------------------------- a dry run counts what the real run does


def test_a_dry_run_counts_per_rule_what_the_real_run_acts_on():
    from mailrules.memory import run_rules
    from mailrules.model import Rule

    rules = [Rule("away", All((Text("subject", "x"),)), actions=(action("move", "F"),)),
             Rule("again", All((Text("subject", "x"),)), actions=(action("seen"),)),
             Rule("mark", All((Text("subject", "y"),)), actions=(action("flag"),)),
             Rule("marked", All((Flag("\\Flagged"),)), actions=(action("seen"),))]
    counts = []
    for dry_run in (True, False):
        server = MemoryServer()
        for subject in (b"x", b"y"):
            server.deliver("a", "INBOX", LocalMessage(b"Subject: " + subject + b"\r\n\r\nhi\r\n",
                                                      internaldate=dt.datetime.now(dt.UTC)))
        counts.append(run_rules(server, "a", "INBOX", rules, registry(), dry_run=dry_run).matched)
    assert counts[0] == counts[1]
