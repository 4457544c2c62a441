"""A dry run's flag overlay (`mailrules.dryrun_overlay`): what the earlier rules would have set,
decided locally where it can be, the rest left to the server's search (unit tests: a fake search).

The Dovecot side is tests/test_dryrun_plan.py; the kernel's dry run in memory is checked here
against the real run in memory, rule by rule.
"""

from __future__ import annotations

import datetime as dt

from test_equivalence import action

from mailrules.actions import all_actions
from mailrules.dryrun_overlay import FlagOverlay, partial, search_overlaid
from mailrules.local_search import LocalMessage
from mailrules.memory import MemoryServer, run_rules
from mailrules.model import All, AnyOf, Flag, Header, Keyword, Not, Rule, Text
from mailrules.plugins import Registry
from mailrules.uidset import UidSet

FLAGGED = Flag("\\Flagged")
SUBJECT = Text("subject", "x")


def entry(added=(), removed=()):
    return frozenset(added), frozenset(removed)


def test_a_flag_the_overlay_added_makes_its_leaf_true_and_a_removed_one_false():
    assert partial(FLAGGED, entry(added={"\\flagged"})) is True
    assert partial(FLAGGED, entry(removed={"\\flagged"})) is False
    assert partial(Flag("\\Seen", present=False), entry(added={"\\seen"})) is False


def test_keywords_are_compared_without_regard_to_case():
    assert partial(Keyword("$tagged"), entry(added={"$tagged"})) is True
    overlay = FlagOverlay()
    overlay.record([1], ["$Tagged"], [])
    assert partial(Keyword("$TAGGED"), overlay.entries[1]) is True


def test_a_leaf_the_overlay_does_not_know_is_left_to_the_server_and_the_tree_kept_as_it_is():
    tree = All((SUBJECT, FLAGGED))
    assert partial(tree, entry(added={"$other"})) is tree


def test_all_with_a_false_child_is_false_and_true_children_are_dropped():
    assert partial(All((SUBJECT, FLAGGED)), entry(removed={"\\flagged"})) is False
    assert partial(All((SUBJECT, FLAGGED)), entry(added={"\\flagged"})) == All((SUBJECT,))
    assert partial(All((FLAGGED,)), entry(added={"\\flagged"})) is True


def test_any_with_a_true_child_is_true_and_false_children_are_dropped():
    header = Header("X-Tag", "yes")
    assert partial(AnyOf((header, FLAGGED)), entry(added={"\\flagged"})) is True
    assert partial(AnyOf((header, FLAGGED)), entry(removed={"\\flagged"})) == AnyOf((header,))
    assert partial(AnyOf((FLAGGED,)), entry(removed={"\\flagged"})) is False


def test_not_turns_a_decided_child_around():
    assert partial(Not(FLAGGED), entry(added={"\\flagged"})) is False
    assert partial(Not(All((SUBJECT, FLAGGED))), entry(added={"\\flagged"})) == Not(All((SUBJECT,)))


def test_a_later_change_of_the_same_flag_wins():
    overlay = FlagOverlay()
    overlay.record([1, 2], ["\\Flagged"], [])
    overlay.record([2], [], ["\\Flagged"])
    assert overlay.entries == {1: entry(added={"\\flagged"}), 2: entry(removed={"\\flagged"})}


class FakeSearch:
    """The server's search, counted: answers every query with `answer` within the UIDs asked."""

    def __init__(self, answer: set[int]) -> None:
        self.answer = answer
        self.calls: list[tuple[object, UidSet]] = []

    def __call__(self, criteria, within: UidSet) -> UidSet:
        self.calls.append((criteria, within))
        return UidSet(u for u in within if u in self.answer)


def test_without_changes_or_flag_criteria_it_is_one_ordinary_search():
    search = FakeSearch({1, 2})
    overlay = FlagOverlay()
    assert search_overlaid(overlay, FLAGGED, UidSet([1, 2, 3]), search) == UidSet([1, 2])
    overlay.record([1], ["\\Flagged"], [])
    assert search_overlaid(overlay, SUBJECT, UidSet([1, 2, 3]), search) == UidSet([1, 2])
    assert [c for c, _ in search.calls] == [FLAGGED, SUBJECT]


def test_messages_decided_by_the_overlay_are_not_searched():
    search = FakeSearch(set())
    overlay = FlagOverlay()
    overlay.record([1, 2], ["\\Flagged"], [])
    overlay.record([3], [], ["\\Flagged"])
    assert search_overlaid(overlay, FLAGGED, UidSet([1, 2, 3, 4]), search) == UidSet([1, 2])
    assert search.calls == [(FLAGGED, UidSet([4]))]


def test_the_changed_messages_are_searched_once_per_simplified_criteria():
    search = FakeSearch({1, 2, 3, 4})
    overlay = FlagOverlay()
    overlay.record([1, 2], ["\\Flagged"], [])
    overlay.record([3], ["\\Flagged", "$a"], [])  # $a changes nothing the criteria read: same search as 1, 2
    overlay.record([4], ["$a"], [])  # nothing the criteria read: with the unchanged ones
    tree = All((SUBJECT, FLAGGED))
    assert search_overlaid(overlay, tree, UidSet([1, 2, 3, 4, 5]), search) == UidSet([1, 2, 3, 4])
    assert sorted((str(w), c == tree) for c, w in search.calls) == [("1:3", False), ("4:5", True)]


# --------------------------------------------------------------------------- the kernel, in memory


def matched_per_rule(rules: list[Rule], dry_run: bool) -> dict[str, int]:
    server = MemoryServer()
    for subject, flags in ((b"go one", ()), (b"one stays", ()), (b"mark x", ()), (b"pre", ("\\Flagged",))):
        server.deliver("a", "INBOX", LocalMessage(b"Subject: " + subject + b"\r\n\r\nhi\r\n", frozenset(flags),
                                                  internaldate=dt.datetime.now(dt.UTC)))
    registry = Registry.load()
    return run_rules(server, "a", "INBOX", rules, registry, dry_run=dry_run).matched


def test_in_memory_a_dry_run_matches_per_rule_what_the_real_run_matches():
    rules = [Rule("unmark", All((Text("subject", "pre"),)), actions=(action("unflag"),)),
             Rule("mark", All((Text("subject", "mark"),)), actions=(action("flag"),
                                                                    action("add_keyword", "$Tagged"))),
             Rule("flagged", All((FLAGGED,)), actions=(action("seen"),)),
             Rule("unseen", All((Flag("\\Seen", present=False),)), actions=(action("add_keyword", "$Unread"),)),
             Rule("tagged", All((Keyword("$tagged"),)), actions=(action("remove_keyword", "$Tagged"),)),
             Rule("not flagged", Not(FLAGGED), actions=(action("add_keyword", "$Plain"),)),
             Rule("plain or x", AnyOf((Keyword("$Plain"), Text("subject", "x"))), actions=(action("flag"),))]
    dry, real = matched_per_rule(rules, True), matched_per_rule(rules, False)
    assert dry == real
    assert real == {"unmark": 1, "mark": 1, "flagged": 1, "unseen": 3, "tagged": 1, "not flagged": 3,
                    "plain or x": 4}


def test_in_memory_a_dry_run_changes_nothing():
    server = MemoryServer()
    server.deliver("a", "INBOX", LocalMessage(b"Subject: go\r\n\r\nhi\r\n", internaldate=dt.datetime.now(dt.UTC)))
    before = dict(server.folder("a", "INBOX").messages)
    rules = [Rule("seen", All(()), actions=(action("seen"),))]
    run_rules(server, "a", "INBOX", rules, Registry.load(), dry_run=True)
    assert server.folder("a", "INBOX").messages == before and list(server.accounts["a"]) == ["INBOX"]


def test_every_flag_and_keyword_action_says_what_it_changes_and_no_other_does():
    changing = {a.name: a.flag_changes(("\\Seen",)) for a in all_actions() if any(a.flag_changes(("\\Seen",)))}
    assert set(changing) == {"flag", "unflag", "seen", "unseen", "add_flag", "remove_flag", "add_keyword",
                             "remove_keyword"}
    assert changing["unseen"] == (frozenset(), frozenset({"\\Seen"}))
