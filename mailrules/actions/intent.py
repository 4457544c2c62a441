"""The typed intent of a copy or move, as journaled before it runs (JSON in the state file).

A copy may be left half-done by a crash, or may have happened although it failed (the link
to another account died before the destination confirmed an APPEND). Its intent records the
destination's UIDNEXT before it started, so that a resume (or the retry of a failure) looks
for the messages there, by content, before copying them again (`mailrules.actions.copy`).

The JSON forms are those older versions stored too: ``{"account", "dest", "uidnext",
"uncertain"?, "verified"?, "copied"?}``, where "uncertain" is one dict in the oldest state
files and a list of ``{"uids", "uidnext", "claimed"?}`` now. A retry's resume detail
(`mailrules.state.Pending.resume_detail`) is ``{"account", "dest", "uidnext", "claimed"?}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..uidset import UidSet


def uncertain_groups(detail: Mapping[str, Any]) -> list[dict]:
    """The earlier, possibly carried out attempts a copy's intent `detail` names (a dict in
    state files of older versions, a list of {"uids", "uidnext", "claimed"?} now)."""
    uncertain = detail.get("uncertain")
    if not uncertain:
        return []
    return [uncertain] if isinstance(uncertain, dict) else list(uncertain)


@dataclass(frozen=True)
class Attempt:
    """An earlier attempt, for these `uids`, that may have landed at or above UID `uidnext`.

    claimed: content digests of arrivals at or above `uidnext` that are copies of messages
    already finished (they prove nothing for these).
    """

    uids: UidSet
    uidnext: int
    claimed: tuple[str, ...] = ()

    def to_json(self) -> dict:
        out: dict = {"uids": str(self.uids), "uidnext": self.uidnext}
        if self.claimed:
            out["claimed"] = list(self.claimed)
        return out


@dataclass(frozen=True)
class Verified:
    """What a cross-account copy proved before removing any source or giving up: the sources
    proven copied (`done`), the UID from which an unconfirmed APPEND may have landed, and the
    digests of confirmed APPENDs at or above it that had no APPENDUID (`claimed`)."""

    uidnext: int
    done: UidSet
    claimed: tuple[str, ...] = ()

    def to_json(self) -> dict:
        out: dict = {"uidnext": self.uidnext, "done": str(self.done)}
        if self.claimed:
            out["claimed"] = list(self.claimed)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verified:
        return cls(int(data["uidnext"]), UidSet.parse(data.get("done") or ""), tuple(data.get("claimed") or ()))


@dataclass(frozen=True)
class CopyIntent:
    """A copy's (or a move's) intent: destination `dest` (server name) in `account`, whose
    UIDNEXT was `uidnext` before it started."""

    account: str | None
    dest: str
    uidnext: int
    uncertain: tuple[Attempt, ...] = ()
    verified: Verified | None = None
    copied: bool = False  # older versions: a move's COPY had completed

    @classmethod
    def from_json(cls, detail: Mapping[str, Any] | None) -> CopyIntent | None:
        """The intent of a journal's detail; None when it is not a copy's."""
        if not detail or detail.get("uidnext") is None:
            return None
        attempts = tuple(
            Attempt(UidSet.parse(g["uids"]), int(g["uidnext"]), tuple(g.get("claimed") or ()))
            for g in uncertain_groups(detail)
        )
        verified = detail.get("verified")
        return cls(detail.get("account"), detail["dest"], int(detail["uidnext"]), attempts,
                   Verified.from_json(verified) if verified else None, bool(detail.get("copied")))

    def to_json(self) -> dict:
        out: dict = {"account": self.account, "dest": self.dest, "uidnext": self.uidnext}
        if self.uncertain:
            out["uncertain"] = [a.to_json() for a in self.uncertain]
        if self.verified is not None:
            out["verified"] = self.verified.to_json()
        if self.copied:
            out["copied"] = True
        return out

    def with_verified(self, verified: Verified | None) -> CopyIntent:
        return self if verified is None else replace(self, verified=verified)

    def with_uncertain(self, earlier: Mapping[int, Mapping[str, Any]]) -> CopyIntent:
        """Plus the retried messages whose earlier copy may have happened.

        earlier: uid -> the resume detail recorded when its copy failed. Only those that failed
        copying to the same destination count (the rules file may have changed since).
        Messages of the same earlier attempt form one group: its window ("uidnext") and the
        arrivals it claimed for messages already finished ("claimed") are kept apart from other
        attempts'.
        """
        groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        for uid, d in earlier.items():
            if (d.get("account"), d.get("dest")) == (self.account, self.dest):
                groups.setdefault((int(d["uidnext"]), tuple(d.get("claimed") or ())), []).append(uid)
        if not groups:
            return self
        attempts = tuple(Attempt(UidSet(uids), since, claimed) for (since, claimed), uids in sorted(groups.items()))
        return replace(self, uncertain=attempts)

    def retry_details(self, uids: Iterable[int]) -> dict[int, dict]:
        """After this copy failed: what each message's retry must verify first (resume details)."""
        where = {"account": self.account, "dest": self.dest}
        if self.verified is not None:
            # The attempt checked every earlier uncertainty: only its own unconfirmed APPEND,
            # at or above verified.uidnext, may have landed.
            base: dict = {**where, "uidnext": self.verified.uidnext}
            if self.verified.claimed:
                base["claimed"] = list(self.verified.claimed)
            return {uid: dict(base) for uid in uids if uid not in self.verified.done}
        out = {}
        for uid in uids:
            since = self.uidnext
            claimed: list[str] = []
            for attempt in self.uncertain:
                if uid in attempt.uids:
                    since = min(since, attempt.uidnext)
                    claimed += attempt.claimed
            out[uid] = {**where, "uidnext": since, **({"claimed": claimed} if claimed else {})}
        return out

    def windows(self, uids: UidSet, resuming: bool) -> tuple[dict[int, int], list[tuple[str, int]], UidSet]:
        """What to verify of an earlier attempt.

        Returns (uid -> the destination UID from which its copy may have landed; claims: (digest,
        from-UID) of arrivals that are copies of messages already finished; the UIDs the journal
        already records as proven copied).
        """
        if resuming and self.verified is not None:
            # the attempt journaled what it had proven before removing or giving up anything
            proven = self.verified.done & uids
            start = self.verified.uidnext
            claims = [(d, start) for d in self.verified.claimed]
            return {uid: start for uid in uids if uid not in proven}, claims, proven
        since: dict[int, int] = dict.fromkeys(uids, self.uidnext) if resuming else {}
        claims = []
        for attempt in self.uncertain:
            for uid in attempt.uids & uids:
                since[uid] = min(attempt.uidnext, since.get(uid, attempt.uidnext))
            claims += [(d, attempt.uidnext) for d in attempt.claimed]
        return since, claims, UidSet()
