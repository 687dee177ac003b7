"""A copy of a demo world whose Sentinel-2, Sentinel-1 RTC and MODIS LST COGs have the real
archive's layout.

The demo writes each asset as a small COG of the site's window (~300 x 300 pixels at 10 m);
Planetary Computer's ``sentinel-2-l2a`` COGs are whole MGRS tiles (10980 x 10980 pixels at
10 m), internally tiled, with overviews. A read of a site's 2.2 km window therefore fetches
whole 1024 x 1024 blocks (about a megabyte each) after a header, not a 300 x 300 file.
:func:`real_layout_world` writes a copy of a generated world in which every S2 asset is a
full-tile COG with the real raster size, block size, compression, predictor and overview
levels (:data:`S2_LAYOUTS`), the demo's pixels placed at their place in the tile (the demo's
windows already lie on their real tile's 60 m lattice, ``MTD_TL.xml`` already states the
tile's corner and sizes), and the items' ``proj:shape``/``proj:transform``/``proj:bbox``,
bbox and geometry those of the whole tile (clipped at the swath edge for a partial scene).

Disk cost stays small: a file holds only the blocks a read of the site can touch, each at
the byte offset it would have in the full file (the rest of the file is a hole of a sparse
file, and those blocks are marked empty: offset 0, byte count 0, which GDAL reads as
nodata). The written blocks hold the demo's pixels inside a synthetic texture whose
DEFLATE-compressed size is that of real blocks (:func:`filler`), so the bytes a read fetches
are realistic. Overview blocks over the site are that texture alone (nothing reads the
demo's data from overviews: the compact files have none).

Layout facts and where they come from (see also ``benchmarks/README.md``):

- raster sizes and geotransforms: ``proj:shape``/``proj:transform`` of a real Planetary
  Computer item (/work/shared/reference/formats/pc-sentinel-2-l2a-item-2019.json): 10980,
  5490 and 1830 pixels a side at 10, 20 and 60 m, origin at the tile's corner;
- block size 1024 x 1024: ``gdalinfo`` of Sentinel-2 rasters reports ``Block=1024x1024``
  (discourse.pangeo.io/t/cloud-optimized-access-to-sentinel-2-jpeg2000/5072, about ESA's
  JPEG 2000 files, which Planetary Computer converted); NOT confirmed for the COGs;
- DEFLATE, predictor 2 (horizontal differencing), level 6: assumed (GDAL's default level;
  the converter's options were not found);
- overview levels: GDAL's COG driver default, halving until the smallest level is below
  the block size (gdal.org/drivers/raster/cog.html): 10 m 4 levels, 20 m 3, 60 m 1; assumed.

Sentinel-1 RTC (``vv``, ``vh``; :data:`S1_LAYOUT`). Real items describe one GRD slice on its
own item-level UTM grid; each demo scene gets a grid of the reference item's size, the
site's window at a position drawn from the item id (:func:`s1_grid_origin`):

- grid 12949 rows x 27526 columns at 10 m, float32, nodata -32768, ``file:size`` 840 MB
  per polarisation: the real item pc-sentinel-1-rtc-item-2024.json (``proj:shape``,
  9-element ``proj:transform``, ``raster:bands``); its footprint covers 54 % of the grid;
- 512 x 512 blocks, DEFLATE, floating-point predictor (3): NOT found for Planetary
  Computer's files; assumed from the Sentinel-1 RTC COGs on AWS ("Float32 ... Deflate
  compression with predictor=3 ... 512x512 pixels per block",
  sentinel-s1-rtc-indigo-docs.s3-us-west-2.amazonaws.com/data_format.html);
- compressed block size: 840 MB over 739 blocks' worth of swath with overviews a third on
  top gives about 0.85 MB per 512 x 512 block (:data:`S1_TARGET_BLOCK_BYTES`, 81 % of the
  raw 1 MiB: full-precision speckle compresses little); the ``gamma0`` texture gives
  0.87 MB; overviews GDAL's default (6 levels).

MODIS LST (``LST_Day_1km``/``LST_Night_1km`` uint16, ``QC_Day``/``QC_Night`` uint8;
:data:`MODIS_LAYOUTS`): whole 1200 x 1200 sinusoidal tiles at 926.6 m (``proj:shape`` of
the stactools reference item), converted by stactools-modis with ``gdal_translate -of COG
-co compress=deflate`` (stactools ``DEFAULT_COGIFY_ARGS``; planetary-computer-tasks
datasets/modis/modis.py), so GDAL's COG defaults otherwise: 512 x 512 blocks, no
predictor, overviews 2 and 4. The compressed size of the LST texture (0.25 MB a block,
a third cloud fill) is modelled, not measured.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from gpp_cubes.atomic import atomic_directory
from gpp_cubes.errors import ConfigError

from .cog import clipped_footprint_wgs84, footprint_wgs84
from .world import MARKER, World, _read_truth


@dataclass(frozen=True)
class CogLayout:
    """The internal layout of a COG.

    Attributes
    ----------
    width, height : int
        Raster size [pixels].
    block : int
        Square block (TIFF tile) size [pixels].
    dtype : str
        Numpy dtype name of the samples (``"uint16"``, ``"uint8"``, ``"float32"``).
    predictor : int
        TIFF predictor: 1 none, 2 horizontal differencing.
    overviews : tuple of int
        Decimation factors of the overview levels (e.g. ``(2, 4, 8, 16)``).
    zlevel : int
        DEFLATE level.
    """

    width: int
    height: int
    block: int
    dtype: str
    predictor: int = 2
    overviews: tuple[int, ...] = ()
    zlevel: int = 6

    def level_size(self, level: int) -> tuple[int, int]:
        """(width, height) [pixels] of a level (0 full resolution, k the k-th overview)."""
        if level == 0:
            return self.width, self.height
        f = self.overviews[level - 1]
        return math.ceil(self.width / f), math.ceil(self.height / f)

    def blocks_across(self, level: int) -> tuple[int, int]:
        """(columns, rows) of blocks of a level."""
        w, h = self.level_size(level)
        return math.ceil(w / self.block), math.ceil(h / self.block)


#: Sentinel-2 L2A tile size at 10 m [pixels] (proj:shape of Planetary Computer items)
S2_TILE_PX_10M = 10980
#: block size of the real S2 COGs [pixels] (Block=1024x1024: see the module docstring)
S2_BLOCK = 1024
#: resolution [m] -> layout of Planetary Computer's S2 band COGs (sizes from proj:shape;
#: block, DEFLATE + predictor 2 and the overview levels assumed, see the module docstring)
S2_LAYOUTS: dict[int, CogLayout] = {
    10: CogLayout(10980, 10980, S2_BLOCK, "uint16", 2, (2, 4, 8, 16)),
    20: CogLayout(5490, 5490, S2_BLOCK, "uint16", 2, (2, 4, 8)),
    60: CogLayout(1830, 1830, S2_BLOCK, "uint16", 2, (2,)),
}
#: the scene classification (SCL, uint8, 20 m), same layout assumptions
S2_SCL_LAYOUT = CogLayout(5490, 5490, S2_BLOCK, "uint8", 2, (2, 4, 8))
#: aimed-at DEFLATE size of a full 1024 x 1024 uint16 reflectance block [bytes]: "roughly a
#: megabyte" (issue 18); the texture's noise is set to give about this (measured by
#: :func:`filler_sizes`)
TARGET_BLOCK_BYTES = 1_000_000


def auto_overviews(width: int, height: int, block: int) -> tuple[int, ...]:
    """Overview factors GDAL's COG driver makes by default (``OVERVIEWS=AUTO``): halving
    until the larger side of the smallest level is below the block size."""
    out: list[int] = []
    f = 1
    while math.ceil(max(width, height) / f) > block:
        f *= 2
        out.append(f)
    return tuple(out)


#: (rows, columns) of a Sentinel-1 RTC item's grid [pixels at 10 m]: ``proj:shape`` of a
#: real Planetary Computer item (pc-sentinel-1-rtc-item-2024.json, one GRD slice); every
#: demo scene gets a grid of this size, placed so the site falls somewhere inside it
S1_SHAPE = (12949, 27526)
#: S1 RTC vv/vh COGs: float32, 512-pixel blocks, DEFLATE with the floating-point predictor
#: (assumed: the layout of the AWS Sentinel-1 RTC COGs, see the module docstring)
S1_LAYOUT = CogLayout(S1_SHAPE[1], S1_SHAPE[0], 512, "float32", 3,
                      auto_overviews(S1_SHAPE[1], S1_SHAPE[0], 512))
#: compressed size of a full valid S1 block implied by the reference item's ``file:size``
#: (840 MB for 739 blocks' worth of swath, overviews a third on top) [bytes]
S1_TARGET_BLOCK_BYTES = 852_000
#: fraction of the reference item's grid inside its swath footprint (the rest is nodata,
#: which compresses to almost nothing): sets the S1 files' size to about the real 840 MB
S1_SWATH_FRACTION = 0.54
#: MODIS sinusoidal tile side [pixels] (``proj:shape`` of modis-11A1-061 items)
MODIS_TILE_PX = 1200
#: MOD11A1/MYD11A1 COGs: stactools-modis' ``gdal_translate -of COG -co compress=deflate``,
#: i.e. GDAL's COG defaults otherwise: 512-pixel blocks, no predictor, AUTO overviews
MODIS_LAYOUTS: dict[str, CogLayout] = {
    kind: CogLayout(MODIS_TILE_PX, MODIS_TILE_PX, 512, dtype, 1,
                    auto_overviews(MODIS_TILE_PX, MODIS_TILE_PX, 512))
    for kind, dtype in (("lst", "uint16"), ("qc", "uint8"))}


# --------------------------------------------------------------------------------------
# the texture around the demo's pixels
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def filler(block: int, dtype: str, kind: str) -> np.ndarray:
    """A deterministic (block, block) texture with the entropy of real imagery.

    ``kind``:

    - ``"reflectance"``: DN of a smooth landscape (1000-3000) plus pixel noise of 6 DN
      (sets the compressed size, see :data:`TARGET_BLOCK_BYTES`);
    - ``"scl"``: patches of SCL classes (vegetation, not vegetated, clouds, shadow) with
      single-pixel speckle;
    - ``"gamma0"``: Sentinel-1 RTC gamma0 [linear power]: a smooth landscape (-15 to -5 dB)
      times speckle of 4.4 looks (``sar:looks_equivalent_number``), full float32 precision
      as the RTC processor writes it (see :data:`S1_TARGET_BLOCK_BYTES`);
    - ``"lst"``: MODIS LST DN (0.02 K): a smooth field around 280 K with 0.3 K noise and
      cloud holes (fill 0) over about a third of the area;
    - ``"qc"``: MODIS LST QC bytes: good (0), cloud (2) and other-quality (0b01000001)
      patches with speckle.
    """
    from scipy import ndimage

    rng = np.random.default_rng(zlib.crc32(f"{block}-{dtype}-{kind}".encode()))
    field = ndimage.gaussian_filter(rng.normal(size=(block, block)), 12.0, mode="wrap")
    field /= field.std()
    if kind in ("scl", "qc"):
        classes = (np.array([3, 4, 4, 4, 5, 5, 8, 9], np.uint8) if kind == "scl" else
                   np.array([0, 0, 0, 65, 65, 2, 2, 2], np.uint8))
        idx = np.clip(((field + 2.5) / 5 * len(classes)).astype(int), 0, len(classes) - 1)
        out = classes[idx]
        speckle = rng.uniform(size=out.shape) < 0.02
        out[speckle] = rng.choice(classes, size=int(speckle.sum()))
        return out.astype(dtype)
    if kind == "gamma0":
        db = -10.0 + 2.5 * field
        looks = 4.4
        speckle = rng.gamma(looks, 1.0 / looks, size=(block, block))
        return (10 ** (db / 10) * speckle).astype(dtype)
    if kind == "lst":
        dn = 14000 + 250 * field + rng.normal(0.0, 15.0, (block, block))
        clouds = ndimage.gaussian_filter(rng.normal(size=(block, block)), 20.0, mode="wrap")
        dn[clouds > np.quantile(clouds, 0.67)] = 0
        return np.clip(np.rint(dn), 0, 65535).astype(dtype)
    dn = 2000 + 500 * field + rng.normal(0.0, 6.0, (block, block))
    return np.clip(np.rint(dn), 1, 10000).astype(dtype)


def _predicted(a: np.ndarray, layout: CogLayout) -> bytes:
    """Rows of a block as the little-endian bytes a TIFF predictor makes of them.

    Predictor 1: the samples; 2: horizontal differencing of the samples (wrapping
    around); 3: floating point (libtiff's ``fpDiff``): each row's bytes reordered into
    byte planes, most significant first, then differenced byte by byte along the row.
    """
    dt = np.dtype(layout.dtype).newbyteorder("<")
    a = np.ascontiguousarray(a).astype(dt, copy=False)
    if layout.predictor == 1:
        return a.tobytes()
    if layout.predictor == 2:
        d = a.copy()
        d[:, 1:] = a[:, 1:] - a[:, :-1]
        return d.tobytes()
    if layout.predictor == 3:
        rows, cols = a.shape
        planes = a.view(np.uint8).reshape(rows, cols, dt.itemsize)[:, :, ::-1]
        b = np.ascontiguousarray(planes.transpose(0, 2, 1)).reshape(rows, cols * dt.itemsize)
        d = b.copy()
        d[:, 1:] = b[:, 1:] - b[:, :-1]
        return d.tobytes()
    raise ConfigError(f"TIFF predictor {layout.predictor} is not one of 1, 2, 3")


def encode_block(a: np.ndarray, layout: CogLayout) -> bytes:
    """A (block, block) array as the bytes of a TIFF tile (predictor, then DEFLATE)."""
    return zlib.compress(_predicted(a, layout), layout.zlevel)


@lru_cache(maxsize=16)
def _filler_block(layout: CogLayout, kind: str) -> bytes:
    return encode_block(filler(layout.block, layout.dtype, kind), layout)


def _raw_deflate(data: bytes, level: int, final: bool) -> bytes:
    """A raw DEFLATE piece that ends on a byte boundary with the dictionary reset
    (Z_FULL_FLUSH), so that pieces compressed apart concatenate into one valid stream."""
    co = zlib.compressobj(level, zlib.DEFLATED, -15)
    return co.compress(data) + co.flush(zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH)


@lru_cache(maxsize=64)
def _filler_rows(layout: CogLayout, kind: str, first: int, last: int, final: bool
                 ) -> tuple[bytes, bytes]:
    """Raw DEFLATE piece and predicted bytes of rows [first, last) of the texture."""
    raw = _predicted(filler(layout.block, layout.dtype, kind)[first:last], layout)
    return _raw_deflate(raw, layout.zlevel, final), raw


def encode_block_with_texture(a: np.ndarray, layout: CogLayout, kind: str, first: int,
                              last: int) -> bytes:
    """:func:`encode_block` of a block that is the texture outside rows [first, last).

    Only those rows are compressed anew; the texture's rows above and below are pieces
    compressed once (cached) and joined with them, as pigz joins pieces: the same bytes
    a reader decodes, in a quarter of the time for a window a quarter of a block high.
    """
    b = layout.block
    pieces, raws = [], []
    if first > 0:
        piece, raw = _filler_rows(layout, kind, 0, first, False)
        pieces.append(piece)
        raws.append(raw)
    raw = _predicted(a[first:last], layout)
    pieces.append(_raw_deflate(raw, layout.zlevel, last == b))
    raws.append(raw)
    if last < b:
        piece, raw = _filler_rows(layout, kind, last, b, True)
        pieces.append(piece)
        raws.append(raw)
    adler = 1
    for r in raws:
        adler = zlib.adler32(r, adler)
    return b"\x78\x9c" + b"".join(pieces) + struct.pack(">I", adler)


def filler_sizes() -> dict[str, int]:
    """Compressed size [bytes] of a full block of texture, per layout."""
    out = {f"S2 {res} m uint16": len(_filler_block(lay, "reflectance"))
           for res, lay in S2_LAYOUTS.items()}
    out["S2 SCL 20 m uint8"] = len(_filler_block(S2_SCL_LAYOUT, "scl"))
    out["S1 float32"] = len(_filler_block(S1_LAYOUT, "gamma0"))
    for kind, lay in MODIS_LAYOUTS.items():
        out[f"MODIS {kind} {lay.dtype}"] = len(_filler_block(lay, kind))
    return out


# --------------------------------------------------------------------------------------
# the TIFF writer
# --------------------------------------------------------------------------------------

_SAMPLE_FORMAT = {"u": 1, "i": 2, "f": 3}
# TIFF field types
_SHORT, _LONG, _DOUBLE, _ASCII = 3, 4, 12, 2
_TYPE_SIZE = {_SHORT: 2, _LONG: 4, _DOUBLE: 8, _ASCII: 1}
_TYPE_FMT = {_SHORT: "H", _LONG: "I", _DOUBLE: "d"}


def _ifd(tags: list[tuple[int, int, Any]], at: int, next_ifd: int
         ) -> tuple[bytes, bytes, dict[int, int]]:
    """One little-endian IFD at byte ``at`` followed by its out-of-line values.

    Returns the IFD bytes, the out-of-line value bytes (placed right after the IFD) and
    tag -> byte offset of each tag's value (in-line or not), to patch arrays later.
    """
    tags = sorted(tags)
    n = len(tags)
    ifd_size = 2 + 12 * n + 4
    extra = bytearray()
    entries = bytearray(struct.pack("<H", n))
    where: dict[int, int] = {}
    for i, (tag, typ, value) in enumerate(tags):
        if typ == _ASCII:
            raw = value.encode("ascii") + b"\0"
            count = len(raw)
        else:
            vals = list(value) if isinstance(value, list | tuple) else [value]
            count = len(vals)
            raw = struct.pack(f"<{count}{_TYPE_FMT[typ]}", *vals)
        entry_at = at + 2 + 12 * i
        if len(raw) <= 4:
            entries += struct.pack("<HHI", tag, typ, count) + raw.ljust(4, b"\0")
            where[tag] = entry_at + 8
        else:
            if len(extra) % 2:
                extra += b"\0"  # values start on a word boundary
            off = at + ifd_size + len(extra)
            entries += struct.pack("<HHII", tag, typ, count, off)
            where[tag] = off
            extra += raw
    entries += struct.pack("<I", next_ifd)
    return bytes(entries), bytes(extra), where


#: GeoKeyDirectory, GeoDoubleParams, GeoAsciiParams: the tags that state the CRS
_CRS_TAGS = (34735, 34736, 34737)


def crs_tags(path: Path) -> list[tuple[int, int, Any]]:
    """The GeoTIFF CRS tags of a (classic, little-endian) TIFF, as written by GDAL.

    Copied into the full-tile file, they state the CRS exactly as the demo's compact
    file does (an EPSG code, or the user-defined MODIS sinusoidal sphere).

    Raises
    ------
    ConfigError
        If the file is not a classic little-endian TIFF or has no GeoKeyDirectory.
    """
    data = path.read_bytes()
    if data[:4] != b"II*\0":
        raise ConfigError(f"{path}: not a classic little-endian TIFF (cannot copy its CRS)")
    at = struct.unpack_from("<I", data, 4)[0]
    n = struct.unpack_from("<H", data, at)[0]
    out: list[tuple[int, int, Any]] = []
    for i in range(n):
        tag, typ, count, value = struct.unpack_from("<HHII", data, at + 2 + 12 * i)
        if tag not in _CRS_TAGS:
            continue
        size = _TYPE_SIZE[typ] * count
        raw = (data[at + 2 + 12 * i + 8:at + 2 + 12 * i + 8 + size] if size <= 4
               else data[value:value + size])
        if typ == _ASCII:
            out.append((tag, typ, raw.rstrip(b"\0").decode("ascii")))
        else:
            out.append((tag, typ, list(struct.unpack(f"<{count}{_TYPE_FMT[typ]}", raw))))
    if not any(t == 34735 for t, _, _ in out):
        raise ConfigError(f"{path}: no GeoKeyDirectory tag (34735): no CRS to copy")
    return out


def write_sparse_cog(path: Path, layout: CogLayout, *, transform: Any,
                     geo_tags: list[tuple[int, int, Any]], nodata: float | None,
                     blocks: dict[tuple[int, int, int], bytes],
                     absent_size: dict[int, int],
                     shared: tuple[bytes, tuple[tuple[int, int, int], ...]] | None = None
                     ) -> int:
    """Write a COG with the real layout that holds only some of its blocks.

    The file is laid out as GDAL's COG driver lays it out (IFDs and their arrays first,
    then the overview blocks from the smallest level, then the full-resolution blocks, row
    by row). Each block given is written at the offset it would have if every absent block
    took ``absent_size[level]`` bytes; absent blocks are marked empty (offset 0, count 0,
    read as nodata) and take no disk space (holes of a sparse file).

    Parameters
    ----------
    path : Path
        Output file.
    layout : CogLayout
        Raster size, block size, dtype, predictor, overviews.
    transform : affine.Affine
        Pixel-to-CRS transform of the full-resolution level (north up).
    geo_tags : list of (tag, type, value)
        The GeoTIFF CRS tags (:func:`crs_tags`).
    nodata : float or None
        Nodata value (GDAL_NODATA tag).
    blocks : dict
        (level, block row, block column) -> encoded block (:func:`encode_block`).
    absent_size : dict of int to int
        Level -> bytes an absent block would take in the real file.
    shared : (bytes, tuple of keys), optional
        One encoded block that several blocks (keys as in ``blocks``) hold: written once,
        at the place of the first of them, all their offsets pointing at it.

    Returns
    -------
    int
        Apparent size of the file [bytes] (what an HTTP HEAD answers).
    """
    dt = np.dtype(layout.dtype)
    levels = range(len(layout.overviews) + 1)
    # IFDs with placeholder arrays, to learn where the arrays sit
    header = bytearray(b"II*\0" + struct.pack("<I", 8))
    patches: list[tuple[int, int]] = []  # (level, offset of its TileOffsets array)
    count_at: list[int] = []
    ifds = []
    at = 8
    for level in levels:
        w, h = layout.level_size(level)
        nx, ny = layout.blocks_across(level)
        n = nx * ny
        tags: list[tuple[int, int, Any]] = [
            (256, _LONG, w), (257, _LONG, h), (258, _SHORT, 8 * dt.itemsize),
            (259, _SHORT, 8), (262, _SHORT, 1), (277, _SHORT, 1), (284, _SHORT, 1),
            (317, _SHORT, layout.predictor), (322, _SHORT, layout.block),
            (323, _SHORT, layout.block), (324, _LONG, [0] * n), (325, _LONG, [0] * n),
            (339, _SHORT, _SAMPLE_FORMAT[dt.kind])]
        if level:
            tags.append((254, _LONG, 1))  # reduced-resolution image
        else:
            tags += [(33550, _DOUBLE, [transform.a, -transform.e, 0.0]),
                     (33922, _DOUBLE, [0.0, 0.0, 0.0, transform.c, transform.f, 0.0]),
                     *geo_tags]
        if nodata is not None:
            tags.append((42113, _ASCII, f"{nodata:g}"))
        size = 2 + 12 * len(tags) + 4
        _, extra, where = _ifd(tags, at, 0)
        nxt = at + size + len(extra) + (len(extra) % 2)
        ifds.append((tags, at, nxt if level < len(layout.overviews) else 0))
        patches.append((level, where[324]))
        count_at.append(where[325])
        at = nxt
    for tags, ifd_at, nxt in ifds:
        ent, extra, _ = _ifd(tags, ifd_at, nxt)
        header += ent + extra
        if len(header) % 2:
            header += b"\0"
    data_start = len(header)
    # block offsets: smallest overview first, full resolution last, row-major
    pos = data_start
    offsets: dict[tuple[int, int, int], int] = {}
    shared_data, shared_keys = shared if shared else (b"", ())
    shared_at: int | None = None
    blocks = {**blocks, **dict.fromkeys(shared_keys, shared_data)}
    for level in reversed(levels):
        nx, ny = layout.blocks_across(level)
        for r in range(ny):
            for c in range(nx):
                key = (level, r, c)
                if key in shared_keys and shared_at is None:
                    shared_at = pos
                if key in blocks:
                    offsets[key] = shared_at if key in shared_keys else pos
                    pos += len(blocks[key])
                else:
                    pos += absent_size[level]
    total = pos
    for level, off_at in patches:
        nx, ny = layout.blocks_across(level)
        offs = [offsets.get((level, r, c), 0) for r in range(ny) for c in range(nx)]
        cnts = [len(blocks[(level, r, c)]) if (level, r, c) in blocks else 0
                for r in range(ny) for c in range(nx)]
        header[off_at:off_at + 4 * len(offs)] = struct.pack(f"<{len(offs)}I", *offs)
        c_at = count_at[level]
        header[c_at:c_at + 4 * len(cnts)] = struct.pack(f"<{len(cnts)}I", *cnts)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header)
        for off, key in sorted({off: key for key, off in offsets.items()}.items()):
            f.seek(off)
            f.write(blocks[key])
        f.truncate(total)  # the rest is a hole
    return total


# --------------------------------------------------------------------------------------
# one asset
# --------------------------------------------------------------------------------------


def place_in_tile(src: Path, dst: Path, layout: CogLayout, *, tile_ulx: float,
                  tile_uly: float, kind: str, absent_scale: float = 1.0) -> dict[str, Any]:
    """Rewrite a compact demo COG as a full-tile COG with ``layout``.

    Parameters
    ----------
    src : Path
        The compact COG (a window on the tile's pixel lattice).
    dst : Path
        Output file.
    layout : CogLayout
        Layout of the full-tile file.
    tile_ulx, tile_uly : float
        Upper-left corner of the tile [m, the file's CRS].
    kind : str
        Texture around the window (:func:`filler`): ``"reflectance"``, ``"scl"``,
        ``"gamma0"``, ``"lst"`` or ``"qc"``.
    absent_scale : float, default 1.0
        Mean size of an absent block relative to a full texture block (sets the file's
        size, what HEAD answers: below 1 where much of the raster is nodata).

    Returns
    -------
    dict
        ``transform`` (affine.Affine of the tile), ``written_blocks``, ``written_bytes``,
        ``apparent_size`` [bytes].

    Raises
    ------
    ConfigError
        If the window is not on the tile's lattice or not inside the tile.
    """
    import rasterio
    from affine import Affine

    with rasterio.open(src) as ds:
        arr = ds.read(1)
        t = ds.transform
        nodata = ds.nodata
    res = t.a
    col_f, row_f = (t.c - tile_ulx) / res, (tile_uly - t.f) / res
    c0, r0 = round(col_f), round(row_f)
    h, w = arr.shape
    if (abs(col_f - c0) > 1e-6 or abs(row_f - r0) > 1e-6 or c0 < 0 or r0 < 0
            or c0 + w > layout.width or r0 + h > layout.height):
        raise ConfigError(f"{src}: window at row {row_f}, column {col_f} is not on the "
                          f"lattice of, or inside, the {layout.width}-pixel tile")
    b = layout.block
    br0, br1 = r0 // b, (r0 + h - 1) // b
    bc0, bc1 = c0 // b, (c0 + w - 1) // b
    tex = filler(b, layout.dtype, kind)
    canvas = np.tile(tex, (br1 - br0 + 1, bc1 - bc0 + 1))
    canvas[r0 - br0 * b:r0 - br0 * b + h, c0 - bc0 * b:c0 - bc0 * b + w] = arr
    # pixels beyond the raster's edge in its last blocks are nodata, as GDAL writes them
    fill = 0 if nodata is None else nodata
    canvas[max(0, layout.height - br0 * b):, :] = fill
    canvas[:, max(0, layout.width - bc0 * b):] = fill
    blocks: dict[tuple[int, int, int], bytes] = {}
    for r in range(br0, br1 + 1):
        for c in range(bc0, bc1 + 1):
            blk = canvas[(r - br0) * b:(r - br0 + 1) * b, (c - bc0) * b:(c - bc0 + 1) * b]
            if (r + 1) * b <= layout.height and (c + 1) * b <= layout.width:
                first, last = max(r0 - r * b, 0), min(r0 + h - r * b, b)
                blocks[(0, r, c)] = encode_block_with_texture(blk, layout, kind, first, last)
            else:  # an edge block: part nodata
                blocks[(0, r, c)] = encode_block(blk, layout)
    # Overview blocks over the site: texture only, all pointing at one copy on disk.
    ovr = _filler_block(layout, kind)
    shared = []
    for level, f in enumerate(layout.overviews, start=1):
        for r in range((r0 // f) // b, ((r0 + h - 1) // f) // b + 1):
            for c in range((c0 // f) // b, ((c0 + w - 1) // f) // b + 1):
                shared.append((level, r, c))
    full = len(ovr)
    absent = {level: round(full * absent_scale) for level in range(len(layout.overviews) + 1)}
    transform = Affine(res, 0.0, tile_ulx, 0.0, -res, tile_uly)
    size = write_sparse_cog(dst, layout, transform=transform, geo_tags=crs_tags(src),
                            nodata=nodata,
                            blocks=blocks, absent_size=absent,
                            shared=(ovr, tuple(shared)))
    return {"transform": transform, "written_blocks": len(blocks) + min(len(shared), 1),
            "written_bytes": sum(len(v) for v in blocks.values()) + (full if shared else 0),
            "apparent_size": size}


# --------------------------------------------------------------------------------------
# the world
# --------------------------------------------------------------------------------------


def layout_digest() -> str:
    """Hash of this module's source (a real-layout world is regenerated when it changes)."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


S2_COLLECTION, S1_COLLECTION, MODIS_COLLECTION = (
    "sentinel-2-l2a", "sentinel-1-rtc", "modis-11A1-061")
#: the collections whose COGs get the real layout
COLLECTIONS = (S2_COLLECTION, S1_COLLECTION, MODIS_COLLECTION)


def _s2_layout(band: str) -> tuple[CogLayout, str]:
    from .s2_items import BANDS

    if band == "SCL":
        return S2_SCL_LAYOUT, "scl"
    return S2_LAYOUTS[BANDS[band][0]], "reflectance"


def _footprint(item: dict[str, Any], tile_bounds: tuple[float, float, float, float],
               epsg: int, scene: dict[str, Any] | None, site_epsg: int
               ) -> tuple[dict[str, Any], list[float]]:
    """Geometry and bbox of the whole tile, clipped at the swath edge of a partial scene
    (the same line the compact item's footprint is clipped at)."""
    edges = json.loads(scene["swath_edges"]) if scene and scene.get("swath_edges") else {}
    if not edges:
        return footprint_wgs84(tile_bounds, f"EPSG:{epsg}")
    side = 1 if scene["swath_side"] == "east" else -1
    cut = min(edges.values()) if side > 0 else max(edges.values())
    return clipped_footprint_wgs84(tile_bounds, f"EPSG:{epsg}", f"EPSG:{site_epsg}", cut, side)


def _items_lines(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text().splitlines():
        if line.strip():
            yield json.loads(line)


def _add(stats: dict[str, int], out: dict[str, Any]) -> None:
    stats["files"] += 1
    stats["written_bytes"] += out["written_bytes"]
    stats["apparent_bytes"] += out["apparent_size"]
    stats["blocks"] += out["written_blocks"]


def _convert_s2_item(src_root: Path, dst_root: Path, item: dict[str, Any],
                     scene: dict[str, Any] | None, site_epsg: int,
                     stats: dict[str, int]) -> dict[str, Any]:
    """Rewrite one S2 item's band COGs; the item with tile-wide proj fields and footprint."""
    epsg = int(item["properties"]["proj:epsg"])
    tile_bounds = None
    # the tile's corner, as the granule metadata states it (10 m Geoposition ULX/ULY)
    ulx, uly = _tile_corner(src_root, item)
    for key, asset in item["assets"].items():
        if "data" not in asset.get("roles", []) or not asset["href"].endswith(".tif"):
            continue
        layout, kind = _s2_layout(key)
        t = asset["proj:transform"]
        res = t[0]
        out = place_in_tile(src_root / asset["href"], dst_root / asset["href"],
                            layout, tile_ulx=ulx, tile_uly=uly, kind=kind)
        size = layout.width * res
        tile_bounds = (ulx, uly - size, ulx + size, uly)
        a = out["transform"]
        asset["proj:shape"] = [layout.height, layout.width]
        asset["proj:transform"] = [a.a, a.b, a.c, a.d, a.e, a.f]
        asset["proj:bbox"] = list(tile_bounds)
        _add(stats, out)
    if tile_bounds is not None:
        item["geometry"], item["bbox"] = _footprint(item, tile_bounds, epsg, scene, site_epsg)
    return item


def s1_grid_origin(item_id: str, window_ulx: float, window_uly: float, window_shape:
                   tuple[int, int], res: float = 10.0) -> tuple[float, float]:
    """Upper-left corner [m] of a demo S1 scene's full-size grid (:data:`S1_SHAPE`).

    The site's window lands at a position drawn from the item id (uniform over the
    positions that keep it inside the grid), so scenes differ in how the window falls on
    the 512-pixel blocks, as real scenes of different slices and orbits do.
    """
    rows, cols = S1_SHAPE
    h, w = window_shape
    rng = np.random.default_rng(zlib.crc32(item_id.encode()))
    r0 = int(rng.integers(0, rows - h + 1))
    c0 = int(rng.integers(0, cols - w + 1))
    return window_ulx - c0 * res, window_uly + r0 * res


def _convert_s1_item(src_root: Path, dst_root: Path, item: dict[str, Any],
                     stats: dict[str, int]) -> dict[str, Any]:
    """Rewrite one S1 RTC item's vv/vh COGs on a full-size item-level grid; the item with
    that grid's proj fields, ``s1:shape``, footprint and file sizes."""
    p = item["properties"]
    t = p["proj:transform"]
    res = t[0]
    ulx, uly = s1_grid_origin(item["id"], t[2], t[5], tuple(p["proj:shape"]), res)
    rows, cols = S1_SHAPE
    for key in ("vv", "vh"):
        asset = item["assets"][key]
        out = place_in_tile(src_root / asset["href"], dst_root / asset["href"], S1_LAYOUT,
                            tile_ulx=ulx, tile_uly=uly, kind="gamma0",
                            absent_scale=S1_SWATH_FRACTION)
        asset["file:size"] = out["apparent_size"]
        _add(stats, out)
    bounds = (ulx, uly - rows * res, ulx + cols * res, uly)
    p["proj:shape"] = [rows, cols]
    p["s1:shape"] = [cols, rows]
    p["proj:transform"] = [res, 0.0, ulx, 0.0, -res, uly, 0.0, 0.0, 1.0]
    p["proj:bbox"] = list(bounds)
    item["geometry"], item["bbox"] = footprint_wgs84(bounds, f"EPSG:{p['proj:epsg']}")
    return item


def modis_tile_corner(h: int, v: int) -> tuple[float, float]:
    """Upper-left corner [m, sinusoidal] of MODIS tile h, v (1200 x 1200 pixels)."""
    from gpp_cubes.sensors.modis import MODIS_ORIGIN_X, MODIS_ORIGIN_Y, MODIS_TILE_M

    return MODIS_ORIGIN_X + h * MODIS_TILE_M, MODIS_ORIGIN_Y - v * MODIS_TILE_M


def _convert_modis_item(src_root: Path, dst_root: Path, item: dict[str, Any],
                        stats: dict[str, int]) -> dict[str, Any]:
    """Rewrite one MOD11A1/MYD11A1 item's LST and QC COGs as whole sinusoidal tiles; the
    item with the tile's proj fields and footprint."""
    from gpp_cubes.sensors.modis import MODIS_PIXEL_M, MODIS_TILE_M

    p = item["properties"]
    ulx, uly = modis_tile_corner(int(p["modis:horizontal-tile"]), int(p["modis:vertical-tile"]))
    for key, asset in item["assets"].items():
        if "data" not in asset.get("roles", []) or not asset["href"].endswith(".tif"):
            continue
        kind = "lst" if key.startswith("LST") else "qc"
        out = place_in_tile(src_root / asset["href"], dst_root / asset["href"],
                            MODIS_LAYOUTS[kind], tile_ulx=ulx, tile_uly=uly, kind=kind)
        _add(stats, out)
    left, bottom, right, top = ulx, uly - MODIS_TILE_M, ulx + MODIS_TILE_M, uly
    p["proj:shape"] = [MODIS_TILE_PX, MODIS_TILE_PX]
    p["proj:transform"] = [MODIS_PIXEL_M, 0.0, ulx, 0.0, -MODIS_PIXEL_M, uly]
    p["proj:geometry"] = {"type": "Polygon", "coordinates": [[
        [right, bottom], [right, top], [left, top], [left, bottom], [right, bottom]]]}
    item["geometry"], item["bbox"] = footprint_wgs84((left, bottom, right, top),
                                                     p["proj:wkt2"])
    return item


def _convert_item(args: tuple[str, str, str, dict[str, Any], dict[str, Any] | None, int]
                  ) -> tuple[dict[str, Any], dict[str, int]]:
    """Rewrite one item's data COGs (worker process); the rewritten item and byte counts."""
    cid, src_root, dst_root, item, scene, site_epsg = args
    stats = {"files": 0, "written_bytes": 0, "apparent_bytes": 0, "blocks": 0}
    src, dst = Path(src_root), Path(dst_root)
    if cid == S2_COLLECTION:
        item = _convert_s2_item(src, dst, item, scene, site_epsg, stats)
    elif cid == S1_COLLECTION:
        item = _convert_s1_item(src, dst, item, stats)
    elif cid == MODIS_COLLECTION:
        item = _convert_modis_item(src, dst, item, stats)
    else:
        raise ConfigError(f"no real layout for collection {cid!r}")
    return item, stats


def _tile_corner(root: Path, item: dict[str, Any]) -> tuple[float, float]:
    """ULX, ULY [m] of the item's tile, from its granule metadata (10 m Geoposition)."""
    import re

    xml = (root / item["assets"]["granule-metadata"]["href"]).read_text()
    m = re.search(r'<Geoposition resolution="10">\s*<ULX>([^<]+)</ULX>\s*<ULY>([^<]+)</ULY>',
                  xml)
    if m is None:
        raise ConfigError(f"item {item['id']}: no 10 m Geoposition in its MTD_TL.xml")
    return float(m.group(1)), float(m.group(2))


def _link_tree(src: Path, dst: Path, skip: set[Path]) -> None:
    """Hard-link (copy across devices) every file of ``src`` into ``dst`` but ``skip``."""
    for dirpath, _, files in os.walk(src):
        d = Path(dirpath)
        out = dst / d.relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for name in files:
            p = d / name
            if p in skip:
                continue
            try:
                os.link(p, out / name)
            except OSError:
                shutil.copy2(p, out / name)


def real_layout_world(world: World, root: str | Path, *, workers: int | None = None
                      ) -> tuple[World, dict[str, Any]]:
    """A copy of ``world`` whose S2, S1 RTC and MODIS LST COGs have the real layout.

    S2 band and SCL COGs become whole MGRS tiles, S1 ``vv``/``vh`` COGs full-size
    item-level grids (:data:`S1_SHAPE`), MODIS ``LST_*``/``QC_*`` COGs whole 1200 x 1200
    sinusoidal tiles; the items are rewritten to match. Cached: a directory whose marker
    names the same world digest and layout digest is reused. Other files (granule
    metadata, CORINE, FLUXNET, truth) are hard links to the original's.

    Parameters
    ----------
    world : World
        A generated demo world.
    root : str or Path
        Output directory (replaced if it holds another real-layout world).
    workers : int, optional
        Processes rewriting items (default ``min(2, os.cpu_count())``).

    Returns
    -------
    World
        The real-layout world (same config, sites and truth).
    dict
        What was written: ``files``, ``written_bytes`` (data on disk), ``apparent_bytes``
        (the files' sizes as served), ``blocks`` (totals, and per collection under
        ``collections``), and ``filler_block_bytes`` (compressed size of a full texture
        block per layout) [bytes].
    """
    from concurrent.futures import ProcessPoolExecutor

    from .world import _locked

    root = Path(root).absolute()
    src_marker = json.loads((world.root / MARKER).read_text())
    key = {"world_digest": src_marker["digest"], "layout": layout_digest()}
    lock = root.parent / f".{root.name}.lock"
    with _locked(lock):
        try:
            m = json.loads((root / MARKER).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            m = None
        if m is not None and m.get("real_layout", {}).get("key") == key:
            out = World(root=root, config=world.config, sites=world.sites,
                        truth=_read_truth(root))
            return out, m["real_layout"]["stats"]
        by_cid = {cid: list(_items_lines(world.items_path(cid))) for cid in COLLECTIONS
                   if world.items_path(cid).exists()}
        skip = {world.root / MARKER} | {world.items_path(cid) for cid in by_cid}
        for items in by_cid.values():
            for it in items:
                skip |= {world.root / a["href"] for a in it["assets"].values()
                         if "data" in a.get("roles", []) and a["href"].endswith(".tif")}
        with atomic_directory(root) as tmp:  # a killed run leaves the old copy whole
            _link_tree(world.root, tmp, skip)
            scenes = {}
            if not world.truth.s2_scenes.empty:
                df = world.truth.s2_scenes.fillna("")
                scenes = {r["item_id"]: r for r in df.to_dict("records")}
            site_epsg = {s.site_id: s.epsg for s in world.sites}
            jobs = []
            for cid, items in by_cid.items():
                for it in items:
                    scene = scenes.get(it["id"]) if cid == S2_COLLECTION else None
                    epsg = it["properties"].get("proj:epsg")
                    jobs.append((cid, str(world.root), str(tmp), it, scene,
                                 site_epsg.get(str((scene or {}).get("site")), epsg or 0)))
            n = workers or min(2, os.cpu_count() or 1)
            if n > 1:
                with ProcessPoolExecutor(max_workers=n) as ex:
                    results = list(ex.map(_convert_item, jobs, chunksize=8))
            else:
                results = [_convert_item(j) for j in jobs]
            keys = ("files", "written_bytes", "apparent_bytes", "blocks")
            stats: dict[str, Any] = dict.fromkeys(keys, 0)
            stats["collections"] = {cid: dict.fromkeys(keys, 0) for cid in by_cid}
            lines: dict[str, list[str]] = {cid: [] for cid in by_cid}
            for job, (it, s) in zip(jobs, results, strict=True):
                for k in keys:
                    stats[k] += s[k]
                    stats["collections"][job[0]][k] += s[k]
                lines[job[0]].append(json.dumps(it, sort_keys=True))
            stats["filler_block_bytes"] = filler_sizes()
            for cid, ls in lines.items():
                (tmp / "stac" / "items" / f"{cid}.ndjson").write_text("\n".join(ls) + "\n")
            marker = {**src_marker, "real_layout": {"key": key, "stats": stats}}
            (tmp / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))
    return (World(root=root, config=world.config, sites=world.sites, truth=_read_truth(root)),
            stats)
