"""Recover the trainable generator from an exported float32 frame model (``denoise train --init model.onnx``).

The shipped default model is an ONNX file; its training checkpoint is not shipped. To fine-tune it (or any
export whose checkpoint is gone) the generator's weights are read back out of the graph. The exporter rewrites
them on the way in (a Linear's weight is transposed into a MatMul, a GRU's gates are reordered and its biases
concatenated, PReLU slopes are reshaped, weights that the generator concatenates are folded into one constant),
so the initializers cannot be copied by name. Instead every rewrite is *observed*: the generator the metadata
describes is traced twice with the same exporter, once with every weight element set to zero and once set to its
own index + 1 and once to minus that (exact in float32 below 2**24 elements). An initializer element that is a
positive integer in the first trace and its negative in the second is a copy of weight element ``value - 1``
(constants are equal in both traces); reading those positions of the file's initializer recovers that element.
Initializers are matched by the node and input slot that read them, not by name (the exporter merges initializers
with equal contents, e.g. two layers still at their initial values, and reads the copies through ``Identity``). Whatever the exporter does that only
moves weights is inverted exactly.

The result is checked twice before it is returned: the recovered weights' SHA-256 must equal the file's
``weights_sha256`` (exact), and ONNX Runtime on the file must match the recovered generator's step loop over
a few seconds of audio. A file that is not ours, reduced precision (int8/fp16 weights are rounded), edited or
exported by a denoise whose graph differs is refused with a :class:`ModelError` that says what to do.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from export.onnx_export import DEFAULT_OPSET, trace, weights_sha256
from export.verify import FP32_ATOL, model_frames, run_hops, session, torch_references, verification_signals
from realtime.errors import ConfigError, DenoiseError, ModelError
from realtime.spec import ModelSpec, parse_metadata
from training.models import FrameGenerator, build_generator, config_dict

# Weight indices are stored as float32 values index + 1: exact up to 2**24.
MAX_RECOVERABLE_ELEMENTS = 2 ** 24 - 1
# Hops of audio the recovered generator is compared with the file over (about 2 s at 16 kHz, hop 128).
CHECK_HOPS = 250
_FIX = "initialise from the run's checkpoint (`--init RUN_OR_CKPT.pt`) instead, or re-export it with this denoise."


def _load(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist.", "give the path of an .onnx file written by "
                         "`denoise export` (the shipped one is realtime/models/default.onnx).")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others for non-ONNX files
        raise ModelError(f"{path} is not a readable ONNX file ({type(exc).__name__}).",
                         "give an .onnx file written by `denoise export`.") from None


def _opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return DEFAULT_OPSET


def _weight_tensors(generator: FrameGenerator) -> dict[str, torch.Tensor]:
    """The generator's state tensors (parameters and persistent buffers) that make up the exported weights."""
    return {name: t for name, t in generator.state_dict().items() if t.is_floating_point()}


def _readers(model: onnx.ModelProto) -> dict[str, list[tuple[str, int]]]:
    """Initializer name -> the (first output of the node, input slot) pairs that read it. The exporter stores
    equal tensors once and hands the copies out through ``Identity`` nodes; a reader through those counts."""
    source = {t.name: t.name for t in model.graph.initializer}
    for node in model.graph.node:  # topologically sorted: an alias is known before it is read
        if node.op_type == "Identity" and node.input[0] in source:
            source[node.output[0]] = source[node.input[0]]
    out: dict[str, list[tuple[str, int]]] = {}
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in source:
            continue
        for slot, name in enumerate(node.input):
            if name in source:
                out.setdefault(source[name], []).append((node.output[0], slot))
    return out


def _trace_ids(generator: FrameGenerator, opset: int, sign: float, tmp: Path
               ) -> tuple[dict[str, np.ndarray], dict[str, list[tuple[str, int]]]]:
    """Trace ``generator`` with weight element k set to ``sign * (k + 1)``: (initializer arrays, their readers)."""
    with torch.no_grad():
        start = 0
        for t in _weight_tensors(generator).values():
            t.copy_(sign * torch.arange(start + 1, start + 1 + t.numel(), dtype=torch.float64).reshape(t.shape))
            start += t.numel()
    model = trace(generator, tmp / f"ids{sign:+g}.onnx", opset, fold=False)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}, _readers(model)


def source_indices(generator: FrameGenerator, opset: int) -> dict[tuple[str, int], np.ndarray]:
    """For each (reading node, input slot) of ``generator``'s export whose initializer holds weights: per element,
    the flat index of the weight element it copies (``_weight_tensors`` order), or -1 where it holds none."""
    total = sum(t.numel() for t in _weight_tensors(generator).values())
    if total > MAX_RECOVERABLE_ELEMENTS:
        raise ModelError(f"the generator has {total:,} weights; reading them back from ONNX works up to "
                         f"{MAX_RECOVERABLE_ELEMENTS:,}.", _FIX)
    probe = copy.deepcopy(generator).cpu().float().eval()
    with tempfile.TemporaryDirectory(prefix="denoise-recover-") as folder:
        pos, readers = _trace_ids(probe, opset, 1.0, Path(folder))
        neg, neg_readers = _trace_ids(probe, opset, -1.0, Path(folder))
    if readers != neg_readers:
        raise ModelError("tracing the generator twice gave two different graphs (a bug in denoise).", _FIX)
    out = {}
    for name, values in pos.items():
        if values.dtype != np.float32 or name not in readers:
            continue
        is_weight = (values >= 1) & (neg[name] == -values) & (values == np.round(values))
        if is_weight.any():
            index = np.where(is_weight, values.astype(np.int64) - 1, -1)
            out.update({reader: index for reader in readers[name]})
    return out


def _latent_removed(spec: ModelSpec, md: dict[str, str]) -> bool:
    return spec.preset == "segan" and str(md.get("latent", "")).startswith("removed")


def _build(spec: ModelSpec, md: dict[str, str], source: str) -> FrameGenerator:
    if spec.precision != "fp32":
        raise ModelError(f"{source} holds {spec.precision} weights, which are rounded copies of the trained ones.",
                         "initialise from the float32 export of the same checkpoint (`denoise export` without "
                         "--quantize/--fp16) or from the checkpoint itself.")
    try:
        config = json.loads(md["config"])
    except (KeyError, ValueError):
        raise ModelError(f"{source} does not record its generator config (metadata 'config').", _FIX) from None
    if _latent_removed(spec, md):
        config["z_channels"] = 0  # the export folded the latent out (z = zeros): the file holds no latent weights
    try:
        return build_generator(spec.preset, config)
    except (ConfigError, TypeError, ValueError) as exc:
        raise ModelError(f"{source}: its generator config cannot be built by this denoise ({exc}).", _FIX) from None


def _check_parity(path: Path, generator: FrameGenerator, spec: ModelSpec) -> float:
    """Max abs difference of ONNX Runtime on ``path`` vs the recovered generator's step loop (CHECK_HOPS hops)."""
    n = CHECK_HOPS * spec.hop
    audio, _ = verification_signals(n, spec.sample_rate)
    frames = model_frames(generator, audio, spec.preemphasis)
    ref_step, _, _ = torch_references(generator, frames)
    got, _, _ = run_hops(session(path), spec, frames.numpy())
    return float(np.max(np.abs(got - ref_step)))


def generator_from_onnx(path: Path) -> tuple[FrameGenerator, dict[str, Any]]:
    """Rebuild the generator an exported fp32 ``path`` holds; returns (generator in eval mode, metadata).

    The metadata mirrors a checkpoint's: ``preset``, ``generator_config``, ``step`` (the file's ``train_step``),
    ``metrics`` and ``path``. A SEGAN export holds no latent (it was folded out as zeros), so its generator comes
    back with ``z_channels = 0``, which computes exactly what the file does. Raises :class:`ModelError` for any file this cannot be done for exactly.
    """
    path = Path(path)
    model = _load(path)
    source = str(path)
    md = {p.key: p.value for p in model.metadata_props}
    spec = parse_metadata(md, source=source)
    generator = _build(spec, md, source).eval()
    try:
        indices = source_indices(generator, _opset(model))
    except DenoiseError:
        raise
    except Exception as exc:  # noqa: BLE001 - the tracer failing on a config this version builds differently
        raise ModelError(f"{source}: its generator could not be traced by this denoise "
                         f"({type(exc).__name__}: {str(exc)[:200]}).", _FIX) from None
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    stored = {reader: arrays[name] for name, readers in _readers(model).items() for reader in readers}
    tensors = _weight_tensors(generator)
    total = sum(t.numel() for t in tensors.values())
    flat = np.zeros(total, dtype=np.float32)
    seen = np.zeros(total, dtype=bool)
    for (node, slot), index in indices.items():
        values = stored.get((node, slot))
        name = f"input {slot} of the node writing {node!r}"
        if values is None or values.shape != index.shape or values.dtype != np.float32:
            got = "missing" if values is None else f"{values.dtype} {list(values.shape)}"
            raise ModelError(f"{source}: {name} is {got}, the generator its metadata describes exports it as "
                             f"float32 {list(index.shape)}.", _FIX)
        mask = index >= 0
        where, what = index[mask], values[mask]
        if (seen[where] & (flat[where] != what)).any():
            raise ModelError(f"{source}: {name} disagrees with another copy of the same weights.",
                             "the file was edited after export; " + _FIX)
        flat[where] = what
        seen[where] = True
    if not seen.all():
        raise ModelError(f"{source}: {int((~seen).sum()):,} of {total:,} generator weights are not in the graph.",
                         _FIX)
    start = 0
    with torch.no_grad():
        for t in tensors.values():
            t.copy_(torch.from_numpy(flat[start:start + t.numel()]).reshape(t.shape))
            start += t.numel()
    # the hash is of the generator as trained; a SEGAN's folded latent is not in the file, so only parity is checked
    hashed = spec.weights_sha256 is not None and not _latent_removed(spec, md)
    if hashed and weights_sha256(generator) != spec.weights_sha256:
        raise ModelError(f"{source}: the weights read back do not hash to the file's weights_sha256.",
                         "the file was edited after export; " + _FIX)
    err = _check_parity(path, generator, spec)
    if not err <= FP32_ATOL:
        raise ModelError(f"{source}: the recovered generator differs from the file's graph by {err:.3g} over "
                         f"{CHECK_HOPS} hops (tolerance {FP32_ATOL:g}).", _FIX)
    meta: dict[str, Any] = {
        "preset": spec.preset,
        "generator_config": config_dict(generator.cfg),
        "step": spec.train_step,
        "metrics": dict(spec.metrics),
        "path": source,
    }
    return generator, meta
