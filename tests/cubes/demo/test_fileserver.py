"""The demo file server: HTTP Range requests on persistent HTTP/1.1 connections."""

from __future__ import annotations

import http.client
import os
import socket
import urllib.request

import pytest

from gpp_cubes.demo.fileserver import CHUNK, RangeError, parse_range
from gpp_cubes.demo.serve import serve_files


def test_ranges_heads_and_errors_on_one_kept_alive_connection(tmp_path) -> None:
    data = os.urandom(50_000)
    (tmp_path / "a.tif").write_bytes(data)
    with serve_files(tmp_path, probe="a.tif") as server:
        port = int(server.url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("HEAD", "/a.tif")
        r = conn.getresponse()
        r.read()
        sock = conn.sock
        assert r.status == 200 and int(r.headers["Content-Length"]) == len(data)
        assert r.headers["Accept-Ranges"] == "bytes"
        for first, last in [(0, 16_383), (16_384, 16_999), (49_990, 49_999)]:
            conn.request("GET", "/a.tif", headers={"Range": f"bytes={first}-{last}"})
            r = conn.getresponse()
            assert r.status == 206
            assert r.headers["Content-Range"] == f"bytes {first}-{last}/{len(data)}"
            assert r.read() == data[first:last + 1]
        conn.request("GET", "/a.tif", headers={"Range": "bytes=49000-"})
        r = conn.getresponse()
        assert r.status == 206 and r.read() == data[49_000:]
        # Every request so far went over the first connection: the server kept it open.
        assert conn.sock is sock
        conn.request("GET", "/missing.tif")
        r = conn.getresponse()
        r.read()
        assert r.status == 404
        conn.request("GET", "/a.tif")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == data
        conn.close()


def _raw_exchange(port: int, payload: bytes) -> bytes:
    """Send raw bytes (e.g. pipelined requests) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)


def _split_responses(raw: bytes, heads: tuple[int, ...] = ()
                     ) -> list[tuple[bytes, dict[str, str], bytes]]:
    """(status line, headers, body) of each response in a raw byte stream, in order; the
    answers at positions ``heads`` are to HEAD requests (a length, but no body)."""
    out: list[tuple[bytes, dict[str, str], bytes]] = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
        n = 0 if len(out) in heads else int(headers["content-length"])
        out.append((status.encode(), headers, raw[:n]))
        raw = raw[n:]
    return out


@pytest.mark.parametrize(("header", "expected"), [
    # the examples of RFC 9110, section 14.1.2, on a 10000-byte representation
    ("bytes=0-499", (0, 499)),           # the first 500 bytes
    ("bytes=500-999", (500, 999)),       # the second 500 bytes
    ("bytes=-500", (9500, 9999)),        # the final 500 bytes
    ("bytes=9500-", (9500, 9999)),       # the final 500 bytes, open-ended
    ("bytes=0-0", (0, 0)),               # the first byte only
    ("bytes=9990-20000", (9990, 9999)),  # a last position beyond the end is clipped
    ("bytes=-20000", (0, 9999)),         # a suffix longer than the file: the whole file
])
def test_parse_range_follows_rfc_9110_examples(header: str, expected: tuple[int, int]) -> None:
    assert parse_range(header, 10_000) == expected


@pytest.mark.parametrize("header", [
    "bytes=10000-",   # starts at the end: unsatisfiable
    "bytes=500-400",  # last before first
    "bytes=0-1,5-6",  # two ranges (GDAL is configured never to ask for several)
    "items=0-1",      # another unit
    "bytes=abc-",
    "bytes=-0",       # an empty suffix
    "bytes=5",
])
def test_parse_range_rejects_what_it_cannot_satisfy(header: str) -> None:
    with pytest.raises(RangeError):
        parse_range(header, 10_000)


def test_pipelined_requests_are_answered_in_order_around_a_large_body(tmp_path) -> None:
    """A body larger than one write goes out in pieces; requests pipelined behind it wait."""
    big = os.urandom(2 * CHUNK + 12_345)
    small = os.urandom(1000)
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.tif").write_bytes(big)
    (root / "small.tif").write_bytes(small)
    (tmp_path / "outside.txt").write_text("not served")
    with serve_files(root, probe="small.tif") as server:
        port = int(server.url.rsplit(":", 1)[1])
        raw = _raw_exchange(port, (
            b"GET /big.tif HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /small.tif HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n"
            b"HEAD /big.tif HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /small.tif HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-\r\n\r\n"
            b"GET /../outside.txt HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /%2e%2e/outside.txt HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /small.tif HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"))
    (s1, h1, b1), (s2, h2, b2), (s3, h3, b3), (s4, h4, _), (s5, _, _), (s6, _, _), (s7, h7, _) = (
        _split_responses(raw, heads=(2,)))
    assert s1 == b"HTTP/1.1 200 OK" and b1 == big and h1["accept-ranges"] == "bytes"
    assert s2 == b"HTTP/1.1 206 Partial Content" and b2 == small[10:20]
    assert h2["content-range"] == "bytes 10-19/1000"
    # HEAD: the headers a GET would get, no body
    assert s3 == b"HTTP/1.1 200 OK" and int(h3["content-length"]) == len(big) and b3 == b""
    assert "last-modified" in h3
    assert s4 == b"HTTP/1.1 416 Range Not Satisfiable" and h4["content-range"] == "bytes */1000"
    # nothing outside the served directory, spelled plainly or percent-encoded
    assert s5 == s6 == b"HTTP/1.1 404 Not Found"
    assert s7 == b"HTTP/1.1 405 Method Not Allowed" and h7["connection"] == "close"


def test_http_1_0_clients_get_one_answer_and_a_closed_connection(tmp_path) -> None:
    (tmp_path / "a.json").write_text('{"a": 1}')
    with serve_files(tmp_path, probe="a.json") as server:
        port = int(server.url.rsplit(":", 1)[1])
        raw = _raw_exchange(port, b"GET /a.json HTTP/1.0\r\n\r\n")  # returns once closed
    [(status, headers, body)] = _split_responses(raw)
    assert status == b"HTTP/1.1 200 OK" and body == b'{"a": 1}'
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"


def test_a_malformed_request_gets_400_and_a_closed_connection(tmp_path) -> None:
    (tmp_path / "a.tif").write_bytes(b"x")
    with serve_files(tmp_path, probe="a.tif") as server:
        port = int(server.url.rsplit(":", 1)[1])
        raw = _raw_exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
    [(status, headers, _)] = _split_responses(raw)
    assert status == b"HTTP/1.1 400 Bad Request" and headers["connection"] == "close"


def test_a_directory_answers_with_its_listing(tmp_path) -> None:
    (tmp_path / "b.tif").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    with serve_files(tmp_path) as server:  # the probe asks for the root
        with urllib.request.urlopen(server.url + "/", timeout=10) as r:
            assert r.status == 200 and r.read().decode() == "b.tif\nsub/\n"
        with urllib.request.urlopen(server.url + "/sub", timeout=10) as r:
            assert r.read() == b""
