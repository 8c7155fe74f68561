"""``denoise bench``: latency and compute of the streaming engine, measured the way ``denoise live`` runs it.

Hop-sized blocks of speech-like test audio (tones with vibrato under noise, one independent signal per stream)
go through the same :class:`~realtime.engine.StreamingEngine` live uses; each ``process`` call is timed, and the
ONNX Runtime call inside it is timed separately, so the per-hop cost splits into the model and the Python/numpy
overhead around it (emphasis filters, framing, overlap-add). Warm-up hops are excluded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from realtime.engine import StreamingEngine
from realtime.errors import ConfigError
from realtime.model import load_model


def speech_like_signal(channels: int, length: int, rate: int, seed: int = 0) -> np.ndarray:
    """Speech-like float32 ``[channels, length]``: a harmonic tone with vibrato and a syllable envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / rate
    out = np.empty((channels, length), dtype=np.float32)
    for c in range(channels):
        f0 = rng.uniform(100.0, 220.0)
        phase = 2.0 * np.pi * np.cumsum(f0 * (1.0 + 0.05 * np.sin(2.0 * np.pi * 5.0 * t))) / rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
        envelope = 0.5 + 0.5 * np.sin(2.0 * np.pi * rng.uniform(2.0, 4.0) * t) ** 2
        out[c] = 0.2 * voiced * envelope + 0.05 * rng.standard_normal(length)
    return out


def _percentiles_us(ns: np.ndarray) -> dict[str, float]:
    p50, p95, p99 = np.percentile(ns, [50, 95, 99]) / 1e3
    return {"p50_us": float(p50), "p95_us": float(p95), "p99_us": float(p99), "max_us": float(ns.max() / 1e3),
            "mean_us": float(ns.mean() / 1e3)}


def run_bench(model: Path | None = None, device: str = "cpu", threads: int = 1, seconds: float = 20.0,
              streams: int = 1, as_json: bool = False) -> dict[str, Any]:
    """Stream ``seconds`` of audio per stream through the engine (``streams`` batched in one session); print a
    table (or one JSON object) and return the figures."""
    if not seconds > 0:
        raise ConfigError(f"--seconds is {seconds}, expected > 0.", "pass e.g. --seconds 20.")
    if streams < 1:
        raise ConfigError(f"--streams is {streams}, expected >= 1.", "pass e.g. --streams 1.")
    start = time.perf_counter()
    frame_model = load_model(model, device=device, threads=threads)
    load_ms = (time.perf_counter() - start) * 1e3
    spec = frame_model.spec
    engine = StreamingEngine(frame_model, channels=streams)
    hop, rate = spec.hop, spec.sample_rate
    hops = max(1, round(seconds * rate / hop))
    warmup = max(10, round(0.5 * rate / hop))
    audio = speech_like_signal(streams, (warmup + hops) * hop, rate)
    blocks = [np.ascontiguousarray(audio[:, i * hop:(i + 1) * hop]) for i in range(warmup + hops)]

    total_ns = np.empty(warmup + hops, dtype=np.int64)
    ort_ns: list[int] = []
    stepper = engine.stepper
    run_model = stepper.step

    def timed_step() -> None:  # shadows the stepper's method for this engine only: times the ORT call alone
        t0 = time.perf_counter_ns()
        run_model()
        ort_ns.append(time.perf_counter_ns() - t0)

    stepper.step = timed_step  # type: ignore[method-assign]
    clock = time.perf_counter_ns
    for i, block in enumerate(blocks):
        t0 = clock()
        engine.process(block)
        total_ns[i] = clock() - t0
    total = total_ns[warmup:]
    ort = np.asarray(ort_ns[warmup:], dtype=np.int64)
    hop_ns = hop / rate * 1e9
    rtf = float(total.sum() / (hops * hop_ns))
    result: dict[str, Any] = {
        "model": str(frame_model.path),
        "preset": spec.preset,
        "device": frame_model.device,
        "providers": frame_model.providers,
        "threads": threads,
        "streams": streams,
        "sample_rate": rate,
        "window": spec.window,
        "hop": hop,
        "latency_samples": spec.latency_samples,
        "algorithmic_latency_ms": spec.latency_ms,
        "hop_ms": spec.hop_ms,
        "load_ms": load_ms,
        "hops": hops,
        "warmup_hops": warmup,
        **_percentiles_us(total),
        "rtf": rtf,
        "rtf_per_stream": rtf / streams,
        "throughput_x_realtime": streams / rtf if rtf > 0 else float("inf"),
        "deadline_misses": int(np.count_nonzero(total > hop_ns)),
        "ort_p50_us": float(np.median(ort) / 1e3),
        "ort_mean_us": float(ort.mean() / 1e3),
        "overhead_p50_us": float(np.median(total - ort) / 1e3),
        "overhead_mean_us": float((total - ort).mean() / 1e3),
    }
    if as_json:
        print(json.dumps(result))
    else:
        _print_table(result)
    return result


def _print_table(r: dict[str, Any]) -> None:
    table = Table(title=f"denoise bench: {Path(r['model']).name} ({r['preset']}) on {r['device']}, "
                        f"{r['threads']} thread(s), {r['streams']} stream(s)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("algorithmic latency", f"{r['algorithmic_latency_ms']:.2f} ms ({r['latency_samples']} samples)"),
        ("hop", f"{r['hop_ms']:.2f} ms ({r['hop']} samples @ {r['sample_rate']} Hz)"),
        ("model load", f"{r['load_ms']:.1f} ms"),
        ("per-hop compute p50 / p95", f"{r['p50_us']:.1f} / {r['p95_us']:.1f} µs"),
        ("per-hop compute p99 / max", f"{r['p99_us']:.1f} / {r['max_us']:.1f} µs"),
        ("  ONNX Runtime call (p50 / mean)", f"{r['ort_p50_us']:.1f} / {r['ort_mean_us']:.1f} µs"),
        ("  Python + numpy overhead (p50 / mean)", f"{r['overhead_p50_us']:.1f} / {r['overhead_mean_us']:.1f} µs"),
        ("real-time factor (all streams)", f"{r['rtf']:.4f}"),
        ("real-time factor per stream", f"{r['rtf_per_stream']:.4f}"),
        ("throughput", f"{r['throughput_x_realtime']:.1f}x real time"),
        ("hops over their deadline", f"{r['deadline_misses']} of {r['hops']}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
