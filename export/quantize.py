"""Reduced-precision variants of an exported float32 frame model.

* ``int8``: ONNX Runtime dynamic quantization of the learned matrix products. Weights are stored as int8 (per
  output channel), activations are quantized per call, so no calibration set is needed and the recurrent
  state stays float32 between hops. What is quantized, and why, is decided by measurement (see
  ``INT8_OP_TYPES`` and :func:`fixed_transform_nodes`).
* ``fp16``: weights *stored* as float16 with a ``Cast`` back to float32 in front of their consumers, so the
  file halves and every operator still computes in float32. A full float16 graph would need float16 kernels
  that ONNX Runtime's x86 CPU provider lacks for this model's operators (GRU, ConvTranspose, PRelu), and the
  engine must run the same file on CPU and CUDA; ONNX Runtime folds the casts once at session start.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.verify import ExportError

# Dynamic quantization of MatMul (the bottleneck projections) pays for its per-call activation quantization;
# ConvInteger on the small 1-D convolutions measured slower than float Conv and ConvTranspose has no integer
# kernel in ONNX Runtime. The GRU has no dynamically quantized form there either (only LSTM), so it stays
# float32.
INT8_OP_TYPES = ("MatMul",)
# Weights smaller than this are kept in float16 storage as float32: a Cast node costs more than it saves.
FP16_MIN_ELEMENTS = 16


def fixed_transform_nodes(model: onnx.ModelProto, fixed: list[np.ndarray]) -> list[str]:
    """Names of nodes whose constant operand equals one of the ``fixed`` (non-learned) matrices, e.g. the DFT.

    These are exact transforms: quantizing a DFT to 8 bits puts its rounding error on every frequency bin of
    every frame, which costs more SI-SDR than it saves time (measured; see the module docstring of
    ``export.onnx_export``).
    """
    if not fixed:
        return []
    keyed = {}
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            keyed[init.name] = numpy_helper.to_array(init)
    matches = set()
    for name, arr in keyed.items():
        if any(arr.shape == f.shape and np.array_equal(arr, f) for f in fixed):
            matches.add(name)
    return [n.name for n in model.graph.node if matches.intersection(n.input)]


def quantize_int8(src: Path, dst: Path, exclude: list[str]) -> None:
    """Dynamically quantize the float32 model ``src`` into ``dst`` (int8 weights, per channel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic warns through the root logger that pre-processing was skipped: shape inference is all
    # it would add here, and the exported graph already carries its shapes.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(src, dst, op_types_to_quantize=list(INT8_OP_TYPES), per_channel=True,
                         weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
    finally:
        root.setLevel(level)


def cast_weights_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Store every float32 initializer of ``FP16_MIN_ELEMENTS`` or more as float16, cast back to float32.

    Graph inputs, outputs and all arithmetic stay float32 (``[B, window]`` frames in and out, float32 state).
    Values outside float16's range would become infinite; they are refused rather than silently clipped.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    casts = []
    keep = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            keep.append(init)
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < FP16_MIN_ELEMENTS:
            keep.append(init)
            continue
        if np.max(np.abs(arr)) > np.finfo(np.float16).max:
            raise ExportError(f"weight {init.name} holds values up to {np.max(np.abs(arr)):.3g}, beyond float16's "
                              f"range ({np.finfo(np.float16).max:g}).", "export in float32 (drop --fp16).")
        half = numpy_helper.from_array(arr.astype(np.float16), name=f"{init.name}__fp16")
        keep.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT,
                                      name=f"{init.name}__to_fp32"))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)  # casts first keeps the node list topologically sorted
    return out
