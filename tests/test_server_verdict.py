"""`mailrules.server_verdict`: the deciding criterion from the server's answers, and what it asks.

`ask` stands in for `UID SEARCH UID n <criterion>`; here it is the local evaluator, so the
decider must be the one `local_search.explain` names (except a failed `any:`, named whole), and
the questions are counted.
"""

from __future__ import annotations

import datetime as dt

from mailrules.local_search import LocalMessage, explain, matches
from mailrules.model import All, AnyOf, Flag, Not, Text
from mailrules.server_verdict import server_verdict

MESSAGE = LocalMessage(b"From: bob@example.org\r\nSubject: invoice 7\r\n\r\nx\r\n",
                       internaldate=dt.datetime(2024, 6, 3, tzinfo=dt.UTC))
INVOICE, ALICE, BOB, SEEN = Text("subject", "invoice"), Text("from", "alice"), Text("from", "bob"), Flag("\\Seen")


def decide(tree):
    asked = []

    def ask(node):
        asked.append(node)
        return matches(node, MESSAGE)

    verdict, count = server_verdict(tree, matches(tree, MESSAGE), ask)
    assert count == len(asked)
    return verdict, asked


def test_a_failed_all_asks_its_children_in_order_up_to_the_first_false():
    tree = All((INVOICE, ALICE, BOB))
    verdict, asked = decide(tree)
    assert (verdict.matched, verdict.decided_by, verdict.path) == (False, ALICE, (1,))
    assert asked == [INVOICE, ALICE]
    assert explain(tree, MESSAGE).path == verdict.path


def test_a_matched_all_asks_nothing_and_is_decided_by_its_last_child():
    verdict, asked = decide(All((INVOICE, BOB)))
    assert (verdict.matched, verdict.decided_by, asked) == (True, BOB, [])


def test_a_matched_any_asks_up_to_the_first_true():
    verdict, asked = decide(AnyOf((ALICE, BOB, INVOICE)))
    assert (verdict.decided_by, verdict.path, asked) == (BOB, (1,), [ALICE, BOB])


def test_a_failed_any_is_decided_by_the_any_itself_with_no_question():
    tree = All((INVOICE, AnyOf((ALICE, SEEN))))
    verdict, asked = decide(tree)
    assert (verdict.matched, verdict.decided_by, verdict.path) == (False, AnyOf((ALICE, SEEN)), (1,))
    assert asked == [INVOICE, AnyOf((ALICE, SEEN))]


def test_not_turns_the_verdict_over_on_the_way_down():
    tree = Not(AnyOf((ALICE, Not(BOB), INVOICE)))  # the any: matches by invoice, so the rule fails
    verdict, asked = decide(tree)
    assert (verdict.matched, verdict.decided_by, verdict.path) == (False, INVOICE, (0, 2))
    assert asked == [ALICE, Not(BOB), INVOICE]
    assert explain(tree, MESSAGE).path == verdict.path
