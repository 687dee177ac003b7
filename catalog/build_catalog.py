"""Build the site catalog (GeoJSON FeatureCollection) from the reference station tables.

Inputs (copied byte for byte from the project's reference data into ``catalog/sources/``):

- ``ww2020_forest_sites.csv``: the 38 forest stations of the ICOS Warm Winter 2020 product
  with name, country, latitude, longitude (WGS84 degrees), elevation [m], IGBP class and the
  public source of each value;
- ``ww2020_forest_sites_years.csv``: first and last data year of each of them in the product.

Output: ``gpp_cubes/data/sites.geojson``, the ONE source of truth that
:func:`gpp_cubes.sites.catalog.load_sites` reads (also from an installed package), and an identical
copy ``catalog/sites.geojson`` for browsing (GitHub, QGIS and geopandas render it as is).

Run from the repository root::

    python catalog/build_catalog.py            # rewrite both files
    python catalog/build_catalog.py --check    # exit 1 if they are not up to date

Nothing is invented: a value missing in the sources is written as JSON ``null``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "sources"
PACKAGE_COPY = HERE.parent / "gpp_cubes" / "data" / "sites.geojson"
CATALOG_COPY = HERE / "sites.geojson"

#: Stations that cannot pass the paper's rules, with the reason (reference README).
EXCLUDED: dict[str, str] = {
    "GF-Guy": "outside Europe (French Guiana)",
    "IL-Yat": "outside Europe (Israel)",
    "RU-Fy2": "outside CORINE 2018 coverage (Russia)",
    "RU-Fyo": "outside CORINE 2018 coverage (Russia)",
    "BE-Lcr": "too few years in 2016-2020 (data 2019-2020 only)",
    "IT-BFt": "too few years in 2016-2020 (data 2019-2020 only)",
    "DK-Gds": "too few years in 2016-2020 (data 2020 only)",
    "FI-Ken": "too few years in 2016-2020 (data 2018-2020 only)",
}

CANDIDATE_REASON = (
    "not yet decided: run `gpp sites select` with CORINE 2018 and the FLUXNET files"
)

YEARS_SOURCE = (
    "data years: reference table ww2020_forest_sites_years.csv, read from "
    "geco-bern/FluxDataKit@43fb2584 (fdk_product: {product})"
)


def _none_if_empty(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _number(value: str | None) -> float | None:
    value = _none_if_empty(value)
    return None if value is None else float(value)


def _int(value: str | None) -> int | None:
    value = _none_if_empty(value)
    return None if value is None else int(value)


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def build(sources: Path = SOURCES) -> dict:
    """The catalog as a GeoJSON FeatureCollection (a dict), sorted by IGBP class then id."""
    sites = _read(sources / "ww2020_forest_sites.csv")
    years = {row["site_id"]: row for row in _read(sources / "ww2020_forest_sites_years.csv")}
    features: list[dict[str, Any]] = []
    for row in sites:
        sid = row["site_id"].strip()
        yr = years.get(sid, {})
        lat, lon = _number(row["lat"]), _number(row["lon"])
        status = "excluded" if sid in EXCLUDED else "candidate"
        features.append({
            "type": "Feature",
            "id": sid,
            # GeoJSON (RFC 7946) positions are [longitude, latitude] in WGS84.
            "geometry": None if lat is None or lon is None
            else {"type": "Point", "coordinates": [lon, lat]},
            "properties": {
                "site_id": sid,
                "name": _none_if_empty(row["name"]),
                "country": _none_if_empty(row["country"]),
                "latitude": lat,
                "longitude": lon,
                "elevation_m": _number(row["elevation_m"]),
                "igbp": _none_if_empty(row["igbp"]),
                "year_start": _int(yr.get("ww2020_year_start")),
                "year_end": _int(yr.get("ww2020_year_end")),
                "icos_ecosystem_type": _none_if_empty(yr.get("icos_ecosystem_type")),
                "status": status,
                "status_reason": EXCLUDED.get(sid, CANDIDATE_REASON),
                "source": _none_if_empty(row["source"]),
                "years_source": YEARS_SOURCE.format(product=yr["fdk_product"].strip())
                if yr.get("fdk_product") else None,
            },
        })
    order = {"DBF": 0, "EBF": 1, "ENF": 2, "MF": 3}
    features.sort(key=lambda f: (order.get(f["properties"]["igbp"] or "", 9), f["id"]))
    return {
        "type": "FeatureCollection",
        "name": "gpp-cubes forest sites (ICOS Warm Winter 2020)",
        "description": (
            "The 38 forest stations of the ICOS Warm Winter 2020 ecosystem flux product. "
            "status: 'excluded' = cannot pass the paper's site rules (reason given); "
            "'candidate' = decided by running the rules (gpp sites select). "
            "null = value not known from the public sources (not invented). "
            "Built by catalog/build_catalog.py from catalog/sources/*.csv."
        ),
        "features": features,
    }


def render(collection: dict) -> str:
    return json.dumps(collection, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only check that the written catalogs are up to date")
    args = parser.parse_args(argv)
    text = render(build())
    targets = (PACKAGE_COPY, CATALOG_COPY)
    if args.check:
        stale = [str(p) for p in targets if not p.exists() or p.read_text("utf-8") != text]
        if stale:
            print("out of date: " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path} ({len(json.loads(text)['features'])} sites)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
