"""FLUXNET2015-format daily reader, GPP target filters, writer."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from reference import REFERENCE

from gpp_cubes.errors import InputFormatError
from gpp_cubes.targets.fluxnet import (
    find_fluxnet_file,
    fluxnet_filename,
    fullset_dd_columns,
    gpp_targets,
    read_fluxnet,
    valid_fraction,
    write_fluxnet,
)

REFERENCE_HEADER = REFERENCE / "fluxnet2015-fullset-dd-header.csv"
DD = "FLX_DE-Hai_FLUXNET2015_FULLSET_DD_2016-2016_beta-3.csv"


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_shipped_header_is_the_real_201_columns():
    cols = fullset_dd_columns()
    assert len(cols) == 201 and len(set(cols)) == 201
    assert cols[0] == "TIMESTAMP" and cols[-1] == "RECO_SR_N"
    assert {"GPP_NT_VUT_REF", "NEE_VUT_REF_QC", "TA_F", "SW_IN_F"} <= set(cols)
    if REFERENCE_HEADER.exists():
        assert ",".join(cols) == REFERENCE_HEADER.read_text().strip()


def test_read_minimal_file_hand_checked(tmp_path):
    path = _write(tmp_path / DD, [
        "TIMESTAMP,TA_F,NEE_VUT_REF_QC,GPP_NT_VUT_REF",
        "20160101,-1.5,1,0.42",
        "20160102,-9999,0.5,-9999",
        "20160104,2.25,0.9,-0.3",
    ])
    df = read_fluxnet(path)
    assert list(df.index) == list(pd.to_datetime(["2016-01-01", "2016-01-02", "2016-01-04"]))
    assert df.index.name == "time"
    assert df.loc["2016-01-01", "TA_F"] == -1.5
    assert np.isnan(df.loc["2016-01-02", "TA_F"]) and np.isnan(df.loc["2016-01-02",
                                                                       "GPP_NT_VUT_REF"])
    assert df.attrs["site_id"] == "DE-Hai" and df.attrs["source"] == str(path)
    assert (df.dtypes == "float64").all()


def test_gpp_targets_filters_by_hand(tmp_path):
    # day: QC, GPP -> kept?
    # 01: 1.0, 5.0 -> 5.0 | 02: 0.69, 4.0 -> NaN (QC) | 03: 0.7, 3.0 -> 3.0 (QC boundary kept)
    # 04: 0.9, -0.1 -> NaN (GPP<0) | 05: 0.9, 0.0 -> 0.0 | 06: -9999, 2.0 -> NaN (QC unknown)
    # 07: 0.8, -9999 -> NaN | 08 absent -> NaN | 09: 1, 7.5 -> 7.5 ; calendar 01..10
    path = _write(tmp_path / DD, [
        "TIMESTAMP,GPP_NT_VUT_REF,NEE_VUT_REF_QC",
        "20160101,5.0,1.0", "20160102,4.0,0.69", "20160103,3.0,0.7", "20160104,-0.1,0.9",
        "20160105,0.0,0.9", "20160106,2.0,-9999", "20160107,-9999,0.8", "20160109,7.5,1",
    ])
    gpp = gpp_targets(read_fluxnet(path), "2016-01-01", "2016-01-10")
    expected = [5.0, np.nan, 3.0, np.nan, 0.0, np.nan, np.nan, np.nan, 7.5, np.nan]
    np.testing.assert_array_equal(gpp.to_numpy(), expected)
    assert gpp.index.equals(pd.date_range("2016-01-01", "2016-01-10", freq="D"))
    assert gpp.name == "GPP" and gpp.attrs["units"] == "g C m-2 d-1"
    assert valid_fraction(gpp) == pytest.approx(4 / 10)


def test_valid_fraction_over_2016_2020(tmp_path):
    days = pd.date_range("2015-06-01", "2021-03-31", freq="D")
    rng = np.random.default_rng(0)
    gpp = rng.uniform(0, 10, len(days))
    qc = np.where(rng.random(len(days)) < 0.3, 0.5, 1.0)
    df = pd.DataFrame({"GPP_NT_VUT_REF": gpp, "NEE_VUT_REF_QC": qc}, index=days)
    path = write_fluxnet(df, tmp_path / "FLX_DE-Hai_FLUXNET2015_FULLSET_DD_2015-2021_beta-3.csv")
    target = gpp_targets(read_fluxnet(path))
    assert len(target) == 1827  # 5 years incl. two leap days
    inside = (days >= "2016-01-01") & (days <= "2020-12-31")
    assert valid_fraction(target) == pytest.approx((qc[inside] >= 0.7).sum() / 1827)


def test_write_read_roundtrip_full_header(tmp_path):
    days = pd.date_range("2018-01-01", periods=4, freq="D")
    df = pd.DataFrame({"GPP_NT_VUT_REF": [1.25, np.nan, 3.0, 0.5],
                       "NEE_VUT_REF_QC": [1.0, 0.8, 0.2, 0.95],
                       "TA_F": [-2.0, 0.0, 1.5, 3.25]}, index=days)
    path = write_fluxnet(df, tmp_path / fluxnet_filename("FI-Var", 2018, 2018))
    header = path.read_text().splitlines()[0].split(",")
    assert tuple(header) == fullset_dd_columns()
    first = path.read_text().splitlines()[1].split(",")
    assert first[0] == "20180101" and len(first) == 201
    assert first[header.index("SW_IN_F")] == "-9999"
    back = read_fluxnet(path)
    pd.testing.assert_frame_equal(back[df.columns], df, check_freq=False, check_names=False)
    assert back["SW_IN_F"].isna().all()


def test_zip_archive_read_and_find(tmp_path):
    days = pd.date_range("2016-01-01", periods=3, freq="D")
    df = pd.DataFrame({"GPP_NT_VUT_REF": [1.0, 2.0, 3.0], "NEE_VUT_REF_QC": [1, 1, 1]},
                      index=days)
    zpath = tmp_path / "FLX_BE-Vie_FLUXNET2015_FULLSET_1996-2020_beta-3.zip"
    write_fluxnet(df, zpath)
    with zipfile.ZipFile(zpath) as zf:
        assert zf.namelist() == ["FLX_BE-Vie_FLUXNET2015_FULLSET_DD_1996-2020_beta-3.csv"]
    # add other members the real archives hold, as a real archive does
    with zipfile.ZipFile(zpath, "a") as zf:
        zf.writestr("FLX_BE-Vie_FLUXNET2015_FULLSET_HH_1996-2020_beta-3.csv", "TIMESTAMP_START\n")
        zf.writestr("FLX_BE-Vie_FLUXNET2015_FULLSET_MM_1996-2020_beta-3.csv", "TIMESTAMP\n")
    back = read_fluxnet(zpath)
    np.testing.assert_array_equal(back["GPP_NT_VUT_REF"], [1.0, 2.0, 3.0])
    assert back.attrs["site_id"] == "BE-Vie"
    assert find_fluxnet_file(tmp_path, "BE-Vie") == zpath
    assert find_fluxnet_file(tmp_path, "DE-Hai") is None
    # a plain DD csv wins over the archive
    csv_path = write_fluxnet(df, tmp_path / fluxnet_filename("BE-Vie", 1996, 2020))
    assert find_fluxnet_file(tmp_path, "BE-Vie") == csv_path


def test_find_prefers_latest_version(tmp_path):
    for name in ("FLX_CH-Dav_FLUXNET2015_FULLSET_DD_1997-2014_1-4.csv",
                 "FLX_CH-Dav_FLUXNET2015_FULLSET_DD_1997-2020_beta-3.csv",
                 "FLX_CH-Lae_FLUXNET2015_FULLSET_DD_2004-2020_beta-3.csv"):
        (tmp_path / name).write_text("x")
    assert find_fluxnet_file(tmp_path, "CH-Dav").name.endswith("1997-2020_beta-3.csv")


def test_zip_without_dd_file(tmp_path):
    zpath = tmp_path / "FLX_BE-Vie_FLUXNET2015_FULLSET_1996-2020_beta-3.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("FLX_BE-Vie_FLUXNET2015_FULLSET_HH_1996-2020_beta-3.csv", "x\n")
    with pytest.raises(InputFormatError, match="no FLUXNET2015 FULLSET daily file"):
        read_fluxnet(zpath)


HEADER = "TIMESTAMP,GPP_NT_VUT_REF,NEE_VUT_REF_QC"


@pytest.mark.parametrize(("lines", "match"), [
    (["TIMESTAMP,GPP_NT_VUT_REF", "20160101,1.0"], "missing required column.*NEE_VUT_REF_QC"),
    (["TIMESTAMP,NEE_VUT_REF_QC", "20160101,1.0"], "missing required column.*GPP_NT_VUT_REF"),
    ([HEADER, "YYYYMMDD,gC m-2 d-1,adimensional", "20160101,1.0,1"], "units row"),
    ([HEADER, "-,umolCO2 m-2 s-1,-", "20160101,1.0,1"], "units row"),
    ([HEADER, "20160101,1.0,1", "20160102,abc,1"], "non-numeric value 'abc'.*GPP_NT_VUT_REF.*"
                                                    "line 3"),
    ([HEADER, "20160101,1.0,1", "20160101,2.0,1"], "duplicated date 2016-01-01"),
    ([HEADER, "20160102,1.0,1", "20160101,2.0,1"], "not sorted: 2016-01-01 on line 3"),
    ([HEADER, "2016-01-01,1.0,1"], "TIMESTAMP '2016-01-01' on line 2 is not a date in YYYYMMDD"),
    ([HEADER, "201601011200,1.0,1"], "not a date in YYYYMMDD"),
    ([HEADER, "20161301,1.0,1"], "not a valid YYYYMMDD date"),
    ([HEADER], "no data rows"),
])
def test_malformed_files_named_errors(tmp_path, lines, match):
    path = _write(tmp_path / DD, lines)
    with pytest.raises(InputFormatError, match=match) as err:
        read_fluxnet(path)
    assert str(path) in str(err.value)


def test_write_rejects_unknown_columns(tmp_path):
    df = pd.DataFrame({"GPP": [1.0]}, index=pd.DatetimeIndex(["2016-01-01"]))
    with pytest.raises(InputFormatError, match="GPP are not FLUXNET2015"):
        write_fluxnet(df, tmp_path / DD)


def test_crlf_bom_and_padded_header(tmp_path):
    path = tmp_path / DD
    path.write_bytes("\ufeffTIMESTAMP, GPP_NT_VUT_REF ,NEE_VUT_REF_QC\r\n"
                     "20160101,1.5,1\r\n20160102,-9999.0,0.9\r\n".encode())
    df = read_fluxnet(path)
    assert df["GPP_NT_VUT_REF"].tolist()[0] == 1.5 and np.isnan(df["GPP_NT_VUT_REF"].iloc[1])


def test_gpp_targets_missing_column_named():
    df = pd.DataFrame({"GPP_NT_VUT_REF": [1.0]}, index=pd.DatetimeIndex(["2016-01-01"]))
    df.attrs["source"] = "some.csv"
    with pytest.raises(InputFormatError, match=r"some\.csv: no column NEE_VUT_REF_QC"):
        gpp_targets(df)


def test_gpp_targets_without_overlap_names_file_span_and_range(tmp_path):
    path = _write(tmp_path / DD, [
        "TIMESTAMP,GPP_NT_VUT_REF,NEE_VUT_REF_QC",
        "20160101,5.0,1.0", "20160102,4.0,1.0", "20160103,3.0,1.0",
    ])
    df = read_fluxnet(path)
    for start, end in (("2016-01-04", "2016-02-01"), ("2015-01-01", "2015-12-31")):
        with pytest.raises(InputFormatError) as err:
            gpp_targets(df, start, end)
        msg = str(err.value)
        assert str(path) in msg and "2016-01-01 to 2016-01-03" in msg
        assert f"{start} to {end}" in msg
    # one shared day is enough: the rest of the calendar is NaN, as documented
    gpp = gpp_targets(df, "2015-12-30", "2016-01-01")
    np.testing.assert_array_equal(gpp.to_numpy(), [np.nan, np.nan, 5.0])
