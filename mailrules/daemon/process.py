"""The daemon process: signals, systemd notifications, SIGHUP reloads, the workers and the sweeps.

* **Signals**: SIGTERM/SIGINT abandon the current pass between two steps (its journal
  resumes it next time), log out and exit 0; SIGHUP reloads the rules file in a thread
  beside the main loop, which goes on answering SIGTERM (a broken file, or any failure to
  load, is reported and the old rules stay in force).
* **systemd**: with ``Type=notify`` (``NOTIFY_SOCKET``), READY=1, RELOADING=1,
  STOPPING=1 and STATUS= are sent (`mailrules.daemon.health` keeps STATUS= true).
* **Sweeps**: an APScheduler job per schedule (`mailrules.scheduler`) hands each
  account's worker a sweep; a sweep missed while the daemon was down runs once at start.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..model import Account, Config, Location
from ..plugins import Registry
from ..scheduler import SweepScheduler, schedule_groups, sweep_targets
from ..state import StateStore
from .health import Health, health_key
from .observe import NoObserver, Observer
from .shard import SHARD_META, Shard, describe_shard, served_accounts, shard_view
from .systemd import sd_notify
from .worker import AccountRunner, WorkerContext

if TYPE_CHECKING:
    from .metrics import MetricsServer

log = logging.getLogger("mailrules.watcher")

STOP_GRACE = 5.0  # seconds the threads get to finish at SIGTERM before the process exits anyway
STALLED_AFTER = 60.0  # liveness fails when the main loop (which turns every 5 s) has not turned for this long


@dataclasses.dataclass(frozen=True)
class DaemonOptions:
    """What ``mailrules run`` (without --once) was asked for."""

    sweep: bool = False  # also run every scheduled rule once, now (--sweep)
    since_now: bool = False  # the first pass of each watched mailbox ignores older mail (--since-now)
    rules: tuple[str, ...] = ()  # --rule: refused by the daemon (it would skip the other rules for good)
    shard: Shard | None = None  # --shard I/N: serve only the accounts of that shard (None: all)
    metrics: str | None = None  # --metrics HOST:PORT: Prometheus metrics, /healthz, /readyz


def _account_signature(account: Account) -> Account:
    return dataclasses.replace(account, location=Location(""))


class Daemon:
    """The process: signals, systemd notifications, SIGHUP reloads, one worker per account, sweeps."""

    def __init__(self, config: Config, registry: Registry, store: StateStore, options: DaemonOptions) -> None:
        self.config = config
        self.registry = registry
        self.store = store
        self.options = options
        self.runners: dict[str, AccountRunner] = {}
        self.scheduler: SweepScheduler | None = None
        self._wake = threading.Event()
        self._stop_signal: str | None = None
        self._reload = False
        self.beat = time.monotonic()  # the main loop's last turn (liveness)
        self.health = Health(self.state_dir, lambda: shard_view(self.config, options.shard),
                             label=f"shard {options.shard}" if options.shard else "")
        self.metrics_server = self._serve_metrics(options.metrics) if options.metrics else None
        observer: Observer = self.metrics_server.observer if self.metrics_server is not None else NoObserver()
        self.context = WorkerContext(str(self.state_dir), registry, self.health, since_now=options.since_now,
                                     observer=observer)
        self._reload_job: _ReloadJob | None = None

    # -------------------------------------------------------------- metrics and probes

    @property
    def state_dir(self) -> Path:
        return self.store.dir

    def _serve_metrics(self, address: str) -> MetricsServer:
        """Listen on `address` for /metrics, /healthz, /readyz (MetricsUnavailable, ValueError, OSError)."""
        from .metrics import MetricsObserver, MetricsServer, parse_address

        observer = MetricsObserver(self.connection_counts, self.health.counts)
        server = MetricsServer(parse_address(address), observer, self.liveness, self.health.readiness)
        assert self.registry.manager is not None
        self.registry.manager.register(observer, name="mailrules-metrics")
        server.start()
        return server

    def connection_counts(self) -> dict[str, int]:
        """Open IMAP connections of the workers: action (passes, sweeps, the home IDLE) and watch (IDLE)."""
        action = watch = 0
        for runner in list(self.runners.values()):
            pool = runner.pool
            action += len(pool.sessions) if pool is not None else 0
            watch += sum(1 for s in runner.sources() if getattr(s, "connected", False))
        return {"action": action, "watch": watch}

    def liveness(self) -> tuple[bool, str]:
        """Whether restarting the process could help: the main loop stalled, or a worker died of a bug."""
        stalled = time.monotonic() - self.beat
        if stalled > STALLED_AFTER:
            return False, f"the main loop has not turned for {stalled:.0f}s"
        dead = [name for name, runner in list(self.runners.items()) if runner.failed]
        if dead:
            return False, f"the worker of account(s) {', '.join(map(repr, dead))} failed (see the log)"
        return True, f"{len(self.runners)} account worker(s) running"

    @property
    def passes(self) -> int:
        """Arrival passes done by the workers running now."""
        return sum(r.passes for r in list(self.runners.values()))

    # -------------------------------------------------------------- signals

    def _on_stop(self, signum, frame) -> None:  # noqa: ARG002
        self._stop_signal = signal.Signals(signum).name
        self._wake.set()

    def _on_hup(self, signum, frame) -> None:  # noqa: ARG002
        self._reload = True
        self._wake.set()

    # -------------------------------------------------------------- life cycle

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, handler)
            for sig, handler in ((signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop),
                                 (signal.SIGHUP, self._on_hup))
        }
        self.registry.notify("mailrules_started", config=self.config)
        try:
            self.store.set_meta("daemon:started", dt.datetime.now(dt.UTC).isoformat())
            self._forget_health()
            self._record_shard()
            self._start_runners(self.config)
            self.scheduler = SweepScheduler(self.config, self.store, self._dispatch_sweep)
            self.scheduler.start()
            self._initial_sweeps()
            summary = self._summary()
            log.info("mailrules daemon started (pid %d): %s", os.getpid(), summary)
            sd_notify(f"READY=1\nSTATUS={summary}\nMAINPID={os.getpid()}")
            self.health.ready(summary)
            while self._stop_signal is None:
                self._wake.wait(5.0)
                self._wake.clear()
                self.beat = time.monotonic()
                if self._stop_signal is not None:
                    break
                job = self._reload_job
                if job is not None and job.finished:
                    self._reload_job = None
                    self._end_reload(job)
                if self._reload and self._reload_job is None:  # a SIGHUP during a load: load again after it
                    self._reload = False
                    self._reload_job = self._begin_reload()
            if self._reload_job is not None:
                log.info("%s: the reload of the rules file under way is abandoned", self._stop_signal)
            log.info("%s: stopping", self._stop_signal)
        finally:
            sd_notify("STOPPING=1")
            if self.scheduler is not None:
                self.scheduler.shutdown()
            self._stop_runners()
            if self.metrics_server is not None:
                self.metrics_server.stop()
            self.registry.notify("mailrules_stopping")
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("mailrules daemon stopped")
        return 0

    def _summary(self) -> str:
        """What is really watched, and every known permanent problem (see `Health`)."""
        return self.health.summary()

    def _forget_health(self) -> None:
        """The previous run's problems are not this run's: each is found (and recorded) again."""
        for account in served_accounts(self.config, self.options.shard):
            for mailbox in (None, *account.watch):
                if self.store.get_meta(health_key(account.name, mailbox)):
                    self.store.set_meta(health_key(account.name, mailbox), "")

    def _record_shard(self) -> None:
        """Say which accounts this process serves (the log, and `mailrules status` through the state)."""
        shard = self.options.shard
        if shard is None:
            self.store.set_meta(SHARD_META, "")
            return
        text = describe_shard(shard, self.config)
        previous = self.store.get_meta(SHARD_META)
        self.store.set_meta(SHARD_META, text)
        log.info("%s", text)
        if previous and not previous.startswith(f"shard {shard}:"):
            known = {state.account for state in self.store.mailboxes()}
            new = [a.name for a in served_accounts(self.config, shard) if a.name not in known]
            if new:
                log.warning("the shard changed since the last start (was %s): account(s) %s are new to this "
                            "state directory, so their first pass takes the mail already in their mailboxes as "
                            "new (see docs/scale.md, 'Changing N')", previous.split(":", 1)[0],
                            ", ".join(new))
        if not served_accounts(self.config, shard):
            log.warning("shard %s serves none of the %d account(s) of %s: this process has nothing to do "
                        "(fewer accounts than shards?)", shard, len(self.config.accounts), self.config.path)

    def _start_runners(self, config: Config) -> None:
        for account in served_accounts(config, self.options.shard):
            runner = AccountRunner(self.context, account, config)
            self.runners[account.name] = runner
            runner.start()

    def _stop_runners(self) -> None:
        runners = list(self.runners.values())
        self.runners = {}
        for runner in runners:
            runner.stop()
        deadline = time.monotonic() + STOP_GRACE
        for runner in runners:
            runner.join(deadline)

    # -------------------------------------------------------------- sweeps

    def _dispatch_sweep(self, key: str, fired: dt.datetime) -> None:
        group = schedule_groups(self.config).get(key)
        if group is None:
            return
        for name, runner in list(self.runners.items()):
            if sweep_targets(self.config, group[1], name):
                runner.request_sweep(key, fired)

    def _initial_sweeps(self) -> None:
        assert self.scheduler is not None
        now = dt.datetime.now(dt.UTC)
        for name, runner in self.runners.items():
            for key in self.scheduler.missed(name, now):
                log.info("account %s: sweep %s was missed while the daemon was down: running it now", name, key)
                runner.request_sweep(key, now)
        if self.options.sweep:
            for key in schedule_groups(self.config):
                self._dispatch_sweep(key, now)

    # -------------------------------------------------------------- SIGHUP

    def reload(self) -> None:
        """Load the rules file and apply it now (blocking); the main loop uses the two halves."""
        job = self._begin_reload()
        job.thread.join()
        self._end_reload(job)

    def _begin_reload(self) -> _ReloadJob:
        """Start loading the rules file in a thread: the main loop goes on answering signals.

        The load itself is bounded (the limits of `mailrules.config`: size, depth, aliases), so
        it ends within seconds whatever the file holds; a SIGTERM meanwhile stops the daemon at
        once, abandoning the load (its thread is a daemon thread).
        """
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        log.info("SIGHUP: loading %s", self.config.path)
        job = _ReloadJob(self.config.path, self.registry, self._wake)
        job.thread.start()
        return job

    def _end_reload(self, job: _ReloadJob) -> None:
        """Apply what the load gave, on the main thread; on any failure the old rules stay."""
        try:
            config = job.config
            if config is None:
                log.error("SIGHUP: %s; the old rules stay in force", job.error)
                return
            for message in config.warnings:
                log.warning("%s", message)
            shard = self.options.shard
            old = {a.name: _account_signature(a) for a in served_accounts(self.config, shard)}
            new = {a.name: _account_signature(a) for a in served_accounts(config, shard)}
            self.config = config
            if shard is not None:
                self._record_shard()
            if old != new:
                log.info("SIGHUP: the accounts changed: reconnecting")
                self._stop_runners()
                self._start_runners(config)
            else:
                for runner in self.runners.values():
                    runner.set_config(config)
            if self.scheduler is not None:
                self.scheduler.reload(config)
            log.info("SIGHUP: reloaded %s: %d rule(s), %d account(s)", config.path, len(config.rules),
                     len(config.accounts))
        finally:
            sd_notify(f"READY=1\nSTATUS={self._summary()}")


class _ReloadJob:
    """One load of the rules file for SIGHUP, in a thread of its own.

    Whatever goes wrong (a ConfigError with file:line, or anything unexpected from a plugin's
    validator) ends as `error`, never as an exception in the daemon: the old rules stay.
    """

    def __init__(self, path: str, registry: Registry, wake: threading.Event) -> None:
        self.path = path
        self.registry = registry
        self.wake = wake
        self.config: Config | None = None
        self.error = ""
        self.finished = False
        self.thread = threading.Thread(target=self._run, name="mailrules-reload", daemon=True)

    def _run(self) -> None:
        from ..config import ConfigError, ConfigWarning, load

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConfigWarning)
                self.config = load(self.path, registry=self.registry)
        except ConfigError as exc:
            self.error = f"the rules file has an error: {exc}"
        except Exception as exc:  # noqa: BLE001 - the daemon and its old rules go on, whatever happened
            self.error = f"cannot load the rules file {self.path} ({type(exc).__name__}: {exc})"
            log.debug("details", exc_info=True)
        finally:
            self.finished = True
            self.wake.set()


def run_daemon(config: Config, registry: Registry, store: StateStore, options: DaemonOptions) -> int:
    """`mailrules run` without --once: watch every account until SIGTERM/SIGINT. Returns the exit code."""
    if options.rules:
        print("mailrules: --rule needs --once or --dry-run: a daemon running only some rules would skip the "
              "others for good on the messages it processes", file=sys.stderr)
        return 2
    try:
        daemon = Daemon(config, registry, store, options)
    except ValueError as exc:  # a bad --metrics address
        print(f"mailrules: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the --metrics port is taken, or the address is not this machine's
        print(f"mailrules: --metrics {options.metrics}: cannot listen there ({exc.strerror or exc})", file=sys.stderr)
        return 1
    return daemon.run()
