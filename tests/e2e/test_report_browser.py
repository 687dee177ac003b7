"""The HTML report renders in a real headless browser: every figure decodes, nothing external.

A tiny but real run (RNN, synthetic known-truth cubes of :mod:`gpp_models.testing`) goes
through ``train_and_evaluate -> evaluate_runs -> explain_run -> write_report``; the page is
then opened in headless Chromium (Debian package ``chromium``, installed by ``.ci/run``):

- ``--dump-dom`` of the page as written: every ``src``/``href`` is a non-empty ``data:`` URI
  (or an in-page ``#fragment``), no stylesheet, script or CSS ``url()`` points outside;
- ``--dump-dom`` of a copy with a probe script appended: after the ``load`` event the
  browser itself reports, per ``<img>``, that it decoded the image (``naturalWidth`` > 0),
  per inline ``<svg>`` that it lays out with a non-empty box, and that the page fetched no
  resource at all (Resource Timing entries);
- ``--screenshot``: the rendered page is not blank (pixel variance, ink fraction).

A negative control feeds the probe a page with one corrupted figure, so the checks can fail.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser"))
                 if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not found (Debian: apt-get install chromium; .ci/run does it)")

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars")

#: Appended to a copy of the report: after `load`, write what the browser saw into the DOM.
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images].map(i => ({
    alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
    shown: i.getBoundingClientRect().width}));
  const svgs = [...document.querySelectorAll("body svg")].map(s => {
    const b = s.getBoundingClientRect(); return {w: b.width, h: b.height}; });
  const fetched = performance.getEntriesByType("resource").map(e => e.name);
  const out = document.createElement("pre");
  out.id = "gpp-probe";
  out.textContent = JSON.stringify({imgs, svgs, fetched});
  document.body.appendChild(out);
});
</script>"""


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"  # fresh profile per call
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=True)


def dump_dom(page: Path, tmp: Path) -> str:
    """The DOM after load, as serialised by the browser."""
    return _chromium(tmp, "--virtual-time-budget=10000", "--dump-dom", page.as_uri()).stdout


def probe(page: Path, tmp: Path) -> dict:
    """Load a copy of ``page`` with :data:`PROBE` appended; return what the browser reported."""
    copy = tmp / f"probe-{page.name}"
    text = page.read_text(encoding="utf-8")
    copy.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = dump_dom(copy, tmp)
    m = re.search(r'<pre id="gpp-probe">(.*?)</pre>', dom, re.S)
    assert m, f"the probe did not run; DOM tail: {dom[-500:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


class _Refs(HTMLParser):
    """Every URL-valued attribute, CSS ``url()``, stylesheet link and script source."""

    URL_ATTRS = ("src", "href", "srcset", "poster", "data", "action", "background")

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in self.URL_ATTRS and value is not None:
                self.refs.append((tag, name, value))
            if name == "style" and value:
                self.refs += [(tag, "style url()", u) for u in _css_urls(value)]
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.refs += [("style", "url()", u) for u in _css_urls(data)]
            self.refs += [("style", "@import", u) for u in re.findall(r"@import\s+['\"]([^'\"]+)",
                                                                      data)]


def _css_urls(css: str) -> list[str]:
    return [u.strip("'\" ") for u in re.findall(r"url\(([^)]*)\)", css)]


def external_references(dom: str) -> list[str]:
    """References that need anything beyond the page itself (empty = self-contained)."""
    parser = _Refs()
    parser.feed(dom)
    bad = []
    for tag, attr, value in parser.refs:
        if value.startswith("#"):
            continue
        if value.startswith("data:"):
            payload = value.split(",", 1)[1] if "," in value else ""
            if not payload.strip():
                bad.append(f"<{tag} {attr}> empty data URI")
            continue
        bad.append(f"<{tag} {attr}={value[:80]!r}>")
    return bad


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``report.html`` of a real two-site RNN run on synthetic cubes (a few seconds)."""
    from gpp_models.config import ModelConfig, TrainConfig
    from gpp_models.evaluate import evaluate_runs, model_label
    from gpp_models.explain import explain_run
    from gpp_models.report import write_report
    from gpp_models.testing import DEFAULT_SITES, write_synthetic_world
    from gpp_models.train import train_and_evaluate

    tmp = tmp_path_factory.mktemp("report")
    features = write_synthetic_world(tmp / "cubes", DEFAULT_SITES[:2], seed=3)
    cfg = TrainConfig(model=ModelConfig(cell="rnn", layers=1, units=4), epochs=2, window=30,
                      ensemble=2, batch_size=256)
    result = train_and_evaluate(cfg, tmp / "run", features)
    out = tmp / "results"
    evaluate_runs([result], out)
    explain_run(result, n_repeats=1).to_csv(out / f"fi_{model_label('rnn')}.csv", index=False)
    return write_report(out)


def test_page_is_self_contained(report: Path, tmp_path: Path) -> None:
    dom = dump_dom(report, tmp_path)
    assert "<h1>" in dom and "</html>" in dom
    assert external_references(dom) == []
    # The figures are there, with payloads that are SVG documents.
    uris = re.findall(r'<img[^>]*src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', dom)
    assert len(uris) == report.read_text().count("<img ") >= 3
    for payload in uris:
        svg = base64.b64decode(payload, validate=True)
        assert b"<svg" in svg[:2000] and len(svg) > 5000


def test_every_figure_renders(report: Path, tmp_path: Path) -> None:
    seen = probe(report, tmp_path)
    assert len(seen["imgs"]) == report.read_text().count("<img ") >= 3
    for img in seen["imgs"]:
        assert img["complete"] and img["w"] > 100 and img["h"] > 100, img
        assert img["shown"] > 100, img  # laid out at a visible size, not collapsed
    for svg in seen["svgs"]:
        assert svg["w"] > 0 and svg["h"] > 0, svg
    assert seen["fetched"] == [], "the page fetched resources"


def test_screenshot_is_not_blank(report: Path, tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    shot = tmp_path / "report.png"
    _chromium(tmp_path, "--window-size=1280,3000", f"--screenshot={shot}", report.as_uri())
    rgb = mpimg.imread(shot)[..., :3].astype(np.float64)  # PNG -> floats in [0, 1]
    assert rgb.shape[:2] == (3000, 1280)
    ink = (rgb.min(axis=-1) < 0.9).mean()  # fraction of visibly non-white pixels
    assert rgb.std() > 0.05 and ink > 0.02, (rgb.std(), ink)
    # Colour, not only black text: the figures' coloured lines and bars are painted.
    chroma = rgb.max(axis=-1) - rgb.min(axis=-1)
    assert (chroma > 0.3).mean() > 1e-3


def test_probe_catches_a_broken_figure(report: Path, tmp_path: Path) -> None:
    """Negative control: corrupt one figure and reference an external file."""
    text = report.read_text()
    first = re.search(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', text)
    assert first
    broken = base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg'><g>").decode()
    page = tmp_path / "broken.html"
    page.write_text(text.replace(first.group(1), broken, 1))
    seen = probe(page, tmp_path)
    widths = [img["w"] for img in seen["imgs"]]
    assert widths[0] == 0 and all(w > 0 for w in widths[1:]), widths
    assert external_references(
        '<link rel="stylesheet" href="https://cdn.example.org/x.css">'
        '<img src="data:image/png;base64,"><div style="background:url(http://x/y.png)">'
        '<style>@import "https://fonts.example/a.css";</style>') == [
        "<link href='https://cdn.example.org/x.css'>", "<img src> empty data URI",
        "<div style url()='http://x/y.png'>", "<style @import='https://fonts.example/a.css'>"]
