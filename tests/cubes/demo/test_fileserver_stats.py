"""The demo file server's request and byte counts (``GET /.stats``)."""

from __future__ import annotations

import http.client
import os

import numpy as np
import pytest

from gpp_cubes.demo.fileserver import CHUNK
from gpp_cubes.demo.serve import file_server_stats, serve_files


def _get(conn: http.client.HTTPConnection, method: str, path: str, **headers: str) -> bytes:
    conn.request(method, path, headers=headers)
    r = conn.getresponse()
    return r.read()


def test_counts_what_was_sent_and_reset(tmp_path) -> None:
    small = os.urandom(5_000)
    big = os.urandom(CHUNK * 2 + 123)  # sent in pieces
    (tmp_path / "a.bin").write_bytes(small)
    (tmp_path / "b.bin").write_bytes(big)
    (tmp_path / ".stats").write_bytes(b"a file the stats path must not reach")
    with serve_files(tmp_path, probe="a.bin") as server:
        file_server_stats(server.url, reset=True)  # forget the start-up probe
        port = int(server.url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        _get(conn, "HEAD", "/a.bin")
        assert _get(conn, "GET", "/a.bin", Range="bytes=100-199") == small[100:200]
        assert _get(conn, "GET", "/b.bin") == big
        _get(conn, "GET", "/missing.bin")
        stats = file_server_stats(server.url)
        # worked out from the requests above: 100 + len(big) body bytes, HEADs send none
        assert stats["requests"] == {"HEAD": 1, "GET": 3}
        assert stats["ranged_gets"] == 1
        assert stats["body_bytes"] == 100 + len(big)
        assert stats["status"] == {"200": 2, "206": 1, "404": 1}
        assert stats["cpu_s"] >= 0
        # reading the stats is not counted; neither is the file named like the stats path
        again = file_server_stats(server.url, reset=True)
        assert {k: again[k] for k in ("requests", "body_bytes")} == {
            k: stats[k] for k in ("requests", "body_bytes")}
        assert file_server_stats(server.url)["requests"] == {}
        assert file_server_stats(server.url)["body_bytes"] == 0
        conn.close()


def test_gdal_window_reads_fetch_exactly_the_blocks_the_tiff_names(tmp_path) -> None:
    """Two-block windows of a COG: GDAL asks for exactly those blocks' bytes (per
    TileOffsets/TileByteCounts read by tifffile), merged into one request when the blocks
    are consecutive in the file (same block row), two when not."""
    import ctypes

    import rasterio
    import rasterio._env
    from affine import Affine
    from rasterio.windows import Window

    tifffile = pytest.importorskip("tifffile")

    from gpp_cubes.demo.cog import write_cog
    from gpp_cubes.stac.gdal import configure_gdal

    rng = np.random.default_rng(3)
    # 512 x 512: write_cog writes a plain tiled GeoTIFF (no block leaders/trailers, which
    # GDAL's COG driver adds and reads along)
    data = rng.integers(1, 5000, size=(512, 512)).astype(np.uint16)
    path = tmp_path / "x.tif"
    write_cog(path, data, transform=Affine(10, 0, 500000, 0, -10, 5600000),
              crs="EPSG:32632", nodata=0, blocksize=128)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert (page.tilewidth, page.tilelength) == (128, 128)
        offsets, counts = page.dataoffsets, page.databytecounts
    across = 512 // 128
    size = path.stat().st_size

    def block(r: int, c: int) -> tuple[int, int]:
        i = r * across + c
        return offsets[i], counts[i]

    env = configure_gdal()
    clear = ctypes.CDLL(rasterio._env.__file__).VSICurlClearCache
    with serve_files(tmp_path, probe="x.tif") as server:
        url = f"{server.url}/x.tif"
        cases = [  # window, blocks it covers, requests expected
            (Window(128 + 100, 256 + 10, 50, 20), [(2, 1), (2, 2)], 1),
            (Window(10, 128 - 10, 20, 20), [(0, 0), (1, 0)], 2),
        ]
        for window, blocks, n_requests in cases:
            clear()
            with rasterio.Env(**env), rasterio.open(url) as ds:
                file_server_stats(server.url, reset=True)  # the header read is done
                got = ds.read(1, window=window)
                stats = file_server_stats(server.url)
            r0, c0 = window.row_off, window.col_off
            assert np.array_equal(got, data[r0:r0 + window.height, c0:c0 + window.width])
            spans = [block(r, c) for r, c in blocks]
            assert stats["requests"] == {"GET": n_requests}
            if n_requests == 1:
                # consecutive in the file: merged into one range, which /vsicurl/ reads in
                # whole chunks of CPL_VSIL_CURL_CHUNK_SIZE (16384 bytes, GDAL's default)
                assert spans[0][0] + spans[0][1] == spans[1][0]
                first, end = spans[0][0], spans[1][0] + spans[1][1]
                chunk = 16384
                expected = min(-(-end // chunk) * chunk, size) - first // chunk * chunk
            else:  # apart: one exact ranged GET per block
                expected = sum(n for _, n in spans)
            assert stats["body_bytes"] == expected, (window, spans, stats)
