"""A private spamd on loopback for tests (Debian: ``apt-get install spamassassin``).

::

    with SpamdServer(tmpdir) as spamd:
        SpamdClient(spamd.address).symbols(GTUBE_MESSAGE)

It listens on 127.0.0.1 (a free port), uses only local tests (``-L``: no DNS or network),
allows learning (``--allow-tell``) into its own Bayes database under `directory`
(auto-learning off, so only TELL changes it), and logs to ``directory/spamd.log``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .spamc import SpamdClient, SpamdError

__all__ = ["GTUBE", "SpamdServer", "find_spamd"]

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
"""The Generic Test for Unsolicited Bulk Email: any message whose body holds it scores 1000+."""

START_TIMEOUT = 60.0


def find_spamd() -> str | None:
    found = shutil.which("spamd")
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = os.path.join(directory, "spamd")
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SpamdServer:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def bayes_dir(self) -> Path:
        return self.directory / "bayes"

    def start(self) -> SpamdServer:
        exe = find_spamd()
        if exe is None:
            raise RuntimeError("spamd is not installed (Debian: apt-get install spamassassin)")
        self.bayes_dir.mkdir(parents=True, exist_ok=True)
        self.bayes_dir.chmod(0o777)  # spamd's children run as an unprivileged user (nobody) ...
        for parent in self.bayes_dir.parents:  # ... who must reach it
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)
        self.port = _free_port()
        command = [
            exe, f"--listen=127.0.0.1:{self.port}", "--syslog=stderr", "--allow-tell", "--nouser-config",
            "--local", "--max-children=2", f"--helper-home-dir={self.directory}",
            f"--cf=bayes_path {self.bayes_dir}/bayes", "--cf=bayes_auto_learn 0", "--cf=bayes_file_mode 0777",
            "--cf=use_bayes 1",
        ]
        if os.geteuid() == 0:
            command.append("--username=nobody")  # spamd refuses to run its children as root
        log = open(self.directory / "spamd.log", "ab")  # noqa: SIM115 - kept open while spamd runs
        try:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env=self._env())
        finally:
            log.close()
        client = SpamdClient(self.address, timeout=2)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"spamd exited with status {self.process.returncode}:\n{self.log_tail()}")
            try:
                if client.ping():
                    return self
            except SpamdError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"spamd did not answer PING within {START_TIMEOUT:g}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self.process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.directory / "spamd.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _env(self) -> dict[str, str]:
        """The environment of spamd and sa-learn: HOME in the throwaway directory, since both
        create ~/.spamassassin when run as a user other than root, --nouser-config or not."""
        return {**os.environ, "HOME": str(self.directory)}

    def learned(self) -> tuple[int, int]:
        """(spam, ham) message counts of the Bayes database, read with sa-learn."""
        if not any(self.bayes_dir.glob("bayes_toks*")):
            return 0, 0  # nothing learned yet (sa-learn --dump fails on a missing database)
        result = subprocess.run(
            ["sa-learn", "--dbpath", str(self.bayes_dir), "--dump", "magic"],
            capture_output=True, text=True, timeout=60, check=True, env=self._env(),
        )
        counts = {}
        for line in result.stdout.splitlines():
            parts = line.split()
            if "nspam" in parts or "nham" in parts:
                counts[parts[-1]] = int(parts[2])
        return counts.get("nspam", 0), counts.get("nham", 0)

    def __enter__(self) -> SpamdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
