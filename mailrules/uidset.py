"""UID sets: sorted, duplicate-free, written compactly in IMAP syntax ("1:5,8,10:12")."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import compress, filterfalse
from operator import sub


class UidSet:
    """An immutable, sorted set of UIDs."""

    __slots__ = ("_text", "_uids")

    def __init__(self, uids: Iterable[int] = ()) -> None:
        self._uids: tuple[int, ...] = uids._uids if isinstance(uids, UidSet) else tuple(sorted(set(uids)))
        self._text: str | None = None  # str(self), kept: a batch's set is written to the journal and the server

    @classmethod
    def _of_sorted(cls, uids: tuple[int, ...]) -> UidSet:
        """A set of UIDs already sorted and without duplicates (no sorting again: a pass builds
        many sets of ten thousand UIDs)."""
        out = cls.__new__(cls)
        out._uids = uids
        out._text = None
        return out

    @classmethod
    def parse(cls, text: str) -> UidSet:
        """Parse IMAP sequence-set syntax without '*' (e.g. '1:5,8')."""
        out: list[int] = []
        for part in filter(None, text.split(",")):
            if ":" in part:
                lo, hi = (int(x) for x in part.split(":", 1))
                out.extend(range(min(lo, hi), max(lo, hi) + 1))
            else:
                out.append(int(part))
        return cls(out)

    def __iter__(self) -> Iterator[int]:
        return iter(self._uids)

    def __len__(self) -> int:
        return len(self._uids)

    def __bool__(self) -> bool:
        return bool(self._uids)

    def __contains__(self, uid: object) -> bool:
        i = bisect_left(self._uids, uid)  # type: ignore[arg-type]
        return i < len(self._uids) and self._uids[i] == uid

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UidSet) and self._uids == other._uids

    def __hash__(self) -> int:
        return hash(self._uids)

    def __repr__(self) -> str:
        return f"UidSet({str(self)!r})"

    def ranges(self) -> list[tuple[int, int]]:
        uids = self._uids
        if not uids:
            return []
        # where a range ends: the positions whose UID is not its predecessor's + 1 (found in C)
        starts = [0, *compress(range(1, len(uids)), map((1).__ne__, map(sub, uids[1:], uids)))]
        ends = [i - 1 for i in starts[1:]] + [len(uids) - 1]
        return [(uids[a], uids[b]) for a, b in zip(starts, ends, strict=True)]

    def __str__(self) -> str:
        if self._text is None:
            self._text = ",".join(str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in self.ranges())
        return self._text

    def chunks(self, max_chars: int = 4000, max_count: int | None = None) -> Iterator[UidSet]:
        """Split into sets whose IMAP text stays under max_chars (and count under max_count)."""
        current: list[int] = []
        length = 0
        for lo, hi in self.ranges():
            piece = len(str(lo)) + (len(str(hi)) + 1 if hi != lo else 0) + 1
            span = list(range(lo, hi + 1))
            if current and (length + piece > max_chars or (max_count and len(current) + len(span) > max_count)):
                yield UidSet._of_sorted(tuple(current))
                current, length = [], 0
            if max_count and len(span) > max_count:
                for i in range(0, len(span), max_count):
                    part = span[i : i + max_count]
                    if len(part) == max_count:
                        yield UidSet._of_sorted(tuple(part))
                    else:
                        current, length = part, piece
                continue
            current.extend(span)
            length += piece
        if current:
            yield UidSet._of_sorted(tuple(current))

    def cover_text(self, max_chars: int) -> str:
        """IMAP text of a set that contains every UID here, and maybe others, in <= max_chars.

        For searches whose results are intersected with this set again: gaps between
        ranges up to the smallest sufficient width are bridged, so one command suffices.
        """
        text = str(self)
        if len(text) <= max_chars:
            return text
        ranges = self.ranges()

        def bridged(width: int) -> str:
            merged = [ranges[0]]
            for lo, hi in ranges[1:]:
                if lo - merged[-1][1] - 1 <= width:
                    merged[-1] = (merged[-1][0], hi)
                else:
                    merged.append((lo, hi))
            return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in merged)

        widths = sorted({lo - ranges[i][1] - 1 for i, (lo, _hi) in enumerate(ranges[1:])})
        low, high = 0, len(widths) - 1  # bridging every gap always fits: "first:last"
        while low < high:
            mid = (low + high) // 2
            if len(bridged(widths[mid])) <= max_chars:
                high = mid
            else:
                low = mid + 1
        return bridged(widths[low])

    def __or__(self, other: Iterable[int]) -> UidSet:
        return UidSet([*self._uids, *other])

    def __sub__(self, other: Iterable[int]) -> UidSet:
        drop = set(other._uids if isinstance(other, UidSet) else other)
        return UidSet._of_sorted(tuple(filterfalse(drop.__contains__, self._uids)))

    def __and__(self, other: Iterable[int]) -> UidSet:
        keep = set(other._uids if isinstance(other, UidSet) else other)
        return UidSet._of_sorted(tuple(filter(keep.__contains__, self._uids)))

    def split(self, count: int) -> tuple[UidSet, UidSet]:
        """The `count` lowest UIDs, and the rest (already sorted: nothing sorted again)."""
        return UidSet._of_sorted(self._uids[:count]), UidSet._of_sorted(self._uids[count:])

    @property
    def max(self) -> int:
        return self._uids[-1] if self._uids else 0
