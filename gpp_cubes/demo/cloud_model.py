"""A tiny CloudSEN12-format model for the demo world: an ONNX file written here, no download.

Used by the tests and ``benchmarks/bench_cloud_masks.py`` (it needs the ``onnx`` package of
the dev extras) to run ``--cloud-mask cloudsen12`` without the real weights.

The model is one 1x1 convolution on the 12 :data:`gpp_cubes.s2.cloud.CLOUDSEN12_BANDS`:
class scores (clear, thick, thin, shadow) = (``CLEAR_SCORE``, B02, -1, -1), so its argmax
marks a pixel "thick cloud" exactly where the blue reflectance exceeds ``CLEAR_SCORE``. The
demo world's planted clouds have B02 0.55 (core) and ~0.3 (rim, half cloud); its forests,
grass and cirrus-veiled pixels stay below 0.12 (``gpp_cubes.demo.s2_render``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Score of the clear class: blue reflectance above it is cloud [1].
CLEAR_SCORE = 0.2


def write_blue_threshold_model(path: Path) -> Path:
    """Write the model as ONNX (opset 13) to ``path`` and return it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from gpp_cubes.s2.cloud import CLOUDSEN12_BANDS

    w = np.zeros((4, len(CLOUDSEN12_BANDS), 1, 1), np.float32)
    w[1, CLOUDSEN12_BANDS.index("B02"), 0, 0] = 1.0
    b = np.array([CLEAR_SCORE, 0.0, -1.0, -1.0], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["scores"])], "blue_threshold",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 12, "H", "W"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4, "H", "W"])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path
