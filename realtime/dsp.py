"""Emphasis filters and windows shared by training and the streaming engine (numpy only).

Pre-emphasis ``y[n] = x[n] - a x[n-1]`` whitens speech's spectral tilt before the model; de-emphasis
``y[n] = x[n] + a y[n-1]`` is its exact inverse. The stateful classes keep one sample of memory so that
processing a stream in blocks of any size gives the same samples as processing it in one piece.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from realtime.errors import ConfigError, ModelError


def preemphasis(x: np.ndarray, coef: float, prev: float | np.ndarray = 0.0) -> np.ndarray:
    """Offline pre-emphasis along the last axis. ``x``: ``[..., T]``; ``prev`` is the sample before ``x``."""
    x = np.asarray(x, dtype=np.float32)
    if coef == 0.0:
        return x.copy()
    ext = np.empty((*x.shape[:-1], x.shape[-1] + 1), dtype=np.float32)
    ext[..., 0] = prev
    ext[..., 1:] = x
    return _first_difference(ext, coef)


def _first_difference(ext: np.ndarray, coef: float) -> np.ndarray:
    """Pre-emphasis of ``ext[..., 1:]`` given the sample before it, ``ext[..., 0]`` (float32, a new array)."""
    y = np.multiply(ext[..., :-1], -coef, dtype=np.float32)
    y += ext[..., 1:]
    return y


def _sized_for(buffer: np.ndarray, n: int, memory: int) -> np.ndarray:
    """``buffer`` ``[C, 1 + m]`` resized for blocks of ``n`` samples, keeping the remembered sample in column
    ``memory`` (0: before the block, -1: after it). The same array while the block length does not change."""
    if buffer.shape[1] == n + 1:
        return buffer
    grown = np.empty((buffer.shape[0], n + 1), dtype=np.float32)
    grown[:, memory] = buffer[:, memory]
    return grown


def deemphasis(x: np.ndarray, coef: float, prev: float | np.ndarray = 0.0) -> np.ndarray:
    """Offline de-emphasis along the last axis. ``prev`` is the output sample before ``x``."""
    x = np.asarray(x, dtype=np.float32)
    if coef == 0.0:
        return x.copy()
    zi = coef * np.asarray(prev, dtype=np.float64)[..., None] * np.ones(x.shape[:-1] + (1,))
    y, _ = lfilter([1.0], [1.0, -coef], x.astype(np.float64), axis=-1, zi=zi)
    return y.astype(np.float32)


def dry_share(atten_lim_db: float | None) -> float:
    """Share ``g`` of the input mixed into the output, ``y = (1 - g) * enhanced + g * input``, so that a noise the
    model removes entirely is still attenuated by only ``atten_lim_db`` decibels (None: full suppression, g = 0).
    A limit keeps some room tone and softens artefacts on speech the model is unsure about."""
    if atten_lim_db is None:
        return 0.0
    lim = float(atten_lim_db)
    if not np.isfinite(lim) or lim <= 0.0:
        raise ConfigError(f"attenuation limit {atten_lim_db} dB is not a positive number of decibels.",
                          "pass e.g. --atten-lim 20 (noise at most 20 dB quieter), or omit it for full suppression.")
    return float(10.0 ** (-lim / 20.0))


class DelayLine:
    """The input of a stream, delayed by ``delay`` samples per channel: feed blocks of any length and take as many
    samples as the delayed output needs (the engine's and the live bypass's dry paths). Blocks: ``[C, n]`` float32."""

    def __init__(self, channels: int, delay: int) -> None:
        self.channels, self.delay = channels, delay
        self.reset()

    def reset(self) -> None:
        self._line = np.zeros((self.channels, self.delay), dtype=np.float32)

    def __call__(self, block: np.ndarray, count: int) -> np.ndarray:
        """Append ``block``; return the next ``count`` delayed samples ``[C, count]``."""
        line = np.concatenate([self._line, block], axis=1)
        out, self._line = line[:, :count], line[:, count:]
        return out


class PreEmphasis:
    """Streaming pre-emphasis with one input sample of memory per channel. Blocks: ``[C, n]`` float32.

    The remembered sample and the block share one buffer ``[C, 1 + n]``, so a block costs four in-place numpy
    operations (copy in, two for the difference, carry the last sample over) and allocates only the output;
    the offline :func:`preemphasis` computes the same difference on the same layout.
    """

    def __init__(self, coef: float, channels: int = 1) -> None:
        self.coef = float(coef)
        self._ext = np.zeros((channels, 1), dtype=np.float32)  # [C, 1 + n]: the previous sample, the block

    def reset(self) -> None:
        self._ext[:, 0] = 0.0

    def __call__(self, block: np.ndarray) -> np.ndarray:
        n = block.shape[-1]
        if n == 0 or self.coef == 0.0:
            return block.astype(np.float32, copy=True)
        self._ext = ext = _sized_for(self._ext, n, 0)
        ext[:, 1:] = block
        y = _first_difference(ext, self.coef)
        ext[:, 0] = ext[:, n]
        return y


class DeEmphasis:
    """Streaming de-emphasis with one output sample of memory per channel. Blocks: ``[C, n]`` float32.

    The engine calls this once per hop with the same block length, so the recursion is unrolled into one
    cached matrix: ``[block, previous output] @ [[M], [c]]`` with ``M[j, i] = coef**(i - j)`` for ``j <= i``
    and carry row ``c[i] = coef**(i + 1)``: one small matrix product a block, no per-call ``lfilter``.
    """

    _MAX_UNROLLED = 1024

    def __init__(self, coef: float, channels: int = 1) -> None:
        self.coef = float(coef)
        self._ext = np.zeros((channels, 1), dtype=np.float32)  # [C, n + 1]: the block, the previous output
        self._unrolled: dict[int, np.ndarray] = {}

    def reset(self) -> None:
        self._ext[:, -1] = 0.0

    def _matrix(self, n: int) -> np.ndarray:
        if n not in self._unrolled:
            i = np.arange(n)
            lag = i[None, :] - i[:, None]  # [j, i] = i - j
            mat = np.where(lag >= 0, self.coef ** np.maximum(lag, 0), 0.0)
            carry = self.coef ** (i + 1.0)
            self._unrolled[n] = np.vstack([mat, carry[None, :]]).astype(np.float32)
        return self._unrolled[n]

    def __call__(self, block: np.ndarray) -> np.ndarray:
        n = block.shape[-1]
        if n == 0 or self.coef == 0.0:
            return block.astype(np.float32, copy=True)
        ext = self._ext
        if n > self._MAX_UNROLLED:
            y, _ = lfilter([1.0], [1.0, -self.coef], block.astype(np.float64), axis=-1,
                           zi=(self.coef * ext[:, -1].astype(np.float64))[..., None])
            y = y.astype(np.float32)
        else:
            self._ext = ext = _sized_for(ext, n, -1)
            ext[:, :n] = block
            y = ext @ self._matrix(n)
        ext[:, -1] = y[:, -1]
        return y


def window(name: str, length: int) -> np.ndarray:
    """Periodic window of ``length`` samples: ``ones``, ``hann`` or ``sqrt_hann`` (float32 ``[length]``)."""
    n = np.arange(length, dtype=np.float64)
    if name == "ones":
        w = np.ones(length)
    elif name == "hann":
        w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)
    elif name == "sqrt_hann":
        w = np.sqrt(0.5 - 0.5 * np.cos(2.0 * np.pi * n / length))
    else:
        raise ModelError(f"Unknown window {name!r}.", "use one of 'ones', 'hann', 'sqrt_hann'.")
    return w.astype(np.float32)


def overlap_add_gain(analysis: np.ndarray, synthesis: np.ndarray, hop: int) -> np.ndarray:
    """Sum over frames of analysis*synthesis at every hop offset: ``[hop]``. Perfect reconstruction needs ones."""
    prod = (analysis.astype(np.float64) * synthesis.astype(np.float64))
    win = prod.shape[0]
    if win % hop:
        raise ModelError(f"window {win} is not a multiple of hop {hop}.", "re-export the model with `denoise export`.")
    return prod.reshape(win // hop, hop).sum(axis=0)


def check_perfect_reconstruction(analysis: np.ndarray, synthesis: np.ndarray, hop: int, tol: float = 1e-5) -> None:
    """Raise :class:`ModelError` unless the windows overlap-add to exactly one at this hop."""
    gain = overlap_add_gain(analysis, synthesis, hop)
    if np.max(np.abs(gain - 1.0)) > tol:
        raise ModelError(
            f"analysis x synthesis windows overlap-add to {gain.min():.4f}..{gain.max():.4f} at hop {hop}, not 1.",
            "export the model with windows that reconstruct perfectly (e.g. sqrt_hann/sqrt_hann at 50% overlap).",
        )
