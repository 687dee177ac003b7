"""FLUXNET2015-format daily files (ICOS Warm Winter 2020): reader, GPP target, writer.

ICOS Warm Winter 2020 ships one archive per station in the FLUXNET2015 FULLSET format,
``FLX_<SITE>_FLUXNET2015_FULLSET_<y0>-<y1>_<ver>.zip``, holding among others the daily file
``FLX_<SITE>_FLUXNET2015_FULLSET_DD_<y0>-<y1>_<ver>.csv``: one header line, then one line per
day, ``TIMESTAMP`` as ``YYYYMMDD`` and ``-9999`` for missing values.

The target is the night-time partitioned GPP, ``GPP_NT_VUT_REF`` [g C m-2 d-1]
(Reichstein et al., 2005). Days whose ``NEE_VUT_REF_QC`` (fraction of measured or
good-quality gap-filled half-hours of the day [0-1]) is below 0.7, and days with GPP < 0, are
discarded; GPP is never interpolated.

References
----------
Pastorello, G. et al. (2020). The FLUXNET2015 dataset and the ONEFlux processing pipeline for
eddy covariance data. Scientific Data 7, 225. https://doi.org/10.1038/s41597-020-0534-3
Reichstein, M. et al. (2005). On the separation of net ecosystem exchange into assimilation
and ecosystem respiration. Global Change Biology 11, 1424-1439.
Warm Winter 2020 Team & ICOS Ecosystem Thematic Centre (2022). Warm Winter 2020 ecosystem eddy
covariance flux product for 73 stations in FLUXNET-Archive format, release 2022-1.
https://doi.org/10.18160/2G60-ZHAK
"""

from __future__ import annotations

import io
import re
import zipfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from gpp_cubes import paper
from gpp_cubes.errors import InputFormatError
from gpp_cubes.sites.catalog import validate_site_id
from gpp_cubes.storage import Location, ObjectPath, as_location

MISSING = -9999
REQUIRED_COLUMNS = ("TIMESTAMP", "GPP_NT_VUT_REF", "NEE_VUT_REF_QC")
GPP_COLUMN = "GPP_NT_VUT_REF"
QC_COLUMN = "NEE_VUT_REF_QC"

DD_NAME = re.compile(
    r"^FLX_(?P<site>[A-Z]{2}-[A-Za-z0-9]{3})_FLUXNET2015_FULLSET_DD_"
    r"(?P<y0>\d{4})-(?P<y1>\d{4})_(?P<ver>[^.]+)\.csv$"
)
ZIP_NAME = re.compile(
    r"^FLX_(?P<site>[A-Z]{2}-[A-Za-z0-9]{3})_FLUXNET2015_FULLSET_"
    r"(?P<y0>\d{4})-(?P<y1>\d{4})_(?P<ver>[^.]+)\.zip$"
)


@lru_cache(maxsize=1)
def fullset_dd_columns() -> tuple[str, ...]:
    """The 201 column names of a genuine FLUXNET2015 FULLSET daily file, in order."""
    text = (resources.files("gpp_cubes") / "data" / "fluxnet2015_fullset_dd_columns.txt")
    return tuple(line.strip() for line in text.read_text().splitlines() if line.strip())


def fluxnet_filename(site_id: str, year_start: int, year_end: int, version: str = "beta-3",
                     *, archive: bool = False) -> str:
    """The file name of a daily FULLSET file (or of its per-site zip archive)."""
    validate_site_id(site_id)
    if archive:
        return f"FLX_{site_id}_FLUXNET2015_FULLSET_{year_start}-{year_end}_{version}.zip"
    return f"FLX_{site_id}_FLUXNET2015_FULLSET_DD_{year_start}-{year_end}_{version}.csv"


def find_fluxnet_file(directory: str | Path | ObjectPath, site_id: str) -> Location | None:
    """The daily file (or per-site archive) of a site in ``directory``, or None.

    ``directory`` is a local directory or an object-storage prefix (``s3://bucket/fluxnet``,
    :mod:`gpp_cubes.storage`: workers that share no disk with the client read it there).
    A plain ``..._DD_...csv`` is preferred over a zip archive; among several versions the one
    with the latest end year, then the highest version string, wins.
    """
    validate_site_id(site_id)
    directory = as_location(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"FLUXNET directory not found: {directory}")
    for pattern in (DD_NAME, ZIP_NAME):
        hits = []
        for path in directory.iterdir():
            m = pattern.match(path.name)
            if m and m["site"] == site_id:
                hits.append((int(m["y1"]), m["ver"], path))
        if hits:
            return max(hits)[2]
    return None


def _open_text(path: Location) -> tuple[str, str]:
    """Text of a DD csv, and a label naming the file (``archive.zip!member.csv``)."""
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path if isinstance(path, Path)
                                 else io.BytesIO(path.read_bytes())) as zf:
                members = [n for n in zf.namelist() if DD_NAME.match(Path(n).name)]
                if not members:
                    raise InputFormatError(
                        f"{path}: archive holds no FLUXNET2015 FULLSET daily file "
                        "(FLX_<SITE>_FLUXNET2015_FULLSET_DD_<y0>-<y1>_<ver>.csv)"
                    )
                name = sorted(members)[-1]
                return zf.read(name).decode("utf-8-sig"), f"{path}!{name}"
        except zipfile.BadZipFile as err:
            raise InputFormatError(f"{path}: not a readable zip archive ({err})") from err
    return path.read_text(encoding="utf-8-sig"), str(path)


def read_fluxnet(path: str | Path | ObjectPath) -> pd.DataFrame:
    """Read a FLUXNET2015-format daily (DD) file, plain or inside its zip archive.

    Parameters
    ----------
    path : str, Path or ObjectPath
        ``FLX_<SITE>_FLUXNET2015_FULLSET_DD_<y0>-<y1>_<ver>.csv`` or the archive
        ``FLX_<SITE>_FLUXNET2015_FULLSET_<y0>-<y1>_<ver>.zip``, local or in object storage.

    Returns
    -------
    pandas.DataFrame
        Every column as float64 with ``-9999`` replaced by NaN, indexed by a daily
        ``DatetimeIndex`` named ``time`` (from ``TIMESTAMP``, YYYYMMDD). ``df.attrs`` holds
        ``source`` (the file) and ``site_id`` (from the file name, if it follows the pattern).

    Raises
    ------
    InputFormatError
        Naming the file and the problem: missing required columns
        (``TIMESTAMP``, ``GPP_NT_VUT_REF``, ``NEE_VUT_REF_QC``), a units row under the header,
        timestamps not in YYYYMMDD, non-numeric values, duplicated or unsorted dates.
    """
    path = as_location(path)
    text, label = _open_text(path)
    try:
        # TIMESTAMP as text (YYYYMMDD must not become an integer), everything else numeric;
        # columns that come back as text hold something that is not a number.
        raw = pd.read_csv(io.StringIO(text), dtype={"TIMESTAMP": str}, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputFormatError(f"{label}: not a readable CSV file ({err})") from err
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise InputFormatError(f"{label}: missing required column(s) {', '.join(missing)}")
    if raw.columns.duplicated().any():
        dup = sorted(set(raw.columns[raw.columns.duplicated()]))
        raise InputFormatError(f"{label}: duplicated column(s) {', '.join(dup)}")
    if raw.empty:
        raise InputFormatError(f"{label}: no data rows")

    data = raw.drop(columns="TIMESTAMP")
    text_cols = [c for c in data.columns if not pd.api.types.is_numeric_dtype(data[c])]
    if text_cols:
        first = pd.to_numeric(data.iloc[0][text_cols], errors="coerce")
        if first.isna().all() and len(text_cols) > len(data.columns) / 2:
            # e.g. a line "YYYYMMDD,deg C,..." under the header, as some exports write
            raise InputFormatError(
                f"{label}: line 2 looks like a units row "
                f"({', '.join(map(str, raw.iloc[0, :4]))}, ...); FLUXNET2015 daily files "
                "have a single header line - remove the units row"
            )
        for col in text_cols:
            num = pd.to_numeric(data[col], errors="coerce")
            bad = num.isna() & data[col].notna()
            if bad.any():
                i = int(np.argmax(bad.to_numpy()))
                raise InputFormatError(
                    f"{label}: non-numeric value {data[col].iloc[i]!r} in column {col} on "
                    f"line {i + 2} ({int(bad.sum())} such value(s) in that column)"
                )
            data[col] = num

    stamps = raw["TIMESTAMP"].fillna("").str.strip()
    bad = ~stamps.str.fullmatch(r"\d{8}")
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise InputFormatError(
            f"{label}: TIMESTAMP {stamps.iloc[i]!r} on line {i + 2} is not a date in YYYYMMDD"
        )
    try:
        time = pd.to_datetime(stamps, format="%Y%m%d")
    except ValueError as err:
        raise InputFormatError(f"{label}: TIMESTAMP is not a valid YYYYMMDD date: {err}") from err

    values = data
    values = values.astype("float64").mask(values == MISSING)
    values.index = pd.DatetimeIndex(time.to_numpy(), name="time")

    if values.index.has_duplicates:
        dup = values.index[values.index.duplicated()][0]
        raise InputFormatError(f"{label}: duplicated date {dup:%Y-%m-%d} in TIMESTAMP")
    if not values.index.is_monotonic_increasing:
        pos = int(np.argmax(np.diff(values.index.asi8) < 0)) + 1
        raise InputFormatError(
            f"{label}: dates not sorted: {values.index[pos]:%Y-%m-%d} on line {pos + 2} "
            f"follows {values.index[pos - 1]:%Y-%m-%d}"
        )
    m = DD_NAME.match(Path(label.split("!")[-1]).name)
    values.attrs = {"source": label, "site_id": m["site"] if m else None}
    return values


def gpp_targets(df: pd.DataFrame, start: str = paper.STUDY_START, end: str = paper.STUDY_END,
                qc_min: float = paper.QC_MIN) -> pd.Series:
    """Daily GPP target with the paper's quality filters, on a full daily calendar.

    Parameters
    ----------
    df : pandas.DataFrame
        Output of :func:`read_fluxnet`.
    start, end : str
        First and last day of the calendar (inclusive); default the study period,
        :data:`gpp_cubes.paper.STUDY_START` to :data:`gpp_cubes.paper.STUDY_END`.
    qc_min : float, default :data:`gpp_cubes.paper.QC_MIN` (0.7, section 2.1)
        Minimum ``NEE_VUT_REF_QC`` [fraction of good-quality half-hours, 0-1]; days below,
        and days with missing QC, are discarded.

    Returns
    -------
    pandas.Series
        ``GPP_NT_VUT_REF`` [g C m-2 d-1] named ``GPP``, float64, one value per day from
        ``start`` to ``end``; NaN for days absent from the file, missing, with low QC or
        with GPP < 0. Never interpolated.

    Raises
    ------
    InputFormatError
        A required column is missing, or no day of ``start``..``end`` lies within the
        file's dates (names the file from ``df.attrs["source"]``, its span and the range).

    References
    ----------
    Montero, D. et al. (2024), section 2.1: "Timesteps with less than 70% high-quality
    measurements (using NEE_VUT_REF_QC) and GPP values below zero were discarded."
    """
    for col in (GPP_COLUMN, QC_COLUMN):
        if col not in df.columns:
            raise InputFormatError(f"{df.attrs.get('source', 'FLUXNET data')}: no column {col}")
    calendar = pd.date_range(start, end, freq="D", name="time")
    if len(calendar) and len(df.index) and (calendar[-1] < df.index.min()
                                            or calendar[0] > df.index.max()):
        # Without overlap the target would be all NaN: a wrong file or wrong dates.
        raise InputFormatError(
            f"{df.attrs.get('source', 'FLUXNET data')}: holds {df.index.min():%Y-%m-%d} to "
            f"{df.index.max():%Y-%m-%d}, no day of the requested {calendar[0]:%Y-%m-%d} to "
            f"{calendar[-1]:%Y-%m-%d}")
    gpp = df[GPP_COLUMN].reindex(calendar)
    qc = df[QC_COLUMN].reindex(calendar)
    # NaN comparisons are False, so `qc >= qc_min` also drops days whose QC is missing.
    keep = (qc >= qc_min) & (gpp >= 0)
    out = gpp.where(keep).rename("GPP")
    out.attrs = {"units": "g C m-2 d-1", "long_name": "gross primary production (NT, VUT, REF)",
                 "source": df.attrs.get("source"), "qc_min": qc_min}
    return out


def valid_fraction(series: pd.Series) -> float:
    """Fraction of days with a valid (non-NaN) value [0-1]; 0 for an empty series."""
    return float(series.notna().mean()) if len(series) else 0.0


def write_fluxnet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a FLUXNET2015 FULLSET daily file with the full, real 201-column header.

    Parameters
    ----------
    df : pandas.DataFrame
        Daily values indexed by a ``DatetimeIndex``; columns must be FULLSET DD column names
        (any subset). Columns not given, and NaN, are written as ``-9999``; values with
        6 significant digits, as in the distributed files.
    path : str or Path
        A ``..._DD_...csv`` path, or a ``FLX_<SITE>_FLUXNET2015_FULLSET_<y0>-<y1>_<ver>.zip``
        archive, in which case the DD csv (named after the archive) is written inside it.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    columns = fullset_dd_columns()
    unknown = [c for c in df.columns if c not in columns]
    if unknown:
        raise InputFormatError(
            f"{path}: column(s) {', '.join(map(str, unknown))} are not FLUXNET2015 FULLSET DD "
            "columns"
        )
    if not isinstance(df.index, pd.DatetimeIndex):
        raise InputFormatError(f"{path}: the data must be indexed by a DatetimeIndex")
    out = df.reindex(columns=list(columns[1:]))
    out.insert(0, "TIMESTAMP", df.index.strftime("%Y%m%d"))
    text = out.to_csv(index=False, na_rep=str(MISSING), float_format="%.6g", lineterminator="\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".zip":
        m = ZIP_NAME.match(path.name)
        if not m:
            raise InputFormatError(
                f"{path}: archive name must be FLX_<SITE>_FLUXNET2015_FULLSET_<y0>-<y1>_<ver>.zip"
            )
        member = fluxnet_filename(m["site"], int(m["y0"]), int(m["y1"]), m["ver"])
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(member, text)
    else:
        path.write_text(text, encoding="utf-8")
    return path
