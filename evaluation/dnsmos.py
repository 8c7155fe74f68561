"""Non-intrusive MOS (DNSMOS P.835: speech SIG, background BAK, overall OVRL) through the ``speechmos`` package.

``speechmos`` ships the DNSMOS ONNX models inside its wheel, so scoring runs offline. It is optional: when it (or
its ``librosa`` dependency) is missing, :func:`dnsmos_available` says why and ``denoise eval`` omits the columns.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.metrics import MetricWarning

DNSMOS_RATE = 16000
WINDOW_SECONDS = 9.01  # the DNSMOS models' input length
DNSMOS_KEYS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
INSTALL_HINT = "pip install speechmos librosa"


def dnsmos_available() -> tuple[bool, str]:
    """``(True, "")`` when DNSMOS can run, else ``(False, reason with the install command)``."""
    try:
        import librosa  # noqa: F401  (speechmos computes its P.808 mel features with it)
        import speechmos.dnsmos  # noqa: F401
    except ImportError as exc:
        return False, f"DNSMOS omitted: {exc.name or exc} is not installed ({INSTALL_HINT})."
    return True, ""


@lru_cache(maxsize=1)
def _scorer(threads: int) -> Any:
    import onnxruntime as ort
    import speechmos.dnsmos as sm

    models = Path(sm.__file__).parent / "dnsmos_models"
    # speechmos's constructor opens its sessions on every core; build the object around sessions pinned to
    # ``threads`` instead, so that parallel scoring workers do not fight over the CPU.
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    primary = str(models / "sig_bak_ovr.onnx")
    scorer = sm.DNSMOS.__new__(sm.DNSMOS)
    scorer.primary_model_path = primary
    scorer.onnx_sess = ort.InferenceSession(primary, options, providers=providers)
    scorer.p808_onnx_sess = ort.InferenceSession(str(models / "model_v8.onnx"), options, providers=providers)
    return scorer


def dnsmos(audio: np.ndarray, sr: int, threads: int = 1) -> dict[str, float]:
    """DNSMOS P.835 of one clip ``[T]`` at ``sr`` (resampled to 16 kHz): ``{dnsmos_sig, dnsmos_bak, dnsmos_ovrl}``.

    A clip shorter than the model's 9.01 s input is tiled to exactly that length, so it is scored in one model
    window (speechmos doubles it until it is long enough and then slides 1 s hops over the repeats, which
    scores the same content up to 7 times for a 4 s clip). A silent or non-finite clip scores NaN with a
    :class:`MetricWarning`.
    """
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if sr != DNSMOS_RATE:
        import soxr

        x = soxr.resample(x, sr, DNSMOS_RATE, quality="HQ")
    if x.size == 0 or not np.all(np.isfinite(x)) or not np.any(x):
        warnings.warn("DNSMOS: the clip is empty, silent or non-finite; reporting NaN.", MetricWarning,
                      stacklevel=2)
        return {k: math.nan for k in DNSMOS_KEYS}
    window = int(WINDOW_SECONDS * DNSMOS_RATE)
    if x.size < window:
        x = np.resize(x, window)
    # The models take audio in [-1, 1]; an enhanced clip may overshoot by a hair.
    out = _scorer(threads)(np.clip(x, -1.0, 1.0).astype(np.float32), DNSMOS_RATE, False)
    return {"dnsmos_sig": float(out["sig_mos"]), "dnsmos_bak": float(out["bak_mos"]),
            "dnsmos_ovrl": float(out["ovrl_mos"])}
