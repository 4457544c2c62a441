"""The daemon: `mailrules run` without `--once`.

Modules: `process` (signals, sd_notify, reload, `DaemonOptions`, `run_daemon`), `worker`
(one account's turn: connect, due sources, take work, wait; backoff), `queue` (its work),
`sources` (change sources behind one interface, a list per worker: IDLE, STATUS polling,
the worker's own IDLE), `health` (STATUS=, `mailrules status`, readiness), `shard`
(``--shard I/N``), `observe` and `metrics` (``--metrics``), `backoff`, `systemd`. Logs go to the logger ``mailrules.watcher`` (its historical name).

Design (one process, many accounts):

* **One worker thread per account** owns the account's *action connection* (an
  `Engine` with its own `SessionPool` and `StateStore` connection). Every arrival pass,
  retry and sweep of the account runs there, one at a time: sweeps and arrival
  processing never act on the same mailbox at once, and one slow or failing account
  never stalls another.
* While it has nothing to do, the worker **IDLEs on the account's first watched
  mailbox** (its *home*, usually INBOX) on that same connection: when new mail comes,
  the connection is already selected and synchronised, so the pass starts at once
  (the lowest latency). Before re-entering IDLE it checks that nothing arrived while
  it was busy (anything above the checkpoint, or an EXISTS in the answer to that
  check): IDLE only announces what the connection has not been told yet.
* **The other watched mailboxes** share one NOTIFY connection where the server offers
  NOTIFY (`notify.NotifyWatch`, RFC 5465), else get an IDLE connection each (`IdleWatch`, up to
  ``max_connections`` connections in all); either only waits: any EXISTS marks the
  mailbox dirty for the worker, which clears the mark *before* a pass and runs another
  if new mail was announced meanwhile, so no arrival falls in a gap. Mailboxes beyond
  the budget, and every mailbox of a server without IDLE, are **polled** with ``STATUS
  (UIDNEXT)`` every ``poll_interval``.
* **Liveness**: IDLE is re-issued every ``idle_interval`` and the tagged answer to DONE
  must come within ``timeout``; EOF and BYE end it at once. A lost connection is reopened
  with exponential backoff, jitter and a cap (``reconnect_max``), the secret fetched
  afresh, and a catch-up pass follows every (re)connection.
* **Sweeps**: an APScheduler job per schedule (`mailrules.scheduler`) hands each
  account's worker a sweep; a sweep missed while the daemon was down runs once at start.
* **Crash safety** is the engine's journal (`mailrules.state`): a pass interrupted by a
  crash, a signal or a lost connection is resumed, never repeated. A large backlog is
  taken in slices of `CATCHUP_BATCH` messages, so the checkpoint advances steadily and
  progress is logged (`mailrules.progress`).
* **Signals**: SIGTERM/SIGINT abandon the current pass between two steps (its journal
  resumes it next time), log out and exit 0; SIGHUP reloads the rules file in a thread
  beside the main loop, which goes on answering SIGTERM (a broken file, or any failure to
  load, is reported and the old rules stay in force).
* **systemd**: with ``Type=notify`` (``NOTIFY_SOCKET``), READY=1, RELOADING=1,
  STOPPING=1 and STATUS= are sent.
"""
