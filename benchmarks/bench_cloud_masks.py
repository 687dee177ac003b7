"""Benchmark: the three cloud masks of ``gpp build --cloud-mask`` on the demo's planted clouds.

Generates a one-site demo world (default DE-Hai, one year, a scene every 10 days: clear,
partly cloudy, fully cloudy, cirrus, shadows and snow scenes), serves it on 127.0.0.1 and
loads its scenes with the pipeline's own code (:func:`gpp_cubes.s2.scenes.prepare_site`,
:func:`gpp_cubes.s2.cube.load_raw`, the c-factor of a streamed block), once, into memory.
Then, for every mask, in the same run:

1. **cost**: :func:`gpp_cubes.s2.cloud.cloud_masks` (what :func:`gpp_cubes.s2.cube.assemble`
   calls) on in-memory blocks of ``--block`` scenes, the block of the streamed S2 stage,
   after one warm-up call; wall and CPU seconds per scene (the blocks' model loads
   included, as in the streamed stage), the fixed cost of a call (model load:
   s2cloudless' LightGBM booster, the ONNX session) and the ratio to SCL. Optionally
   (``--e2e``) the whole S2 stage, :func:`gpp_cubes.s2.s2_features`, per mask;
2. **agreement with the planted truth** (:func:`gpp_cubes.demo.s2_render.planted_cloud_masks`:
   the cloud, cirrus and shadow discs the world drew, rasterised at the 10 m pixel centres):
   the masks of :func:`gpp_cubes.s2.cube.assemble` (cloud or shadow) per pixel over the
   valid pixels of the 1 km circle, pooled over scenes (precision, recall, IoU); the clear
   forest fraction the 1 % rule sees (:func:`gpp_cubes.reduce.clear_fraction`) against the
   same fraction with the planted truth as cloud mask (same valid, forest, circle and snow
   masks, so only the cloud mask differs); the scenes each mask keeps or drops
   (:func:`gpp_cubes.reduce.keep_clear`) against the truth; and how much of the planted
   bright block (60 m, reflectance 0.8, outside the circle) each mask calls cloud.

Two ``cloudsen12`` models, both ONNX files this script writes (no download):

* ``cloudsen12-toy``: the test suite's one-layer model (a pixel is thick cloud where B02 >
  0.2, ``gpp_cubes/demo/cloud_model.py``). Its agreement reflects the demo's spectra, not
  CloudSEN12;
* ``cloudsen12-unet``: a UNet with a MobileNetV2 encoder and the decoder of
  segmentation-models-pytorch (the CloudSEN12 UnetMobV2 family), 12 input bands, 4 classes,
  ~6.6 M parameters, **random weights**: only its cost is meaningful; its labels are noise.

In the demo world SCL is rendered from the same geometry as the truth (the 20 m SCL of the
planted discs), so SCL's agreement measures the 20 m -> 10 m resampling and the pipeline's
reading of SCL, not Sen2Cor's skill; s2cloudless and the toy model see only the reflectance.

Run (from the repository root): ``python benchmarks/bench_cloud_masks.py [--site DE-Hai]
[--start 2019-01-01 --end 2019-12-31] [--revisit 10] [--block 16] [--e2e] [--per-scene]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: UNet decoder channels of segmentation-models-pytorch (and CloudSEN12's UnetMobV2).
DECODER = (256, 128, 64, 32, 16)
#: MobileNetV2 inverted-residual settings (expansion t, channels c, repeats n, stride s).
MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))


# ------------------------------------------------------------------------------ models
class _OnnxBuilder:
    """Conv layers with He-initialised random weights (BatchNorm folded: conv + bias)."""

    def __init__(self, seed: int = 0) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.params = 0
        self.rng = np.random.default_rng(seed)
        self._n = 0

    def name(self, kind: str) -> str:
        self._n += 1
        return f"{kind}{self._n}"

    def const(self, values: np.ndarray, kind: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(kind)
        self.inits.append(numpy_helper.from_array(values, name))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int = 1, stride: int = 1,
             groups: int = 1, act: str | None = "relu6") -> str:
        from onnx import helper

        std = np.sqrt(2.0 / (k * k * cin / groups))
        w = (self.rng.normal(size=(cout, cin // groups, k, k)) * std).astype(np.float32)
        b = np.zeros(cout, np.float32)
        self.params += w.size + b.size
        out = self.name("conv")
        self.nodes.append(helper.make_node(
            "Conv", [x, self.const(w, "w"), self.const(b, "b")], [out], kernel_shape=[k, k],
            strides=[stride, stride], pads=[k // 2] * 4, group=groups))
        if act is None:
            return out
        y = self.name(act)
        if act == "relu6":
            lo, hi = self.const(np.array(0, np.float32)), self.const(np.array(6, np.float32))
            self.nodes.append(helper.make_node("Clip", [out, lo, hi], [y]))
        else:
            self.nodes.append(helper.make_node("Relu", [out], [y]))
        return y

    def op(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        out = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out


def write_unet_mobilenetv2(path: Path, n_bands: int = 12, n_classes: int = 4) -> int:
    """Write a UNet-MobileNetV2 (random weights) as ONNX; return its parameter count.

    The architecture of segmentation-models-pytorch's ``Unet("mobilenet_v2")``, which the
    CloudSEN12 UnetMobV2 models use: MobileNetV2 features (strides 2..32, last 1x1 conv to
    1280 channels), decoder blocks of nearest x2 upsampling, concatenation with the skip of
    the same stride and two 3x3 conv + ReLU, a 3x3 segmentation head. Like the real models
    it needs H and W multiples of 32.
    """
    import onnx
    from onnx import TensorProto, helper

    g = _OnnxBuilder()
    x = g.conv("x", n_bands, 32, k=3, stride=2)
    cin, skips, stride = 32, [], 2
    for t, c, n, s in MOBILENET_V2:
        if s == 2:  # the feature before each down-sampling is a UNet skip
            skips.append((x, cin))
            stride *= 2
        for i in range(n):
            y = x if t == 1 else g.conv(x, cin, cin * t)
            y = g.conv(y, cin * t, cin * t, k=3, stride=s if i == 0 else 1, groups=cin * t)
            y = g.conv(y, cin * t, c, act=None)
            x = g.op("Add", [x, y]) if (i > 0 and cin == c) else y
            cin = c
    x, cin = g.conv(x, cin, 1280), 1280
    scales = g.const(np.array([1, 1, 2, 2], np.float32), "scales")
    for out in DECODER:
        x = g.op("Resize", [x, "", scales], mode="nearest")
        if skips:
            skip, cs = skips.pop()
            x, cin = g.op("Concat", [x, skip], axis=1), cin + cs
        x = g.conv(g.conv(x, cin, out, k=3, act="relu"), out, out, k=3, act="relu")
        cin = out
    head = g.conv(x, cin, n_classes, k=3, act=None)
    g.nodes.append(helper.make_node("Identity", [head], ["scores"]))
    graph = helper.make_graph(
        g.nodes, "unet_mobilenetv2",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_bands, "H", "W"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, n_classes, "H", "W"])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return g.params


def write_toy_model(path: Path) -> Path:
    """The test suite's one-layer CloudSEN12-format model (B02 > 0.2 is thick cloud)."""
    from gpp_cubes.demo.cloud_model import write_blue_threshold_model

    return write_blue_threshold_model(path)


# ------------------------------------------------------------------------------ timing
def _clock() -> tuple[float, float]:
    """(wall, process CPU of every thread) [s]."""
    return time.perf_counter(), time.process_time()


def time_mask(method: str, model: Any, refl_blocks: list[Any], scl_blocks: list[Any],
              one_scene: tuple[Any, Any], repeats: int) -> dict[str, float]:
    """Seconds of :func:`gpp_cubes.s2.cloud.cloud_masks` per scene and per call.

    One warm-up call, then every block (the streamed stage's blocks), and ``repeats``
    one-scene calls, whose median minus the per-scene cost is the fixed cost of a call.
    """
    from gpp_cubes.s2.cloud import cloud_masks

    def run(refl: Any, scl: Any) -> None:
        cloud, shadow = cloud_masks(method, refl, scl, model)
        np.asarray(cloud.values), np.asarray(shadow.values)

    run(refl_blocks[0].isel(time=[0]), scl_blocks[0].isel(time=[0]))  # warm-up
    n = sum(r.sizes["time"] for r in refl_blocks)
    w0, c0 = _clock()
    for refl, scl in zip(refl_blocks, scl_blocks, strict=True):
        run(refl, scl)
    w1, c1 = _clock()
    calls = []
    for _ in range(repeats):
        a = _clock()
        run(*one_scene)
        calls.append(_clock()[0] - a[0])
    wall, cpu = (w1 - w0) / n, (c1 - c0) / n
    return {"wall": wall, "cpu": cpu, "call": max(float(np.median(calls)) - wall, 0.0)}


# --------------------------------------------------------------------------- agreement
@dataclass(frozen=True)
class PlantedTruth:
    """The planted clouds on the cube's pixels and the clear fractions they imply."""

    cloud: np.ndarray  # bool (time, y, x)
    shadow: np.ndarray  # bool (time, y, x)
    frac: np.ndarray  # (time) clear forest fraction, pipeline masks (valid, snow, ...)
    frac_alone: np.ndarray  # (time) same without the snow mask

    @property
    def cloud_or_shadow(self) -> np.ndarray:
        return self.cloud | self.shadow


def clear_fractions(cube: Any, cloud_or_shadow: Any) -> tuple[np.ndarray, np.ndarray]:
    """Clear forest fraction in the circle with ``cloud_or_shadow`` as the cloud mask: with
    the cube's snow mask (what the 1 % rule sees) and without it (the cloud mask alone)."""
    from gpp_cubes.reduce import clear_fraction

    region = cube["forest"] & cube["buffer"]
    base = cube["valid"] & ~cloud_or_shadow & region
    return (clear_fraction(base & ~cube["snow"], region).values,
            clear_fraction(base, region).values)


def planted_truth(cube: Any, scenes: Any) -> PlantedTruth:
    """:func:`gpp_cubes.demo.s2_render.planted_cloud_masks` on every time step of ``cube``."""
    import xarray as xr

    from gpp_cubes.demo.s2_render import planted_cloud_masks
    from gpp_cubes.s2.cube import first_items

    x, y = cube["x"].values[None, :], cube["y"].values[:, None]
    masks = [planted_cloud_masks(scenes.loc[iid], x, y) for iid in first_items(cube)]
    cloud = np.stack([m[0] for m in masks])
    shadow = np.stack([m[1] for m in masks])
    cs = xr.DataArray(cloud | shadow, dims=("time", "y", "x"))
    return PlantedTruth(cloud, shadow, *clear_fractions(cube, cs))


def agreement(cube: Any, truth: PlantedTruth, block: np.ndarray) -> dict[str, Any]:
    """Per-pixel and per-scene agreement of a cube's cloud/shadow masks with the truth."""
    from gpp_cubes.reduce import keep_clear

    valid, buffer = cube["valid"].values, cube["buffer"].values
    cloud, shadow = cube["cloud"].values, cube["shadow"].values
    region = valid & buffer[None]
    pred, true = (cloud | shadow) & region, truth.cloud_or_shadow & region
    tp, fp, fn = int((pred & true).sum()), int((pred & ~true).sum()), int((~pred & true).sum())
    out: dict[str, Any] = {
        "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
        "iou": tp / max(tp + fp + fn, 1),
        "cloud_recall": float(cloud[truth.cloud & region].mean()),
        "shadow_recall": float(shadow[truth.shadow & region].mean()),
        "block_flagged": float((cloud | shadow)[valid & block[None]].mean()),
    }
    frac, frac_alone = clear_fractions(cube, cube["cloud"] | cube["shadow"])
    for key, f, t in (("", frac, truth.frac), ("alone_", frac_alone, truth.frac_alone)):
        err = f - t
        keep, keep_t = keep_clear(f), keep_clear(t)
        out.update({
            f"{key}frac": f, f"{key}mae": float(np.nanmean(np.abs(err))),
            f"{key}max_err": float(np.nanmax(np.abs(err))),
            f"{key}bias": float(np.nanmean(err)),
            f"{key}kept": int((keep & keep_t).sum()),
            f"{key}dropped": int((~keep & ~keep_t).sum()),
            f"{key}let_through": int((keep & ~keep_t).sum()),
            f"{key}lost": int((~keep & keep_t).sum())})
    return out


# ------------------------------------------------------------------------- diagnostics
def s2cloudless_probe() -> dict[str, float]:
    """s2cloudless' cloud probability of the demo's cloud spectrum (core and 50 % rim over
    summer broadleaf) as :func:`gpp_cubes.s2.cloud.s2cloudless_masks` feeds it (L2A has no
    B10: 0) and with B10 = 0.05 (a thin value for a cloud top in the 1375 nm band)."""
    from s2cloudless import S2PixelCloudDetector

    from gpp_cubes.demo.s2_items import BAND_NAMES
    from gpp_cubes.demo.s2_render import CLOUD, spectrum
    from gpp_cubes.s2.cloud import S2CLOUDLESS_BANDS

    det = S2PixelCloudDetector(all_bands=False)
    rim = 0.5 * spectrum("broadleaf", 0.8) + 0.5 * CLOUD
    out = {}
    for name, spec in (("core", CLOUD), ("rim", rim)):
        for b10 in (0.0, 0.05):
            v = {**dict(zip(BAND_NAMES, spec, strict=True)), "B10": b10}
            x = np.array([v[b] for b in S2CLOUDLESS_BANDS], np.float32)[None, None, None]
            out[f"{name} B10={b10:g}"] = float(det.get_cloud_probability_maps(x)[0, 0, 0])
    return out


def time_tile(model_path: Path, size: int = 512, repeats: int = 3) -> tuple[float, float]:
    """Median wall and CPU seconds of a local model on one ``size`` x ``size`` tile."""
    from gpp_cubes.s2.cloud import CLOUDSEN12_BANDS, load_cloudsen12

    model = load_cloudsen12(model_path)
    tile = np.random.default_rng(0).uniform(0, 0.4, (len(CLOUDSEN12_BANDS), size, size))
    model(tile.astype(np.float32))  # warm-up
    runs = []
    for _ in range(repeats):
        a = _clock()
        model(tile.astype(np.float32))
        b = _clock()
        runs.append((b[0] - a[0], b[1] - a[1]))
    return float(np.median([r[0] for r in runs])), float(np.median([r[1] for r in runs]))


# -------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--site", default="DE-Hai")
    ap.add_argument("--start", default="2019-01-01")
    ap.add_argument("--end", default="2019-12-31")
    ap.add_argument("--revisit", type=int, default=10, help="days between S2 scenes")
    ap.add_argument("--block", type=int, default=16,
                    help="scenes per cloud_masks call (the streamed S2 stage's block)")
    ap.add_argument("--repeats", type=int, default=5, help="one-scene calls per mask")
    ap.add_argument("--world", default=None, help="world directory (default: a temp dir)")
    ap.add_argument("--e2e", action="store_true",
                    help="also time gpp_cubes.s2.s2_features (the whole S2 stage) per mask")
    ap.add_argument("--per-scene", action="store_true", help="print every scene's fractions")
    args = ap.parse_args()

    import xarray as xr

    from gpp_cubes.demo import DemoConfig, generate_world, serve_world
    from gpp_cubes.paper import RADIUS_M
    from gpp_cubes.s2 import S2_BANDS, s2_features, to_reflectance
    from gpp_cubes.s2.cube import assemble, first_items, load_raw, mtd_paths, site_forest
    from gpp_cubes.s2.nbar import BRDF_BANDS, c_factor_block_cached
    from gpp_cubes.s2.scenes import prepare_site

    load0 = os.getloadavg()
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs, "
          f"load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-cloud-") as tmp_s:
        tmp = Path(tmp_s)
        cfg = DemoConfig(sites=(args.site,), start=args.start, end=args.end,
                         s2_revisit_days=args.revisit, s1_revisit_days=48,
                         modis_step_days=32)
        world = generate_world(Path(args.world) if args.world else tmp / "world", cfg)
        toy = write_toy_model(tmp / "cloudsen12-toy.onnx")
        unet = tmp / "cloudsen12-unet.onnx"
        n_params = write_unet_mobilenetv2(unet)
        methods: list[tuple[str, str, Any]] = [
            ("scl", "scl", None), ("s2cloudless", "s2cloudless", None),
            ("cloudsen12-toy", "cloudsen12", str(toy)),
            ("cloudsen12-unet", "cloudsen12", str(unet))]
        cache = tmp / "cache"
        scenes = world.truth.s2_scenes.set_index("item_id")
        planted = world.truth.s2_planted.set_index("item_id")
        with serve_world(world) as served:
            kw = {"provider": "custom", "stac_url": served.stac_url, "cache_dir": cache}
            prep = prepare_site(args.site, args.start, args.end, **kw)
            raw = load_raw(prep, S2_BANDS, "odc", {"time": args.block},
                           precheck="assets", max_failed_fraction=1.0).compute()
            brdf = list(BRDF_BANDS)
            c = xr.DataArray(
                c_factor_block_cached(mtd_paths(raw, prep), first_items(raw), prep.grid,
                                      brdf, cache),
                dims=("time", "band", "y", "x"),
                coords={"band": brdf, "y": prep.grid.y, "x": prep.grid.x})
            forest, forest_src = site_forest(prep, world.corine_path)
            n = raw.sizes["time"]
            print(f"site {args.site} {args.start}..{args.end}: {n} scenes on the "
                  f"{raw.sizes['y']} x {raw.sizes['x']} grid (10 m); "
                  f"{len(prep.excluded)} items excluded by the scene rules")

            refl = to_reflectance(raw, S2_BANDS)[list(S2_BANDS)]
            blocks = [slice(i, i + args.block) for i in range(0, n, args.block)]
            refl_blocks = [refl.isel(time=b) for b in blocks]
            scl_blocks = [raw["SCL"].isel(time=b) for b in blocks]
            one = (refl.isel(time=[0]), raw["SCL"].isel(time=[0]))

            bl = planted.loc[first_items(raw)[0]]
            xs, ys = raw["x"].values, raw["y"].values
            block_px = ((xs[None, :] > bl["left"]) & (xs[None, :] < bl["right"])
                        & (ys[:, None] > bl["bottom"]) & (ys[:, None] < bl["top"]))

            rows: dict[str, dict[str, Any]] = {}
            truth: PlantedTruth | None = None
            snow_on_cloud = np.nan
            for label, method, model in methods:
                cost = time_mask(method, model, refl_blocks, scl_blocks, one, args.repeats)
                cube = assemble(raw, prep, S2_BANDS, c, forest, forest_src,
                                cloud_mask=method, cloud_model=model, snow=True, nbar=True,
                                radius_m=RADIUS_M, engine="odc", max_failed_fraction=1.0)
                cube = cube[["cloud", "shadow", "snow", "valid", "forest", "buffer",
                             "clear"]].compute()
                if truth is None:
                    truth = planted_truth(cube, scenes)
                    in_circle = truth.cloud & cube["valid"].values & cube["buffer"].values
                    snow_on_cloud = float(cube["snow"].values[in_circle].mean())
                rows[label] = {**cost, **agreement(cube, truth, block_px)}
                if args.e2e:
                    s2_features(args.site, args.start, args.end, corine=world.corine_path,
                                cloud_mask=method, cloud_model=model, **kw)  # warm caches
                    a = _clock()
                    s2_features(args.site, args.start, args.end, corine=world.corine_path,
                                cloud_mask=method, cloud_model=model, **kw)
                    b = _clock()
                    rows[label]["e2e_wall"], rows[label]["e2e_cpu"] = b[0] - a[0], b[1] - a[1]
                print(f"  {label}: measured", file=sys.stderr)
        assert truth is not None
        tile = time_tile(unet)
        report(rows, truth, raw, args)
        print(f"\ncloudsen12-unet ({n_params / 1e6:.2f} M parameters) on one 512 x 512 tile: "
              f"{tile[0]:.2f} s wall, {tile[1]:.2f} s CPU")
        print(f"Fmask snow test (pipeline's snow mask) on the planted cloud pixels in the "
              f"circle: {snow_on_cloud:.0%} flagged as snow")
        probe = s2cloudless_probe()
        print("s2cloudless cloud probability (threshold 0.4) of the demo's cloud spectrum: "
              + ", ".join(f"{k}: {v:.3f}" for k, v in probe.items()))
    load1 = os.getloadavg()
    print(f"finished {time.strftime('%Y-%m-%d %H:%M:%S')}, load average "
          f"{load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


def report(rows: dict[str, dict[str, Any]], truth: PlantedTruth, raw: Any,
           args: argparse.Namespace) -> None:
    """Print the cost and agreement tables."""
    from gpp_cubes.reduce import keep_clear

    base, n = rows["scl"], raw.sizes["time"]
    px = raw.sizes["y"] * raw.sizes["x"]
    print(f"\ncost per scene ({px / 1e3:.0f} k pixels, blocks of {args.block}, their model "
          "loads included; CPU = all threads of the process), after one warm-up call:")
    print(f"{'mask':<16} {'wall ms':>9} {'CPU ms':>9} {'CPU/wall':>8} {'x SCL wall':>10} "
          f"{'x SCL CPU':>9} {'call ms':>8}"
          + ("  S2 stage wall / CPU s (x SCL)" if args.e2e else ""))
    for label, r in rows.items():
        line = (f"{label:<16} {1e3 * r['wall']:9.2f} {1e3 * r['cpu']:9.2f} "
                f"{r['cpu'] / max(r['wall'], 1e-9):8.2f} {r['wall'] / base['wall']:10.0f} "
                f"{r['cpu'] / max(base['cpu'], 1e-9):9.0f} {1e3 * r['call']:8.1f}")
        if args.e2e:
            line += (f"  {r['e2e_wall']:.2f} / {r['e2e_cpu']:.2f} "
                     f"({r['e2e_wall'] / base['e2e_wall']:.2f} / "
                     f"{r['e2e_cpu'] / base['e2e_cpu']:.2f})")
        print(line)
    print("(call ms: fixed cost of one cloud_masks call beyond its scenes, i.e. loading "
          "the model; paid once per block)")

    print(f"\nper pixel, cloud or shadow, valid pixels of the 1 km circle, {n} scenes pooled:")
    print(f"{'mask':<16} {'precision':>9} {'recall':>7} {'IoU':>6} {'cloud rec':>9} "
          f"{'shadow rec':>10} {'block':>6}")
    for label, r in rows.items():
        print(f"{label:<16} {r['precision']:9.3f} {r['recall']:7.3f} {r['iou']:6.3f} "
              f"{r['cloud_recall']:9.3f} {r['shadow_recall']:10.3f} "
              f"{r['block_flagged']:6.2f}")
    print("(cloud rec / shadow rec: share of the planted cloud (incl. cirrus) / shadow "
          "pixels the mask calls cloud / shadow; block: share of the planted 60 m bright "
          "block, outside the circle, called cloud or shadow)")

    for key, title, tr in (
            ("", "with the pipeline's snow mask (what the 1 % rule sees)", truth.frac),
            ("alone_", "the cloud mask alone (no snow mask)", truth.frac_alone)):
        kept = int(keep_clear(tr).sum())
        print(f"\nclear forest fraction in the circle, mask - truth, {title}; the truth "
              f"keeps {kept} scenes, drops {n - kept}:")
        print(f"{'mask':<16} {'MAE':>6} {'max':>6} {'bias':>7} {'kept':>5} {'dropped':>7} "
              f"{'+cloudy':>7} {'-clear':>6}")
        for label, r in rows.items():
            print(f"{label:<16} {r[key + 'mae']:6.3f} {r[key + 'max_err']:6.3f} "
                  f"{r[key + 'bias']:+7.3f} {r[key + 'kept']:5d} {r[key + 'dropped']:7d} "
                  f"{r[key + 'let_through']:7d} {r[key + 'lost']:6d}")
    print("(kept/dropped: scenes where the mask's 1 % rule decision is the truth's; "
          "+cloudy: kept although the truth drops it; -clear: dropped although the truth "
          "keeps it)")
    if args.per_scene:
        dates = [str(t)[:10] for t in raw["time"].values]
        print("\nclear forest fraction per scene (pipeline masks): truth, then each mask")
        print(f"{'date':<11} {'truth':>6} " + " ".join(f"{k[:14]:>14}" for k in rows))
        for i, d in enumerate(dates):
            print(f"{d:<11} {truth.frac[i]:6.3f} "
                  + " ".join(f"{r['frac'][i]:14.3f}" for r in rows.values()))
    print("\nNOTE: the cloudsen12 rows measure COST only. cloudsen12-toy is the tests' "
          "one-layer B02 > 0.2 rule and cloudsen12-unet has random weights (its labels "
          "are noise): neither says anything about the accuracy of CloudSEN12 itself.")


if __name__ == "__main__":
    main()
