"""The rule engine: one pass of a rule list over the candidate messages of a mailbox.

First, one round trip of read-only commands (`_open_pass`): the candidates' Message-IDs,
and the searches of the rules whose result cannot depend on the rules before them. Then
for each rule in file order: its search result (or, for rules on flags, size or body, one
UID SEARCH restricted to the candidates still in play), then its `where:` predicates on
what the server returned (fetching only the parts they need, in batches), then each
action as UID-set commands. A rule sees the messages as the earlier rules left them
(their actions already happened on the server), and moved/stopped messages leave play:
the outcome equals evaluating the rules one message at a time, in order.

Every step is journaled in the state store (`mailrules.state`), so a crash resumes
exactly where it stopped; a message whose action failed resumes at that rule and
action on the next pass (later rules wait for it).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TextIO

from .actions import ActionContext, ActionFailed, ActionRunner, uncertain_groups
from .criteria import SearchQuery, compile_search, reads_of
from .imap.pool import SessionPool
from .imap.session import BODY_FETCH_BATCH, FETCH_BATCH, ImapSession, ServerRefused
from .message import MessageView
from .model import ActionCall, All, ArrivalDate, Config, FolderRef, Rule
from .plugins import Registry, TimeLimit
from .secrets import protect_accounts
from .state import RunRecord, StateStore, Step
from .uidset import UidSet

log = logging.getLogger("mailrules.engine")

Position = tuple[int, int]  # (rule index, action index) where a message resumes

SEARCH_REFUSED = "the server refused its search"


@dataclass
class Outcome:
    """What one pass over a mailbox did."""

    account: str
    mailbox: str
    candidates: int = 0
    matched: dict[str, int] = field(default_factory=dict)
    applied: int = 0  # message-actions applied
    failed: dict[int, str] = field(default_factory=dict)
    given_up: list[int] = field(default_factory=list)
    backlog: int = 0  # new messages found (a pass with `limit` takes only the first ones)
    more: bool = False  # `limit` left new messages for another pass
    refused: dict[str, str] = field(default_factory=dict)  # rule name -> why the server refused its search

    @property
    def ok(self) -> bool:
        return not self.failed and not self.refused


class Interrupted(Exception):
    """`Engine.interrupt` asked to stop: the pass was abandoned between two steps.

    Its journal stays open, so the next pass on the mailbox resumes it (as after a crash).
    """


class Engine:
    """Runs rules over mailboxes. One Engine per process; not thread-safe per account."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        store: StateStore | None,
        pool: SessionPool,
        *,
        dry_run: bool = False,
        rule_names: Iterable[str] | None = None,
        out: TextIO | None = None,
        predicate_timeout: float | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.store = None if dry_run else store  # writes (none in a dry run)
        self.reader = store  # reads: a dry run still knows what is new
        self.pool = pool
        self.dry_run = dry_run
        self.rule_names = set(rule_names) if rule_names else None
        self.out = out or sys.stdout
        self.predicate_timeout = predicate_timeout
        self._warned: set[str] = set()
        self._dry_headers: dict[int, tuple[str, str]] = {}  # --dry-run output: UID -> (From, Subject)
        self._limiter = TimeLimit()  # plugin predicates run in a worker thread, with a time limit
        # The daemon sets this: polled between steps; True abandons the pass (Interrupted).
        self.interrupt: Callable[[], bool] | None = None
        protect_accounts(config.accounts.values())  # plugin children never see a password_env variable

    # ------------------------------------------------------------------ selection

    def arrival_rules(self, account: str, mailbox: str) -> list[Rule]:
        rules = self.config.rules_for(account, mailbox, scheduled=False)
        return self._filter(rules)

    def _filter(self, rules: list[Rule]) -> list[Rule]:
        if self.rule_names is None:
            return rules
        return [r for r in rules if r.name in self.rule_names]

    def watched(self, account: str, server_name: str) -> bool:
        acct = self.config.accounts.get(account)
        if acct is None:
            return False
        session = self.pool.sessions.get(account)
        for name in acct.watch:
            if name == server_name or (session is not None and session.server_name(name) == server_name):
                return True
        return False

    # ------------------------------------------------------------------ arrival pass

    def process(
        self, account: str, mailbox: str, *, since_now: bool = False, limit: int | None = None,
        retries: bool = True, reselect: bool = True,
    ) -> Outcome:
        """Catch up on `mailbox` of `account`: run the arrival rules over what is new.

        limit: take only the first `limit` new messages (the checkpoint moves past them;
        `Outcome.more` says whether more are waiting). retries: also retry the messages
        whose actions failed on earlier passes (the daemon paces retries itself).
        reselect=False: if the mailbox is already selected read-write on the connection,
        skip the SELECT and find what is new with one UID SEARCH above the checkpoint. Only
        for a connection whose view is known to be current (the daemon's, just told of
        the new mail by IDLE): a SEARCH sees what the connection was last told of.
        """
        session = self.pool.get(account)
        server = session.server_name(mailbox)
        sel = session.selected
        known = self.reader.mailbox(account, server) if (self.reader and not reselect) else None
        reuse = not (reselect or self.dry_run or sel is None or sel.name != server or sel.readonly
                     or known is None or known.uidvalidity != sel.uidvalidity)
        if not reuse:
            sel = session.select(server, readonly=self.dry_run)
        assert sel is not None
        outcome = Outcome(account, server)
        store = self.store
        advance = self.rule_names is None  # --rule runs never move the checkpoint

        run = store.open_run(account, server) if store else None
        if run is not None and run.uidvalidity != sel.uidvalidity:
            log.warning("account %s mailbox %s: UIDVALIDITY changed; an interrupted pass is abandoned", account, server)
            run = None
        if run is not None and run.kind.startswith("sweep:"):
            self._resume_sweep(session, account, mailbox, server, run)
            sel = session.select(server)
            run = None

        state = self.reader.mailbox(account, server) if self.reader else None
        high = sel.uidnext - 1
        above: UidSet | None = None  # with reuse: what is above the checkpoint (UIDNEXT is stale)
        if reuse and run is None and state is not None and state.uidvalidity == sel.uidvalidity:
            found = session.search(SearchQuery((b"UID", f"{state.checkpoint + 1}:*".encode())))
            above = UidSet(u for u in found if u > state.checkpoint)  # "n:*" also matches the last UID
            high = max(above.max, state.checkpoint)
        if run is not None:
            rules = self._rules_for_run(run, self.arrival_rules(account, mailbox))
            log.info("account %s mailbox %s: resuming an interrupted pass (%d messages)", account, server,
                     len(run.candidates))
            outcome.candidates = len(run.candidates)
            self._execute(session, account, server, rules, run.candidates, run, outcome, kind="arrival",
                          high=run.high, advance=advance)
            fresh = self.process(account, mailbox, since_now=since_now, limit=limit, retries=retries,
                                 reselect=reselect)
            fresh.candidates += outcome.candidates
            fresh.applied += outcome.applied
            fresh.failed.update(outcome.failed)
            fresh.refused.update(outcome.refused)
            fresh.given_up.extend(outcome.given_up)
            return fresh

        if store and state is None and since_now:
            store.set_mailbox(account, server, sel.uidvalidity, high)
            log.info("account %s mailbox %s: --since-now: starting after UID %d", account, server, high)
            return outcome

        candidates: dict[int, Position] = {}
        rules = self.arrival_rules(account, mailbox)
        if state is not None and state.uidvalidity != sel.uidvalidity:
            candidates = self._after_uidvalidity_change(session, account, server, state.last_pass)
        else:
            checkpoint = state.checkpoint if state else 0
            if high > checkpoint:
                new = above if above is not None else session.search(
                    SearchQuery((b"UID", f"{checkpoint + 1}:{high}".encode())))
                new = UidSet(u for u in new if checkpoint < u <= high)
                if self.reader:
                    new -= self.reader.placed(account, server, sel.uidvalidity, checkpoint)
                outcome.backlog = len(new)
                if limit is not None and len(new) > limit:
                    new = UidSet(list(new)[:limit])
                    high = new.max  # everything at or below it is dealt with by this pass
                    outcome.more = True
                candidates = {uid: (0, 0) for uid in new}
            if self.reader and retries:
                candidates.update(self._retries(session, account, server, sel.uidvalidity, rules))
        outcome.candidates = len(candidates)
        if not candidates or not rules:  # nothing to do: only the checkpoint may move
            moved = state is None or high > state.checkpoint or state.uidvalidity != sel.uidvalidity
            if store and advance and (moved or candidates):
                store.set_mailbox(account, server, sel.uidvalidity, high, last_pass=time.time())
            return outcome
        if store:
            run = store.begin_run(account, server, sel.uidvalidity, "arrival", candidates, _names(rules), high)
        self._execute(session, account, server, rules, candidates, run, outcome, kind="arrival", high=high,
                      advance=advance)
        return outcome

    def _retries(
        self, session: ImapSession, account: str, server: str, uidvalidity: int, rules: list[Rule]
    ) -> dict[int, Position]:
        """Messages whose action failed on an earlier pass, with where they resume."""
        assert self.reader is not None
        pending = self.reader.pending(account, server, uidvalidity)
        if not pending:
            return {}
        alive = session.existing(UidSet(p.uid for p in pending))
        gone = [p.uid for p in pending if p.uid not in alive]
        if gone and self.store:
            log.info("account %s mailbox %s: %d messages to retry are gone (moved or deleted elsewhere)",
                     account, server, len(gone))
            self.store.resolve(account, server, uidvalidity, gone)
        names = _names(rules)
        out: dict[int, Position] = {}
        for p in pending:
            if p.uid not in alive:
                continue
            if p.rule_name in names:
                out[p.uid] = (names.index(p.rule_name), p.action_index)
            else:
                log.warning("UID %d was to resume at rule %r, which no longer applies: starting at the first rule",
                            p.uid, p.rule_name)
                out[p.uid] = (0, 0)
        return out

    def _after_uidvalidity_change(
        self, session: ImapSession, account: str, server: str, last_pass: float | None
    ) -> dict[int, Position]:
        """The policy for a changed UIDVALIDITY: process what arrived since the last completed pass.

        Old UIDs mean nothing any more; messages whose arrival time (INTERNALDATE) is
        before the start of the last completed pass were processed then and are left alone.
        """
        if last_pass is None:
            found = session.search(SearchQuery((b"ALL",)))
            log.warning("account %s mailbox %s: UIDVALIDITY changed before any completed pass: processing all %d",
                        account, server, len(found))
            return {uid: (0, 0) for uid in found}
        since = dt.datetime.fromtimestamp(last_pass, dt.UTC) - dt.timedelta(days=2)
        query = compile_search(ArrivalDate("since", since.date()))
        recent = session.search(query)
        out: dict[int, Position] = {}
        for uid, data in session.fetch(recent, ["INTERNALDATE"]):
            arrived = data.get(b"INTERNALDATE")
            if arrived is None:
                continue
            if arrived.tzinfo is None:
                arrived = arrived.astimezone()
            # INTERNALDATE has whole seconds: a message of the pass's first second may have
            # arrived after it began. Processing it (again) is better than losing it.
            if arrived.timestamp() >= int(last_pass):
                out[uid] = (0, 0)
        log.warning(
            "account %s mailbox %s: UIDVALIDITY changed (the server renumbered the mailbox); processing the %d "
            "messages that arrived since the last completed pass", account, server, len(out),
        )
        return out

    # ------------------------------------------------------------------ sweeps

    def sweep(self, account: str, mailbox: str, rules: list[Rule], key: str) -> Outcome:
        """Run scheduled `rules` over every message of `mailbox` (a sweep)."""
        session = self.pool.get(account)
        server = session.server_name(mailbox)
        sel = session.select(server, readonly=self.dry_run)
        rules = self._filter(rules)
        outcome = Outcome(account, server)
        found = session.search(SearchQuery((b"ALL",)))
        candidates = {uid: (0, 0) for uid in found}
        outcome.candidates = len(candidates)
        if not candidates or not rules:
            return outcome
        run = None
        if self.store:
            run = self.store.begin_run(account, server, sel.uidvalidity, f"sweep:{key}", candidates, _names(rules), 0)
        self._execute(session, account, server, rules, candidates, run, outcome, kind="sweep", high=0, advance=False)
        return outcome

    def _resume_sweep(self, session: ImapSession, account: str, mailbox: str, server: str, run: RunRecord) -> None:
        key = run.kind.split(":", 1)[1]
        rules = [
            r for r in self.config.rules_for(account, mailbox, scheduled=True)
            if r.schedule is not None and r.schedule.key() == key
        ]
        rules = self._rules_for_run(run, rules)
        log.info("account %s mailbox %s: resuming an interrupted sweep", account, server)
        self._execute(session, account, server, rules, run.candidates, run, Outcome(account, server),
                      kind="sweep", high=0, advance=False)

    def _rules_for_run(self, run: RunRecord, rules: list[Rule]) -> list[Rule]:
        """The rules of a journaled run, by name (the file may have changed since)."""
        if list(run.rules) == _names(rules):
            return rules
        by_name = {r.name: r for r in rules}
        log.warning("the rules changed while a pass was interrupted; resuming with the rules that still exist")
        return [by_name[n] for n in run.rules if n in by_name]

    # ------------------------------------------------------------------ the pass

    def _execute(
        self,
        session: ImapSession,
        account: str,
        server: str,
        rules: list[Rule],
        candidates: dict[int, Position],
        run: RunRecord | None,
        outcome: Outcome,
        *,
        kind: str,
        high: int,
        advance: bool,
    ) -> None:
        """One pass of `rules` over `candidates`."""
        sel = session.selected
        assert sel is not None
        steps: dict[tuple[int, int], Step] = {(s.rule_index, s.action_index): s for s in (run.steps if run else ())}
        seq = max((s.seq for s in run.steps), default=-1) + 1 if run else 0
        active = set(candidates)
        failures: dict[int, tuple[int, str, int, str | None, str]] = {}
        mids: dict[int, str] = {}
        ctx = ActionContext(
            session=session, account=account, mailbox=server, selected=sel, rule=rules[0] if rules else None,  # type: ignore[arg-type]
            message_ids=mids, registry=self.registry, connect=self.pool.get, watched=self.watched,
            store=self.store, dry_run=self.dry_run, warned=self._warned,
        )
        runner = ActionRunner(ctx)
        searched = self._open_pass(session, account, rules, UidSet(active), steps, mids) if active else {}
        # Retries of copies that failed uncertainly (the destination may have stored them):
        # the action first looks for them there (see ActionRunner._proven_copies).
        pending = self.reader.pending(account, server, sel.uidvalidity) if self.reader else []
        earlier = {p.uid: p.resume_detail for p in pending if p.resume_detail and p.uid in candidates}
        retry_details: dict[int, dict] = {}  # failed now: what their retry must verify

        for i, rule in enumerate(rules):
            if not active:
                break
            self._check_interrupt()
            ctx.rule = rule
            searchable = UidSet(u for u in active if candidates[u][0] < i or candidates[u] == (i, 0))
            resumed = {u: candidates[u][1] for u in active if candidates[u][0] == i and candidates[u][1] > 0}
            match_step = steps.get((i, -1))
            if match_step is not None:
                matched = match_step.uids & active
            else:
                matched = self._match(session, rule, searchable, i, failures, mids, active, searched.get(i),
                                      refused=outcome.refused, where=(account, server))
                if run is not None:
                    self.store.add_step(run.id, seq, i, -1, matched, "done")  # type: ignore[union-attr]
                    seq += 1
            outcome.matched[rule.name] = len(matched)
            targets_all = matched | resumed.keys()
            if not targets_all:
                continue
            described = self._dry_headers if self.dry_run else mids
            need_ids = UidSet(u for u in targets_all if u not in described)
            if need_ids:
                mids.update(self._describe(session, need_ids, rule))
            if self.dry_run:
                self._print_rule(rule, UidSet(targets_all))
                if rule.stop:
                    active -= set(targets_all)
                continue
            for a, call in enumerate(rule.actions):
                self._check_interrupt()
                targets = UidSet(u for u in targets_all if u in active and (u in matched or resumed.get(u, 99) <= a))
                if kind == "sweep" and self.store is not None and _once_per_rule(call, self.registry):
                    targets -= self.store.swept(account, server, rule.name, sel.uidvalidity, a)
                if not targets:
                    continue
                step = steps.get((i, a))
                if step is not None and step.state == "done":
                    continue
                if step is not None and step.state == "failed":
                    for uid in step.uids:
                        failures[uid] = (i, rule.name, a, mids.get(uid), "failed before the pass was interrupted")
                    retry_details.update(_retry_details(step.detail, step.uids))
                    active -= set(step.uids)
                    continue
                resuming = step is not None and step.state == "intent"
                detail: dict = {}
                try:
                    detail = step.detail if resuming else runner.intent_detail(call, targets)
                    if not resuming:
                        detail = _with_uncertain(detail, {u: earlier[u] for u in targets
                                                          if u in earlier and candidates[u] == (i, a)})
                    if run is not None:
                        self.store.add_step(run.id, seq, i, a, targets, "intent", detail)  # type: ignore[union-attr]
                    ctx.journal = _journal(self.store, run, seq, i, a, targets)
                    result = runner.run(call, targets, detail=detail, resuming=resuming)
                except (ActionFailed, ServerRefused, ValueError) as exc:
                    done = exc.done if isinstance(exc, ActionFailed) else UidSet()
                    if isinstance(exc, ActionFailed) and exc.verified is not None:
                        detail = {**detail, "verified": exc.verified}  # what the retry must check
                    still = session.existing(targets - done)
                    for uid in still:
                        failures[uid] = (i, rule.name, a, mids.get(uid), str(exc))
                    retry_details.update(_retry_details(detail, still))
                    active -= set(targets) - set(done)  # those done go on to the next actions
                    if run is not None:
                        self.store.add_step(run.id, seq, i, a, targets, "failed", detail or None)  # type: ignore[union-attr]
                        seq += 1
                    log.error("rule %r account %s mailbox %s: %s %s failed for %d messages (UIDs %s): %s",
                              rule.name, account, server, call.name, _arg_text(call), len(still), still, exc)
                    continue
                if run is not None:
                    self.store.add_step(run.id, seq, i, a, targets, "done", result.detail or None)  # type: ignore[union-attr]
                    seq += 1
                    if kind == "sweep" and _once_per_rule(call, self.registry):
                        self.store.add_swept(account, server, rule.name, sel.uidvalidity, a, targets)
                outcome.applied += len(targets)
                self._log_action(rule, account, server, call, targets, mids)
                self.registry.notify(
                    "mailrules_action_applied",
                    event=_event(rule, account, server, call, targets, mids, self.dry_run),
                )
                if result.removed:
                    active -= set(targets)
            if rule.stop:
                active -= set(targets_all)

        session.note_folders(None)  # the listing was for this pass only
        outcome.failed = {uid: f[4] for uid, f in failures.items()}
        if run is None or self.store is None:
            return
        if kind == "sweep":
            self.store.finish_run(run.id, account, server, sel.uidvalidity, checkpoint=0, failures={},
                                  resolved=(), started=run.started, advance=False)
            self._report_refused(account, server, outcome)
            return
        resolved = [u for u in candidates if u not in failures]
        outcome.given_up = self.store.finish_run(
            run.id, account, server, sel.uidvalidity, checkpoint=high,
            failures=failures if advance else {}, resolved=resolved if advance else (), started=run.started,
            advance=advance, resume_details=retry_details if advance else None,
        )
        for uid in outcome.given_up:
            log.error("account %s mailbox %s: gave up on UID %d (Message-ID %s) after repeated failures: %s",
                      account, server, uid, mids.get(uid, "?"), failures[uid][4])
        self._report_refused(account, server, outcome)

    def _report_refused(self, account: str, server: str, outcome: Outcome) -> None:
        """Keep the rules whose search the server refused in the mailbox's error (`status` shows it).

        A refused search fails its rule alone: nothing is retried for it (its messages went on
        to the other rules), so the refusal is reported on every pass until the rule is fixed.
        """
        if self.store is None:
            return
        if outcome.refused:
            text = "; ".join(f"rule {name!r}: {SEARCH_REFUSED}: {why}" for name, why in outcome.refused.items())
            self.store.set_error(account, server, text)
            return
        state = self.store.mailbox(account, server)
        if state is not None and state.last_error and SEARCH_REFUSED in state.last_error:
            self.store.set_error(account, server, None)  # the rules file was fixed

    def _open_pass(
        self, session: ImapSession, account: str, rules: list[Rule], within: UidSet, steps: dict, mids: dict[int, str]
    ) -> dict[int, UidSet]:
        """The pass's read-only work, pipelined in one round trip (see `mailrules.imap.pipeline`).

        Fills `mids` with the candidates' Message-IDs (fetched with the header fields the
        rules search, which a caching server then reads once) and returns, by rule index,
        the server's answers to the searches whose result cannot depend on the earlier rules:
        criteria that read neither flags nor whole messages (size, body), and no `where:`.
        The others are searched at their turn, over the messages still in play. Also lists
        the folders the rules copy or move to. Whatever the server refuses here is done
        again, the ordinary way, when the rule's turn comes.
        """
        pipe = session.pipeline()
        fields: set[str] = set()
        queries = []
        for i, rule in enumerate(rules):
            reads = reads_of(rule.match)
            fields |= reads.headers
            if (i, -1) not in steps and not reads.mutable and not reads.costly and not rule.where:
                queries.append((i, compile_search(rule.match, session.capabilities)))
        # Not worth it when the rules' predicates fetch the Message-IDs anyway (`where:`), or for
        # one rule over a large mailbox (a sweep): the Message-IDs of the messages it acts on
        # are fetched then.
        plain = any(not rule.where for rule in rules)
        if not self.dry_run and plain and (len(rules) > 1 or len(within) <= FETCH_BATCH):
            headers = pipe.headers(within, fields, FETCH_BATCH)
        else:
            headers = None
        pending = {i: pipe.search(query, within) for i, query in queries}
        folders = None if self.dry_run else pipe.folders(self._destinations(session, account, rules))
        pipe.run()
        session.note_folders(folders)
        if headers is not None:
            mids.update(headers.message_ids)
        return {i: p.result for i, p in pending.items() if p is not None and p.result is not None}

    @staticmethod
    def _destinations(session: ImapSession, account: str, rules: list[Rule]) -> list[str]:
        """Server names of the folders in this account that the rules copy or move to."""
        out = []
        for rule in rules:
            for call in rule.actions:
                ref = call.arg
                if call.name in ("copy", "move") and isinstance(ref, FolderRef) and ref.account in (None, "", account):
                    try:
                        out.append(session.server_name(ref.path))
                    except ValueError:
                        continue  # reported when the action runs
        return out

    def _check_interrupt(self) -> None:
        if self.interrupt is not None and self.interrupt():
            raise Interrupted()

    # ------------------------------------------------------------------ matching

    def _match(
        self,
        session: ImapSession,
        rule: Rule,
        searchable: UidSet,
        index: int,
        failures: dict,
        mids: dict[int, str],
        active: set[int],
        searched: UidSet | None = None,
        *,
        refused: dict[str, str],
        where: tuple[str, str] = ("?", "?"),
    ) -> UidSet:
        """The messages of `searchable` the rule matches; searched: the server's answer, if already known.

        A search the server refuses (a `raw:` key it does not know) fails this rule alone: it
        matches nothing, its messages stay in play for the other rules and are not retried for
        it (the refusal would repeat every time and end in giving them up), and the rule is
        noted in `refused` to be reported (log, `status`) on every pass until it is fixed.
        """
        if not searchable:
            return UidSet()
        if searched is None:  # not answered in the pass's opening: search now
            query = compile_search(self._with_prefilters(session, rule), session.capabilities)
            try:
                searched = session.search(query, within=searchable)
            except ServerRefused as exc:
                log.error("rule %r account %s mailbox %s: the server %s (%s): %s; the rule is skipped, "
                          "the other rules go on", rule.name, *where, SEARCH_REFUSED, query, exc.message)
                refused[rule.name] = exc.message
                return UidSet()
        found = searched & searchable
        if not rule.where or not found:
            return found
        return self._predicates(session, rule, found, index, failures, mids, active)

    def _with_prefilters(self, session: ImapSession, rule: Rule):
        """The rule's criteria, plus what its predicates let the server check first.

        Only on servers whose SEARCH is a true substring search (RFC 3501), so that the
        prefilter never hides a message the predicate would accept.
        """
        if not rule.where or not session.substring_search_reliable:
            return rule.match
        extra = []
        for call in rule.where:
            spec = self.registry.predicates[call.name]
            if spec.prefilter is not None:
                try:
                    criteria = spec.prefilter(call.args)
                    if criteria is not None:
                        compile_search(criteria, session.capabilities)  # not a criteria tree: raises here
                except Exception as exc:  # noqa: BLE001 - a prefilter only saves work: a bug must not stop the mailbox
                    log.error("rule %r: the prefilter of predicate %s (plugin %s) failed, searching without it: %s",
                              rule.name, spec.name, spec.plugin or "builtin", _error_text(exc))
                    continue
                if criteria is not None:
                    extra.append(criteria)
        return All((rule.match, *extra)) if extra else rule.match

    def _predicates(
        self, session: ImapSession, rule: Rule, found: UidSet, index: int, failures: dict, mids: dict[int, str],
        active: set[int],
    ) -> UidSet:
        """The messages of `found` that every `where:` predicate accepts (Message-IDs noted in mids)."""
        preds = [(self.registry.predicates[p.name], p) for p in rule.where]
        needs: set[str] = set()
        for spec, call in preds:
            needs.update(spec.needs_for(call.args))
        items, batch = _fetch_items(needs)
        passed: list[int] = []
        for uid, data in session.fetch(found, items, batch=batch):
            view: MessageView | None = None
            spec = preds[0][0]
            try:
                view = _view(uid, data)
                accepted = True
                for spec, call in preds:
                    if not self._test(spec, view, call.args):
                        accepted = False
                        break
            except Exception as exc:  # noqa: BLE001 - one message or predicate must never stop the mailbox
                # Anything at all (a plugin's bug, a message too deep or too large to parse:
                # RecursionError, MemoryError) fails this message alone, to be retried and given up.
                why = _error_text(exc)
                log.error("rule %r: predicate %s (plugin %s) failed on UID %d: %s",
                          rule.name, spec.name, spec.plugin or "builtin", uid, why)
                failures[uid] = (index, rule.name, 0, _message_id(view), f"predicate {spec.name}: {why}")
                active.discard(uid)
                continue
            if accepted:
                passed.append(uid)
                mids[uid] = _message_id(view) or ""  # fetched anyway: the action log needs no second FETCH
        return UidSet(passed)

    def _test(self, spec, view: MessageView, args) -> bool:
        if spec.plugin == "builtin" and self.predicate_timeout is None:
            return bool(spec.test(view, args))  # the built-in regex bounds itself
        timeout = self.predicate_timeout or spec.timeout
        # a stuck call's (daemon) thread is abandoned: it never keeps the process from exiting
        return bool(self._limiter.call(spec.test, (view, args), timeout))

    # ------------------------------------------------------------------ output

    def _describe(self, session: ImapSession, uids: UidSet, rule: Rule) -> dict[int, str]:
        """Message-IDs for the log (plus From/Subject for --dry-run output)."""
        if not self.dry_run:
            return session.message_ids(uids)
        out = {}
        for uid, data in session.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (FROM SUBJECT MESSAGE-ID)]"]):
            raw = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"") or b""
            view = MessageView(uid, raw_header=raw)
            out[uid] = view.message_id
            self._dry_headers[uid] = (", ".join(view.header("From")), view.subject)
        return out

    def _print_rule(self, rule: Rule, uids: UidSet) -> None:
        """--dry-run output: the rule, the actions it would take, and the messages."""
        headers = self._dry_headers
        actions = ", ".join(f"{c.name} {_arg_text(c)}".strip() for c in rule.actions)
        print(f"rule {rule.name!r}: {len(uids)} message(s) would get: {actions}", file=self.out)
        for uid in uids:
            sender, subject = headers.get(uid, ("", ""))
            print(f"  UID {uid}  From: {sender}  Subject: {subject}", file=self.out)

    def _log_action(
        self, rule: Rule, account: str, server: str, call: ActionCall, uids: UidSet, mids: dict[int, str]
    ) -> None:
        """One line per action batch, naming every message (UID and Message-ID) it acted on."""
        if not log.isEnabledFor(logging.INFO):
            return
        action = f"{call.name} {_arg_text(call)}".rstrip()
        if len(uids) == 1:
            uid = next(iter(uids))
            log.info("rule %r account %s mailbox %s UID %d Message-ID %s: %s",
                     rule.name, account, server, uid, mids.get(uid) or "-", action)
            return
        messages = ", ".join(f"UID {uid} {mids.get(uid) or '-'}" for uid in uids)
        log.info("rule %r account %s mailbox %s: %s: %d messages: %s",
                 rule.name, account, server, action, len(uids), messages)

    def close(self) -> None:
        self._limiter.close()


def _names(rules: list[Rule]) -> list[str]:
    return [r.name for r in rules]


def _once_per_rule(call: ActionCall, registry: Registry) -> bool:
    """Sweep actions that must act on a message at most once per rule (copy and plugins)."""
    spec = registry.actions.get(call.name)
    return call.name == "copy" or (spec is not None and not spec.builtin)


BARE_WORDS = {"flag", "unflag", "seen", "unseen", "trash", "delete"}


def _arg_text(call: ActionCall) -> str:
    if call.arg is None or call.name in BARE_WORDS:
        return ""
    if isinstance(call.arg, tuple):
        return " ".join(str(a) for a in call.arg)
    return str(call.arg)


def _event(rule, account, server, call, uids, mids, dry_run):
    from .plugins import ActionEvent

    return ActionEvent(rule.name, account, server, call.name, call.arg, tuple(uids),
                       tuple(mids.get(u, "") for u in uids), dry_run)


def _journal(store: StateStore | None, run: RunRecord | None, seq: int, rule_index: int, action_index: int,
             uids: UidSet) -> Callable[[dict], None] | None:
    """For an action in progress: rewrite its journaled intent detail (what it has proven so far)."""
    if store is None or run is None:
        return None
    return lambda detail: store.add_step(run.id, seq, rule_index, action_index, uids, "intent", detail)


def _with_uncertain(detail: dict, earlier: dict[int, dict]) -> dict:
    """The intent `detail` of a copy, plus the retried messages whose earlier copy may have happened.

    earlier: uid -> the resume detail recorded when its copy failed. Only those that failed
    copying to the same destination count (the rules file may have changed since). Messages
    of the same earlier attempt form one group: its window ("uidnext") and the arrivals it
    claimed for messages already finished ("claimed") are kept apart from other attempts'.
    """
    if detail.get("uidnext") is None:
        return detail  # not a copy
    destination = (detail.get("account"), detail.get("dest"))
    groups: dict[tuple, list[int]] = {}
    for uid, d in earlier.items():
        if (d.get("account"), d.get("dest")) == destination:
            groups.setdefault((int(d["uidnext"]), tuple(d.get("claimed") or ())), []).append(uid)
    if not groups:
        return detail
    uncertain = []
    for (since, claimed), uids in sorted(groups.items()):
        group: dict = {"uids": str(UidSet(uids)), "uidnext": since}
        if claimed:
            group["claimed"] = list(claimed)
        uncertain.append(group)
    return {**detail, "uncertain": uncertain}


def _retry_details(detail: dict | None, uids: Iterable[int]) -> dict[int, dict]:
    """After a failed copy with this intent `detail`: what each message's retry must verify first."""
    if not detail or detail.get("uidnext") is None:
        return {}
    where = {"account": detail.get("account"), "dest": detail["dest"]}
    verified = detail.get("verified")
    if verified:
        # The attempt checked every earlier uncertainty: only its own unconfirmed APPEND,
        # at or above verified["uidnext"], may have landed.
        base = {**where, "uidnext": int(verified["uidnext"])}
        if verified.get("claimed"):
            base["claimed"] = list(verified["claimed"])
        done = UidSet.parse(verified.get("done") or "")
        return {uid: dict(base) for uid in uids if uid not in done}
    out = {}
    for uid in uids:
        since = int(detail["uidnext"])
        claimed: list[str] = []
        for group in uncertain_groups(detail):
            if uid in UidSet.parse(group["uids"]):
                since = min(since, int(group["uidnext"]))
                claimed += group.get("claimed") or []
        out[uid] = {**where, "uidnext": since, **({"claimed": claimed} if claimed else {})}
    return out


def _fetch_items(needs: set[str]) -> tuple[list[str], int]:
    items: list[str] = []
    batch = FETCH_BATCH
    if "message" in needs:
        items.append("BODY.PEEK[]")
        batch = BODY_FETCH_BATCH
    elif "headers" in needs:
        items.append("BODY.PEEK[HEADER]")
    else:
        fields = sorted({n.split(":", 1)[1].upper() for n in needs if n.startswith("header:")} | {"MESSAGE-ID"})
        items.append(f"BODY.PEEK[HEADER.FIELDS ({' '.join(fields)})]")
    if "size" in needs:
        items.append("RFC822.SIZE")
    if "flags" in needs:
        items.append("FLAGS")
    return items, batch


def _message_id(view: MessageView | None) -> str | None:
    """The view's Message-ID, or None if it cannot be read: never raises (used in error handling)."""
    if view is None:
        return None
    try:
        return view.message_id
    except Exception:  # noqa: BLE001 - a broken header must not escape the predicate's isolation
        return None


def _error_text(exc: BaseException) -> str:
    """What a failure says in logs and `status`: its message, or at least its type."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - an exception whose str() fails
        text = ""
    return text if text else type(exc).__name__


def _view(uid: int, data: dict) -> MessageView:
    raw = data.get(b"BODY[]")
    header = None
    if raw is None:
        header = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), None)
    flags = tuple(f.decode() if isinstance(f, bytes) else f for f in data.get(b"FLAGS", ()))
    return MessageView(uid, raw=raw, raw_header=header, size=data.get(b"RFC822.SIZE"), flags=flags)


__all__ = ["Engine", "Interrupted", "Outcome", "SessionPool"]
