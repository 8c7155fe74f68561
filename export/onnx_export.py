"""Export a trained generator to a self-describing ONNX frame model (``denoise export``).

The graph is one streaming hop: ``frame`` float32 ``[B, window]`` plus the recurrent state inputs named by
``FrameGenerator.state_spec()`` -> ``enhanced`` float32 ``[B, window]`` plus the state outputs, batch axis ``B``
dynamic everywhere, so a plain ONNX Runtime session keeps the model's memory between hops by feeding the
state outputs back. SEGAN is stateless and exports one call per window; its latent ``z`` is zeros at
inference, which is exactly the same as removing the latent's input channels from the first decoder layer,
so the graph has no latent at all (metadata ``latent``) and no random operator.

The file describes itself in ``metadata_props`` (see ``realtime/spec.py``): the streaming contract
(``ModelSpec.to_metadata()``) plus provenance (``train_step``, validation ``metrics``, ``weights_sha256`` of
the float32 checkpoint weights, ``denoise_version``, ``precision``, the generator ``config``). It is written
to a temporary file next to ``output``, checked, and only then renamed over ``output``: a failed check leaves
no file behind, and an existing file at ``output`` is untouched.

Checkpoints from older versions: a ``generator_config`` without a key added since takes that key's current
default (the weights then decide: a shape mismatch is refused by ``training.checkpoint.load_generator``); a
checkpoint with another ``format_version`` is refused there, naming the version it has and the one read.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from export.quantize import cast_weights_fp16, fixed_transform_nodes, quantize_int8
from export.shapes import fold_reshape_targets
from export.verify import ExportError, VerifyReport, verify_export
from realtime.errors import ConfigError
from realtime.spec import INPUT_NAME, OUTPUT_NAME, ModelSpec, StateSpec, weights_digest
from training.checkpoint import denoise_version
from training.models import (
    FrameGenerator,
    LowLatGenerator,
    SeganGenerator,
    build_generator,
    config_dict,
    count_parameters,
)

DEFAULT_OPSET = 17
# The range checked (export, int8, parity) for both presets; at 10 and below the exporter falls back on
# deprecated operator forms, and 20 is the newest opset PyTorch's TorchScript exporter writes.
MIN_OPSET, MAX_OPSET = 11, 20
DEFAULT_PREEMPHASIS = 0.95
# Batch size the graph is traced with. Verification runs batch 2 and the engine batch 1, so a batch size
# baked into a Reshape by mistake is caught rather than matching by coincidence.
TRACE_BATCH = 3


@dataclass
class ExportReport:
    """What one export produced: the file, its spec, and what verification measured (None with --no-verify)."""

    path: Path
    spec: ModelSpec
    parameters: int
    size_bytes: int
    verify: VerifyReport | None


class _StepGraph(nn.Module):
    """The module traced into the graph: one hop of the generator (``FrameGenerator.step``)."""

    def __init__(self, generator: FrameGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, frame: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.generator.step(frame, *state)


def without_latent(generator: FrameGenerator) -> FrameGenerator:
    """A SEGAN generator whose latent is folded away: same output as ``z = 0``, no latent channels.

    The first decoder layer is a transposed convolution over ``[bottleneck, z]`` channels; with ``z = 0`` the
    ``z`` rows of its weight contribute nothing, so dropping them is exact. Other generators are returned as is.
    """
    if not isinstance(generator, SeganGenerator) or generator.cfg.z_channels == 0:
        return generator
    values = {**config_dict(generator.cfg), "z_channels": 0}
    folded = build_generator("segan", values)
    state = dict(generator.state_dict())
    state["dec.0.weight"] = state["dec.0.weight"][:generator.cfg.channels[-1]]
    folded.load_state_dict(state)
    return folded.eval()


def preemphasis_coef(meta: Mapping[str, Any]) -> float:
    """The pre-emphasis the generator was trained with: ``config.loss.preemphasis`` of the checkpoint.

    A checkpoint without a training config (or without the key) was trained with the default, 0.95.
    """
    config = meta.get("config") or {}
    loss = config.get("loss") if isinstance(config, Mapping) else None
    value = loss.get("preemphasis", DEFAULT_PREEMPHASIS) if isinstance(loss, Mapping) else DEFAULT_PREEMPHASIS
    try:
        coef = float(value)
    except (TypeError, ValueError):
        coef = math.nan
    if not 0.0 <= coef < 1.0:
        raise ConfigError(f"the checkpoint's loss.preemphasis is {value!r}, expected a number in [0, 1).",
                          "the checkpoint's training config is damaged; use another checkpoint.")
    return coef


def _finite_metrics(metrics: Any) -> dict[str, float]:
    """Numeric validation metrics only (the metadata contract stores a JSON object of floats)."""
    if not isinstance(metrics, Mapping):
        return {}
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[str(key)] = float(value)
    return out


def weights_sha256(generator: FrameGenerator) -> str:
    """SHA-256 of the generator's float32 weights in ``state_dict`` order (identifies the checkpoint)."""
    return weights_digest([t.detach().to("cpu", torch.float32).contiguous().numpy()
                           for t in generator.state_dict().values()])


def build_spec(generator: FrameGenerator, meta: Mapping[str, Any], precision: str = "fp32",
               opset: int = DEFAULT_OPSET) -> ModelSpec:
    """The :class:`ModelSpec` an export of ``generator`` (from checkpoint ``meta``) carries."""
    extra = {"onnx_opset": str(opset)}
    if isinstance(generator, SeganGenerator):
        extra["latent"] = (f"removed: z = zeros ({generator.cfg.z_channels} channels folded out of the first "
                           "decoder layer)" if generator.cfg.z_channels else "none (z_channels = 0)")
    if meta.get("path"):
        extra["checkpoint"] = Path(str(meta["path"])).name
    if meta.get("denoise_version"):
        extra["trained_with"] = str(meta["denoise_version"])
    step = meta.get("step")
    return ModelSpec(
        preset=generator.preset,
        sample_rate=generator.sample_rate,
        window=generator.window,
        hop=generator.hop,
        lookahead=generator.lookahead,
        analysis_window=generator.analysis_window,
        synthesis_window=generator.synthesis_window,
        preemphasis=preemphasis_coef(meta),
        state=tuple(StateSpec(i, o, tuple(int(d) for d in s)) for i, o, s in generator.state_spec()),
        train_step=int(step) if isinstance(step, int) and step >= 0 else None,
        metrics=_finite_metrics(meta.get("metrics")),
        weights_sha256=weights_sha256(generator),
        precision=precision,
        extra=extra,
    )


def model_metadata(generator: FrameGenerator, spec: ModelSpec) -> dict[str, str]:
    """``metadata_props`` of an export: the spec plus the exporting version and the generator config."""
    md = spec.to_metadata()
    md["denoise_version"] = denoise_version()
    md["config"] = json.dumps(config_dict(generator.cfg), sort_keys=True)
    return md


def _constants_to_initializers(model: onnx.ModelProto) -> None:
    """Turn ``Constant`` nodes into initializers (in place), so quantization and the fp16 cast see every
    constant tensor (the DFT matrices are exported as Constant nodes) and no tensor is stored twice."""
    kept = []
    for node in model.graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = numpy_helper.to_array(node.attribute[0].t)
            model.graph.initializer.append(numpy_helper.from_array(tensor, name=node.output[0]))
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)


def trace(generator: FrameGenerator, path: Path, opset: int, fold: bool = True) -> onnx.ModelProto:
    """Trace one hop of ``generator`` into ONNX at ``path`` and return the loaded, normalised model.

    ``fold`` False skips folding the reshape targets (which runs the graph): the weights' initializers are the
    same either way, and ``export.recover`` traces generators whose weights are indices, not numbers to run."""
    specs = generator.state_spec()
    # A private RNG: tracing must not move the caller's global random state (e.g. mid-training).
    frame = 0.1 * torch.randn(TRACE_BATCH, generator.window, generator=torch.Generator().manual_seed(0))
    state = tuple(torch.zeros(TRACE_BATCH, *shape) for _, _, shape in specs)
    names_in = [INPUT_NAME, *(i for i, _, _ in specs)]
    names_out = [OUTPUT_NAME, *(o for _, o, _ in specs)]
    with warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (nn.GRU -> ONNX GRU); its GRU batch-size warning is about
        # graphs without an initial-state input, and every state here is an input.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*", category=DeprecationWarning)
        # nn.GRU's own input-size checks trip the tracer; shapes are fixed per export, so they are constants.
        # Tracer warnings from the generator itself stay visible: they would mean a baked-in shape.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torch\.nn\.modules\.rnn")
        with torch.no_grad():
            torch.onnx.export(_StepGraph(generator), (frame, *state), str(path), input_names=names_in,
                              output_names=names_out, dynamic_axes={n: {0: "B"} for n in names_in + names_out},
                              opset_version=opset, do_constant_folding=True, dynamo=False)
    model = onnx.load(str(path))
    _constants_to_initializers(model)
    return fold_reshape_targets(model) if fold else model


def _check_options(opset: int, quantize: str | None, fp16: bool) -> str:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"--opset {opset} is outside the supported {MIN_OPSET}..{MAX_OPSET}.",
                          f"use --opset {DEFAULT_OPSET} (the default).")
    if quantize not in (None, "int8"):
        raise ConfigError(f"--quantize {quantize!r} is not supported.", "use --quantize int8, or omit it.")
    if quantize and fp16:
        raise ConfigError("--quantize int8 and --fp16 were both given.", "choose one of them.")
    return "int8" if quantize else "fp16" if fp16 else "fp32"


def _refuse_clobber(output: Path, checkpoint: Path | None) -> None:
    """Refuse an ``output`` that is the checkpoint itself, a directory, or an existing torch checkpoint."""
    if output.is_dir():
        raise ConfigError(f"output {output} is a directory.", "give a file name, e.g. -o model.onnx.")
    if checkpoint is not None and output.exists() and output.resolve() == checkpoint.resolve():
        raise ExportError(f"output {output} is the checkpoint being exported.",
                          "write the ONNX model to another file, e.g. -o model.onnx.")
    if output.is_file():
        with open(output, "rb") as f:
            magic = f.read(4)
        if magic == b"PK\x03\x04":  # torch.save writes a zip archive; an ONNX file is a protobuf
            raise ExportError(f"output {output} exists and is a zip archive (a PyTorch checkpoint?); it would be "
                              "overwritten.", "write the ONNX model to another file, e.g. -o model.onnx.")


def export_with_report(generator: FrameGenerator, meta: Mapping[str, Any], output: Path,
                       opset: int = DEFAULT_OPSET, quantize: str | None = None, fp16: bool = False,
                       verify: bool = True) -> ExportReport:
    """Export ``generator`` (checkpoint ``meta`` as returned by ``load_generator``) to ``output``.

    Returns what was written and measured. Raises :class:`ExportError` (the file is not written) when
    verification fails, and :class:`ConfigError` for bad options.
    """
    precision = _check_options(opset, quantize, fp16)
    output = Path(output)
    checkpoint = Path(str(meta["path"])) if meta.get("path") else None
    _refuse_clobber(output, checkpoint)
    # A copy: the caller's generator (perhaps mid-training, on a GPU) keeps its device, dtype and mode.
    generator = copy.deepcopy(generator).to("cpu").float().eval()
    graph_gen = without_latent(generator)
    if precision == "int8" and isinstance(graph_gen, LowLatGenerator):
        graph_gen.gru_as_matmul = True  # the recurrent matrices become MatMuls, which int8 quantizes
    spec = build_spec(generator, meta, precision, opset)
    metadata = model_metadata(generator, spec)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as tmp:
            report = _write_verified(graph_gen, spec, metadata, output, Path(tmp), opset, verify)
    except OSError as exc:
        raise ExportError(f"cannot write {output}: {exc.strerror or exc}.",
                          "choose a writable folder with free space for -o.") from None
    return ExportReport(path=output, spec=spec, parameters=count_parameters(generator),
                        size_bytes=output.stat().st_size, verify=report)


def _write_verified(graph_gen: FrameGenerator, spec: ModelSpec, metadata: dict[str, str], output: Path,
                    tmp: Path, opset: int, verify: bool) -> VerifyReport | None:
    """Trace, label, convert and check the model inside ``tmp``; rename it to ``output`` only if it passed."""
    fp32_path = tmp / "fp32.onnx"
    final = tmp / "model.onnx"
    model = trace(graph_gen, fp32_path, opset)
    model.producer_name = "denoise"
    model.producer_version = metadata["denoise_version"]
    model.doc_string = (f"denoise {spec.preset} frame model: one call per {spec.hop}-sample hop "
                        f"({spec.hop_ms:g} ms), algorithmic latency {spec.latency_ms:g} ms.")
    helper.set_model_props(model, metadata)
    reference = None
    if spec.precision != "fp32":
        onnx.save(model, str(fp32_path))  # quantization's input, and the timing reference
        reference = fp32_path
    if spec.precision == "fp16":
        model = cast_weights_fp16(model)
    elif spec.precision == "int8":
        fixed = [b.numpy() for name, b in graph_gen.named_buffers() if name not in graph_gen.state_dict()]
        quantize_int8(fp32_path, final, spec.preset, exclude=fixed_transform_nodes(model, fixed))
        model = onnx.load(str(final))
        helper.set_model_props(model, metadata)  # written again: the quantizer's copy is not relied upon
    onnx.save(model, str(final))
    report = verify_export(final, graph_gen, reference=reference, source=str(output)) if verify else None
    os.replace(final, output)
    return report


def export_onnx(generator: FrameGenerator, meta: Mapping[str, Any], output: Path, opset: int = DEFAULT_OPSET,
                quantize: str | None = None, fp16: bool = False, verify: bool = True) -> Path:
    """Export ``generator`` to ``output`` (see :func:`export_with_report`); returns ``output``."""
    return export_with_report(generator, meta, output, opset=opset, quantize=quantize, fp16=fp16,
                              verify=verify).path


def summary(report: ExportReport) -> list[str]:
    """The lines ``denoise export`` prints."""
    spec = report.spec
    state = ", ".join(f"{s.input}{list(s.shape)}" for s in spec.state) or "none"
    lines = [
        f"exported {spec.preset} ({spec.precision}) -> {report.path}",
        (f"  {report.parameters:,} parameters, {report.size_bytes / 1e6:.2f} MB, opset {spec.extra['onnx_opset']}, "
        f"step {spec.train_step if spec.train_step is not None else '?'}"),
        (f"  {spec.sample_rate} Hz, window {spec.window}, hop {spec.hop}: algorithmic latency "
        f"{spec.latency_samples} samples = {spec.latency_ms:g} ms; state {state}"),
    ]
    v = report.verify
    if v is None:
        lines.append("  not verified (--no-verify)")
        return lines
    rtf = v.per_hop_us / (1e3 * spec.hop_ms)
    timing = f"  ONNX Runtime CPU, 1 thread: {v.per_hop_us:.0f} us per hop (real-time factor {rtf:.3f})"
    if v.reference_per_hop_us:
        timing += (f"; float32 {v.reference_per_hop_us:.0f} us, speed-up "
                   f"x{v.reference_per_hop_us / v.per_hop_us:.2f}")
    lines.append(timing)
    parity = (f"  parity vs PyTorch over {v.hops} hops ({' + '.join(v.signals)}): max |err| {v.max_err_step:.2e} "
              f"(step loop), {v.max_err_frames:.2e} (forward_frames)")
    if spec.state:
        parity += f", state {v.max_err_state:.2e}"
    lines.append(parity)
    if v.si_sdr_db:
        lines.append("  SI-SDR vs float32: " + ", ".join(f"{k} {val:.1f} dB" for k, val in v.si_sdr_db.items()))
    return lines


def export_cli(checkpoint: Path, output: Path, opset: int = DEFAULT_OPSET, quantize: str | None = None,
               fp16: bool = False, verify: bool = True) -> None:
    """``denoise export CHECKPOINT_OR_RUN_DIR -o model.onnx``: load, export, verify, print a summary.

    The source may also be an fp32 model file this denoise exported (the shipped default included): its generator
    is recovered exactly (:mod:`export.recover`), so it can be re-exported at another precision or opset."""
    import typer

    from training.checkpoint import load_generator

    _check_options(opset, quantize, fp16)
    if Path(checkpoint).suffix.lower() == ".onnx":
        from export.recover import generator_from_onnx  # recover imports this module: only here, on demand

        generator, meta = generator_from_onnx(Path(checkpoint))
    else:
        generator, meta = load_generator(Path(checkpoint))
    report = export_with_report(generator, meta, Path(output), opset=opset, quantize=quantize, fp16=fp16,
                                verify=verify)
    typer.echo(f"checkpoint {meta.get('path', checkpoint)}")
    for line in summary(report):
        typer.echo(line)
