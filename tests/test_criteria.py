"""The criteria compiler: `mailrules.criteria.compile_search` (criteria tree -> IMAP SEARCH keys).

Pure unit tests: no server. What the server makes of these keys is tested on Dovecot in
test_search_dovecot.py.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailrules.criteria import Literal, Reads, SearchQuery, compile_search, imap_date, reads_of
from mailrules.model import (
    MATCH_EVERYTHING,
    Age,
    All,
    AnyOf,
    ArrivalDate,
    Flag,
    Header,
    Keyword,
    Not,
    Raw,
    SentDate,
    Size,
    Text,
)

NOW = dt.datetime(2024, 5, 10, 12, 0, tzinfo=dt.UTC)
WITHIN = frozenset({"IMAP4REV1", "WITHIN"})
NO_WITHIN = frozenset({"IMAP4REV1"})


def keys(criterion, capabilities=WITHIN) -> str:
    """The search keys as the server would read them (literals shown inline)."""
    return str(compile_search(criterion, capabilities, now=NOW))


def tokens(criterion, capabilities=WITHIN) -> tuple[bytes, ...]:
    return compile_search(criterion, capabilities, now=NOW).tokens


# ----------------------------------------------------------------------------- every key of the table


@pytest.mark.parametrize("field", ["from", "to", "cc", "bcc", "subject", "body", "text"])
def test_text_fields_compile_to_their_search_key_with_a_quoted_string(field):
    assert keys(Text(field, "alice@example.com")) == f'{field.upper()} "alice@example.com"'


def test_header_compiles_to_header_name_value():
    assert keys(Header("List-Id", "dev.lists.example.org")) == 'HEADER "List-Id" "dev.lists.example.org"'


def test_header_with_empty_value_means_the_header_exists():
    assert keys(Header("X-Spam-Flag", "")) == 'HEADER "X-Spam-Flag" ""'


def test_sizes_compile_to_larger_and_smaller_in_bytes():
    assert keys(Size("larger", 102400)) == "LARGER 102400"
    assert keys(Size("smaller", 2 * 1024 * 1024)) == "SMALLER 2097152"


@pytest.mark.parametrize(
    ("op", "key"), [("before", "BEFORE"), ("on", "ON"), ("since", "SINCE")]
)
def test_arrival_dates_compile_to_before_on_since(op, key):
    assert keys(ArrivalDate(op, dt.date(2024, 1, 5))) == f"{key} 5-Jan-2024"


@pytest.mark.parametrize(
    ("op", "key"), [("before", "SENTBEFORE"), ("on", "SENTON"), ("since", "SENTSINCE")]
)
def test_sent_dates_compile_to_sentbefore_senton_sentsince(op, key):
    assert keys(SentDate(op, dt.date(2023, 12, 31))) == f"{key} 31-Dec-2023"


def test_imap_dates_use_english_month_names_without_zero_padding():
    assert imap_date(dt.date(2024, 2, 3)) == b"3-Feb-2024"
    assert [imap_date(dt.date(2024, m, 1)).decode().split("-")[1] for m in range(1, 13)] == [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("flag", "yes", "no"),
    [
        ("\\Seen", "SEEN", "UNSEEN"),
        ("\\Answered", "ANSWERED", "UNANSWERED"),
        ("\\Flagged", "FLAGGED", "UNFLAGGED"),
        ("\\Deleted", "DELETED", "UNDELETED"),
        ("\\Draft", "DRAFT", "UNDRAFT"),
    ],
)
def test_flags_compile_to_their_positive_and_negative_keys(flag, yes, no):
    assert keys(Flag(flag, True)) == yes
    assert keys(Flag(flag, False)) == no


def test_keyword_compiles_to_keyword_and_absent_keyword_to_unkeyword():
    assert keys(Keyword("$Dev")) == "KEYWORD $Dev"
    assert keys(Keyword("$Dev", present=False)) == "UNKEYWORD $Dev"


def test_a_list_of_keywords_means_all_of_them():
    assert keys(All((Keyword("$A"), Keyword("$B")))) == "KEYWORD $A KEYWORD $B"


def test_raw_keys_are_sent_verbatim_inside_parentheses():
    assert keys(Raw('X-GM-RAW "has:attachment"')) == '(X-GM-RAW "has:attachment")'


def test_raw_keys_stay_one_key_under_not_and_or():
    """Parentheses keep 'OR SEEN FLAGGED' from swallowing its neighbours."""
    assert keys(Not(Raw("OR SEEN FLAGGED"))) == "NOT (OR SEEN FLAGGED)"
    assert keys(AnyOf((Raw("SEEN FLAGGED"), Flag("\\Draft")))) == "OR (SEEN FLAGGED) DRAFT"


# ----------------------------------------------------------------------------- AND / OR / NOT nesting


def test_several_criteria_are_an_implicit_and():
    assert keys(All((Text("from", "a"), Flag("\\Seen", False)))) == 'FROM "a" UNSEEN'


def test_any_of_two_is_one_or():
    assert keys(AnyOf((Text("from", "a"), Text("from", "b")))) == 'OR FROM "a" FROM "b"'


def test_any_of_three_nests_or_to_the_right():
    crit = AnyOf((Text("from", "a"), Text("from", "b"), Text("from", "c")))
    assert keys(crit) == 'OR FROM "a" OR FROM "b" FROM "c"'


def test_any_of_one_is_that_criterion():
    assert keys(AnyOf((Flag("\\Seen"),))) == "SEEN"


def test_an_and_inside_or_is_parenthesised():
    crit = AnyOf((All((Text("from", "a"), Text("to", "b"))), Header("X-A", "")))
    assert keys(crit) == 'OR (FROM "a" TO "b") HEADER "X-A" ""'


def test_not_of_an_and_is_sent_as_an_or_of_negations():
    """No group is sent negated: Dovecot 2.3's simplifier mishandles negated groups."""
    assert keys(Not(All((Text("from", "a"), Text("to", "b"))))) == 'OR NOT FROM "a" NOT TO "b"'


def test_not_of_an_or_is_sent_as_a_group_of_negations():
    assert keys(Not(AnyOf((Flag("\\Seen"), Flag("\\Flagged"))))) == "(NOT SEEN NOT FLAGGED)"


def test_not_of_not_cancels():
    assert keys(Not(Not(Flag("\\Seen")))) == "SEEN"


def test_a_negated_range_key_is_sent_as_its_complement():
    """Dovecot 2.3 merges two negated range keys of one kind the wrong way round."""
    day = dt.date(2024, 6, 5)
    assert keys(Not(SentDate("before", day))) == "SENTSINCE 5-Jun-2024"
    assert keys(Not(SentDate("since", day))) == "SENTBEFORE 5-Jun-2024"
    assert keys(Not(SentDate("on", day))) == "NOT SENTON 5-Jun-2024"
    assert keys(Not(ArrivalDate("before", day))) == "SINCE 5-Jun-2024"
    assert keys(Not(Size("larger", 10))) == "SMALLER 11"
    assert keys(Not(Size("smaller", 10))) == "LARGER 9"
    assert keys(Not(Size("smaller", 0))) == "ALL"
    assert keys(Not(Size("larger", 2**32 - 1))) == "ALL"  # SMALLER 2^32 is no IMAP number
    assert keys(Not(Age("older", 3600))) == "YOUNGER 3600"
    assert keys(Not(Age("younger", 3600))) == "OLDER 3600"
    assert keys(Not(All((SentDate("before", day), SentDate("before", day))))) == (
        "OR SENTSINCE 5-Jun-2024 SENTSINCE 5-Jun-2024")


def test_deeply_nested_all_any_not():
    crit = All(
        (
            Text("subject", "report"),
            AnyOf((Not(Flag("\\Seen")), All((Keyword("$A"), Size("larger", 10))))),
            Not(AnyOf((Text("from", "x"), Text("from", "y"), Text("from", "z")))),
        )
    )
    assert keys(crit) == (
        'SUBJECT "report" OR NOT SEEN (KEYWORD $A LARGER 10) (NOT FROM "x" NOT FROM "y" NOT FROM "z")'
    )


def test_an_all_of_one_inside_or_needs_no_parentheses():
    assert keys(AnyOf((All((Flag("\\Seen"),)), Flag("\\Draft")))) == "OR SEEN DRAFT"


LEAVES = st.one_of(
    st.builds(Text, st.sampled_from(["from", "subject"]), st.sampled_from(["a", "b"])),
    st.builds(Flag, st.sampled_from(["\\Seen", "\\Flagged"]), st.booleans()),
    st.builds(Keyword, st.sampled_from(["$A", "$B"])),
    st.builds(Raw, st.sampled_from(["SEEN", "OR SEEN FLAGGED"])),
)
TREES = st.recursive(
    LEAVES,
    lambda child: st.one_of(
        st.builds(Not, child),
        st.builds(All, st.lists(child, max_size=3).map(tuple)),
        st.builds(AnyOf, st.lists(child, max_size=3).map(tuple)),
    ),
    max_leaves=12,
)


def _parse(toks: list[str]):
    """A tiny IMAP SEARCH key parser for the keys this test generates: returns a predicate."""

    def key():
        tok = toks.pop(0)
        if tok == "(":
            parts = []
            while toks[0] != ")":
                parts.append(key())
            toks.pop(0)
            return lambda m, ps=parts: all(p(m) for p in ps)
        if tok == "NOT":
            inner = key()
            return lambda m: not inner(m)
        if tok == "OR":
            a, b = key(), key()
            return lambda m: a(m) or b(m)
        if tok == "ALL":
            return lambda m: True
        if tok in ("FROM", "SUBJECT"):
            value, field = toks.pop(0).strip('"'), tok.lower()
            return lambda m: value in m[field]
        if tok == "KEYWORD":
            kw = toks.pop(0)
            return lambda m: kw in m["flags"]
        flags = {"SEEN": ("\\Seen", True), "UNSEEN": ("\\Seen", False),
                 "FLAGGED": ("\\Flagged", True), "UNFLAGGED": ("\\Flagged", False)}
        flag, present = flags[tok]
        return lambda m: (flag in m["flags"]) == present

    parts = []
    while toks:
        parts.append(key())
    return lambda m: all(p(m) for p in parts)


def _evaluate(node, m) -> bool:
    """The meaning of a criteria tree, straight from the model."""
    if isinstance(node, Text):
        return node.value in m[node.field]
    if isinstance(node, Flag):
        return (node.flag in m["flags"]) == node.present
    if isinstance(node, Keyword):
        return node.name in m["flags"]
    if isinstance(node, Raw):
        return _parse(node.text.replace("(", " ( ").replace(")", " ) ").split())(m)
    if isinstance(node, Not):
        return not _evaluate(node.child, m)
    if isinstance(node, All):
        return all(_evaluate(c, m) for c in node.children)
    if isinstance(node, AnyOf):
        return any(_evaluate(c, m) for c in node.children)
    raise TypeError(node)


MESSAGES = [
    {"from": f, "subject": s, "flags": set(flags)}
    for f in ("a", "b", "")
    for s in ("a", "b")
    for flags in ((), ("\\Seen",), ("\\Flagged", "$A"), ("\\Seen", "$B"))
]


@given(TREES)
def test_the_compiled_keys_mean_exactly_the_criteria_tree(tree):
    """Whatever the nesting of all/any/not/raw, the keys select the same messages as the tree."""
    text = keys(tree).replace("(", " ( ").replace(")", " ) ")
    predicate = _parse(text.split())
    for m in MESSAGES:
        assert predicate(m) == _evaluate(tree, m), (tree, keys(tree), m)


# ----------------------------------------------------------------------------- quoting


def test_double_quotes_and_backslashes_are_escaped_in_quoted_strings():
    assert tokens(Text("subject", 'say "hi" \\o/')) == (b"SUBJECT", b'"say \\"hi\\" \\\\o/"')


def test_header_names_and_values_are_quoted_too():
    assert tokens(Header('X-"odd"', "a\\b")) == (b"HEADER", b'"X-\\"odd\\""', b'"a\\\\b"')


def test_ascii_search_announces_no_charset():
    assert compile_search(Text("subject", "plain"), WITHIN).charset is None


def test_text_with_a_line_break_is_sent_as_a_literal():
    (_, value) = tokens(Text("body", "line one\r\nline two"))
    assert isinstance(value, Literal)
    assert bytes(value) == b"line one\r\nline two"


# ----------------------------------------------------------------------------- non-ASCII


def test_non_ascii_text_is_a_utf8_literal_with_charset_utf8():
    query = compile_search(Text("subject", "Grüße"), WITHIN)
    assert query.charset == "UTF-8"
    assert query.tokens[0] == b"SUBJECT"
    assert isinstance(query.tokens[1], Literal)
    assert bytes(query.tokens[1]) == "Grüße".encode()


def test_non_ascii_is_a_literal_even_with_quotes_and_backslashes_which_need_no_escaping():
    (_, value) = tokens(Text("from", 'Zoë "\\"'))
    assert isinstance(value, Literal)
    assert bytes(value) == 'Zoë "\\"'.encode()


def test_one_non_ascii_string_makes_the_whole_search_utf8_and_leaves_the_ascii_ones_quoted():
    query = compile_search(All((Text("from", "bob"), Header("Subject", "日本語"))), WITHIN)
    assert query.charset == "UTF-8"
    assert query.tokens[:2] == (b"FROM", b'"bob"')
    assert [type(t) for t in query.tokens[2:]] == [bytes, bytes, Literal]


def test_badcharset_fallback_reencodes_the_literals_in_another_charset():
    query = compile_search(Text("subject", "café"), WITHIN)
    latin = query.encode_for("ISO-8859-1")
    assert latin.charset == "ISO-8859-1"
    assert bytes(latin.tokens[1]) == "café".encode("latin-1")
    assert isinstance(latin.tokens[1], Literal)


def test_badcharset_fallback_to_a_charset_that_cannot_write_the_text_raises():
    query = compile_search(Text("subject", "日本"), WITHIN)
    with pytest.raises(UnicodeEncodeError):
        query.encode_for("US-ASCII")


# ----------------------------------------------------------------------------- ages: WITHIN and the fallback


def test_older_and_younger_than_use_within_keys_when_advertised():
    assert keys(Age("older", 3600)) == "OLDER 3600"
    assert keys(Age("younger", 45)) == "YOUNGER 45"


def test_within_is_recognised_whatever_its_case():
    assert keys(Age("older", 60), frozenset({"within"})) == "OLDER 60"


def test_without_within_ages_fall_back_to_day_granular_before_and_since():
    assert keys(Age("older", 30 * 86400), NO_WITHIN).startswith("BEFORE ")
    assert keys(Age("younger", 30 * 86400), NO_WITHIN).startswith("SINCE ")


def _day(text: str) -> dt.date:
    return dt.datetime.strptime(text.split()[1], "%d-%b-%Y").date()


# Any server time zone, from UTC-12 to UTC+14.
OFFSETS = st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))


@given(
    seconds=st.integers(min_value=1, max_value=400 * 86400),
    arrived_before_now=st.integers(min_value=-86400, max_value=500 * 86400),
    server_tz=OFFSETS,
)
def test_the_day_granular_fallback_never_matches_more_than_asked(seconds, arrived_before_now, server_tz):
    """BEFORE/SINCE match whole days in the server's zone: rounding must only ever exclude."""
    arrival = NOW - dt.timedelta(seconds=arrived_before_now)
    arrival_day = arrival.astimezone(server_tz).date()  # how the server sees INTERNALDATE
    older = keys(Age("older", seconds), NO_WITHIN)
    if arrival_day < _day(older):  # the server's BEFORE matched it
        assert arrived_before_now > seconds, (older, arrival, server_tz)
    younger = keys(Age("younger", seconds), NO_WITHIN)
    if arrival_day >= _day(younger):  # the server's SINCE matched it
        assert arrived_before_now < seconds, (younger, arrival, server_tz)


def test_the_fallback_still_matches_mail_far_enough_past_the_limit():
    """Rounding is bounded: a 30-day rule catches mail that is 33 days old."""
    older = _day(keys(Age("older", 30 * 86400), NO_WITHIN))
    assert (NOW - dt.timedelta(days=33)).date() < older


def test_a_zero_age_is_sent_as_one_second():
    assert keys(Age("younger", 0)) == "YOUNGER 1"


# ----------------------------------------------------------------------------- empty all / any


def test_match_everything_compiles_to_all():
    assert keys(MATCH_EVERYTHING) == "ALL"
    assert keys(All(())) == "ALL"


def test_an_empty_any_matches_nothing():
    assert keys(AnyOf(())) == "NOT ALL"


def test_empty_groups_nested_keep_their_meaning():
    assert keys(Not(All(()))) in ("NOT ALL", "NOT (ALL)")
    assert keys(AnyOf((AnyOf(()), Flag("\\Seen")))) == "OR NOT ALL SEEN"
    assert keys(All((All(()), Flag("\\Seen")))) == "ALL SEEN"


# ----------------------------------------------------------------------------- SearchQuery


def test_a_search_query_prints_as_one_line_with_parentheses_tight():
    query = compile_search(Not(All((Text("from", "a"), Flag("\\Seen")))), WITHIN)
    assert str(query) == 'OR NOT FROM "a" NOT SEEN'
    assert isinstance(query, SearchQuery)


# ----------------------------------------------------------------------------- what criteria read
# (decides which searches the engine may send before the earlier rules have acted)


def test_header_and_address_criteria_read_only_their_header_fields():
    criterion = All((Header("List-Id", "dev"), AnyOf((Text("from", "a"), Not(Text("subject", "b"))))))
    assert reads_of(criterion) == Reads(frozenset({"List-Id", "From", "Subject"}))


def test_sent_date_reads_the_date_header():
    assert reads_of(SentDate("since", dt.date(2024, 1, 1))).headers == {"Date"}


@pytest.mark.parametrize("criterion", [Flag("\\Seen"), Keyword("$Dev", False), Raw("UNSEEN")])
def test_flags_keywords_and_raw_keys_make_a_criterion_depend_on_earlier_rules(criterion):
    assert reads_of(All((Header("List-Id", "x"), Not(criterion)))).mutable


@pytest.mark.parametrize("criterion", [Size("larger", 100), Text("body", "x"), Text("text", "x")])
def test_size_and_body_make_a_criterion_costly(criterion):
    reads = reads_of(AnyOf((Text("from", "a"), criterion)))
    assert reads.costly and not reads.mutable


@pytest.mark.parametrize("criterion", [Age("older", 60), ArrivalDate("before", dt.date(2024, 1, 1)), MATCH_EVERYTHING])
def test_arrival_dates_and_everything_are_neither_mutable_nor_costly(criterion):
    assert reads_of(criterion) == Reads()
