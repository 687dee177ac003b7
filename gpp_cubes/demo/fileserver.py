"""The demo world's file server: RangeHTTPServer's handler on persistent HTTP/1.1 connections.

``python -m RangeHTTPServer`` answers in HTTP/1.0, so every request of GDAL's ``/vsicurl/``
(a HEAD and two ranged GETs per opened COG) costs a new TCP connection and a new server
thread, and one log line. Object stores (Azure Blob, S3) keep connections open; so does
this server, which is what makes a batch build's reads cheap enough on a 2-core machine
that the server does not compete with the build for the CPU.

Run: ``python -m gpp_cubes.demo.fileserver PORT [--bind 127.0.0.1] [--directory DIR]``.
"""

from __future__ import annotations

import argparse
import functools
import os
from http.server import ThreadingHTTPServer
from typing import Any

from RangeHTTPServer import RangeRequestHandler


class KeepAliveRangeHandler(RangeRequestHandler):
    """Range requests (RangeHTTPServer) on HTTP/1.1 keep-alive connections, logging errors
    only (a build makes tens of thousands of requests)."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle's algorithm on a kept-alive
    # connection, the body waits for the client's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(code).isdigit() and int(code) >= 400:
            super().log_request(code, size)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--directory", default=os.getcwd())
    args = parser.parse_args(argv)
    handler: Any = functools.partial(KeepAliveRangeHandler, directory=args.directory)
    with _Server((args.bind, args.port), handler) as httpd:
        print(f"Serving {args.directory} at http://{args.bind}:{args.port}/", flush=True)
        httpd.serve_forever()


if __name__ == "__main__":
    main()
