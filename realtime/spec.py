"""The model contract: what an exported ONNX file must say about itself in ``metadata_props``.

The exported generator is a *frame* model: one call maps one analysis-windowed frame of ``window`` samples of
pre-emphasised audio (plus the recurrent state of the previous call) to one enhanced frame of ``window``
samples, which the engine multiplies by the synthesis window and overlap-adds every ``hop`` samples.

Graph I/O (batch axis first everywhere, so ``--streams N`` can batch N independent streams):

* input ``frame``      float32 ``[B, window]``
* output ``enhanced``  float32 ``[B, window]``
* for each state entry ``{"input": name_in, "output": name_out, "shape": [d1, ...]}`` an input
  ``name_in`` float32 ``[B, d1, ...]`` and an output ``name_out`` of the same shape; zeros is the initial state.

Metadata keys (all values are strings; JSON where noted) are listed in :data:`REQUIRED_KEYS`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from realtime.errors import ModelError

FORMAT_NAME = "denoise-frame-model"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
INPUT_NAME = "frame"
OUTPUT_NAME = "enhanced"
WINDOW_NAMES = ("ones", "hann", "sqrt_hann")

REQUIRED_KEYS = (
    "format",  # == FORMAT_NAME
    "format_version",  # "1"
    "preset",  # e.g. "lowlat" or "segan"
    "sample_rate",  # "16000"
    "window",  # frame length in samples
    "hop",  # hop in samples
    "lookahead",  # extra future samples the model needs (0 for a causal frame model)
    "algorithmic_latency_samples",  # window - hop + lookahead
    "analysis_window",  # one of WINDOW_NAMES
    "synthesis_window",  # one of WINDOW_NAMES
    "preemphasis",  # e.g. "0.95"; "0" disables the emphasis filters
    "state",  # JSON list of {"input","output","shape"}
)
OPTIONAL_KEYS = (
    "train_step",  # int
    "metrics",  # JSON object of validation metrics
    "weights_sha256",  # hash of the float weights exported
    "denoise_version",
    "precision",  # "fp32" | "fp16" | "int8"
    "config",  # JSON of the generator config used to build it
)


@dataclass(frozen=True)
class StateSpec:
    input: str
    output: str
    shape: tuple[int, ...]  # without the batch axis


@dataclass(frozen=True)
class ModelSpec:
    """Everything the streaming engine needs to know about a model, read from the ONNX metadata alone."""

    preset: str
    sample_rate: int
    window: int
    hop: int
    lookahead: int
    analysis_window: str
    synthesis_window: str
    preemphasis: float
    state: tuple[StateSpec, ...] = ()
    train_step: int | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    weights_sha256: str | None = None
    precision: str = "fp32"
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency: window - hop + lookahead (samples at ``sample_rate``)."""
        return self.window - self.hop + self.lookahead

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / self.sample_rate

    @property
    def hop_ms(self) -> float:
        return 1000.0 * self.hop / self.sample_rate

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` this spec is written as (inverse of :func:`parse_metadata`)."""
        md = {
            "format": FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
            "preset": self.preset,
            "sample_rate": str(self.sample_rate),
            "window": str(self.window),
            "hop": str(self.hop),
            "lookahead": str(self.lookahead),
            "algorithmic_latency_samples": str(self.latency_samples),
            "analysis_window": self.analysis_window,
            "synthesis_window": self.synthesis_window,
            "preemphasis": repr(float(self.preemphasis)),
            "state": json.dumps([{"input": s.input, "output": s.output, "shape": list(s.shape)} for s in self.state]),
            "precision": self.precision,
            "metrics": json.dumps(dict(self.metrics)),
        }
        if self.train_step is not None:
            md["train_step"] = str(self.train_step)
        if self.weights_sha256 is not None:
            md["weights_sha256"] = self.weights_sha256
        md.update(self.extra)
        return md


def _int(md: Mapping[str, str], key: str, minimum: int) -> int:
    try:
        value = int(md[key])
    except (KeyError, ValueError) as exc:
        raise ModelError(f"Model metadata '{key}' is {md.get(key)!r}, expected an integer.",
                         "re-export the model with `denoise export`.") from exc
    if value < minimum:
        raise ModelError(f"Model metadata '{key}' is {value}, expected >= {minimum}.",
                         "re-export the model with `denoise export`.")
    return value


def parse_metadata(md: Mapping[str, str], source: str = "model") -> ModelSpec:
    """Validate ``metadata_props`` and build a :class:`ModelSpec`; refuse foreign or inconsistent models."""
    if md.get("format") != FORMAT_NAME:
        raise ModelError(
            f"{source} is not a denoise model (metadata 'format' is {md.get('format')!r}, expected {FORMAT_NAME!r}).",
            "export a checkpoint with `denoise export CHECKPOINT -o model.onnx`, or omit --model to use the "
            "shipped default model.",
        )
    missing = [k for k in REQUIRED_KEYS if k not in md]
    if missing:
        raise ModelError(f"{source} lacks metadata keys {missing}.", "re-export it with `denoise export`.")
    version = _int(md, "format_version", 1)
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise ModelError(
            f"{source} has format version {version}; this denoise reads {SUPPORTED_FORMAT_VERSIONS}.",
            "upgrade denoise (`pip install -U denoise`) or re-export the model with this version.",
        )
    sample_rate = _int(md, "sample_rate", 1000)
    window = _int(md, "window", 1)
    hop = _int(md, "hop", 1)
    lookahead = _int(md, "lookahead", 0)
    latency = _int(md, "algorithmic_latency_samples", 0)
    if hop > window:
        raise ModelError(f"{source}: hop {hop} exceeds window {window}.", "re-export it with `denoise export`.")
    if latency != window - hop + lookahead:
        raise ModelError(
            f"{source}: algorithmic_latency_samples is {latency} but window - hop + lookahead is "
            f"{window - hop + lookahead}: the metadata is inconsistent.",
            "re-export it with `denoise export`.",
        )
    for key in ("analysis_window", "synthesis_window"):
        if md[key] not in WINDOW_NAMES:
            raise ModelError(f"{source}: unknown {key} {md[key]!r}, expected one of {WINDOW_NAMES}.",
                             "re-export it with `denoise export`.")
    try:
        pre = float(md["preemphasis"])
    except ValueError as exc:
        raise ModelError(f"{source}: preemphasis {md['preemphasis']!r} is not a number.",
                         "re-export it with `denoise export`.") from exc
    if not 0.0 <= pre < 1.0:
        raise ModelError(f"{source}: preemphasis {pre} is outside [0, 1).", "re-export it with `denoise export`.")
    try:
        state = tuple(
            StateSpec(str(s["input"]), str(s["output"]), tuple(int(d) for d in s["shape"]))
            for s in json.loads(md["state"])
        )
        metrics = {str(k): float(v) for k, v in json.loads(md.get("metrics", "{}")).items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{source}: metadata 'state' or 'metrics' is not valid JSON of the expected shape.",
                         "re-export it with `denoise export`.") from exc
    known = set(REQUIRED_KEYS) | {"train_step", "metrics", "weights_sha256", "precision"}
    return ModelSpec(
        preset=md["preset"],
        sample_rate=sample_rate,
        window=window,
        hop=hop,
        lookahead=lookahead,
        analysis_window=md["analysis_window"],
        synthesis_window=md["synthesis_window"],
        preemphasis=pre,
        state=state,
        train_step=int(md["train_step"]) if md.get("train_step", "").isdigit() else None,
        metrics=metrics,
        weights_sha256=md.get("weights_sha256"),
        precision=md.get("precision", "fp32"),
        extra={k: v for k, v in md.items() if k not in known},
    )


def weights_digest(arrays: list[Any]) -> str:
    """SHA-256 over the raw bytes of weight arrays in order (numpy arrays or anything with ``tobytes``)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(memoryview(a.tobytes()))
    return h.hexdigest()
