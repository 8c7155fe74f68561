"""Checks an exported frame model against the PyTorch generator it came from.

Verification runs the ONNX file the way the streaming engine does (one call per hop, state fed back) on two
signals at once (batch 2: random audio and real or speech-like audio, so the dynamic batch axis is exercised
at a size the graph was not traced with), and compares with two PyTorch references: the same per-hop ``step``
loop, and ``forward_frames`` over the whole sequence (the computation training saw). A float32 export must
match both within ``FP32_ATOL``; a reduced-precision export (int8, fp16) is judged by the SI-SDR of its
overlap-added, de-emphasised output against the float32 PyTorch output.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import soundfile as sf
import torch

from evaluation.metrics import si_sdr
from realtime.dsp import deemphasis, preemphasis
from realtime.errors import ModelError
from realtime.spec import INPUT_NAME, OUTPUT_NAME, ModelSpec, parse_metadata
from training.models import FrameGenerator, frame_signal

# Float32 ONNX Runtime and PyTorch kernels differ in summation order only: ~1e-6 after hundreds of recurrent
# hops on unit-scale frames. 1e-4 leaves two orders of margin and still catches any real graph difference.
FP32_ATOL = 1e-4
# Reduced-precision exports are judged by SI-SDR against float32 over the whole de-emphasised signal.
# fp16 weights: rounding error 2^-11 relative per weight (~66 dB); errors add over ~10 layers and the
# recurrence; correct exports measured 55-72 dB, so 30 dB only fails a broken cast (overflow, wrong tensor).
# int8 dynamic: 8-bit weights and per-call 8-bit activations; correct exports measured 42-65 dB (lowlat,
# random / recorded noisy speech), a quantized DFT measured below 0 dB. 20 dB (a 10 % error amplitude, below the
# residual noise any denoiser leaves at realistic SNRs) is where quantization starts to change what is heard.
MIN_SI_SDR_DB = {"int8": 20.0, "fp16": 30.0}
# Graph operators that would make the export non-deterministic (SEGAN's latent must be zeros, not sampled).
RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
SMALL_MODEL_PARAMETERS = 5_000_000
EXAMPLE_WAV = Path(__file__).resolve().parents[1] / "examples" / "noisy.wav"


class ExportError(ModelError):
    """An export that fails its own checks (parity, quality, determinism) or would clobber a checkpoint."""


@dataclass
class VerifyReport:
    """What verification measured. Errors are max abs differences of enhanced frames (unit-scale audio)."""

    hops: int
    precision: str
    signals: tuple[str, ...]
    max_err_step: float  # ONNX Runtime vs the PyTorch per-hop step loop
    max_err_frames: float  # ONNX Runtime vs PyTorch forward_frames over the whole sequence
    max_err_state: float  # final recurrent state (0.0 without state)
    si_sdr_db: dict[str, float] = field(default_factory=dict)  # reduced precision only, per signal
    per_hop_us: float = 0.0  # median ONNX Runtime time per hop, batch 1, one thread
    reference_per_hop_us: float | None = None  # the same for the float32 model a reduced-precision one came from
    op_types: tuple[str, ...] = ()


def speech_like(n: int, sample_rate: int, seed: int = 1) -> np.ndarray:
    """A noisy speech-like test signal ``[n]`` float32: voiced syllables with a gliding pitch and moving
    formants, unvoiced bursts and pauses, over background noise at about 10 dB SNR. Used when no recording
    is available; it exercises the model on speech-shaped spectra and level changes, unlike white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sample_rate
    f0 = 120.0 + 40.0 * np.sin(2 * np.pi * 0.7 * t) + 15.0 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    formants = (500.0 + 300.0 * np.sin(2 * np.pi * 0.9 * t), 1500.0 + 600.0 * np.sin(2 * np.pi * 0.6 * t + 1.0))
    voiced = np.zeros(n)
    for k in range(1, int(0.5 * sample_rate / 260.0)):
        fk = k * f0
        gain = sum(np.exp(-0.5 * ((fk - fc) / 120.0) ** 2) for fc in formants) + 0.05
        voiced += np.where(fk < 0.45 * sample_rate, gain / k ** 0.5, 0.0) * np.sin(k * phase)
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t), 0.0, None) ** 0.7
    pauses = (np.sin(2 * np.pi * 0.35 * t) > -0.6).astype(np.float64)
    unvoiced = np.diff(rng.standard_normal(n + 1)) * (np.sin(2 * np.pi * 4.0 * t + np.pi) > 0.8)
    speech = (voiced / (np.abs(voiced).max() + 1e-9) * syllables + 0.15 * unvoiced) * pauses
    speech *= 0.3 / (np.abs(speech).max() + 1e-9)
    noise = rng.standard_normal(n)
    noise *= np.sqrt(np.mean(speech ** 2) / 10.0 / np.mean(noise ** 2))
    return (speech + noise).astype(np.float32)


def verification_signals(n: int, sample_rate: int) -> tuple[np.ndarray, tuple[str, str]]:
    """Random audio and real audio (``examples/noisy.wav`` if present, else :func:`speech_like`): ``[2, n]``."""
    rng = np.random.default_rng(0)
    random = (0.1 * rng.standard_normal(n)).astype(np.float32)
    if EXAMPLE_WAV.is_file():
        audio, sr = sf.read(str(EXAMPLE_WAV), dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        if sr != sample_rate:
            import soxr

            audio = soxr.resample(audio, sr, sample_rate).astype(np.float32)
        real = np.resize(audio, n)  # loops a short recording so every hop sees audio
        name = EXAMPLE_WAV.name
    else:
        real = speech_like(n, sample_rate)
        name = "speech-like"
    return np.stack([random, real]), ("random", name)


def model_frames(generator: FrameGenerator, audio: np.ndarray, coef: float) -> torch.Tensor:
    """Raw audio ``[B, T]`` -> the analysis-windowed pre-emphasised frames the engine feeds: ``[B, N, W]``."""
    x = torch.from_numpy(preemphasis(audio, coef))
    frames, _ = frame_signal(x, generator.window, generator.hop, generator.lookahead)
    return frames * generator.win_a


def synthesize(frames: np.ndarray, spec: ModelSpec, length: int, synthesis: np.ndarray) -> np.ndarray:
    """Enhanced frames ``[B, N, W]`` -> overlap-added, latency-trimmed, de-emphasised audio ``[B, length]``."""
    b, n, w = frames.shape
    out = np.zeros((b, (n - 1) * spec.hop + w), dtype=np.float64)
    for k in range(n):
        out[:, k * spec.hop:k * spec.hop + w] += frames[:, k] * synthesis
    lat = spec.latency_samples
    return deemphasis(out[:, lat:lat + length].astype(np.float32), spec.preemphasis)


def torch_references(generator: FrameGenerator, frames: torch.Tensor
                     ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(per-hop ``step`` loop output, ``forward_frames`` output, final state): ``[B, N, W]`` each."""
    b, n, _ = frames.shape
    with torch.no_grad():
        state = generator.initial_state(b)
        steps = []
        for k in range(n):
            out, *state = generator.step(frames[:, k], *state)
            steps.append(out)
        full, _ = generator.forward_frames(frames)
    return torch.stack(steps, 1).numpy(), full.numpy(), [s.numpy() for s in state]


def session(model: Path | bytes, threads: int = 1, optimize: bool = True) -> ort.InferenceSession:
    """A CPU session on a model file or serialized bytes; ``optimize`` False runs the graph exactly as written."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


def run_hops(sess: ort.InferenceSession, spec: ModelSpec, frames: np.ndarray
             ) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
    """Run ``frames`` ``[B, N, W]`` one hop per call, feeding state back. Returns outputs, final state, times."""
    b, n, _ = frames.shape
    state = [np.zeros((b, *s.shape), dtype=np.float32) for s in spec.state]
    outputs = [OUTPUT_NAME, *(s.output for s in spec.state)]
    result = np.empty_like(frames)
    times = []
    for k in range(n):
        feed = {INPUT_NAME: np.ascontiguousarray(frames[:, k])}
        feed.update({s.input: v for s, v in zip(spec.state, state)})
        t0 = time.perf_counter()
        out, *state = sess.run(outputs, feed)
        times.append(time.perf_counter() - t0)
        result[:, k] = out
    return result, state, times


def check_graph(model: onnx.ModelProto, spec: ModelSpec, source: str) -> tuple[str, ...]:
    """Refuse random operators and I/O that does not match the metadata; returns the sorted op types."""
    ops = tuple(sorted({n.op_type for n in model.graph.node}))
    random_ops = RANDOM_OPS.intersection(ops)
    if random_ops:
        raise ExportError(f"{source}: the graph contains random operators {sorted(random_ops)}.",
                          "the latent must be an input or zeros; re-export from an eval-mode generator.")
    expected_in = [INPUT_NAME, *(s.input for s in spec.state)]
    expected_out = [OUTPUT_NAME, *(s.output for s in spec.state)]
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if got_in != expected_in or got_out != expected_out:
        raise ExportError(f"{source}: the graph's inputs {got_in} / outputs {got_out} do not match the metadata "
                          f"({expected_in} / {expected_out}).", "report this as a bug in `denoise export`.")
    return ops


def default_hops(spec: ModelSpec) -> int:
    """240 hops for a recurrent model (state carried far past any start-up effect); stateless models need only
    enough frames to cover several overlaps (their hops are independent), at least 4 and about 2 s of audio."""
    if spec.state:
        return 240
    return max(4, math.ceil(2.0 * spec.sample_rate / spec.hop))


def median_hop_us(sess: ort.InferenceSession, spec: ModelSpec, frames: np.ndarray) -> float:
    """Median seconds per hop (in microseconds) over ``frames`` ``[1, N, W]``, the first tenth as warm-up."""
    _, _, times = run_hops(sess, spec, frames)
    return 1e6 * float(np.median(times[len(times) // 10:] or times))


def verify_export(path: Path, generator: FrameGenerator, hops: int | None = None,
                  atol: float = FP32_ATOL, min_si_sdr_db: float | None = None,
                  reference: Path | None = None, source: str | None = None) -> VerifyReport:
    """Check ``path`` (an exported model) against ``generator``; raise :class:`ExportError` with the numbers.

    The precision comes from the file's metadata. The torch generator must be the float32 one exported (for
    SEGAN: with its latent folded to zeros, which is what ``forward_frames`` computes without ``z``).
    ``reference``: the float32 ONNX file a reduced-precision model was made from, timed alongside it.
    ``source``: how errors name the model (the export writes to a temporary file first).
    """
    source = source or str(path)
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path), load_external_data=False)
    spec = parse_metadata({p.key: p.value for p in model.metadata_props}, source=source)
    ops = check_graph(model, spec, source)
    hops = hops or default_hops(spec)
    n = hops * spec.hop - spec.latency_samples  # frame_signal pads window - hop on both sides, + the lookahead
    audio, names = verification_signals(max(n, spec.hop), spec.sample_rate)
    frames = model_frames(generator, audio, spec.preemphasis)
    # A small model's calls are dominated by per-operator overhead, which extra threads only add to (and they
    # take cores from whatever else runs); full-size SEGAN's few large windows keep torch's default threads.
    threads = torch.get_num_threads()
    if sum(p.numel() for p in generator.parameters()) < SMALL_MODEL_PARAMETERS:
        torch.set_num_threads(1)
    try:
        ref_step, ref_full, ref_state = torch_references(generator, frames)
    finally:
        torch.set_num_threads(threads)
    sess = session(path)
    got, state, _ = run_hops(sess, spec, frames.numpy())
    err_step = float(np.max(np.abs(got - ref_step)))
    err_full = float(np.max(np.abs(got - ref_full)))
    err_state = max((float(np.max(np.abs(a - b))) for a, b in zip(state, ref_state)), default=0.0)
    if not np.all(np.isfinite(got)):
        raise ExportError(f"{source}: ONNX Runtime produced non-finite output.", "check the checkpoint's weights.")
    timing = frames.numpy()[1:, :200]
    report = VerifyReport(hops=frames.shape[1], precision=spec.precision, signals=names, max_err_step=err_step,
                          max_err_frames=err_full, max_err_state=err_state,
                          per_hop_us=median_hop_us(sess, spec, timing), op_types=ops)
    if reference is not None:
        report.reference_per_hop_us = median_hop_us(session(reference), spec, timing)
    if spec.precision == "fp32":
        worst = max(err_step, err_full, err_state)
        if worst > atol:
            raise ExportError(
                f"{source}: ONNX Runtime differs from PyTorch by {err_step:.3g} (step loop), {err_full:.3g} "
                f"(forward_frames), {err_state:.3g} (state) over {report.hops} hops; tolerance {atol:g}.",
                "the export is wrong; report this with the checkpoint (or retry with another --opset).")
        return report
    threshold = MIN_SI_SDR_DB[spec.precision] if min_si_sdr_db is None else min_si_sdr_db
    synth = generator.win_s.numpy()
    ours = synthesize(got, spec, audio.shape[1], synth)
    theirs = synthesize(ref_step, spec, audio.shape[1], synth)
    report.si_sdr_db = {name: si_sdr(r, o) for name, o, r in zip(names, ours, theirs)}
    worst_name = min(report.si_sdr_db, key=report.si_sdr_db.__getitem__)
    if report.si_sdr_db[worst_name] < threshold:
        raise ExportError(
            f"{source}: the {spec.precision} model's output has SI-SDR {report.si_sdr_db[worst_name]:.1f} dB "
            f"against float32 on the {worst_name} signal over {report.hops} hops; at least {threshold:g} dB "
            "is required.",
            "export in float32 (drop --quantize/--fp16), or retrain; quantization hurts this checkpoint too much.")
    return report
