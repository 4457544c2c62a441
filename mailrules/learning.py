"""What `mailrules suggest` learns from: per folder, the List-Id, sender address or sender domain
values that explain how its messages were filed. Pure (no IMAP), so it is tested offline.

A value is a candidate for folder F when most of the messages carrying it are in F
(`MIN_SHARE`: a few filed by hand elsewhere are tolerated); for each folder the candidates are
chosen greedily by how many of its not-yet-explained messages they add, the more specific
kind first on ties (a List-Id before an address before a domain), so a domain is chosen only
where it explains more than its addresses would. The chosen values become one rule per folder
(several values of a kind are merged into `any:`); coverage and precision are then measured by
running that rule with the local evaluator (`local_search.matches`) over every fetched header,
never taken from the counting above.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .local_search import LocalMessage, decode_header_words, matches
from .model import AnyOf, Criterion, Header, Text

MIN_SHARE = 0.8  # of a value's messages that must be in the folder
MIN_COUNT = 2  # messages of the folder a value must explain
KIND_ORDER = {"list": 0, "address": 1, "domain": 2}
_LIST_ID = re.compile(r"<([^<>\s]+)>")
_NOW = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # header-only criteria never read the time


@dataclass
class Seen:
    """One message's headers as fetched: its folder and the values it can be filed by."""

    folder: str
    raw: bytes
    values: dict[str, str] = field(default_factory=dict)  # kind -> value

    @classmethod
    def from_headers(cls, folder: str, raw: bytes) -> Seen:
        seen = cls(folder, raw)
        text = raw.decode("utf-8", "replace")
        fields = dict(re.findall(r"(?im)^(from|list-id):[ \t]*(.*(?:\r?\n[ \t].*)*)", text)[::-1])
        fields = {k.lower(): v for k, v in fields.items()}
        raw_id = fields.get("list-id", "").strip()
        list_id = _LIST_ID.search(raw_id)
        if list_id or raw_id:  # RFC 2919 puts the id in <>; some lists write it bare
            seen.values["list"] = (list_id.group(1) if list_id else raw_id.split()[-1]).lower()
        address = email.utils.parseaddr(decode_header_words(fields.get("from", "").encode()))[1].lower()
        if "@" in address:
            seen.values["address"] = address
            seen.values["domain"] = address.rsplit("@", 1)[1]
        return seen

    @cached_property
    def message(self) -> LocalMessage:
        """The headers as the local evaluator reads a message (parsed once, for every proposal)."""
        return LocalMessage(self.raw + b"\r\n", internaldate=_NOW)


@dataclass
class Proposal:
    folder: str
    values: list[tuple[str, str]]  # (kind, value)
    folder_size: int
    covered: int = 0  # messages of the folder the rule matches
    wrong: int = 0  # messages elsewhere it would take

    @property
    def precision(self) -> float:
        return self.covered / max(self.covered + self.wrong, 1)

    def criterion(self) -> Criterion:
        parts = [_criterion(kind, value) for kind, value in self.values]
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))

    def match(self) -> dict[str, Any]:
        """The `match:` mapping a rules file writes for `criterion()`."""
        parts = [_mapping(kind, value) for kind, value in self.values]
        return parts[0] if len(parts) == 1 else {"any": parts}


def _criterion(kind: str, value: str) -> Criterion:
    if kind == "list":
        return Header("List-Id", value)
    return Text("from", value if kind == "address" else "@" + value)


def _mapping(kind: str, value: str) -> dict[str, Any]:
    if kind == "list":
        return {"header": {"List-Id": value}}
    return {"from": value if kind == "address" else "@" + value}


def propose(messages: list[Seen], folders: list[str], *, min_messages: int = 10,
            explained: dict[str, set[int]] | None = None) -> list[Proposal]:
    """A proposal per folder of `folders` (with at least min_messages), best coverage first.

    explained: per folder, indexes of `messages` that existing rules already file there (so a
    proposal never repeats an existing rule).
    """
    totals: Counter[tuple[str, str]] = Counter()
    by_folder: dict[str, list[int]] = defaultdict(list)
    for index, seen in enumerate(messages):
        by_folder[seen.folder].append(index)
        for kind, value in seen.values.items():
            totals[(kind, value)] += 1
    proposals = []
    for folder in folders:
        members = [i for i in by_folder.get(folder, []) if i not in (explained or {}).get(folder, set())]
        if len(by_folder.get(folder, [])) < min_messages or len(members) < MIN_COUNT:
            continue
        chosen = _choose(messages, members, totals)
        if chosen:
            proposals.append(measure(Proposal(folder, chosen, len(by_folder[folder])), messages))
    return sorted(proposals, key=lambda p: (-p.covered, p.folder))


def _choose(messages: list[Seen], members: list[int], totals: Counter) -> list[tuple[str, str]]:
    carrying: dict[tuple[str, str], set[int]] = defaultdict(set)  # value -> the folder's messages with it
    for i in members:
        for key in messages[i].values.items():
            carrying[key].add(i)
    good = {key for key, found in carrying.items()
            if len(found) >= MIN_COUNT and len(found) / totals[key] >= MIN_SHARE}
    left = set(members)
    chosen: list[tuple[str, str]] = []
    while left and good:
        gain = {key: len(carrying[key] & left) for key in good}
        best = min(good, key=lambda k: (-gain[k], KIND_ORDER[k[0]], k[1]))
        if gain[best] < MIN_COUNT:
            break
        chosen.append(best)
        good.discard(best)
        left -= carrying[best]
    return sorted(chosen, key=lambda k: (KIND_ORDER[k[0]], k[1]))


def measure(proposal: Proposal, messages: list[Seen]) -> Proposal:
    """Coverage and precision of the proposed rule, by running it with the local evaluator.

    The rule reads only the fetched header fields, so messages with the same fields get the
    same answer: each distinct set of fields is evaluated once (senders repeat: on a large
    account that is most of the work saved).
    """
    criterion = proposal.criterion()
    proposal.covered = proposal.wrong = 0
    for group in _distinct(messages):
        if matches(criterion, group[0].message, now=_NOW):
            inside = sum(1 for seen in group if seen.folder == proposal.folder)
            proposal.covered += inside
            proposal.wrong += len(group) - inside
    return proposal


def _distinct(messages: list[Seen]) -> list[list[Seen]]:
    groups: dict[bytes, list[Seen]] = {}
    for seen in messages:
        groups.setdefault(seen.raw, []).append(seen)
    return list(groups.values())
