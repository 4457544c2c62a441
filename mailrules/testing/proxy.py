"""A loopback TCP proxy for fault injection and latency benchmarks.

``TcpProxy`` listens on 127.0.0.1 (``.port``) and forwards every connection to a target,
optionally adding latency, rewriting server lines, dropping every connection or going
silent.  It runs an asyncio loop in a daemon thread; every method is thread-safe::

    with TcpProxy(server.host, server.port, delay=0.010) as proxy:   # ~20 ms RTT
        client = server.client(user, port=proxy.port)
        proxy.drop_all()            # every open connection is reset, mid-command

Latency, not throughput: each chunk read is scheduled for forwarding at arrival + delay,
so a large transfer is delayed once, not once per chunk.  Order is preserved per direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["TcpProxy"]

T = TypeVar("T")
_LITERAL_RE = re.compile(rb"\{(\d+)\+?\}\r?\n$")
_CHUNK = 65536
_CALL_TIMEOUT = 10.0


class _LineRewriter:
    """Applies a function to each complete line of a stream, passing IMAP literals through.

    A line ending in ``{N}`` CRLF announces N literal bytes; those bytes are forwarded
    untouched and line splitting resumes after them.
    """

    def __init__(self, rewrite: Callable[[bytes], bytes]) -> None:
        self.rewrite = rewrite
        self.buffer = b""
        self.literal_left = 0

    def feed(self, data: bytes) -> bytes:
        out = []
        self.buffer += data
        while self.buffer:
            if self.literal_left:
                part = self.buffer[: self.literal_left]
                self.buffer = self.buffer[len(part) :]
                self.literal_left -= len(part)
                out.append(part)
                continue
            end = self.buffer.find(b"\n")
            if end < 0:
                break
            line, self.buffer = self.buffer[: end + 1], self.buffer[end + 1 :]
            match = _LITERAL_RE.search(line)
            if match:
                self.literal_left = int(match.group(1))
            out.append(self.rewrite(line))
        return b"".join(out)

    def flush(self) -> bytes:
        """Whatever is left (an unterminated last line) at end of stream, unrewritten."""
        rest, self.buffer = self.buffer, b""
        return rest


class _Pipe:
    """One proxied connection: two directions, each with a delayed, ordered queue."""

    def __init__(self, proxy: TcpProxy, client: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.proxy = proxy
        self.client_reader, self.client_writer = client
        self.server_writer: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        proxy = self.proxy
        try:
            server_reader, self.server_writer = await asyncio.open_connection(
                proxy.target_host, proxy.target_port
            )
        except OSError:
            self.abort()
            return
        rewriter = _LineRewriter(proxy.rewrite_server) if proxy.rewrite_server else None
        up: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        down: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        self.tasks = [
            asyncio.ensure_future(self._read(self.client_reader, up, None)),
            asyncio.ensure_future(self._write(up, self.server_writer)),
            asyncio.ensure_future(self._read(server_reader, down, rewriter)),
            asyncio.ensure_future(self._write(down, self.client_writer)),
        ]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.abort()

    async def _read(
        self,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes | None]],
        rewriter: _LineRewriter | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await reader.read(_CHUNK)
            except (OSError, asyncio.IncompleteReadError):
                data = b""
            due = loop.time() + self.proxy.delay
            if not data:
                if rewriter is not None and rewriter.buffer:
                    queue.put_nowait((due, rewriter.flush()))
                queue.put_nowait((due, None))
                return
            self.proxy.bytes_forwarded += len(data)
            if rewriter is not None:
                data = rewriter.feed(data)
                if not data:
                    continue
            queue.put_nowait((due, data))

    async def _write(
        self, queue: asyncio.Queue[tuple[float, bytes | None]], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.proxy._flowing.wait()  # held while silenced
            if data is None:
                with contextlib.suppress(OSError):
                    writer.close()
                return
            try:
                writer.write(data)
                await writer.drain()
            except (OSError, RuntimeError):
                return

    def abort(self) -> None:
        """Reset both sides at once (queued data is discarded)."""
        for task in self.tasks:
            task.cancel()
        for writer in (self.client_writer, self.server_writer):
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.transport.abort()


class TcpProxy:
    """Forward 127.0.0.1:``port`` to ``target_host:target_port`` with injected faults.

    ``delay``: seconds added to each direction (0.010 = 20 ms round trip); may be changed
    at any time and applies to data arriving afterwards.  ``rewrite_server``: applied to
    every complete line (CRLF included) from the server; may return ``b""`` to drop it.
    IMAP literals (after a line ending in ``{N}``) are passed through unmodified.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        delay: float = 0.0,
        rewrite_server: Callable[[bytes], bytes] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.delay = delay
        self.rewrite_server = rewrite_server
        self.host = host
        self.port = port
        self.connections_accepted = 0
        self.bytes_forwarded = 0
        self._pipes: set[_Pipe] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> TcpProxy:
        """Start listening (in a daemon thread); ``.port`` is then the bound port."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:  # reported to start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"TcpProxy:{self.target_port}", daemon=True)
        self._thread.start()
        if not ready.wait(_CALL_TIMEOUT) or errors:
            self._thread = None
            raise RuntimeError(f"TcpProxy failed to start: {errors[0] if errors else 'timeout'}")
        return self

    async def _open(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Close the listener and every connection, and end the thread."""
        if self._thread is None or self._loop is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for pipe in list(self._pipes):
                pipe.abort()
            self._flowing.set()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_CALL_TIMEOUT)
        self._thread = None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"<TcpProxy {self.host}:{self.port} -> {self.target_host}:{self.target_port} delay={self.delay}>"
        )

    # -- faults ------------------------------------------------------------------------

    @property
    def active_connections(self) -> int:
        """Number of connections currently proxied."""
        return len(self._pipes)

    def drop_all(self) -> int:
        """Reset every open connection (both sides) at once; returns how many were dropped.

        The listener stays open: clients can reconnect.
        """

        async def drop() -> int:
            pipes = list(self._pipes)
            for pipe in pipes:
                pipe.abort()
            return len(pipes)

        return self._call(drop())

    def silence(self) -> None:
        """Stop forwarding in both directions: new and open connections see a dead peer.

        Data is held, not lost; ``resume()`` delivers it.  Connections are still accepted.
        """

        async def hold() -> None:
            self._flowing.clear()

        self._call(hold())

    def resume(self) -> None:
        """Undo ``silence()``: held data is delivered and forwarding goes on."""

        async def release() -> None:
            self._flowing.set()

        self._call(release())

    def wait_connections(self, count: int, timeout: float = 5.0) -> bool:
        """Poll until ``active_connections == count`` (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while self.active_connections != count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    # -- internals ---------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        pipe = _Pipe(self, (reader, writer))
        self._pipes.add(pipe)
        try:
            await pipe.run()
        finally:
            self._pipes.discard(pipe)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("TcpProxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CALL_TIMEOUT)
