"""The demo file server: HTTP Range requests on persistent HTTP/1.1 connections."""

from __future__ import annotations

import http.client
import os

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
        conn.request("GET", "/a.tif")  # after an error the server closes; the client reconnects
        r = conn.getresponse()
        assert r.status == 200 and r.read() == data
        conn.close()
