"""`run --metrics ADDR`: Prometheus metrics, liveness and readiness on one HTTP port.

Opt-in, and the only module that imports ``prometheus_client`` (the optional extra
``mailrules[metrics]``), and only when ``--metrics`` is given. Paths:

* ``/metrics``: the Prometheus text format (`MetricsObserver`'s collectors, plus the
  process collectors prometheus-client adds: CPU, RSS, open files);
* ``/healthz`` (liveness): 200 while the daemon's main loop turns and no account's worker
  died of a bug; 503 otherwise, so an orchestrator restarts the process;
* ``/readyz`` (readiness): 200 once the daemon started and every account it serves is
  connected without a permanent problem (`mailrules.daemon.health.Health.readiness`); 503
  with the STATUS line otherwise (a refused login keeps a pod unready, and restarting it
  would not help, so liveness does not depend on it).

The server is a small threaded WSGI server from the standard library, bound to ADDR
(``HOST:PORT``, ``:PORT`` for every interface, ``[::1]:PORT``); requests are not logged.
"""

from __future__ import annotations

import logging
import re
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..api import hookimpl
from .observe import ERROR_KINDS

log = logging.getLogger("mailrules.watcher")

EXTRA = "metrics"  # in the checkout: pip install '.[metrics]'
_ADDRESS = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})")

# Latency buckets (seconds): from a few milliseconds (a pass on a selected connection) to
# minutes (a backlog slice on a slow link).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

Check = Callable[[], tuple[bool, str]]  # (healthy, one line saying why)


class MetricsUnavailable(Exception):
    """prometheus-client is not installed (the message names the extra)."""


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ValueError with the reason for anything else."""
    match = _ADDRESS.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"--metrics {text!r}: expected HOST:PORT (e.g. 127.0.0.1:9464, :9464 for every "
                         "interface, [::1]:9464)")
    port = int(match.group("port"))
    if port > 65535:
        raise ValueError(f"--metrics {text!r}: port {port} is not a TCP port (0-65535)")
    host = match.group("v6") or match.group("host") or "0.0.0.0"
    return host, port


def require_client() -> None:
    """Raise MetricsUnavailable (naming the extra) when prometheus-client cannot be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise MetricsUnavailable(
            f"--metrics needs prometheus-client, the optional extra {EXTRA!r}: "
            f"pip install 'prometheus-client>=0.20,<1' (in a mailrules checkout: pip install '.[{EXTRA}]')"
        ) from None


class MetricsObserver:
    """The daemon's events as Prometheus collectors, in a registry of their own."""

    def __init__(self, connections: Callable[[], dict[str, int]], accounts: Callable[[], dict[str, int]]) -> None:
        require_client()
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client.process_collector import ProcessCollector

        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.acted = Counter("mailrules_messages_acted", "Messages acted on, by rule and action",
                             ["rule", "action"], registry=self.registry)
        self.passes = Histogram("mailrules_pass_seconds", "Duration of one pass over one mailbox",
                                ["kind"], buckets=BUCKETS, registry=self.registry)
        self.arrival = Histogram("mailrules_arrival_to_action_seconds",
                                 "From the announcement of new mail (IDLE, STATUS poll) to the end of the pass "
                                 "that acted on it, per message (the server's own push delay is not included)",
                                 buckets=BUCKETS, registry=self.registry)
        self.errors = Counter("mailrules_errors", "Failures, by kind", ["kind"], registry=self.registry)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)  # every kind present from the start (0), so rates work
        gauge = Gauge("mailrules_connections", "Open IMAP connections, by use (action, watch)", ["use"],
                      registry=self.registry)
        for use in ("action", "watch"):
            gauge.labels(use).set_function(lambda u=use: connections().get(u, 0))
        served = Gauge("mailrules_accounts", "Accounts served by this process, by state (connected, other)",
                       ["state"], registry=self.registry)
        for state in ("connected", "other"):
            served.labels(state).set_function(lambda s=state: accounts().get(s, 0))

    # ---------------------------------------------------------- Observer

    def pass_done(self, kind: str, seconds: float) -> None:
        self.passes.labels(kind).observe(seconds)

    def acted_after(self, seconds: float, messages: int) -> None:
        for _ in range(messages):
            self.arrival.observe(seconds)

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    # ---------------------------------------------------------- the action hook (a plugin of the registry)

    @hookimpl
    def mailrules_action_applied(self, event: Any) -> None:
        if not event.dry_run:
            self.acted.labels(event.rule, event.action).inc(len(event.uids))

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


class MetricsServer:
    """The HTTP endpoint: /metrics, /healthz, /readyz, in a thread of its own."""

    def __init__(self, address: tuple[str, int], observer: MetricsObserver, live: Check, ready: Check) -> None:
        self.observer = observer
        self.live = live
        self.ready = ready
        server_class = _Server6 if ":" in address[0] else _Server
        self.server = make_server(address[0], address[1], self.app, server_class=server_class, handler_class=_Quiet)
        self.address = self.server.server_address[:2]
        self.thread = threading.Thread(target=self.server.serve_forever, name="mailrules-metrics", daemon=True)

    def start(self) -> None:
        self.thread.start()
        host, port = self.address
        shown = f"[{host}]" if ":" in str(host) else host
        log.info("metrics on http://%s:%d/metrics (liveness /healthz, readiness /readyz)", shown, port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/metrics", "/"):
            body, content_type = self.observer.exposition()
            start_response("200 OK", [("Content-Type", content_type)])
            return [body]
        if path in ("/healthz", "/readyz"):
            try:
                ok, text = (self.live if path == "/healthz" else self.ready)()
            except Exception as exc:  # noqa: BLE001 - a probe answers, whatever happened
                ok, text = False, f"cannot tell: {type(exc).__name__}: {exc}"
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{'ok' if ok else 'not ok'}: {text}\n".encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: /metrics, /healthz or /readyz\n"]
