"""Whether a `where:` predicate's server prefilter is worth sending, decided by measuring it.

A body regex's prefilter (`mailrules.predicates.regex_prefilter`) adds `BODY "literal"` to
the rule's UID SEARCH: the server reads every candidate's body to narrow what is fetched.
When the literal is in most messages (bench/run.py scenario e: 90%), it narrows nothing and
the server reads every body twice (SEARCH, then FETCH). So the prefilter is first tried on a
sample spread over the candidates; if it keeps more than `NARROWS` of them, the rest are
searched without it (the predicates decide anyway: a prefilter only ever saves work, its
absence never changes a result).
"""

from __future__ import annotations

from .criteria import SearchQuery
from .uidset import UidSet

SAMPLE = 500  # candidates the prefilter is tried on first
NARROWS = 0.5  # the prefilter is kept if it keeps at most this share of the sample


def search_prefiltered(session, plain: SearchQuery, filtered: SearchQuery, within: UidSet) -> UidSet:
    """The UIDs of `within` that `filtered` (the criteria plus prefilters) may match, or `plain` where
    the prefilter does not narrow: a superset of those both match, never missing one `plain` matches
    and the prefilter keeps."""
    if filtered == plain or len(within) <= 2 * SAMPLE:
        return session.search(filtered, within=within)
    ordered = list(within)
    step = len(ordered) // SAMPLE
    sample = UidSet(ordered[::step][:SAMPLE])
    found = session.search(filtered, within=sample)
    rest = within - sample
    query = filtered if len(found) <= NARROWS * len(sample) else plain
    return found | session.search(query, within=rest)
