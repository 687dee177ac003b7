"""Providers: endpoints, signing, HTTP retries, GDAL settings."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpp_cubes.errors import ConfigError
from gpp_cubes.stac.gdal import configure_gdal
from gpp_cubes.stac.providers import (
    resolve_provider,
    stac_io_with_retries,
)


# ------------------------------------------------------------------------- providers
def test_resolve_provider_names_and_errors():
    pc = resolve_provider()
    assert pc.name == "planetary-computer" and pc.url.startswith("https://planetarycomputer")
    assert pc.sign is not None
    es = resolve_provider("earth-search")
    assert es.asset_keys["red"] == "B04" and es.asset_keys["scl"] == "SCL"
    local = resolve_provider("custom", "http://127.0.0.1:1234")
    assert local.url == "http://127.0.0.1:1234" and local.sign is None
    with pytest.raises(ConfigError, match="stac_url"):
        resolve_provider(None)
    with pytest.raises(ConfigError, match="unknown STAC provider 'nasa'"):
        resolve_provider("nasa")


def test_earth_search_assets_renamed(mini_world):
    item = mini_world.items[0].clone()
    item.assets["red"] = item.assets.pop("B04")
    item.assets["scl"] = item.assets.pop("SCL")
    out = resolve_provider("earth-search").canonical_item(item)
    assert "B04" in out.assets and "SCL" in out.assets and "red" not in out.assets
    assert "red" in item.assets  # the input item is left alone


def test_pc_signing_leaves_local_hrefs(mini_world):
    item = mini_world.items[0]
    signed = resolve_provider().canonical_item(item)
    assert signed.assets["B04"].href == item.assets["B04"].href


class _Flaky(BaseHTTPRequestHandler):
    """Answers 429 (Retry-After: 0) then 503 then 200 to POSTs."""

    calls: list[str] = []  # noqa: RUF012

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.calls.append("POST")
        n = len(self.calls)
        if n == 1:
            self.send_response(429)
            self.send_header("Retry-After", "0")
        elif n == 2:
            self.send_response(503)
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        body = b'{"ok": true}' if n >= 3 else b"busy"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_server():
    _Flaky.calls = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/search"
    srv.shutdown()


def test_stac_io_retries_post_on_429_and_503(flaky_server):
    io = stac_io_with_retries(backoff_factor=0.0)
    text = io.request(flaky_server, method="POST", parameters={"limit": 1})
    assert json.loads(text) == {"ok": True}
    assert _Flaky.calls == ["POST"] * 3


def test_default_pystac_client_io_does_not_retry_post(flaky_server):
    # The reference behaviour the retries fix: pystac-client's own StacApiIO gives up.
    from pystac_client.exceptions import APIError
    from pystac_client.stac_api_io import StacApiIO

    with pytest.raises(APIError):
        StacApiIO().request(flaky_server, method="POST", parameters={"limit": 1})
    assert _Flaky.calls == ["POST"]


def test_configure_gdal_sets_env_and_keeps_user_values(monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "9")
    monkeypatch.delenv("GDAL_HTTP_RETRY_CODES", raising=False)
    s = configure_gdal()
    assert s["GDAL_HTTP_MAX_RETRY"] == "9"
    assert s["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert os.environ["GDAL_HTTP_RETRY_CODES"] == s["GDAL_HTTP_RETRY_CODES"]
    assert "429" in s["GDAL_HTTP_RETRY_CODES"]
    assert configure_gdal({"GDAL_HTTP_MAX_RETRY": "2"})["GDAL_HTTP_MAX_RETRY"] == "2"
