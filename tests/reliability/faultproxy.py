"""A fault-injecting HTTP proxy for the reliability tests.

Run as a subprocess in front of the demo world's STAC API or file server::

    python faultproxy.py --upstream http://127.0.0.1:8001 --port 9001 --fault 503 --rate 0.3

Faults are deterministic: a request is faulty when a hash of (method, path, body, Range) falls
under ``rate``; a recoverable fault hits only the first ``--times`` attempts of that request,
so a client that retries sees exactly the upstream answer afterwards. ``--fault`` may list
several faults (``429,503,drop``): each faulty request gets one of them, chosen by a second
hash of its key, so one run mixes them reproducibly. ``--fault none`` (or ``--rate 0``) makes
a plain forwarding proxy, e.g. for ``--rewrite`` only. In JSON bodies the upstream URL is
replaced by the proxy's own (a STAC API's links to itself lead back through the proxy), and
``--rewrite FROM=TO`` rewrites more text (e.g. item hrefs pointing at the file server, so they
go through a second proxy).
Every injected fault is logged to ``--log`` (one JSON line each: fault, key, time) so tests can
assert that faults really happened.

What the faults look like to a client:

- ``429`` (with ``Retry-After: 1``), ``404``, ``500``/``502``/``503``/``504``: that status,
  a short text body;
- ``drop``: the connection is closed without any answer ("empty reply", "remote end closed");
- ``timeout``: no answer for ``--timeout-s`` seconds, then the connection is closed (a hung
  server; the client's own read timeout fires first if it is shorter);
- ``reset-body``: the upstream status and headers (full ``Content-Length``), then half the body,
  then the connection is closed (a connection dropped mid-page or mid-tile);
- ``truncate`` (permanent): a complete-looking answer whose body is cut to a third, with a
  matching ``Content-Length`` (a truncated file on the server), on every attempt.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

RECOVERABLE = {"429", "500", "502", "503", "504", "drop", "timeout", "reset-body"}
PERMANENT = {"truncate", "404"}
NONE = "none"
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def _faults(value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in names if v not in RECOVERABLE | PERMANENT | {NONE}]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"unknown fault(s) {bad or value!r}")
    return tuple(v for v in names if v != NONE)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault", required=True, type=_faults,
                        help="one fault or a comma-separated list: "
                        + ", ".join(sorted(RECOVERABLE | PERMANENT | {NONE})))
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--times", type=int, default=1, help="faulty attempts per request")
    parser.add_argument("--match", default="", help="only requests whose path contains this")
    parser.add_argument("--timeout-s", type=float, default=5.0)
    parser.add_argument("--rewrite", action="append", default=[])
    parser.add_argument("--log", default=None)
    return parser.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
_attempts: dict[str, int] = {}
_lock = threading.Lock()
_upstream_slots = threading.BoundedSemaphore(3)


def _is_faulty(key: str) -> bool:
    digest = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return bool(ARGS.fault) and digest / 0xFFFFFFFF < ARGS.rate


def _choose(key: str) -> str:
    """The fault of a faulty request: deterministic, independent of the faulty/not draw."""
    digest = int(hashlib.sha256(b"which:" + key.encode()).hexdigest()[:8], 16)
    return ARGS.fault[digest % len(ARGS.fault)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args: object) -> None:  # keep test output clean
        pass

    def _forward(self, body: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
        upstream = urlsplit(ARGS.upstream)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        # Few upstream connections at a time: the demo file server is single-threaded with a
        # listen backlog of 5; a burst of parallel GDAL reads would overflow it (SYN retries,
        # stalls of seconds) and the proxy would inject faults of its own.
        with _upstream_slots:
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
        out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_HEADERS]
        if self.command == "HEAD":  # no body, but the size GDAL asks for must pass through
            out_headers.append(("Content-Length", resp.getheader("Content-Length") or "0"))
        if "json" in (resp.getheader("content-type") or ""):
            text = data.decode()
            # As any reverse proxy: the upstream's links to itself (a STAC API's "self",
            # "search", "next" links) point at the proxy, so every request comes through it.
            text = text.replace(ARGS.upstream.rstrip("/"), f"http://127.0.0.1:{ARGS.port}")
            for rule in ARGS.rewrite:
                old, new = rule.split("=", 1)
                text = text.replace(old, new)
            data = text.encode()
        return resp.status, out_headers, data

    def _log(self, fault: str, key: str) -> None:
        if ARGS.log:
            with _lock, open(ARGS.log, "a") as fh:
                fh.write(json.dumps({"fault": fault, "key": key, "t": time.time()}) + "\n")

    def _send(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if self.command != "HEAD" or not any(k == "Content-Length" for k, _ in headers):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        key = f"{self.command} {self.path} {self.headers.get('Range', '')} {body or b''!r}"
        inject = ARGS.match in self.path and _is_faulty(key)
        fault = _choose(key) if inject else NONE
        if inject and fault in RECOVERABLE:
            with _lock:
                _attempts[key] = _attempts.get(key, 0) + 1
                inject = _attempts[key] <= ARGS.times
        if not inject:
            try:
                self._send(*self._forward(body))
            except OSError as err:  # upstream down: say so, and log it (not an injected fault)
                self._log(f"upstream-error {type(err).__name__}", key)
                self._send(502, [("Content-Type", "text/plain")], b"upstream unreachable")
            return
        self._log(fault, key)
        if fault in {"429", "500", "502", "503", "504", "404"}:
            headers = [("Retry-After", "1")] if fault == "429" else []
            self._send(int(fault), [*headers, ("Content-Type", "text/plain")], b"injected")
        elif fault == "drop":
            # close the connection without any answer
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif fault == "timeout":
            time.sleep(ARGS.timeout_s)
            self.close_connection = True
        elif fault == "reset-body":
            status, headers, data = self._forward(body)
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif fault == "truncate":
            status, headers, data = self._forward(body)
            self._send(status, headers, data[: max(1, len(data) // 3)])

    def _handle_quietly(self) -> None:
        try:
            self._handle()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: its business
            self.close_connection = True

    do_GET = do_POST = do_HEAD = _handle_quietly  # noqa: N815


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    server.daemon_threads = True
    server.serve_forever()
