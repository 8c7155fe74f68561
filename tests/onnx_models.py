"""Tiny ONNX frame models that carry our metadata, built with ``onnx.helper`` only (no torch).

They let the engine, ``enhance`` and ``bench`` be tested before a trained model exists:

* :func:`identity_model` — ``enhanced = frame``: with perfect-reconstruction windows the stream must come out
  equal to the input, delayed by exactly ``latency_samples``.
* :func:`gain_model` — ``enhanced = gain * frame + bias``: the bias makes the all-zero frames before the stream
  starts produce output, so streaming and offline must agree on those too.
* :func:`ema_model` — an exponential moving average over frames carried in a state tensor ``[B, 1, window]``:
  ``s' = decay * s + (1 - decay) * frame``, ``enhanced = s'``. Its output depends on history.
* :func:`lookahead_model` — a pure delay of ``lookahead`` samples (the previous frame is its state), declared as
  lookahead in the metadata: the engine must add it to the latency it reports and compensates.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from realtime.spec import INPUT_NAME, OUTPUT_NAME, ModelSpec, StateSpec

OPSET = 17
IR_VERSION = 8


def make_spec(window: int = 256, hop: int = 128, sample_rate: int = 16000, analysis: str = "sqrt_hann",
              synthesis: str = "sqrt_hann", preemphasis: float = 0.95, state: tuple[StateSpec, ...] = (),
              preset: str = "test", lookahead: int = 0) -> ModelSpec:
    return ModelSpec(preset=preset, sample_rate=sample_rate, window=window, hop=hop, lookahead=lookahead,
                     analysis_window=analysis, synthesis_window=synthesis, preemphasis=preemphasis, state=state)


def _save(graph: onnx.GraphProto, metadata: dict[str, str] | None, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="denoise-tests")
    model.ir_version = IR_VERSION
    if metadata is not None:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _io(name: str, dims: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def identity_model(path: Path, spec: ModelSpec | None = None, batch: int | str = "B",
                   metadata: dict[str, str] | None = None, graph_window: int | None = None) -> Path:
    """``enhanced = frame``. ``metadata`` replaces the spec's (e.g. a foreign model's); ``graph_window`` lets the
    graph's frame length disagree with the metadata."""
    spec = spec or make_spec()
    w = graph_window or spec.window
    graph = helper.make_graph([helper.make_node("Identity", [INPUT_NAME], [OUTPUT_NAME])], "identity",
                              [_io(INPUT_NAME, [batch, w])], [_io(OUTPUT_NAME, [batch, w])])
    return _save(graph, spec.to_metadata() if metadata is None else metadata, path)


def gain_model(path: Path, gain: float = 0.5, bias: float = 0.0, spec: ModelSpec | None = None) -> Path:
    """``enhanced = gain * frame + bias``."""
    spec = spec or make_spec()
    inits = [numpy_helper.from_array(np.array(gain, np.float32), "gain"),
             numpy_helper.from_array(np.array(bias, np.float32), "bias")]
    nodes = [helper.make_node("Mul", [INPUT_NAME, "gain"], ["scaled"]),
             helper.make_node("Add", ["scaled", "bias"], [OUTPUT_NAME])]
    graph = helper.make_graph(nodes, "gain", [_io(INPUT_NAME, ["B", spec.window])],
                              [_io(OUTPUT_NAME, ["B", spec.window])], initializer=inits)
    return _save(graph, spec.to_metadata(), path)


def ema_model(path: Path, decay: float = 0.9, spec: ModelSpec | None = None) -> Path:
    """Exponential moving average over frames carried in state ``[B, 1, window]``; ``enhanced`` is the average."""
    base = spec or make_spec()
    state = StateSpec("ema_in", "ema_out", (1, base.window))
    spec = dataclasses.replace(base, state=(state,))
    inits = [numpy_helper.from_array(np.array(decay, np.float32), "decay"),
             numpy_helper.from_array(np.array(1.0 - decay, np.float32), "rest"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [helper.make_node("Unsqueeze", [INPUT_NAME, "axis1"], ["frame3"]),
             helper.make_node("Mul", [state.input, "decay"], ["kept"]),
             helper.make_node("Mul", ["frame3", "rest"], ["new"]),
             helper.make_node("Add", ["kept", "new"], [state.output]),
             helper.make_node("Squeeze", [state.output, "axis1"], [OUTPUT_NAME])]
    graph = helper.make_graph(
        nodes, "ema",
        [_io(INPUT_NAME, ["B", spec.window]), _io(state.input, ["B", 1, spec.window])],
        [_io(OUTPUT_NAME, ["B", spec.window]), _io(state.output, ["B", 1, spec.window])],
        initializer=inits,
    )
    return _save(graph, spec.to_metadata(), path)


def lookahead_model(path: Path, lookahead: int, window: int = 64, preemphasis: float = 0.9) -> Path:
    """Delays the stream by ``lookahead`` samples: ``enhanced = (previous frame's last samples, this frame's
    first samples)``, with non-overlapping frames (hop = window, ``ones`` windows) and the previous frame as state."""
    state = StateSpec("prev_in", "prev_out", (window,))
    spec = make_spec(window, window, analysis="ones", synthesis="ones", preemphasis=preemphasis, state=(state,),
                     lookahead=lookahead)
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("tail_start", [window - lookahead]), ("tail_end", [window]), ("head_start", [0]),
              ("head_end", [window - lookahead]), ("axis1", [1]))]
    nodes = [helper.make_node("Slice", [state.input, "tail_start", "tail_end", "axis1"], ["tail"]),
             helper.make_node("Slice", [INPUT_NAME, "head_start", "head_end", "axis1"], ["head"]),
             helper.make_node("Concat", ["tail", "head"], [OUTPUT_NAME], axis=1),
             helper.make_node("Identity", [INPUT_NAME], [state.output])]
    graph = helper.make_graph(
        nodes, "lookahead",
        [_io(INPUT_NAME, ["B", window]), _io(state.input, ["B", window])],
        [_io(OUTPUT_NAME, ["B", window]), _io(state.output, ["B", window])],
        initializer=inits,
    )
    return _save(graph, spec.to_metadata(), path)
