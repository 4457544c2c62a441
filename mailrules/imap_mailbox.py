"""The IMAP implementation of the pass kernel's `Mailbox`: batched, pipelined, journaled.

First, one round trip of read-only commands (`open`): the candidates' Message-IDs, and the
searches of the rules whose result cannot depend on the rules before them. Then, as the
kernel (`mailrules.kernel.run_pass`) walks the rules: each rule's search result (or, for
rules on flags, size or body, one UID SEARCH restricted to the candidates still in play),
then its `where:` predicates on what the server returned (fetching only the parts they
need, in batches), then each action as UID-set commands (`mailrules.actions`).

Every step is journaled in the state store (`mailrules.state`), so a crash resumes exactly
where it stopped; the intent of an action in progress is verified on resume by the action
itself (`Action.read_intent`, `Action.execute`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import local_headers
from .actions.base import ActionFailed, ActionRun
from .ahead import Ahead
from .api import Action, ActionEvent
from .criteria import SearchQuery, compile_search, reads_of
from .dryrun import DryRunReport
from .dryrun_overlay import FlagOverlay, search_overlaid
from .fetching import fetch_items, view_of
from .imap.beside import Beside
from .imap.fetchpipe import pipelined_fetch
from .imap.session import FETCH_BATCH, ImapSession, Selected, ServerRefused
from .journal import Failure, done_detail
from .kernel import Position
from .message import MessageView
from .model import ActionCall, All, Criterion, Rule
from .plugins import Registry, TimeLimit
from .prefilter_choice import search_prefiltered
from .state import RunRecord, StateStore, Step
from .uidset import UidSet

log = logging.getLogger("mailrules.engine")

SEARCH_REFUSED = "the server refused its search"



@dataclass
class PassSettings:
    """What the engine gives every IMAP pass (the same for all of its passes)."""

    registry: Registry
    store: StateStore | None  # writes (None in a dry run)
    reader: StateStore | None  # reads: a dry run still knows what is new
    dry_run: bool
    predicate_timeout: float | None
    limiter: TimeLimit
    connect: Callable[[str], ImapSession]
    watched: Callable[[str, str], bool]
    interrupt: Callable[[], None]  # raises to abandon the pass
    accounts: Collection[str] = ()
    # account -> how to open a connection for searches beside the pass (`mailrules.imap.beside`), or None
    beside: Callable[[str], Callable[[str, int], Beside] | None] = lambda _account: None
    warned: set[str] = field(default_factory=set)


@dataclass
class PassResults:
    """What a pass reports back to the engine, which owns the Outcome and closes the journal's run."""

    matched: dict[str, int]  # rule name -> how many it matched (Outcome.matched)
    refused: dict[str, str]  # rule name -> why the server refused its search (Outcome.refused)
    report: DryRunReport | None = None  # --dry-run: what each rule would do (`mailrules.dryrun`)
    applied: int = 0  # message-actions applied
    headers: dict[int, tuple[str, str]] = field(default_factory=dict)  # --dry-run: UID -> (From, Subject)
    failures: dict[int, Failure] = field(default_factory=dict)
    owed: dict[str, UidSet] = field(default_factory=dict)  # refused rule -> the messages it did not get
    retry_details: dict[int, dict] = field(default_factory=dict)  # failed now: what their retry must verify


@dataclass
class ClaimHooks:
    """Shared mailboxes (mailrules.claims): set by the engine before the pass, None when not shared."""

    # before each action batch, (rule, action, UIDs) -> the UIDs still ours
    guard: Callable[[int, int, UidSet], UidSet] | None = None
    # shared sweeps: (rule, action index, UIDs) -> those no instance did it on yet
    sweep_claim: Callable[[Rule, int, UidSet], UidSet] | None = None


class ImapPass:
    """One pass of rules over candidates of the selected mailbox, for `mailrules.kernel.run_pass`."""

    def __init__(
        self, settings: PassSettings, session: ImapSession, account: str, server: str, rules: Sequence[Rule],
        candidates: dict[int, Position], run: RunRecord | None, *, kind: str,
        matched: dict[str, int], refused: dict[str, str], report: DryRunReport | None = None,
    ) -> None:
        self.s = settings
        self.candidates = candidates
        self.run = run
        self.kind = kind
        self.out = PassResults(matched, refused, report)
        sel = session.selected
        assert sel is not None
        self.steps: dict[tuple[int, int], Step] = {(s.rule_index, s.action_index): s
                                                   for s in (run.steps if run else ())}
        self.seq = max((s.seq for s in run.steps), default=-1) + 1 if run else 0
        self.mids: dict[int, str] = {}
        self.searched: dict[int, UidSet] = {}
        self.ctx = ActionRun(
            session=session, account=account, mailbox=server, selected=sel, rule=rules[0] if rules else None,  # type: ignore[arg-type]
            message_ids=self.mids, registry=settings.registry, connect=settings.connect, watched=settings.watched,
            store=settings.store, dry_run=settings.dry_run, warned=settings.warned, accounts=settings.accounts,
        )
        # Retries of copies that failed uncertainly (the destination may have stored them):
        # the action first looks for them there (see mailrules.actions.copy).
        pending = settings.reader.pending(account, server, sel.uidvalidity) if settings.reader else []
        self.earlier = {p.uid: p.resume_detail for p in pending if p.resume_detail and p.uid in candidates}
        self.hooks = ClaimHooks()
        self.overlay = FlagOverlay()  # a dry run: the flags its simulated actions set (`simulate`)
        self.ahead = Ahead()  # what is sent before its turn, and read later (`apply`, `_send_ahead`)

    # The connection, account, mailbox and its selection: the action context's, held once.

    @property
    def session(self) -> ImapSession:
        return self.ctx.session

    @property
    def account(self) -> str:
        return self.ctx.account

    @property
    def server(self) -> str:
        return self.ctx.mailbox

    @property
    def sel(self) -> Selected:
        return self.ctx.selected

    # ------------------------------------------------------------------ the kernel's protocol

    def between(self) -> None:
        self._finish_later(wait=False)  # read in passing by the commands since (`mailrules.imap.later`)
        self.s.interrupt()

    def open(self, rules: Sequence[Rule], within: UidSet) -> None:
        """The pass's read-only work, pipelined in one round trip (see `mailrules.imap.pipeline`).

        Fills the Message-IDs of the candidates (fetched with the header fields the rules
        search, which a caching server then reads once) and notes, by rule index, the server's
        answers to the searches whose result cannot depend on the earlier rules: criteria that
        read neither flags nor whole messages (size, body), and no `where:`. The others are
        searched at their turn, over the messages still in play. Also lists the folders the
        rules copy or move to. Whatever the server refuses here is done again, the ordinary
        way, when the rule's turn comes.
        """
        session = self.session
        self.ahead.rules, self.ahead.in_play = rules, set(within)
        pipe = session.pipeline()
        # Not worth it when the rules' predicates fetch the Message-IDs anyway (`where:`), or for
        # one rule over a large mailbox (a sweep): the Message-IDs of the messages it acts on
        # are fetched then.
        plain = any(not rule.where for rule in rules)
        fetch = not self.s.dry_run and plain and (len(rules) > 1 or len(within) <= FETCH_BATCH)
        skip = {i for i in range(len(rules)) if (i, -1) in self.steps}
        local = local_headers.plan(rules, skip) if fetch and self._local_headers() else None
        fields: set[str] = set()
        queries = []
        beside = self.ahead.open_beside(self, within, skip, local.rules if local is not None else (), fetch)
        for i, rule in enumerate(rules):
            reads = reads_of(rule.match)
            fields |= reads.headers
            if (local is not None and i in local.rules) or i in beside:
                continue  # decided on the fetched header fields (mailrules.local_headers), or searched beside
            if i not in skip and not reads.mutable and not reads.costly and not rule.where:
                queries.append((i, compile_search(rule.match, session.capabilities)))
        sink, mine = local.take if local is not None else None, within
        if fetch:  # a share of it on the second connection, if there is one
            mine, sink = self.ahead.share_fetch(within, fields, FETCH_BATCH, sink)
        headers = pipe.headers(mine, fields, FETCH_BATCH, sink) if fetch else None
        pending = {i: pipe.search(query, within) for i, query in queries}
        folders = None if self.s.dry_run else pipe.folders(self._destinations(rules))
        pipe.run()
        session.note_folders(folders)
        answered = {} if headers is None else headers.message_ids  # what the fetch returned
        if headers is not None and mine is not within:
            answered.update(self.ahead.beside.message_ids())  # type: ignore[union-attr]
        self.mids.update(answered)
        self.searched = {i: p.result for i, p in pending.items() if p is not None and p.result is not None}
        if local is not None:
            self._settle_local(rules, local, within, answered)
        if self.ahead.beside is not None:
            self.ahead.search_beside(self, within, beside)

    def _local_headers(self) -> bool:
        """Whether header-only rules are decided on the fetched fields: on Dovecot, whose SEARCH
        `mailrules.local_search` reproduces (identified by ID, as the body prefilter's server)."""
        if not local_headers.enabled():
            return False
        software = getattr(self.session, "server_software", "")  # ID, asked once per connection
        return isinstance(software, str) and software.startswith("dovecot")

    def _settle_local(self, rules: Sequence[Rule], local: local_headers.PendingLocal, within: UidSet,
                      answered: Collection[int]) -> None:
        """The local answers, with the server's SEARCH over the messages they could not decide
        (all such searches pipelined in one round trip). A refused one leaves its rule to be
        searched whole at its turn."""
        local.finish(within, answered)
        asked = local.questions()
        pending = {}
        if asked:
            pipe = self.session.pipeline()
            pending = {i: pipe.search(compile_search(rules[i].match, self.session.capabilities), uids)
                       for i, uids in asked.items()}
            pipe.run()
        for i in local.rules:
            extra = UidSet()
            if i in pending:
                p = pending[i]
                if p is None or p.result is None:
                    continue
                extra = p.result
            self.searched[i] = UidSet(local.matched[i]) | extra
        log.debug("account %s mailbox %s: %d rules decided on the fetched headers, %d messages asked of the server",
                  self.account, self.server, len(local.rules), sum(len(u) for u in asked.values()))

    def _destinations(self, rules: Sequence[Rule]) -> list[str]:
        """Server names of the folders in this account that the rules' actions put messages in."""
        out = []
        for rule in rules:
            for call in rule.actions:
                for ref in self.s.registry.actions[call.name].destinations(call.arg):
                    if ref.account in (None, "", self.account):
                        try:
                            out.append(self.session.server_name(ref.path))
                        except ValueError:
                            continue  # reported when the action runs
        return out

    def match(self, index: int, rule: Rule, searchable: UidSet) -> tuple[UidSet, set[int]]:
        self.ctx.rule = rule
        step = self.steps.get((index, -1))
        undecided: set[int] = set()
        if step is not None:
            matched = step.uids & searchable  # journaled before a crash: its UIDs still in play
        else:
            if index not in self.searched and rule.actions:  # searched now: its first action's searches go along
                self.ahead.action_searches(self, index, 0, searchable)
            matched = self._match(rule, searchable, index, undecided)
            self.ahead.in_play -= undecided
            if self.run is not None:
                self.s.store.add_step(self.run.id, self.seq, index, -1, matched, "done")  # type: ignore[union-attr]
                self.seq += 1
        self.out.matched[rule.name] = len(matched)
        log.debug("rule %r account %s mailbox %s: %d of %d messages match", rule.name, self.account, self.server,
                  len(matched), len(searchable), extra={"event": "search", "rule": rule.name,
                                                        "account": self.account, "mailbox": self.server,
                                                        "count": len(matched)})
        return matched, undecided

    def present(self, index: int, rule: Rule, targets: UidSet) -> bool:
        if self.s.dry_run:  # described (a few samples fetched), never carried out
            if self.out.report is not None:
                shown = UidSet(u for u in self.out.report.sample_uids(targets) if u not in self.out.headers)
                if shown:
                    self._sample_headers(shown)
                self.out.report.add(rule, targets, self.out.headers)
            return False
        need_ids = UidSet(u for u in targets if u not in self.mids)
        if need_ids:
            self.mids.update(self.session.message_ids(need_ids))
        return True

    def simulate(self, i: int, a: int, rule: Rule, call: ActionCall, targets: UidSet) -> set[int]:
        """A dry run: the flags the action would set, kept for the later rules' searches
        (`mailrules.dryrun_overlay`); a terminal action's messages leave play."""
        action: Action = self.s.registry.actions[call.name]
        self.overlay.record(targets, *action.flag_changes(call.arg))
        return set(targets) if action.terminal else set()

    def apply(self, i: int, a: int, rule: Rule, call: ActionCall, targets: UidSet) -> set[int]:
        store, run, sel = self.s.store, self.run, self.sel
        action: Action = self.s.registry.actions[call.name]
        sweep_once = self.kind == "sweep" and action.once_per_rule
        if sweep_once and store is not None:
            targets -= store.swept(self.account, self.server, rule.name, sel.uidvalidity, a)
        if not targets:
            return set()
        step = self.steps.get((i, a))
        if step is not None and step.state == "done":
            return set()
        if step is not None and step.state == "failed":
            for uid in step.uids:
                self.out.failures[uid] = Failure(i, rule.name, a, self.mids.get(uid), "failed before the pass was interrupted")
            intent = action.read_intent(step.detail)
            if intent is not None:
                self.out.retry_details.update(intent.retry_details(step.uids))
            return set(step.uids)
        lost: set[int] = set()
        resuming = step is not None and step.state == "intent"
        if sweep_once and self.hooks.sweep_claim is not None and not resuming:
            targets = self.hooks.sweep_claim(rule, a, targets)  # shared: once across instances
            if not targets:
                return lost
        job = _Job(i, a, rule, call, action, targets, None, self.seq)
        try:
            if resuming:
                job.intent = action.read_intent(step.detail)  # type: ignore[union-attr]
            else:
                job.intent = action.intent(self.ctx, call.arg, targets)
                earlier = {u: self.earlier[u] for u in targets if u in self.earlier and self.candidates[u] == (i, a)}
                if job.intent is not None and earlier:
                    job.intent = job.intent.with_uncertain(earlier)
            if run is not None:
                store.add_step(run.id, self.seq, i, a, targets, "intent", _json(job.intent))  # type: ignore[union-attr]
            self.ctx.journal = _journal(store, run, self.seq, i, a, targets)
            if self.hooks.guard is not None:  # shared: only the messages still ours, just before the action
                kept = self.hooks.guard(i, a, targets)
                lost = set(targets - kept)
                job.targets = targets = kept
                if not targets:  # every one taken over: nothing to do, nothing to resume
                    if run is not None:
                        store.add_step(run.id, self.seq, i, a, UidSet(lost), "done")  # type: ignore[union-attr]
                        self.seq += 1
                    return lost
            self.seq += 1
            start = getattr(action, "start", None)  # a built-in: its answer may be read later
            if not action.terminal:
                self.ahead.next_step(self, i, a, targets, start is not None)
            if start is None:
                result = action.execute(self.ctx, call.arg, targets, job.intent, resuming)
                job.finish = lambda: result
            else:
                job.finish = start(self.ctx, call.arg, targets, job.intent, resuming)
        except (ActionFailed, ServerRefused, ValueError) as exc:
            return self._failed(job, exc) | lost
        if action.terminal and self.session.later.busy and self.hooks.guard is None and self.hooks.sweep_claim is None:
            self.ahead.jobs.append(job)  # sent; its messages leave play either way: the next command goes first
            self.ahead.in_play -= set(targets) | lost
            return set(targets) | lost
        left = self._finish(job) | lost
        self.ahead.in_play -= left
        return left

    def close(self, abandoned: bool = False) -> None:
        """The actions whose answer is read late (`apply`): read, journaled, logged now. A pass
        abandoned on a lost connection leaves their intent journaled, resumed as after a crash."""
        if self.ahead.beside is not None:
            self.ahead.beside.close()
        try:
            self._finish_later(wait=True)
            self.session.later.settle()  # searches sent ahead and not needed
            self.session.later.forget()
        except Exception as exc:  # noqa: BLE001 - abandoned: the pass's own error is the one raised
            if not abandoned:
                raise
            log.debug("account %s mailbox %s: actions in flight not read: %s", self.account, self.server, exc)

    def _finish_later(self, wait: bool) -> None:
        """Finish the actions sent whose answers are read (or, wait: read them now)."""
        if not self.ahead.jobs or (not wait and self.session.later.busy):
            return
        jobs, self.ahead.jobs = self.ahead.jobs, []
        for job in jobs:
            self._finish(job)

    def _finish(self, job: _Job) -> set[int]:
        """Read a started action's outcome (`Action.start`) and journal it: the UIDs that leave play."""
        try:
            result = job.finish()
        except (ActionFailed, ServerRefused, ValueError) as exc:
            return self._failed(job, exc)
        store, run, rule, call, action, targets = self.s.store, self.run, job.rule, job.call, job.action, job.targets
        if run is not None:
            detail = done_detail(call.name, f"{call.name} {action.describe(call.arg)}".rstrip(), result.detail,
                                 targets, self.mids)
            store.add_step(run.id, job.seq, job.i, job.a, targets, "done", detail)  # type: ignore[union-attr]
            if self.kind == "sweep" and action.once_per_rule:
                store.add_swept(self.account, self.server, rule.name, self.sel.uidvalidity, job.a, targets)  # type: ignore[union-attr]
        self.out.applied += len(targets)
        self._log_action(rule, call, action, targets)
        self.s.registry.notify("mailrules_action_applied", event=ActionEvent(
            rule.name, self.account, self.server, call.name, call.arg, tuple(targets),
            tuple(self.mids.get(u, "") for u in targets), self.s.dry_run))
        return set(targets) if result.removed else set()

    def _failed(self, job: _Job, exc: Exception) -> set[int]:
        """An action failed (`exc`) for its batch: logged, journaled, retried later from this action
        (but for those it did: `ActionFailed.done`). The UIDs that leave play."""
        rule, call, action, targets = job.rule, job.call, job.action, job.targets
        done = exc.done if isinstance(exc, ActionFailed) else UidSet()
        if isinstance(exc, ActionFailed) and exc.verified is not None and job.intent is not None:
            job.intent = job.intent.with_verified(exc.verified)  # what the retry must check
        still = self.session.existing(targets - done)
        for uid in still:
            self.out.failures[uid] = Failure(job.i, rule.name, job.a, self.mids.get(uid), str(exc))
        if job.intent is not None:
            self.out.retry_details.update(job.intent.retry_details(still))
        if self.run is not None:
            self.s.store.add_step(self.run.id, job.seq, job.i, job.a, targets, "failed",  # type: ignore[union-attr]
                                  _json(job.intent) or None)
            self.seq = max(self.seq, job.seq + 1)
        log.error("rule %r account %s mailbox %s: %s %s failed for %d messages (UIDs %s): %s",
                  rule.name, self.account, self.server, call.name, action.describe(call.arg), len(still),
                  still, exc,
                  extra={"event": "action_failed", "rule": rule.name, "account": self.account,
                         "mailbox": self.server, "action": f"{call.name} {action.describe(call.arg)}".rstrip(),
                         "uids": list(still), "message_ids": [self.mids.get(u) or "" for u in still],
                         "count": len(still), "error": str(exc)})
        return set(targets) - set(done)  # those done go on to the next actions

    # ------------------------------------------------------------------ matching

    def _match(self, rule: Rule, searchable: UidSet, index: int, undecided: set[int]) -> UidSet:
        """The messages of `searchable` the rule matches.

        A search the server refuses (a `raw:` key it does not know) fails this rule alone: it
        matches nothing, its messages stay in play for the other rules and are not retried for
        it (the refusal would repeat every time and end in giving them up) but kept for it in
        `owed` (`mailrules.refused`: the rule runs over them once it works again), and the rule
        is noted in `refused` to be reported (log, `status`) on every pass until it is fixed.
        """
        if not searchable:
            return UidSet()
        session = self.session
        searched = self.searched.get(index)
        if searched is None and self.ahead.beside is not None:
            searched = self.ahead.beside.answer(index, searchable)  # searched on a second connection
        if searched is None:  # not answered in the pass's opening: search now
            query = compile_search(self._with_prefilters(rule), session.capabilities)
            try:
                searched = self._search(rule, query, searchable)
            except ServerRefused as exc:
                log.error("rule %r account %s mailbox %s: %s (%s): %s; the rule is skipped, "
                          "the other rules go on", rule.name, self.account, self.server, SEARCH_REFUSED, query,
                          exc.message)
                self.out.refused[rule.name] = exc.message
                self.out.owed[rule.name] = searchable  # kept for the rule until it works (`mailrules.refused`)
                return UidSet()
        found = searched & searchable
        if not rule.where or not found:
            return found
        return self._predicates(rule, found, index, undecided)

    def _search(self, rule: Rule, query: SearchQuery, searchable: UidSet) -> UidSet:
        """The server's answer to the rule's search (`query`: its criteria and prefilters) over
        `searchable`; in a dry run, as the earlier rules' flag changes would leave the messages
        (`mailrules.dryrun_overlay`: the messages they changed are searched apart)."""
        session = self.session
        plain = compile_search(rule.match, session.capabilities)
        if not self.overlay:
            return search_prefiltered(session, plain, query, searchable)
        filtered = self._with_prefilters(rule)

        def search(criteria: Criterion, within: UidSet) -> UidSet:
            if criteria is filtered:  # untouched by the overlay
                return search_prefiltered(session, plain, query, within)
            return session.search(compile_search(criteria, session.capabilities), within=within)

        return search_overlaid(self.overlay, filtered, searchable, search)

    def _with_prefilters(self, rule: Rule):
        """The rule's criteria, plus what its predicates let the server check first.

        Only on servers whose SEARCH is a true substring search (RFC 3501), so that the
        prefilter never hides a message the predicate would accept.
        """
        if not rule.where or not self.session.substring_search_reliable:
            return rule.match
        extra = []
        for call in rule.where:
            spec = self.s.registry.predicates[call.name]
            if spec.prefilter is not None:
                try:
                    criteria = spec.prefilter(call.args)
                    if criteria is not None:
                        compile_search(criteria, self.session.capabilities)  # not a criteria tree: raises here
                except Exception as exc:  # noqa: BLE001 - a prefilter only saves work: a bug must not stop the mailbox
                    log.error("rule %r: the prefilter of predicate %s (plugin %s) failed, searching without it: %s",
                              rule.name, spec.name, spec.plugin or "builtin", error_text(exc))
                    continue
                if criteria is not None:
                    extra.append(criteria)
        return All((rule.match, *extra)) if extra else rule.match

    def _predicates(self, rule: Rule, found: UidSet, index: int, undecided: set[int]) -> UidSet:
        """The messages of `found` that every `where:` predicate accepts (their Message-IDs noted)."""
        preds = [(self.s.registry.predicates[p.name], p) for p in rule.where]
        needs: set[str] = set()
        for spec, call in preds:
            needs.update(spec.needs_for(call.args))
        items, batch = fetch_items(needs)
        passed: list[int] = []
        for uid, data in pipelined_fetch(self.session, found, items, batch):
            view: MessageView | None = None
            spec = preds[0][0]
            try:
                view = view_of(uid, data)
                accepted = True
                for spec, call in preds:
                    if not self._test(spec, view, call.args):
                        accepted = False
                        break
            except Exception as exc:  # noqa: BLE001 - one message or predicate must never stop the mailbox
                # Anything at all (a plugin's bug, a message too deep or too large to parse:
                # RecursionError, MemoryError) fails this message alone, to be retried and given up.
                why = error_text(exc)
                log.error("rule %r: predicate %s (plugin %s) failed on UID %d: %s",
                          rule.name, spec.name, spec.plugin or "builtin", uid, why)
                self.out.failures[uid] = Failure(index, rule.name, 0, message_id(view), f"predicate {spec.name}: {why}")
                undecided.add(uid)
                continue
            if accepted:
                passed.append(uid)
                self.mids[uid] = message_id(view) or ""  # fetched anyway: the action log needs no second FETCH
        return UidSet(passed)

    def _test(self, spec, view: MessageView, args) -> bool:
        if spec.plugin == "builtin" and self.s.predicate_timeout is None:
            return bool(spec.test(view, args))  # the built-in regex bounds itself
        timeout = self.s.predicate_timeout or spec.timeout
        # a stuck call's (daemon) thread is abandoned: it never keeps the process from exiting
        return bool(self.s.limiter.call(spec.test, (view, args), timeout))

    # ------------------------------------------------------------------ output

    def _sample_headers(self, uids: UidSet) -> None:
        """--dry-run: From and Subject of the sample messages (and their Message-IDs)."""
        for uid, data in self.session.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (FROM SUBJECT MESSAGE-ID)]"]):
            raw = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"") or b""
            view = MessageView(uid, raw_header=raw)
            self.mids[uid] = view.message_id or ""
            self.out.headers[uid] = (", ".join(view.header("From")), view.subject)

    def _log_action(self, rule: Rule, call: ActionCall, action: Action, uids: UidSet) -> None:
        """One line per action batch, naming every message (UID and Message-ID) it acted on."""
        if not log.isEnabledFor(logging.INFO):
            return
        mids = self.mids
        text = f"{call.name} {action.describe(call.arg)}".rstrip()
        # the fields for mailrules.logformat (which bounds the line: count and first messages)
        extra = {"event": "action", "rule": rule.name, "account": self.account, "mailbox": self.server,
                 "action": text, "uids": list(uids), "message_ids": [mids.get(u) or "" for u in uids],
                 "count": len(uids)}
        if len(uids) == 1:
            uid = next(iter(uids))
            log.info("rule %r account %s mailbox %s UID %d Message-ID %s: %s",
                     rule.name, self.account, self.server, uid, mids.get(uid) or "-", text, extra=extra)
            return
        messages = ", ".join(f"UID {uid} {mids.get(uid) or '-'}" for uid in uids)
        log.info("rule %r account %s mailbox %s: %s: %d messages: %s",
                 rule.name, self.account, self.server, text, len(uids), messages, extra=extra)


@dataclass
class _Job:
    """An action of the pass, started: where it is journaled, and what reads its outcome."""

    i: int
    a: int
    rule: Rule
    call: ActionCall
    action: Action
    targets: UidSet
    intent: Any
    seq: int  # its journal rows
    finish: Callable[[], Any] = lambda: None  # `Action.start`'s: the ActionResult, or raises


def _json(intent: Any) -> dict:
    return intent.to_json() if intent is not None else {}


def _journal(store: StateStore | None, run: RunRecord | None, seq: int, rule_index: int, action_index: int,
             uids: UidSet) -> Callable[[dict], None] | None:
    """For an action in progress: rewrite its journaled intent detail (what it has proven so far)."""
    if store is None or run is None:
        return None
    return lambda detail: store.add_step(run.id, seq, rule_index, action_index, uids, "intent", detail)


def message_id(view: MessageView | None) -> str | None:
    """The view's Message-ID, or None if it cannot be read: never raises (used in error handling)."""
    if view is None:
        return None
    try:
        return view.message_id
    except Exception:  # noqa: BLE001 - a broken header must not escape the predicate's isolation
        return None


def error_text(exc: BaseException) -> str:
    """What a failure says in logs and `status`: its message, or at least its type."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - an exception whose str() fails
        text = ""
    return text if text else type(exc).__name__
