"""UID sets (mailrules.uidset): what each operation gives, checked against plain sorted sets."""

from __future__ import annotations

import random

import pytest

from mailrules.uidset import UidSet


def naive_ranges(uids: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for uid in sorted(set(uids)):
        if out and uid == out[-1][1] + 1:
            out[-1] = (out[-1][0], uid)
        else:
            out.append((uid, uid))
    return out


SAMPLES = [[rnd.randint(1, 80) for _ in range(rnd.randint(0, 50))] for rnd in [random.Random(7)] for _ in range(300)]


@pytest.mark.parametrize("uids", [[], [5], [3, 1, 2, 2], [1, 2, 3, 7, 9, 10], list(range(1, 10001))])
def test_a_set_is_written_as_its_ranges(uids):
    ranges = naive_ranges(uids)
    assert UidSet(uids).ranges() == ranges
    assert str(UidSet(uids)) == ",".join(str(a) if a == b else f"{a}:{b}" for a, b in ranges)


def test_set_operations_agree_with_sorted_sets():
    for xs, ys in zip(SAMPLES, SAMPLES[1:], strict=False):
        a = UidSet(xs)
        for other in (ys, set(ys), UidSet(ys)):
            assert list(a & other) == sorted(set(xs) & set(ys))
            assert list(a - other) == sorted(set(xs) - set(ys))
            assert list(a | other) == sorted(set(xs) | set(ys))
        assert a.ranges() == naive_ranges(xs)
        assert all((u in a) == (u in set(xs)) for u in range(0, 82))


def test_a_set_made_from_a_set_is_equal_to_it():
    a = UidSet([4, 2, 9])
    assert UidSet(a) == a and hash(UidSet(a)) == hash(a) and list(UidSet(a)) == [2, 4, 9]


@pytest.mark.parametrize("max_chars,max_count", [(5, None), (12, 3), (4000, 7), (4000, None)])
def test_chunks_cover_the_set_in_order_within_their_bounds(max_chars, max_count):
    for xs in SAMPLES:
        chunks = list(UidSet(xs).chunks(max_chars, max_count))
        assert [u for c in chunks for u in c] == sorted(set(xs))
        for chunk in chunks:
            assert len(chunk) > 0 and (max_count is None or len(chunk) <= max_count)
            assert len(str(chunk)) <= max(max_chars, len(str(chunk.ranges()[0][0])) * 2 + 1)


def test_parse_reads_what_str_writes():
    for xs in SAMPLES:
        assert UidSet.parse(str(UidSet(xs))) == UidSet(xs)


def test_split_gives_the_lowest_uids_and_the_rest():
    first, rest = UidSet([9, 2, 5, 7, 3]).split(2)
    assert (first, rest) == (UidSet([2, 3]), UidSet([5, 7, 9]))
    assert UidSet([1, 2]).split(5) == (UidSet([1, 2]), UidSet())
