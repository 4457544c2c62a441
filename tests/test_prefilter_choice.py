"""The body prefilter is kept where it narrows and left out where it cannot (mailrules.prefilter_choice)."""

from __future__ import annotations

from mailrules.criteria import SearchQuery
from mailrules.prefilter_choice import SAMPLE, search_prefiltered
from mailrules.uidset import UidSet

PLAIN = SearchQuery((b"ALL",))
FILTERED = SearchQuery((b"BODY", b'"build #"'))


class FakeSession:
    """A server where the prefilter keeps the UIDs in `hits`; records each search."""

    def __init__(self, hits: set[int]) -> None:
        self.hits = hits
        self.searches: list[tuple[SearchQuery, int]] = []

    def search(self, query: SearchQuery, within: UidSet) -> UidSet:
        self.searches.append((query, len(within)))
        return UidSet(u for u in within if query == PLAIN or u in self.hits)


def test_a_prefilter_that_narrows_is_sent_for_every_candidate():
    within = UidSet(range(1, 10_001))
    session = FakeSession({u for u in within if u % 40 == 0})
    assert search_prefiltered(session, PLAIN, FILTERED, within) == UidSet(session.hits)
    assert [q for q, _ in session.searches] == [FILTERED, FILTERED]


def test_a_prefilter_that_keeps_most_messages_is_left_out_after_the_sample():
    within = UidSet(range(1, 10_001))
    session = FakeSession({u for u in within if u % 10})
    got = search_prefiltered(session, PLAIN, FILTERED, within)
    assert session.searches == [(FILTERED, SAMPLE), (PLAIN, 10_000 - SAMPLE)]
    assert set(session.hits) <= set(got)  # never fewer than the prefilter would give


def test_a_small_mailbox_is_searched_once_with_the_prefilter():
    session = FakeSession({1, 2})
    assert search_prefiltered(session, PLAIN, FILTERED, UidSet(range(1, 300))) == UidSet({1, 2})
    assert len(session.searches) == 1


def test_a_rule_without_prefilter_costs_one_search():
    session = FakeSession(set())
    search_prefiltered(session, PLAIN, PLAIN, UidSet(range(1, 5000)))
    assert session.searches == [(PLAIN, 4999)]
