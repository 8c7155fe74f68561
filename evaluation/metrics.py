"""Speech-quality metrics on 1-D numpy signals: SI-SDR, PESQ-WB, STOI, and delay estimation.

Torch-free and import-light so the trainer's validation loop can use the same numbers as ``denoise eval``:
``pesq`` and ``pystoi`` are imported only when their metric is asked for.

Conventions: ``ref`` is the clean reference and ``est`` the signal under test, both ``[T]`` float arrays at the
same sample rate. A metric that cannot be computed on a pair (silence, an utterance PESQ cannot find, a clip too
short) is ``NaN`` and emits a :class:`MetricWarning`; aggregates count the NaNs instead of failing the run.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from realtime.errors import DenoiseError

EVAL_EXTRA_HINT = "install the evaluation extra: pip install 'denoise[eval]'"
PESQ_RATE = 16000
# PESQ needs at least a quarter second of signal; shorter pairs are rejected by the library itself.
PESQ_MIN_SECONDS = 0.25
METRIC_NAMES = ("pesq", "stoi", "si_sdr")


class MetricWarning(UserWarning):
    """A metric could not be computed on one pair and was reported as NaN."""


class MissingDependencyError(DenoiseError):
    """An optional package needed for a metric is not installed."""


def _as_1d(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        a = np.squeeze(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D signal [T], got shape {np.shape(x)}.")
    return a


def _pair(ref: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, e = _as_1d(ref, "ref"), _as_1d(est, "est")
    if r.shape != e.shape:
        raise ValueError(f"ref and est must have the same length, got {r.shape[0]} and {e.shape[0]} samples.")
    return r, e


def si_sdr(ref: np.ndarray, est: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019), on zero-mean signals.

    ``ref``, ``est``: ``[T]``. Identical signals give a very large value (bounded by ``eps``); a silent
    reference gives NaN (the target is undefined) with a :class:`MetricWarning`.
    """
    r, e = _pair(ref, est)
    r = r - r.mean()
    e = e - e.mean()
    ref_energy = float(np.dot(r, r))
    if ref_energy <= eps:
        warnings.warn("SI-SDR: the reference is silent; reporting NaN.", MetricWarning, stacklevel=2)
        return math.nan
    target = (float(np.dot(e, r)) / ref_energy) * r
    residual = e - target
    return float(10.0 * np.log10((np.dot(target, target) + eps) / (np.dot(residual, residual) + eps)))


def pesq_wb(ref: np.ndarray, est: np.ndarray, sr: int = PESQ_RATE) -> float:
    """Wide-band PESQ (ITU-T P.862.2, MOS-LQO in about [1.04, 4.64]).

    Signals at another rate than 16 kHz are resampled with soxr first. Returns NaN with a
    :class:`MetricWarning` when PESQ finds no utterance, the clip is shorter than 0.25 s, or either side is silent.
    """
    try:
        from pesq import BufferTooShortError, NoUtterancesError, pesq
    except ImportError as exc:
        raise MissingDependencyError("PESQ needs the 'pesq' package, which is not installed.",
                                     EVAL_EXTRA_HINT) from exc
    r, e = _pair(ref, est)
    if sr != PESQ_RATE:
        import soxr

        r = soxr.resample(r, sr, PESQ_RATE, quality="HQ")
        e = soxr.resample(e, sr, PESQ_RATE, quality="HQ")
    if r.shape[0] < PESQ_MIN_SECONDS * PESQ_RATE:
        warnings.warn(f"PESQ: {r.shape[0]} samples is shorter than {PESQ_MIN_SECONDS} s; reporting NaN.",
                      MetricWarning, stacklevel=2)
        return math.nan
    if not (np.any(r) and np.any(e)):
        warnings.warn("PESQ: a signal is all zeros; reporting NaN.", MetricWarning, stacklevel=2)
        return math.nan
    try:
        return float(pesq(PESQ_RATE, r.astype(np.float32), e.astype(np.float32), "wb"))
    except (NoUtterancesError, BufferTooShortError) as exc:
        warnings.warn(f"PESQ: {type(exc).__name__}: {exc}; reporting NaN.", MetricWarning, stacklevel=2)
        return math.nan


def stoi(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """Short-time objective intelligibility (Taal et al., 2011) in [0, 1]; NaN if the clip is silent or too short."""
    try:
        from pystoi import stoi as _stoi
    except ImportError as exc:
        raise MissingDependencyError("STOI needs the 'pystoi' package, which is not installed.",
                                     EVAL_EXTRA_HINT) from exc
    r, e = _pair(ref, est)
    if not np.any(r):
        warnings.warn("STOI: the reference is silent; reporting NaN.", MetricWarning, stacklevel=2)
        return math.nan
    with warnings.catch_warnings():
        # pystoi warns (and returns 1e-5) when silence removal leaves fewer than 30 frames.
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(_stoi(r, e, sr, extended=False))
    if value <= 1e-5:
        warnings.warn("STOI: fewer than 30 non-silent frames; reporting NaN.", MetricWarning, stacklevel=2)
        return math.nan
    return value


def align(ref: np.ndarray, est: np.ndarray, max_lag: int) -> int:
    """Constant delay of ``est`` relative to ``ref`` in samples, by cross-correlation within ``±max_lag``.

    A positive lag means ``est`` is late: ``est[n] ≈ g * ref[n - lag]``. ``ref``, ``est``: ``[T]`` (lengths may
    differ). Returns 0 when either signal is silent.
    """
    r = _as_1d(ref, "ref")
    e = _as_1d(est, "est")
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0, got {max_lag}.")
    if not (np.any(r) and np.any(e)):
        return 0
    n = r.shape[0] + e.shape[0]
    nfft = 1 << (n - 1).bit_length()
    xcorr = np.fft.irfft(np.fft.rfft(e, nfft) * np.conj(np.fft.rfft(r, nfft)), nfft)
    # xcorr[k] = sum_n e[n + k] r[n]; negative lags wrap to the end of the circular buffer.
    lags = np.arange(-max_lag, max_lag + 1)
    return int(lags[int(np.argmax(np.abs(xcorr[lags % nfft])))])


def shift(est: np.ndarray, lag: int) -> np.ndarray:
    """Undo a delay of ``lag`` samples found by :func:`align`, keeping the length (zero-filled). ``[T] -> [T]``."""
    e = np.asarray(est)
    out = np.zeros_like(e)
    if abs(lag) >= e.shape[0]:
        return out
    if lag >= 0:
        out[: e.shape[0] - lag] = e[lag:]
    else:
        out[-lag:] = e[: e.shape[0] + lag]
    return out


def score_pair(clean: np.ndarray, est: np.ndarray, sr: int) -> dict[str, Any]:
    """PESQ-WB, STOI and SI-SDR of ``est`` against ``clean`` (both ``[T]`` at ``sr``): ``{name: float}``.

    Values are NaN where a metric is undefined for the pair (see :class:`MetricWarning`).
    """
    return {"pesq": pesq_wb(clean, est, sr), "stoi": stoi(clean, est, sr), "si_sdr": si_sdr(clean, est)}
