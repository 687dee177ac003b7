"""Re-signing expired Planetary Computer SAS tokens at load time (issue 7), offline."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pystac

from gpp_cubes.stac.load import load_items
from gpp_cubes.stac.providers import resign_expired, sas_expiry

BLOB = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/32/U/NB/B04.tif"
OLD = "st=2020-01-01T00%3A00%3A00Z&se=2020-01-02T00%3A00%3A00Z&sp=rl&sv=2021-06-08&sig=old"


class FakeSigner:
    """Stands in for planetary_computer.sign: signs only unsigned hrefs, records calls."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def __call__(self, item: pystac.Item) -> pystac.Item:
        self.seen.append([a.href for a in item.assets.values()])
        out = item.clone()
        for a in out.assets.values():
            if a.href.startswith("https://") and "?" not in a.href:  # as planetary_computer
                a.href += "?se=2099-01-01T00%3A00%3A00Z&sig=new"
        return out


def _item(href_b04: str, href_b08: str) -> pystac.Item:
    it = pystac.Item("S2A_X", None, None, datetime(2020, 1, 1, tzinfo=UTC), {})
    it.add_asset("B04", pystac.Asset(href_b04))
    it.add_asset("B08", pystac.Asset(href_b08))
    return it


def test_sas_expiry_parses_se():
    assert sas_expiry(f"{BLOB}?{OLD}") == datetime(2020, 1, 2, tzinfo=UTC)
    assert sas_expiry(BLOB) is None
    assert sas_expiry("/local/B04.tif") is None
    assert sas_expiry(f"{BLOB}?se=garbage&sig=x") is None


def test_expired_signature_is_stripped_and_signed_again():
    fresh = "se=2099-01-01T00%3A00%3A00Z&sig=ok"
    item = _item(f"{BLOB}?{OLD}", f"{BLOB.replace('B04', 'B08')}?{fresh}")
    signer = FakeSigner()
    out = resign_expired(item, signer, now=datetime(2024, 5, 1, tzinfo=UTC))
    # the signer got a copy whose expired href has no query (else it would skip it)
    assert signer.seen == [[BLOB, f"{BLOB.replace('B04', 'B08')}?{fresh}"]]
    assert out.assets["B04"].href == f"{BLOB}?se=2099-01-01T00%3A00%3A00Z&sig=new"
    assert out.assets["B08"].href.endswith("sig=ok")  # still valid: untouched
    assert item.assets["B04"].href.endswith("sig=old")  # the input is not modified


def test_valid_or_unsigned_items_are_not_resigned():
    signer = FakeSigner()
    item = _item(f"{BLOB}?se=2030-01-01T00%3A00%3A00Z&sig=a", "/data/B08.tif")
    assert resign_expired(item, signer, now=datetime(2024, 5, 1, tzinfo=UTC)) is item
    # a token expiring within the margin is renewed before the load starts
    soon = datetime(2030, 1, 1, tzinfo=UTC).timestamp() - 60
    out = resign_expired(item, signer, now=datetime.fromtimestamp(soon, UTC))
    assert out.assets["B04"].href.endswith("sig=new") and len(signer.seen) == 1


def test_load_items_applies_the_resigning_hook(mini_world):
    """load_items calls ``sign`` on every item before reading; local items pass through."""
    from functools import partial

    signer = FakeSigner()
    ds = load_items(mini_world.items[:1], ["B04"], mini_world.grid, precheck=False,
                    sign=partial(resign_expired, sign=signer)).compute()
    assert signer.seen == []  # nothing expired: never signed
    assert int(ds.B04.values.min()) > 0 and np.isfinite(ds.B04.values).all()
