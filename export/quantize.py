"""Reduced-precision variants of an exported float32 frame model.

* ``int8``: ONNX Runtime dynamic quantization of the learned matrix products (the GRUs' included, written out as
  MatMuls for this export): int8 weights, activations quantized per call, so no calibration set is needed and the recurrent state stays float32 between hops.
  The activation scale is per call and so shared by a batch: with several streams batched in one session, one
  stream's level slightly changes another's rounding (verification runs batch 2 and measures with that).
* ``fp16``: weights *stored* as float16 with a ``Cast`` back to float32 in front of their consumers, so the
  file halves while every operator, the I/O and the recurrent state stay float32 (ONNX Runtime folds the
  casts once at session start, so a hop costs the same as float32). A full float16 graph
  (onnxconverter-common's ``convert_float_to_float16(keep_io_types=True)``) was tried: it clamps the model's
  1e-10 magnitude epsilon to 1e-7 and the resulting model crashed ONNX Runtime 1.32's CPU provider
  (segmentation fault), and the engine must run one file on CPU and CUDA alike. Measured on the same model
  as below: SI-SDR 55.6 / 71.4 dB (random / noisy.wav) against float32.

What int8 quantizes was decided by measurement (lowlat default config after a short training run, ONNX Runtime
1.32 CPU, one thread, batch 1, 240 hops of random audio and of ``examples/noisy.wav``; SI-SDR against float32
PyTorch over the de-emphasised signal):

==========================================  ==========  ==============================
variant                                     us per hop  SI-SDR random / noisy.wav
==========================================  ==========  ==============================
float32                                     224         (reference)
MatMul, per tensor, DFT kept float32        200 (1.12x) 41.9 / 64.6 dB   <- used
MatMul, per channel, DFT kept float32       204 (1.10x) 29.2 / 48.5 dB
MatMul + Conv, per channel, DFT float32     236 (0.95x) 27.9 / 48.6 dB
MatMul incl. DFT, per channel               201         -32 / -47 dB (broken)
ONNX Runtime defaults (all ops, DFT too)    226         -33 / -47 dB (broken)
static QDQ (calibrated), MatMul + Conv      209 vs 200  14.1 / 45.9 dB
==========================================  ==========  ==============================

The DFT matrices must stay float32: 8-bit steps on a transform that every bin of every frame goes through
destroy the signal. ConvInteger is slower than float Conv on these small 1-D convolutions and ConvTranspose has
no integer kernel, so those stay float32. ONNX Runtime has no quantized GRU (only LSTM): the table above is from
when the GRUs stayed float32, and on that small model per-operator overhead, not arithmetic, dominated.

The grown default (1.32 M parameters, 5.3 MB of float32 weights, 2.9 MB of them in the main GRU) changed that: a
one-hop call streams every weight from memory, so on a CPU with a small cache it waits on bytes. The int8 export
therefore traces the GRUs written out as MatMuls (``training.models.gru_written_out``, the same arithmetic), and
those quantize too. Measured on the shipped default (stage 12) on a 2-core Intel Xeon (AVX-512), one thread,
pinned, idle, ``denoise bench --threads 1 --seconds 30``; scores on the corpus's 200 test pairs:
==========================================  ==========================  ==================================
variant                                     p50 per hop (ORT call)      PESQ-WB / STOI / SI-SDR (test)
==========================================  ==========================  ==================================
float32 (``default.onnx``, 5.8 MB)          525 us (467 us), RTF 0.066  1.919 / 0.904 / 12.52 dB
int8, GRUs as float32 GRU ops (4.3 MB)      speed-up x1.07 (export)     --
int8, GRUs written out (2.0 MB)  <- used    362 us (312 us), RTF 0.045  1.921 / 0.904 / 12.53 dB
==========================================  ==========================  ==================================
SI-SDR of the int8 model against float32: 29.5 dB on random input, 45.3 dB on ``examples/noisy.wav``. The
shipped ``default-int8.onnx`` is this export of ``default.onnx``; CPU sessions run it when no model is given.

SEGAN (full size, untrained weights, 16384-sample windows) has only convolutions: its encoder Convs quantize to
ConvInteger (file 227 -> 154 MB, SI-SDR 64-66 dB against float32), but ONNX Runtime's ConvInteger ran about
twice as slow as float Conv per window (~240-270 ms vs ~130 ms, one thread). ``--quantize int8`` on SEGAN thus
buys size, not speed; the export summary prints both timings.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.verify import ExportError

# See the measurements in the module docstring: one scale per weight tensor; lowlat's MatMuls (DFT excluded),
# SEGAN's encoder convolutions (it has no MatMul; its transposed convolutions have no integer kernel).
INT8_OP_TYPES = {"lowlat": ("MatMul",), "segan": ("Conv",)}
INT8_PER_CHANNEL = False
INTEGER_OPS = {"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"}
# Initializers with fewer elements stay float32: a Cast node costs more than the bytes it would save.
FP16_MIN_ELEMENTS = 16


def fixed_transform_nodes(model: onnx.ModelProto, fixed: list[np.ndarray]) -> list[str]:
    """Names of nodes whose constant operand equals one of the ``fixed`` (non-learned) matrices, e.g. the DFT.

    These are exact transforms that every bin of every frame goes through; quantizing them (their weights
    and the per-call quantization of their inputs) breaks the model (measured: SI-SDR below 0 dB, see the
    module docstring).
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


def quantize_int8(src: Path, dst: Path, preset: str, exclude: list[str]) -> None:
    """Dynamically quantize the float32 ``preset`` model ``src`` into ``dst`` (int8 weights).

    ``exclude``: names of nodes to keep float32 (see :func:`fixed_transform_nodes`).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if preset not in INT8_OP_TYPES:
        raise ExportError(f"int8 quantization has not been measured for the {preset!r} preset.",
                          f"export it in float32 (drop --quantize), or use one of {sorted(INT8_OP_TYPES)}.")
    # quantize_dynamic warns through the root logger that pre-processing was skipped: shape inference is all
    # it would add here, and the exported graph already carries its shapes.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(src, dst, op_types_to_quantize=list(INT8_OP_TYPES[preset]), per_channel=INT8_PER_CHANNEL,
                         weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
    finally:
        root.setLevel(level)
    if not INTEGER_OPS.intersection(n.op_type for n in onnx.load(str(dst), load_external_data=False).graph.node):
        raise ExportError(f"int8 quantization of this {preset} model changed no operator "
                          f"(it quantizes {list(INT8_OP_TYPES[preset])}).", "export it in float32 (drop --quantize).")


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
