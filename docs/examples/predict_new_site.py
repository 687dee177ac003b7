"""GPP at a site without a flux tower, checked against the demo world's planted truth.

The demo world knows the GPP it planted at every site (``truth.daily``), so it can answer the
question a new-site prediction raises: how close is ``gpp predict`` where there is no
FLUXNET file at all? This script

1. generates a demo world of ``--sites`` sites (the ``gpp demo`` world, same seed and budget),
2. builds cubes with targets for all sites but the last, and trains RNN/GRU/LSTM on them
   (``gpp demo``'s pipeline),
3. builds the last site as a bare latitude/longitude without targets, projected onto the
   training build's PCA (``gpp build --no-targets --at LAT,LON,XX-New --pca CUBES``),
4. predicts it with each trained run (``gpp predict``) and prints the NRMSE against the
   planted noise-free GPP, on the test years and on every predicted day.

Run (offline, about 10 min on 2 cores with ``--quick``)::

    python docs/examples/predict_new_site.py --out gpp-new-site --quick
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpp-new-site"))
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()

    from gpp_cubes.batch import build_sites
    from gpp_cubes.cli.build_cmd import demo_stac_identity
    from gpp_cubes.demo import demo_world_config, generate_world, serve_world
    from gpp_cubes.sites.catalog import point_site
    from gpp_models.runtime import configure_process

    out = args.out.resolve()
    config = demo_world_config(args.sites, args.seed, args.quick)
    world = generate_world(out / "world", config)
    *trained, new = world.sites
    new_id = "XX-New"
    with serve_world(world) as served:
        common = {"start": config.start, "end": config.end, "stac_url": served.stac_url,
                  "stac_identity": demo_stac_identity(world),
                  "provider": "planetary-computer", "corine_source": str(world.corine_path)}
        build_sites([s.site_id for s in trained], out / "cubes",
                    fluxnet_dir=str(world.fluxnet_dir), **common)
        build_sites([point_site(new.latitude, new.longitude, site_id=new_id)],
                    out / "new-site", targets=False, pca_from=out / "cubes", **common)

    configure_process()
    from gpp_models.evaluate import nrmse
    from gpp_models.pipeline import run_pipeline
    from gpp_models.predict import predict_run

    outputs = run_pipeline(out / "cubes" / "features.zarr", out / "models", quick=args.quick,
                           seed=args.seed)
    truth = world.truth.daily
    truth = truth[truth["site"] == new.site_id].set_index("time")
    gpp_col = "gpp_true"  # the planted GPP before measurement noise [g C m-2 d-1]
    rows = []
    for key, run in sorted(outputs.items()):
        if not key.startswith("run_"):
            continue
        paths = predict_run(run, out / "new-site" / f"{new_id}.zarr",
                            out / "predictions" / key[4:])
        pred = pd.read_csv(paths["csv"], parse_dates=["time"]).dropna(subset=["gpp_pred"])
        pred = pred.set_index("time")
        obs = truth.reindex(pd.DatetimeIndex(pd.to_datetime(pred.index)))[gpp_col]
        test = pred.index.year >= 2019
        rows.append({"model": key[4:].upper(), "days": len(pred),
                     "nrmse_test_years": nrmse(obs.values[test], pred["gpp_pred"].values[test]),
                     "nrmse_all_days": nrmse(obs.values, pred["gpp_pred"].values)})
    table = pd.DataFrame(rows)
    print(f"new site: {new.site_id} at ({new.latitude:.4f}, {new.longitude:.4f}) built as "
          f"{new_id} without targets; truth column {gpp_col!r}; trained on "
          f"{', '.join(s.site_id for s in trained)}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    assert np.isfinite(table[["nrmse_test_years", "nrmse_all_days"]].values).all()


if __name__ == "__main__":
    main()
