"""Protocol-level diagnosis: what each tool sends, and where the time goes.

`bench/run.py --trace` runs every tool once more (untimed for the table) on a second
Dovecot with `rawlog_dir` set, which records every line of every IMAP session after login
with a server timestamp (`*.in`: from the client, `*.out`: to the client). From those:

- commands: how many of each IMAP command the tool sent;
- round trips: client bursts, i.e. commands sent after the server had completed (tagged
  response) something since the tool's previous command; a strictly synchronous client
  has one per command, a pipelining one fewer. The LOGIN exchange and the connection are
  not in the rawlog: add about 2 round trips per connection;
- server seconds: per command type, from the command's arrival (for a pipelined command:
  the previous command's completion, if later) to its tagged completion;
- client seconds: from a tagged completion to the client's next command (client work, and
  on a slow link the round trip itself);
- bytes in each direction;
- in IMAP session: from the first command after login to the last line; the rest of the
  wall time is start-up (interpreter, imports, configuration), connecting, LOGIN, and exit.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

_LINE = re.compile(rb"^(\d+\.\d+) (.*)$")
_TAGGED = re.compile(rb"^([A-Za-z0-9.+_-]+) (OK|NO|BAD)[ \r]")
_COMMAND = re.compile(rb"^([A-Za-z0-9.+_-]+) (UID )?([A-Za-z]+)", re.IGNORECASE)


def rawlog_conf(rawlog_root: Path) -> str:
    """Dovecot configuration (for DovecotServer(extra_conf=...)) that enables the rawlog."""
    return f"protocol imap {{\n  rawlog_dir = {rawlog_root}/%u\n}}\n"


@dataclass
class Session:
    commands: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    server_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    round_trips: int = 0
    client_seconds: float = 0.0
    duration: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    connections: int = 0

    def merge(self, other: Session) -> None:
        for k, v in other.commands.items():
            self.commands[k] += v
        for k, v in other.server_seconds.items():
            self.server_seconds[k] += v
        self.round_trips += other.round_trips
        self.client_seconds += other.client_seconds
        self.duration += other.duration
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.connections += other.connections

    def as_dict(self) -> dict:
        return {
            "connections": self.connections,
            "commands": dict(sorted(self.commands.items())),
            "total_commands": sum(self.commands.values()),
            "round_trips_after_login": self.round_trips,
            "server_seconds": {k: round(v, 4) for k, v in sorted(self.server_seconds.items())},
            "client_seconds": round(self.client_seconds, 4),
            "session_seconds": round(self.duration, 4),
            "bytes_from_client": self.bytes_in,
            "bytes_to_client": self.bytes_out,
        }


def _read(path: Path) -> list[tuple[float, bytes]]:
    """(timestamp, line) pairs; literal data (client or server) is not split into lines."""
    out: list[tuple[float, bytes]] = []
    data = path.read_bytes()
    pos = 0
    n = len(data)
    while pos < n:
        end = data.find(b"\n", pos)
        if end < 0:
            end = n
        raw = data[pos:end].rstrip(b"\r")
        pos = end + 1
        m = _LINE.match(raw)
        if not m:
            continue  # continuation of a literal
        out.append((float(m.group(1)), m.group(2)))
    return out


def analyse_session(inp: Path, outp: Path) -> Session:
    s = Session(connections=1)
    s.bytes_in = inp.stat().st_size
    s.bytes_out = outp.stat().st_size if outp.exists() else 0
    events: list[tuple[float, int, bytes]] = [(t, 0, line) for t, line in _read(inp)]
    if outp.exists():
        # Only tagged completions matter on the server side.
        events += [(t, 1, line) for t, line in _read(outp) if _TAGGED.match(line)]
    events.sort(key=lambda e: (e[0], e[1]))
    pending: dict[bytes, tuple[float, str]] = {}
    completed_since_last_command = True
    last_completion: float | None = None
    first = last = None
    for t, side, line in events:
        first = t if first is None else first
        last = t
        if side == 0:
            m = _COMMAND.match(line)
            if not m:
                continue  # e.g. DONE after IDLE, or literal data
            tag, uid, verb = m.group(1), m.group(2), m.group(3).upper().decode()
            name = ("UID " + verb) if uid else verb
            s.commands[name] += 1
            pending[tag] = (t, name)
            if completed_since_last_command:
                s.round_trips += 1
                if last_completion is not None:
                    s.client_seconds += t - last_completion
            completed_since_last_command = False
        else:
            m = _TAGGED.match(line)
            tag = m.group(1) if m else b""
            if tag not in pending:
                continue  # not a completion of ours (e.g. a line of a message body)
            t0, name = pending.pop(tag)
            # A pipelined command waits for the ones before it: its time starts when the
            # previous completion went out (so overlapping commands are not counted twice).
            start = t0 if last_completion is None else max(t0, last_completion)
            s.server_seconds[name] += max(t - start, 0.0)
            completed_since_last_command = True
            last_completion = t
    if first is not None and last is not None:
        s.duration = last - first
    return s


def commands_sent(rawlog_dir: Path) -> list[bytes]:
    """Every command line one user's sessions sent after LOGIN, in order (literal data left out)."""
    return [line for inp in sorted(rawlog_dir.glob("*.in")) for _t, line in _read(inp) if _COMMAND.match(line)]


def analyse_user(rawlog_dir: Path) -> Session:
    """All the sessions of one user (one tool run)."""
    total = Session()
    for inp in sorted(rawlog_dir.glob("*.in")):
        total.merge(analyse_session(inp, inp.with_suffix(".out")))
    return total


def table(rows: list[tuple[str, str, float, Session]]) -> str:
    """Markdown: scenario, tool, wall seconds, connections, commands, round trips, times."""
    lines = [
        "| scenario | tool | wall s | in IMAP session s | conns | commands | round trips | server s | "
        "client s | bytes to client | commands by type (server s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for scenario, tool, wall, s in rows:
        by_type = ", ".join(
            f"{k} {v} ({s.server_seconds.get(k, 0.0):.2f})"
            for k, v in sorted(s.commands.items(), key=lambda kv: -kv[1])
        )
        lines.append(
            f"| {scenario} | {tool} | {wall:.2f} | {s.duration:.2f} | {s.connections} | {sum(s.commands.values())} | "
            f"{s.round_trips} | {sum(s.server_seconds.values()):.2f} | {s.client_seconds:.2f} | "
            f"{s.bytes_out:,} | {by_type} |"
        )
    return "\n".join(lines)
