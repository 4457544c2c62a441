"""The rules for a walked Sieve script: one per block of actions, plus where its implicit keep ends.

See `sieve` for the approach. For each block that ends a message's run (it stops, or no later
block can match the same message) the message leaves INBOX there when a `fileinto`/`discard`
ran for it (in this block or an earlier one it certainly passed) and no `keep` did; where that
depends on earlier branches, the block becomes two rules: one for the messages that leave
(conditions of the cancelling and keeping branches added) and one for the rest. Messages that
reach the end of the script get a last rule. A stopping block without mailrules actions
(e.g. only `stop`) cannot be a rule (a rule needs an action): later rules get `not` its
condition instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .conditions import FALSE, Cond, Split, Unconvertible, all_, any_, disjuncts, has_regex, not_, split
from .emit import Rule, Skipped


@dataclass
class Act:
    kind: str  # fileinto, keep, discard, addflag, removeflag, setflag
    line: int
    folder: str = ""
    copy: bool = False
    flags: tuple[str, ...] = ()


@dataclass
class Block:
    """Consecutive actions under one path of branches; `path` is (chain, branch) pairs."""

    path: tuple[tuple[int, int], ...]
    conds: tuple[Cond, ...]
    acts: list[Act]
    stop: bool
    line: int
    removed: bool = False  # every message of this block leaves INBOX here

    @property
    def cancels(self) -> bool:
        return any(a.kind == "discard" or (a.kind == "fileinto" and not a.copy) for a in self.acts)

    @property
    def keeps(self) -> bool:
        return any(a.kind == "keep" for a in self.acts)

    @property
    def cond(self) -> Cond:
        return all_(*self.conds)


def exclusive(a: Block, b: Block) -> bool:
    """No message runs both: they sit in different branches of one if/elsif/else chain."""
    for x, y in zip(a.path, b.path, strict=False):
        if x != y:
            return x[0] == y[0]
    return False


def implied(a: Block, b: Block) -> bool:
    """Every message that runs `b` ran `a`'s branches too (a's path is a prefix of b's)."""
    return len(a.path) <= len(b.path) and b.path[: len(a.path)] == a.path


def removal(actions: list[Any]) -> list[Any]:
    """`actions` ending with the message leaving INBOX: the last copy becomes a move, else delete.

    Flag changes after the last copy would only touch the INBOX message, which leaves: dropped.
    """
    out = list(actions)
    while out and not (isinstance(out[-1], dict) and "copy" in out[-1]):
        out.pop()
    if out:
        out[-1] = {"move": out[-1]["copy"]}
    else:
        out.append("delete")
    return out


def summary(actions: list[Any]) -> str:
    words = [a if isinstance(a, str) else " ".join(f"{k} {v}" for k, v in a.items()) for a in actions]
    text = ", ".join(words) or "stop"
    return text if len(text) <= 60 else text[:57] + "..."


class _Builder:
    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks
        self.rules: list[Rule] = []
        self.skipped: list[Skipped] = []
        self.guards: list[Block] = []  # stopping blocks that could not be rules: later rules exclude them
        self.flags_seen: list[str] = []  # flags set so far in the script, for setflag

    def run(self) -> None:
        for index, block in enumerate(self.blocks):
            self.block(index, block)
        cancelled = [x for x in self.blocks if not x.stop and x.cancels and not x.removed]
        kept = [x for x in self.blocks if not x.stop and x.keeps]
        if cancelled:
            end = Block((), (), [], True, 0)
            cond = all_(any_(*(x.cond for x in cancelled)), not_(any_(*(x.cond for x in kept))))
            self.emit(end, cond, ["delete"], True, "the end of the script: Sieve's implicit keep was cancelled "
                      "(fileinto/discard) and no keep ran, so the message leaves INBOX", name="end of script",
                      leaves=True)

    def block(self, index: int, b: Block) -> None:
        before = [x for x in self.blocks[:index] if not x.stop and not x.removed and not exclusive(x, b)]
        later = [x for x in self.blocks[index + 1:] if not exclusive(b, x)]
        actions = self.actions(b)
        if not (b.stop or not later):  # later rules may act on the same message: leave it in INBOX
            self.emit(b, b.cond, actions, False)
            return
        kept = b.keeps or any(x.keeps and implied(x, b) for x in before)
        certain = b.cancels or any(x.cancels and implied(x, b) for x in before)
        cancel_from = [] if certain else [x for x in before if x.cancels]
        if kept or not (certain or cancel_from):
            self.emit(b, b.cond, actions, b.stop)
            return
        keep_from = [x for x in before if x.keeps]
        extra = []
        if cancel_from:
            extra.append(any_(*(x.cond for x in cancel_from)))
        if keep_from:
            extra.append(not_(any_(*(x.cond for x in keep_from))))
        self.emit(b, all_(b.cond, *extra), removal(actions), True,
                  "the message leaves INBOX here (a fileinto/discard cancelled Sieve's implicit keep)", leaves=True)
        if extra:
            self.emit(b, b.cond, actions, b.stop, "the messages an earlier keep kept in INBOX", suffix=" (kept)")
        else:
            b.removed = True

    def actions(self, b: Block) -> list[Any]:
        out: list[Any] = []
        for act in b.acts:
            if act.kind == "fileinto":
                out.append({"copy": act.folder})
            elif act.kind == "setflag":
                out.extend(_flag_actions("remove", [f for f in self.flags_seen if f not in act.flags]))
                out.extend(_flag_actions("add", act.flags))
            elif act.kind in ("addflag", "removeflag"):
                out.extend(_flag_actions(act.kind[:-4], act.flags))
            if act.kind in ("addflag", "setflag"):
                self.flags_seen.extend(f for f in act.flags if f not in self.flags_seen)
        return out

    def emit(self, b: Block, cond: Cond, actions: list[Any], stop: bool, note: str = "", *,
             suffix: str = "", name: str = "", leaves: bool = False) -> None:
        if not actions:
            if stop:
                self.guards.append(Block(b.path, (cond,), [], True, b.line))
            return
        for guard in self.guards:
            if not exclusive(guard, b):
                cond = all_(cond, not_(guard.cond))
        if cond == FALSE:
            return
        try:
            repeatable = stop or leaves or not any(a.kind == "fileinto" for a in b.acts)
            parts = self.expanded(cond, repeatable)
        except Unconvertible as exc:
            what = f"the actions at line {b.line}" if b.line else "the end-of-script rule"
            self.skipped.append(Skipped(exc.line or b.line, what, exc.why))
            return
        title = name or f"line {b.line}: {summary(actions)}"
        comments = [f"Sieve line {b.line}" + (f": {note}" if note else "")] if b.line else [note]
        for n, part in enumerate(parts, 1):
            more = f" ({n} of {len(parts)})" if len(parts) > 1 else ""
            self.rules.append(Rule(title + suffix + more, actions, part.match, part.where, stop,
                                   comments if n == 1 else [], leaves=leaves))

    @staticmethod
    def expanded(cond: Cond, repeatable: bool) -> list[Split]:
        """The rule's condition as one rule, or as several when regex tests sit under anyof (a
        `where:` cannot OR). A message matching two of them meets the actions twice: harmless when
        the rule stops or ends the message, or when they only set flags (`repeatable`);
        otherwise each later rule gets `not` the earlier ones."""
        if not has_regex(cond) or cond[0] == "re" or (cond[0] == "all" and not any(
                c[0] in ("any", "not") and has_regex(c) for c in cond[1])):
            return [split(cond)]
        parts = sorted(disjuncts(cond), key=has_regex)  # `not` of a regex cannot be written: those last
        if not repeatable:
            parts = [all_(p, *(not_(q) for q in parts[:i])) for i, p in enumerate(parts)]
        return [split(p) for p in parts if p != FALSE]


def _flag_actions(verb: str, flags: Any) -> list[Any]:
    system = [f for f in flags if f.startswith("\\")]
    keywords = [f for f in flags if not f.startswith("\\")]
    out: list[Any] = [{f"{verb}_flag": f} for f in system]
    if keywords:
        out.append({f"{verb}_keyword": keywords[0] if len(keywords) == 1 else keywords})
    return out


def build_rules(blocks: list[Block]) -> tuple[list[Rule], list[Skipped]]:
    builder = _Builder(blocks)
    builder.run()
    return builder.rules, builder.skipped
