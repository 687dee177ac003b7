"""The demo world's file server: HTTP/1.1 Range requests on kept-alive connections.

It stands in for object storage (Azure Blob, S3) in the demo and the tests: ``HEAD`` and
``GET`` with one byte range (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) answered 206 with
``Content-Range``, over persistent connections, in order (pipelining works), which is what
GDAL's ``/vsicurl/`` needs.

Unlike object storage it runs on the build's own cores, so every CPU second it spends is
taken from the build. A demo batch build opens ~25,000 small COGs, a HEAD and one or two
ranged GETs each. ``http.server`` (with RangeHTTPServer's handler) used 7.5 CPU-s per build
on one thread per connection, parsing headers in pure Python; this asyncio protocol, with
httptools' C parser and one write per answer on uvloop's event loop, uses 3.4 CPU-s, and the
2-worker build is ~7 % faster for it.

It counts what it serves (:class:`Stats`): ``GET /.stats`` answers the counts as JSON and
``GET /.stats?reset=1`` answers them and starts counting afresh. That path is the server's,
never a file's (a file named ``.stats`` at the root is not served), and its requests are
not counted. Benchmarks read it to report requests and bytes per scene.

Run: ``python -m gpp_cubes.demo.fileserver PORT [--bind 127.0.0.1] [--directory DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import os
import stat
import time
from collections import deque
from email.utils import formatdate
from typing import NamedTuple
from urllib.parse import parse_qs, unquote

import httptools

# Larger bodies go out in pieces of this size, each once the client has taken the previous
# ones, so that a big file is never held in memory whole.
CHUNK = 1 << 20  # [bytes]
#: the path that answers the request and byte counts (never a file)
STATS_PATH = "/.stats"


class Stats:
    """What the server has answered since it started or was last reset.

    Attributes
    ----------
    requests : dict of str to int
        Requests per method (``"HEAD"``, ``"GET"``, others), the stats path excluded.
    ranged_gets : int
        GET requests with a ``Range`` header.
    body_bytes : int
        Body bytes sent (file contents and listings; headers not counted) [bytes].
    status : dict of str to int
        Answers per status code (``"200"``, ``"206"``, ``"404"``, ...).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: dict[str, int] = {}
        self.ranged_gets = 0
        self.body_bytes = 0
        self.status: dict[str, int] = {}
        self._cpu0 = time.process_time()

    def as_dict(self) -> dict[str, object]:
        """The counts, and the server process's CPU time since the reset [s]."""
        return {"requests": dict(self.requests), "ranged_gets": self.ranged_gets,
                "body_bytes": self.body_bytes, "status": dict(self.status),
                "cpu_s": time.process_time() - self._cpu0}


class RangeError(ValueError):
    """A ``Range`` header this server cannot satisfy (answered 416)."""


def parse_range(header: str, size: int) -> tuple[int, int]:
    """First and last byte (inclusive) that a single-range ``Range`` header asks for.

    Parameters
    ----------
    header : str
        The header's value: ``"bytes=0-16383"``, ``"bytes=49000-"`` or ``"bytes=-500"``.
    size : int
        Size of the file [bytes].

    Returns
    -------
    tuple of int
        ``(first, last)`` [bytes], the last clipped to the end of the file.

    Raises
    ------
    RangeError
        Not one byte range, malformed, or starting at or beyond the end of the file.

    References
    ----------
    RFC 9110, HTTP Semantics, section 14.1.2 (byte ranges).
    """
    unit, _, spec = header.partition("=")
    first_text, dash, last_text = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or "," in spec or not dash:
        raise RangeError(f"unsupported Range {header!r}: one byte range only")
    try:
        first = int(first_text) if first_text else None
        last = int(last_text) if last_text else None
    except ValueError:
        raise RangeError(f"malformed Range {header!r}") from None
    if first is None:  # a suffix: the last n bytes
        if last is None or last <= 0:
            raise RangeError(f"empty suffix range {header!r}")
        return max(size - last, 0), size - 1
    last = size - 1 if last is None else last
    if first < 0 or first > last or first >= size:
        raise RangeError(f"Range {header!r} is outside a file of {size} bytes")
    return first, min(last, size - 1)


def _head(status: bytes, length: int, close: bool, headers: bytes = b"") -> bytes:
    """Status line and headers of an answer with a body of ``length`` bytes."""
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s%s\r\n" % (
        status, length, headers, b"Connection: close\r\n" if close else b"")


class Request(NamedTuple):
    method: bytes
    url: bytes
    range: str | None
    keep_alive: bool


class RangeProtocol(asyncio.Protocol):
    """One client connection: httptools parses the requests, answered one after another."""

    def __init__(self, root: str, stats: Stats | None = None) -> None:
        self.root = root
        self.stats = stats if stats is not None else Stats()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.range: str | None = None
        self.queue: deque[Request] = deque()  # parsed, not answered yet (pipelining)
        self.sending: asyncio.Task | None = None  # a large body going out in pieces
        self.writable = asyncio.Event()
        self.writable.set()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._reply(b"400 Bad Request", close=True)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sending is not None:
            self.sending.cancel()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.range = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"range":
            self.range = value.decode("latin-1")

    def on_message_complete(self) -> None:
        self.queue.append(Request(self.parser.get_method(), self.url, self.range,
                                  self.parser.should_keep_alive()))
        self._answer_queued()

    # answers
    def _answer_queued(self) -> None:
        while self.queue and self.sending is None:
            self._answer(self.queue.popleft())

    def _answer(self, req: Request) -> None:
        close = not req.keep_alive
        parsed = httptools.parse_url(req.url)
        if os.path.normpath(unquote(parsed.path.decode("latin-1"))) == STATS_PATH:
            self._stats(req, parsed.query, close)
            return
        method = req.method.decode("latin-1")
        self.stats.requests[method] = self.stats.requests.get(method, 0) + 1
        if req.method == b"GET" and req.range is not None:
            self.stats.ranged_gets += 1
        if req.method not in (b"GET", b"HEAD"):
            self._reply(b"405 Method Not Allowed", close=True, extra=b"Allow: GET, HEAD\r\n")
            return
        path = self._path(req.url)
        try:
            if path is None:
                raise FileNotFoundError
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # missing, outside the root, unreadable: object stores say 404
            self._reply(b"404 Not Found", close=close)
            return
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):  # a listing, as a bucket's root answers one
                self._listing(path, req, close)
                return
            status, first, last, content_range = b"200 OK", 0, st.st_size - 1, b""
            if req.range is not None and req.method == b"GET":
                try:
                    first, last = parse_range(req.range, st.st_size)
                except RangeError:
                    self._reply(b"416 Range Not Satisfiable", close=close,
                                extra=b"Content-Range: bytes */%d\r\n" % st.st_size)
                    return
                status = b"206 Partial Content"
                content_range = b"Content-Range: bytes %d-%d/%d\r\n" % (first, last, st.st_size)
            length = last - first + 1
            content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
            head = _head(status, length, close, b"Content-Type: %s\r\nAccept-Ranges: bytes\r\n"
                         b"Last-Modified: %s\r\n%s" % (
                             content_type.encode(),
                             formatdate(st.st_mtime, usegmt=True).encode(), content_range))
            if req.method == b"HEAD":
                self._write(head, close=close)
            elif length <= CHUNK:
                self.stats.body_bytes += length
                self._write(head + os.pread(fd, length, first), close=close)
            else:
                self._write(head, close=False)
                self.sending = asyncio.ensure_future(self._send(path, first, length, close))
        finally:
            os.close(fd)

    async def _send(self, path: str, first: int, length: int, close: bool) -> None:
        """Send a large body piece by piece; requests pipelined behind it wait their turn."""
        assert self.transport is not None
        transport = self.transport
        transport.pause_reading()
        try:
            with open(path, "rb") as f:
                f.seek(first)
                while length > 0 and not transport.is_closing():
                    await self.writable.wait()
                    piece = f.read(min(CHUNK, length))
                    if not piece:  # the file shrank: the announced length cannot be kept
                        transport.close()
                        return
                    transport.write(piece)
                    self.stats.body_bytes += len(piece)
                    length -= len(piece)
        finally:
            self.sending = None
        if close:
            transport.close()
        elif not transport.is_closing():
            transport.resume_reading()
            self._answer_queued()

    def _listing(self, path: str, req: Request, close: bool) -> None:
        """A directory's entries, one per line, sub-directories ending in ``/``."""
        names = sorted(e.name + "/" if e.is_dir() else e.name for e in os.scandir(path))
        body = "".join(f"{n}\n" for n in names).encode()
        head = _head(b"200 OK", len(body), close, b"Content-Type: text/plain; charset=utf-8\r\n")
        if req.method == b"GET":
            self.stats.body_bytes += len(body)
        self._write(head + (body if req.method == b"GET" else b""), close=close)

    def _stats(self, req: Request, query: bytes | None, close: bool) -> None:
        """Answer the counts as JSON (not counted themselves); ``?reset=1`` then resets."""
        body = json.dumps(self.stats.as_dict()).encode()
        if parse_qs((query or b"").decode("latin-1")).get("reset", ["0"])[0] not in ("", "0"):
            self.stats.reset()
        head = _head(b"200 OK", len(body), close, b"Content-Type: application/json\r\n"
                     b"Cache-Control: no-store\r\n")
        self._write(head + (body if req.method == b"GET" else b""), close=close, count=False)

    def _path(self, url: bytes) -> str | None:
        """The file a request URL names, or None if it would lie outside the root."""
        relative = unquote(httptools.parse_url(url).path.decode("latin-1")).lstrip("/")
        path = os.path.normpath(os.path.join(self.root, relative))
        inside = path == self.root or path.startswith(self.root + os.sep)
        return path if inside else None

    def _write(self, data: bytes, *, close: bool, count: bool = True) -> None:
        assert self.transport is not None
        if count and data.startswith(b"HTTP/1.1 "):  # an answer's head: count its status
            code = data[9:12].decode("latin-1")
            self.stats.status[code] = self.stats.status.get(code, 0) + 1
        if not self.transport.is_closing():
            self.transport.write(data)
            if close:
                self.transport.close()

    def _reply(self, status: bytes, *, close: bool, extra: bytes = b"") -> None:
        """An answer without a body."""
        self._write(_head(status, 0, close, extra), close=close)


async def serve(directory: str, host: str, port: int) -> None:
    """Serve ``directory`` on ``host:port`` until cancelled.

    Parameters
    ----------
    directory : str
        Root of the served files.
    host : str
        Address to listen on, e.g. ``"127.0.0.1"``.
    port : int
        TCP port.
    """
    root = os.path.abspath(directory)
    loop = asyncio.get_running_loop()
    stats = Stats()  # one for all connections
    server = await loop.create_server(lambda: RangeProtocol(root, stats), host, port,
                                      backlog=128)
    print(f"Serving {root} at http://{host}:{port}/", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--directory", default=os.getcwd())
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # asyncio's own loop works too, at more CPU per request
        asyncio.run(serve(args.directory, args.bind, args.port))
    else:
        uvloop.run(serve(args.directory, args.bind, args.port))


if __name__ == "__main__":
    main()
