"""The in-memory pass (`mailrules.memory`) gives the outcome the IMAP pass gives on Dovecot.

Both run the same kernel (`mailrules.kernel.run_pass`); what differs is the mailbox under
it: criteria evaluated locally (`mailrules.local_search`) and actions applied to messages in
memory, against UID SEARCH and the batched, journaled commands on a real Dovecot. The
messages and rule lists are test_equivalence.py's generators; the final states are compared
the same way (per folder of both accounts, the multiset of (content digest, flags and
keywords)). CI runs a small derandomized set (this test is about the seam, the IMAP pass
itself is compared with a per-message reference in test_equivalence.py).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from hypothesis import given
from test_equivalence import (
    ACCOUNT,
    OTHER,
    EngineUser,
    assert_same_state,
    examples,
    mailboxes_st,
    registry,
    render,
    rules_st,
)

from mailrules.local_search import LocalMessage
from mailrules.memory import MemoryServer, run_rules
from mailrules.testing.daemon import content_digest

ARRIVED = dt.datetime(2024, 6, 3, 10, 0, tzinfo=dt.UTC)


def memory_snapshot(server: MemoryServer) -> dict[str, Counter]:
    """As test_equivalence.snapshot: non-empty folders, OTHER's as 'other:Folder'."""
    out: dict[str, Counter] = {}
    for account, folders in server.accounts.items():
        for path, folder in folders.items():
            found: Counter = Counter()
            for message in folder.messages.values():
                found[(content_digest(message.raw), message.flags | message.keywords)] += 1
            if found:
                out[path if account == ACCOUNT else f"{account}:{path}"] = found
    return out


def run_in_memory(msgs, rules) -> dict[str, Counter]:
    server = MemoryServer()
    server.folder(OTHER, "INBOX")
    for i, msg in enumerate(msgs):
        flags = frozenset(f for f in msg.flags if f.startswith("\\"))
        keywords = frozenset(f for f in msg.flags if not f.startswith("\\"))
        server.deliver(ACCOUNT, "INBOX", LocalMessage(render(msg, i), flags, keywords, ARRIVED))
    result = run_rules(server, ACCOUNT, "INBOX", rules, registry())
    assert not result.failed, result.failed
    return memory_snapshot(server)


@examples(12)
@given(msgs=mailboxes_st, rules=rules_st())
def test_the_in_memory_pass_equals_the_imap_pass_on_dovecot(dovecot, msgs, rules):
    eng = EngineUser(dovecot, rules)
    try:
        eng.deliver(msgs)
        eng.process()
        on_dovecot = eng.snapshot()
    finally:
        eng.close()
    assert_same_state(run_in_memory(msgs, rules), on_dovecot, msgs)
