"""`mailrules run --metrics HOST:PORT`: Prometheus metrics, liveness and readiness, scraped from a running daemon."""

from __future__ import annotations

import re
import subprocess
import sys
import types
import urllib.error
import urllib.request

import pytest

from mailrules.daemon.metrics import parse_address
from mailrules.daemon.process import STALLED_AFTER, Daemon
from mailrules.testing.daemon import DaemonHarness, wait_until

RULES = """\
  - name: file
    match: {subject: msg}
    actions:
      - add_keyword: $Filed
      - move: Done
"""


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(text: str, name: str, **labels: str) -> float:
    return _samples(text).get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def daemon(dovecot, imap_user, tmp_path):
    made: list[DaemonHarness] = []

    def make(**kwargs) -> DaemonHarness:
        h = DaemonHarness(dovecot, imap_user, tmp_path / f"d{len(made)}", rules=RULES, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def _base(h: DaemonHarness) -> str:
    h.wait_for_log(r"metrics on http://\S+/metrics")
    return re.search(r"metrics on (http://[^/\s]+)/metrics", h.log()).group(1)


# ---------------------------------------------------------------------- the address


@pytest.mark.parametrize("text, address", [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    (":9464", ("0.0.0.0", 9464)),
    ("[::1]:9464", ("::1", 9464)),
    ("localhost:0", ("localhost", 0)),
])
def test_the_metrics_address_is_host_colon_port(text, address):
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["9464", "host:", "host:70000", "[::1:9464", "a:b"])
def test_a_bad_metrics_address_is_refused_with_an_example(text):
    with pytest.raises(ValueError, match=r"--metrics .*(HOST:PORT|not a TCP port)"):
        parse_address(text)


def test_run_with_a_bad_metrics_address_exits_2(daemon):
    done = daemon().run("run", "--metrics", "nowhere")
    assert done.returncode == 2
    assert "--metrics 'nowhere': expected HOST:PORT" in done.stderr


def test_metrics_are_refused_with_once(daemon):
    done = daemon().run("run", "--once", "--metrics", "127.0.0.1:0")
    assert done.returncode == 2
    assert "--metrics is for the daemon" in done.stderr


# ---------------------------------------------------------------------- the optional extra

_BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "prometheus_client" or name.startswith("prometheus_client."):
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
from mailrules.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_the_extra_metrics_are_refused_naming_it(daemon):
    h = daemon()
    done = subprocess.run([sys.executable, "-c", _BLOCK, "-c", str(h.config), "--state", str(h.state), "run",
                           "--metrics", "127.0.0.1:0"], capture_output=True, text=True, env=h.env(), timeout=60)
    assert done.returncode == 2
    assert "pip install 'prometheus-client>=0.20,<1'" in done.stderr  # mailrules is not on the index
    assert "pip install '.[metrics]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_daemon_without_metrics_never_imports_prometheus_client():
    code = ("import sys; import mailrules.cli, mailrules.daemon.process, mailrules.daemon.worker; "
            "mailrules.cli.build_parser(); print('prometheus_client' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ---------------------------------------------------------------------- scraped from a running daemon


def test_metrics_count_messages_by_rule_and_action_and_time_the_passes(daemon, dovecot, imap_user, imap,
                                                                       make_message):
    h = daemon()
    h.start("--metrics", "127.0.0.1:0")
    base = _base(h)
    h.wait_for_log("watching with IDLE")
    for k in range(3):
        imap.append("INBOX", make_message(subject=f"msg {k}"))
    imap.append("INBOX", make_message(subject="other"))

    def scraped() -> str | None:
        status, text = _get(f"{base}/metrics")
        assert status == 200
        return text if _value(text, "mailrules_messages_acted_total", rule="file", action="move") == 3 else None

    text = wait_until(scraped, 30, message="3 moves counted")
    assert _value(text, "mailrules_messages_acted_total", rule="file", action="add_keyword") == 3
    assert _value(text, "mailrules_pass_seconds_count", kind="arrival") >= 1
    assert _value(text, "mailrules_arrival_to_action_seconds_count") >= 3  # per message (4 taken, 3 acted)
    assert _value(text, "mailrules_arrival_to_action_seconds_sum") > 0
    assert _value(text, "mailrules_connections", use="action") == 1
    assert _value(text, "mailrules_accounts", state="connected") == 1
    assert _value(text, "mailrules_errors_total", kind="connection_lost") == 0  # present before any error
    assert _value(text, "process_resident_memory_bytes") > 0
    assert h.stop() == 0


def test_a_lost_connection_is_counted_by_kind(daemon, dovecot, imap_user):
    h = daemon(watch=["INBOX", "Other"])
    client = dovecot.client(imap_user)
    client.create_folder("Other")
    client.logout()
    h.start("--metrics", "127.0.0.1:0")
    base = _base(h)
    h.wait_for_log("watching with IDLE")
    h.wait_for_log("watching Other with NOTIFY")
    assert _value(_get(f"{base}/metrics")[1], "mailrules_connections", use="watch") == 1
    dovecot.kick(imap_user)

    def lost() -> bool:
        text = _get(f"{base}/metrics")[1]
        return (_value(text, "mailrules_errors_total", kind="connection_lost") >= 1
                and _value(text, "mailrules_errors_total", kind="watch_lost") >= 1)

    wait_until(lost, 30, message="both lost connections counted")
    h.wait_for_log("reconnected; watching with IDLE again")
    h.wait_for_log("reconnected; watching Other with NOTIFY again")
    assert h.stop() == 0


def test_readiness_and_liveness_follow_the_daemons_health(daemon):
    h = daemon()
    h.start("--metrics", "127.0.0.1:0")
    base = _base(h)
    wait_until(lambda: _get(f"{base}/readyz")[0] == 200, 30, message="ready")
    status, text = _get(f"{base}/readyz")
    assert text.startswith("ok: watching 1 mailbox(es) of 1 account(s)")
    assert _get(f"{base}/healthz") == (200, "ok: 1 account worker(s) running\n")
    assert _get(f"{base}/nothing")[0] == 404
    assert h.stop() == 0


def test_a_refused_login_keeps_the_daemon_unready_but_alive(daemon):
    h = daemon()
    h.start("--metrics", "127.0.0.1:0", env={"MAILRULES_TEST_PASSWORD": "wrong"})
    base = _base(h)
    h.wait_for_log("login refused")
    status, text = _get(f"{base}/readyz")
    assert status == 503
    assert "account 't': login refused" in text
    assert _get(f"{base}/healthz")[0] == 200  # restarting would not cure a wrong password
    assert _value(_get(f"{base}/metrics")[1], "mailrules_errors_total", kind="login_refused") >= 1
    assert h.stop() == 0


def test_the_metrics_port_in_use_exits_1_naming_it(daemon):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = daemon().run("run", "--metrics", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert f"--metrics 127.0.0.1:{port}: cannot listen there" in done.stderr


# ---------------------------------------------------------------------- liveness, judged


def _judged(beat_ago: float, failed: dict[str, bool]) -> tuple[bool, str]:
    import time

    runners = {name: types.SimpleNamespace(failed=f) for name, f in failed.items()}
    return Daemon.liveness(types.SimpleNamespace(beat=time.monotonic() - beat_ago, runners=runners))


def test_liveness_fails_when_a_worker_died_of_a_bug():
    ok, text = _judged(1.0, {"a": False, "b": True})
    assert not ok and "'b' failed" in text


def test_liveness_fails_when_the_main_loop_stalls():
    ok, text = _judged(STALLED_AFTER + 5, {"a": False})
    assert not ok and "has not turned" in text


def test_liveness_holds_while_every_worker_runs():
    assert _judged(1.0, {"a": False, "b": False}) == (True, "2 account worker(s) running")
