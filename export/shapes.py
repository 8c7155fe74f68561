"""Fold the traced graph's computed reshape targets into constants (part of ``denoise export``).

The tracer records every ``reshape(b * n, c, f)`` as a chain computed at run time: ``Shape`` of a tensor,
``Gather`` of a dimension, ``Mul``, ``Unsqueeze``, ``Concat``, then ``Reshape``. In a one-hop graph whose only
dynamic axis is the batch, all of those numbers are fixed but the batch one, and ``Reshape`` can infer a single
dimension itself (``-1``). On a model of this size each such small node costs about as much to dispatch as it does
to run, so the chains are a measurable share of every hop (the lowlat default: 177 -> about 110 nodes).

:func:`fold_reshape_targets` finds each ``Reshape`` whose target is computed, evaluates the target at three batch
sizes, and where at most one entry changes with the batch, replaces the target by a constant (that entry ``-1``).
Nodes left without a consumer are removed. The folded graph is checked against the original at two batch sizes
before it is returned: both must give identical outputs, otherwise :class:`ExportError` is raised (a bug, not
user input; the export writes nothing).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.verify import ExportError, session

# Batch sizes the targets are evaluated at: an entry equal at all three is fixed; one that differs is the batch's.
PROBE_BATCHES = (1, 2, 3)


def _session(model: onnx.ModelProto):  # type: ignore[no-untyped-def]
    return session(model.SerializeToString(), optimize=False)


def _feeds(model: onnx.ModelProto, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Random float32 inputs of ``batch`` rows for every graph input (its non-batch dims are fixed)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    init = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in init:
            continue
        dims = [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]
        feeds[inp.name] = (0.1 * rng.standard_normal((batch, *dims))).astype(np.float32)
    return feeds


def _prune(model: onnx.ModelProto) -> None:
    """Remove nodes none of whose outputs is used, then initializers nothing reads (in place)."""
    needed = {o.name for o in model.graph.output}
    kept = []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    used = [t for t in model.graph.initializer if t.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(used)


def _folded_target(values: Sequence[np.ndarray]) -> np.ndarray | None:
    """The constant target for one Reshape from its values at the probe batches, or None if it cannot be one."""
    first = values[0]
    if any(v.shape != first.shape for v in values) or first.ndim != 1:
        return None
    varying = np.flatnonzero(np.any(np.stack(values) != first, axis=0))
    if (first == 0).any():  # 0 means "copy this input dimension": leave such targets alone
        return None
    if len(varying) == 0:
        return first.astype(np.int64)
    if len(varying) > 1 or (first == -1).any():
        return None
    target = first.astype(np.int64).copy()
    target[varying[0]] = -1
    return target


def fold_reshape_targets(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with computed Reshape targets made constant where the batch allows (see module doc)."""
    init = {t.name for t in model.graph.initializer}
    reshapes = [n for n in model.graph.node if n.op_type == "Reshape" and n.input[1] not in init]
    if not reshapes:
        return model
    probe = copy.deepcopy(model)
    targets = sorted({n.input[1] for n in reshapes})
    probe.graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.INT64, None) for t in targets)
    session = _session(probe)
    names = [o.name for o in session.get_outputs()]
    values: dict[str, list[np.ndarray]] = {t: [] for t in targets}
    for batch in PROBE_BATCHES:
        out = dict(zip(names, session.run(None, _feeds(model, batch, seed=batch))))
        for t in targets:
            values[t].append(np.asarray(out[t]))

    folded = copy.deepcopy(model)
    for k, node in enumerate(n for n in folded.graph.node if n.op_type == "Reshape" and n.input[1] not in init):
        target = _folded_target(values[node.input[1]])
        if target is None:
            continue
        name = f"reshape_target_{k}"
        folded.graph.initializer.append(numpy_helper.from_array(target, name=name))
        node.input[1] = name
    _prune(folded)

    before, after = _session(model), _session(folded)
    for batch in PROBE_BATCHES[:2]:
        feeds = _feeds(model, batch, seed=10 + batch)
        for a, b in zip(before.run(None, feeds), after.run(None, feeds)):
            if a.shape != b.shape or not np.array_equal(a, b):
                raise ExportError("folding the graph's reshape targets changed its output (a bug in denoise).",
                                  "export again with the previous denoise version and report this.")
    return folded
