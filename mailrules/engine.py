"""The rule engine: which messages of a mailbox a pass takes, and the journal around it.

`Engine.process` (arrival rules over what is new since the checkpoint, plus retries) and
`Engine.sweep` (scheduled rules over a whole mailbox) choose the candidates and where each
starts; the pass itself is `mailrules.kernel.run_pass` (the semantics: file order, each rule
sees the earlier rules' effects, stop/move leave play) over `mailrules.imap_mailbox.ImapPass`
(the batched IMAP work: pipelined opening, searches, predicates, actions).

Every step is journaled in the state store (`mailrules.state`), so a crash resumes
exactly where it stopped; a message whose action failed resumes at that rule and
action on the next pass (later rules wait for it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from . import refused
from .claims import Claims, SharedUnsupported, instance_id, placed_marks, step_of, takeover_plan
from .criteria import SearchQuery, compile_search
from .dryrun import DryRunReport, already_processed_note, arrival_report, sweep_report
from .imap.pool import SessionPool
from .imap.reselect import search_above, select_and_search_above
from .imap.session import ImapSession, Selected
from .imap_mailbox import SEARCH_REFUSED, ImapPass, PassSettings
from .journal import Journal
from .kernel import Position, run_pass
from .model import ArrivalDate, Config, Rule
from .plugins import Registry, TimeLimit
from .secrets import protect_accounts
from .state import MailboxState, RunRecord, StateStore
from .uidset import UidSet

log = logging.getLogger("mailrules.engine")


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

    def add(self, other: Outcome) -> None:
        """Count `other` (a later pass over the same mailbox) into this one."""
        self.candidates += other.candidates
        for name, n in other.matched.items():
            self.matched[name] = self.matched.get(name, 0) + n
        self.applied += other.applied
        self.failed.update(other.failed)
        self.refused.update(other.refused)
        self.given_up.extend(other.given_up)


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
        self._limiter = TimeLimit()  # plugin predicates run in a worker thread, with a time limit
        # The daemon sets this: polled between steps; True abandons the pass (Interrupted).
        self.interrupt: Callable[[], bool] | None = None
        self._settings = PassSettings(
            registry=registry, store=self.store, reader=self.reader, dry_run=dry_run,
            predicate_timeout=predicate_timeout, limiter=self._limiter, connect=pool.get, watched=self.watched,
            interrupt=self._check_interrupt, accounts=frozenset(config.accounts), beside=pool.beside,
        )
        # finished runs kept for undo and history, pruned after each pass (mailrules.journal)
        self.journal = Journal(self.store, config.history_days) if self.store else None
        # shared: true (mailrules.claims): this instance's claims on the server
        self.claims = Claims(instance_id(getattr(store, "dir", None)), store)
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
        session = self.pool.current(account)
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
        self._refuse_partial(account)
        session = self.pool.get(account)
        server = session.server_name(mailbox)
        sel, reuse, above = self._select_for_pass(session, account, server, reselect)
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
            run, above = None, None

        state = self.reader.mailbox(account, server) if self.reader else None
        high = sel.uidnext - 1
        if run is not None or (state is not None and state.uidvalidity != sel.uidvalidity):
            above = None  # searched above a checkpoint that does not hold here
        elif reuse:  # the view is current but UIDNEXT is stale: what is above the checkpoint decides
            above = search_above(session, state.checkpoint)
            high = max(above.max, state.checkpoint)
        elif above is not None:  # searched behind the SELECT: it saw all the SELECT saw, maybe more
            high = max(high, above.max, state.checkpoint if state else 0)
        if run is not None:
            rules = self._rules_for_run(run, self.arrival_rules(account, mailbox))
            log.info("account %s mailbox %s: resuming an interrupted pass (%d messages)", account, server,
                     len(run.candidates))
            outcome.candidates = len(run.candidates)
            self._execute(session, account, server, rules, run.candidates, run, outcome,
                          kind="catchup" if run.kind == "catchup" else "arrival", high=run.high, advance=advance)
            fresh = self.process(account, mailbox, since_now=since_now, limit=limit, retries=retries,
                                 reselect=reselect)
            fresh.add(outcome)
            return fresh

        if store and state is None and since_now:
            store.set_mailbox(account, server, sel.uidvalidity, high)
            log.info("account %s mailbox %s: --since-now: starting after UID %d", account, server, high)
            return outcome

        rules = self.arrival_rules(account, mailbox)
        candidates, fresh, high = self._candidates(session, account, server, sel, state, rules, high, above,
                                                   limit=limit, retries=retries, outcome=outcome)
        outcome.candidates = len(candidates)
        report = self._dry_run_report(account, mailbox, sel, state, rules, candidates, fresh, outcome)
        if not candidates or not rules:  # nothing to do: only the checkpoint may move
            moved = state is None or high > state.checkpoint or state.uidvalidity != sel.uidvalidity
            if store and advance and (moved or candidates):
                store.set_mailbox(account, server, sel.uidvalidity, high, last_pass=time.time())
            self._render(report, outcome)
            self._catch_up_refused(session, account, mailbox, server, outcome, advance)
            return outcome
        if store:
            run = store.begin_run(account, server, sel.uidvalidity, "arrival", candidates, _names(rules), high)
        self._execute(session, account, server, rules, candidates, run, outcome, kind="arrival", high=high,
                      advance=advance, report=report)
        self._render(report, outcome)
        self._catch_up_refused(session, account, mailbox, server, outcome, advance)
        return outcome

    def _select_for_pass(self, session: ImapSession, account: str, server: str,
                         reselect: bool) -> tuple[Selected, bool, UidSet | None]:
        """Select `server` for a pass, or reuse the selection (see `process`'s reselect); whether reused;
        and what is above its checkpoint (0 for a mailbox not seen before: all of it), searched in the
        SELECT's round trip (`mailrules.imap.reselect`; None: not searched)."""
        sel = session.selected
        known = self.reader.mailbox(account, server) if self.reader else None
        reuse = not (reselect or self.dry_run or sel is None or sel.name != server or sel.readonly
                     or known is None or known.uidvalidity != sel.uidvalidity)
        if reuse:
            assert sel is not None
            return sel, True, None
        if self.dry_run:
            return session.select(server, readonly=True), False, None
        sel, above = select_and_search_above(session, server, known.checkpoint if known is not None else 0,
                                             self.pool.take_early_selection(account, server))
        return sel, False, above

    def _candidates(
        self, session: ImapSession, account: str, server: str, sel: Selected, state: MailboxState | None,
        rules: list[Rule], high: int, above: UidSet | None, *, limit: int | None, retries: bool, outcome: Outcome,
    ) -> tuple[dict[int, Position], int, int]:
        """The messages a pass takes: the new ones above the checkpoint (at most `limit`), the retries,
        other daemons' unfinished claims; how many of them are new; and the UID the pass covers up to.
        """
        candidates: dict[int, Position] = {}
        fresh = 0  # of the candidates, the new messages (the others are retries)
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
                    new, _later = new.split(limit)
                    high = new.max  # everything at or below it is dealt with by this pass
                    outcome.more = True
                candidates = {uid: (0, 0) for uid in new}
                fresh = len(candidates)
            if self.reader and retries:
                candidates.update(self._retries(session, account, server, sel.uidvalidity, rules))
            if self._shared(account) and rules:  # shared: claims of others not finished (mailrules.claims)
                with self._noting(account, server, sel.uidvalidity):
                    for uid in self.claims.unfinished(session, account, server):
                        candidates.setdefault(uid, (0, 0))
        if self.dry_run and candidates and self._shared_account(account):  # what a real run would take
            visible = self.claims.visible(session, account, UidSet(candidates))
            fresh -= sum(1 for u in list(candidates)[:fresh] if u not in visible)
            candidates = {u: p for u, p in candidates.items() if u in visible}
        return candidates, fresh, high

    def _dry_run_report(self, account: str, mailbox: str, sel: Selected, state: MailboxState | None,
                        rules: list[Rule], candidates: dict[int, Position], fresh: int,
                        outcome: Outcome) -> DryRunReport | None:
        """What a dry run prints for this pass (None on a real run)."""
        if not self.dry_run:
            return None
        report = arrival_report(account, mailbox, rules, self.registry.actions, fresh, len(candidates) - fresh)
        if state is not None and state.uidvalidity == sel.uidvalidity and not outcome.more:
            already = sel.exists - len(candidates)
            if already > 0:
                report.notes.append(already_processed_note(already))
        return report

    def _catch_up_refused(self, session: ImapSession, account: str, mailbox: str, server: str, outcome: Outcome,
                          advance: bool) -> None:
        """Run each rule the server refused earlier over the messages kept for it, once (`mailrules.refused`)."""
        sel = session.selected
        if self.store is None or not advance or sel is None:
            return
        kept = refused.load(self.store, account, server, sel.uidvalidity)
        if not kept:
            return
        rules = {r.name: r for r in self.arrival_rules(account, mailbox)}
        for name, (uids, _why) in list(kept.items()):
            if name in outcome.refused:
                continue  # refused again on this pass: kept (with the new messages) for a later one
            del kept[name]
            alive = session.existing(uids) if name in rules else UidSet()
            if not alive:
                refused.save(self.store, account, server, sel.uidvalidity, kept)
                continue
            state = self.store.mailbox(account, server)
            high = state.checkpoint if state else 0
            candidates = {uid: (0, 0) for uid in alive}
            log.info("account %s mailbox %s: rule %r works again: running it over the %d messages that arrived "
                     "while the server refused it", account, server, name, len(alive))
            run = self.store.begin_run(account, server, sel.uidvalidity, "catchup", candidates, [name], high)
            refused.save(self.store, account, server, sel.uidvalidity, kept)  # the journal has them now
            later = Outcome(account, server, candidates=len(alive))
            self._execute(session, account, server, [rules[name]], candidates, run, later, kind="catchup",
                          high=high, advance=True)
            outcome.add(later)
        self._report_refused(account, server, outcome)  # the mailbox's error as it stands now

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

    def sweep(self, account: str, mailbox: str, rules: list[Rule], key: str, *, kind: str | None = None,
              resume: RunRecord | None = None, upto: int | None = None) -> Outcome:
        """Run scheduled `rules` over every message of `mailbox` (a sweep).

        kind: the journal's kind of the run (default ``sweep:<key>``; `mailrules apply` runs
        its rules this way as "apply"). resume: finish that interrupted run instead. upto: only
        the messages at or below this UID (`apply` leaves what the daemon has not seen to it).
        """
        self._refuse_partial(account)
        session = self.pool.get(account)
        server = session.server_name(mailbox)
        sel = session.select(server, readonly=self.dry_run)
        rules = self._filter(rules)
        outcome = Outcome(account, server)
        if resume is not None:
            rules = self._rules_for_run(resume, rules)
            candidates = dict(resume.candidates)
        else:
            candidates = {uid: (0, 0) for uid in session.search(SearchQuery((b"ALL",)))
                          if upto is None or uid <= upto}
        outcome.candidates = len(candidates)
        report = None
        if self.dry_run:
            report = sweep_report(account, mailbox, rules, self.registry.actions, len(candidates), kind=kind)
        if not candidates or not rules:
            self._render(report, outcome)
            return outcome
        run = resume
        if self.store and run is None:
            run = self.store.begin_run(account, server, sel.uidvalidity, kind or f"sweep:{key}", candidates,
                                       _names(rules), 0)
        self._execute(session, account, server, rules, candidates, run, outcome, kind="sweep", high=0, advance=False,
                      report=report)
        self._render(report, outcome)
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
        report: DryRunReport | None = None,
    ) -> None:
        """One pass of `rules` over `candidates` (`mailrules.kernel.run_pass` on an `ImapPass`),
        then the journal's end: failures recorded, the checkpoint moved."""
        sel = session.selected
        assert sel is not None
        shared = kind == "arrival" and run is not None and self._shared(account)
        entered: set[int] = set()
        details: dict[int, dict] = {}
        if shared:  # shared: act only on the messages this instance claims (mailrules.claims)
            with self._noting(account, server, sel.uidvalidity):
                got = self.claims.claim(session, account, server, UidSet(candidates),
                                        self.config.accounts[account].claim_timeout)
            candidates = {u: p for u, p in candidates.items() if u in got.ours}
            if got.resume:  # taken over: resume where the old holder was (journaled, for a crash)
                moved, entered, details = takeover_plan(got, rules, self.registry.actions, session, account)
                candidates.update(moved)
                if self.store is not None and run is not None:
                    self.store.set_run_candidates(run.id, candidates)
        box = ImapPass(self._settings, session, account, server, rules, candidates, run, kind=kind,
                       matched=outcome.matched, refused=outcome.refused, report=report)
        if kind == "sweep" and self._shared(account):
            box.hooks.sweep_claim = lambda rule, a, uids: self.claims.claim_sweep(session, account, rule.name, a, uids)
        if shared:
            counts = [len(r.actions) for r in rules]
            box.earlier.update(details)
            cache: dict[str, str | None] = {}
            box.hooks.guard = lambda i, a, uids: self.claims.guard(
                session, account, server, uids, step_of(counts, i, a),
                placed_marks(session, account, rules[i].actions[a], self.registry.actions, self.watched, cache))
        run_pass(box, rules, candidates, entered)
        outcome.applied += box.out.applied
        failures, mids = box.out.failures, box.mids
        session.note_folders(None)  # the listing was for this pass only
        outcome.failed = {uid: f[4] for uid, f in failures.items()}
        if run is None or self.store is None:
            return
        if box.out.owed:  # refused rules: their messages kept for them (mailrules.refused)
            refused.record(self.store, account, server, sel.uidvalidity,
                           {name: (uids, outcome.refused.get(name, "")) for name, uids in box.out.owed.items()})
        if self.journal is not None:
            self.journal.prune()  # bounded: a batch of the oldest runs past history_days
        if shared:  # before the journal closes the run: a crash in between resumes it
            self.claims.done(session, account, server, UidSet(candidates), keep=failures)
        if kind == "sweep":
            self.store.finish_run(run.id, account, server, sel.uidvalidity, checkpoint=0, failures={},
                                  resolved=(), started=run.started, advance=False)
            self._report_refused(account, server, outcome)
            return
        resolved = [u for u in candidates if u not in failures]
        outcome.given_up = self.store.finish_run(
            run.id, account, server, sel.uidvalidity, checkpoint=high,
            failures=failures if advance else {}, resolved=resolved if advance else (), started=run.started,
            advance=advance, resume_details=box.out.retry_details if advance else None,
        )
        for uid in outcome.given_up:
            log.error("account %s mailbox %s: gave up on UID %d (Message-ID %s) after repeated failures: %s",
                      account, server, uid, mids.get(uid, "?"), failures[uid][4],
                      extra={"event": "given_up", "rule": failures[uid][1], "account": account, "mailbox": server,
                             "uids": [uid], "message_ids": [mids.get(uid, "")], "count": 1,
                             "error": failures[uid][4]})
        self._report_refused(account, server, outcome)

    def _render(self, report: DryRunReport | None, outcome: Outcome) -> None:
        """--dry-run: print the mailbox's table (with the rules whose search the server refused)."""
        if report is None:
            return
        for name, why in outcome.refused.items():
            report.notes.append(f"rule {name!r}: {SEARCH_REFUSED} ({why}): it matched nothing")
        report.render(self.out)

    def _report_refused(self, account: str, server: str, outcome: Outcome) -> None:
        """Keep the rules whose search the server refused in the mailbox's error (`status` shows it).

        A refused search fails its rule alone (its messages go on to the other rules, and are
        kept for it: `mailrules.refused`), so the refusal is reported on every pass until the
        rule works again.
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

    def _shared(self, account: str) -> bool:
        return self._shared_account(account) and not self.dry_run

    def _shared_account(self, account: str) -> bool:
        acct = self.config.accounts.get(account)
        return bool(acct is not None and acct.shared)

    @contextlib.contextmanager
    def _noting(self, account: str, server: str, uidvalidity: int) -> Iterator[None]:
        """A shared mailbox the server cannot claim in (a full keyword table): kept for `status`,
        even on a mailbox never processed yet (then its checkpoint starts at 0)."""
        try:
            yield
        except SharedUnsupported as exc:
            if self.store is not None:
                if self.store.mailbox(account, server) is None:
                    self.store.set_mailbox(account, server, uidvalidity, 0)
                self.store.set_error(account, server, str(exc))
            raise

    def _refuse_partial(self, account: str) -> None:
        """`--rule` on a shared account: refused (its done mark would hide the messages from the other rules)."""
        if self.rule_names is not None and self._shared(account):
            raise SharedUnsupported(
                f"account {account}: --rule cannot run on a shared account ('shared: true'): the messages it "
                "processes would be marked done for every rule and the other instances would never run the "
                "other rules on them. Use --dry-run to preview a rule, or run every rule.")

    def _check_interrupt(self) -> None:
        if self.interrupt is not None and self.interrupt():
            raise Interrupted()

    def close(self) -> None:
        self._limiter.close()


def _names(rules: list[Rule]) -> list[str]:
    return [r.name for r in rules]


__all__ = ["Engine", "Interrupted", "Outcome", "SessionPool"]
