"""Framing and overlap-add, streaming and offline, with one timeline shared by both.

The stream starts with ``window - hop`` zeros in the framer; frame ``k`` covers padded samples
``[k*hop, k*hop + window)`` and is complete once ``(k + 1) * hop`` input samples have arrived. Overlap-add
sample ``m`` is final after frame ``m // hop``, so output sample ``m`` belongs to input sample
``m - (window - hop)``. The streaming classes work in place on preallocated buffers (no allocation per hop).
"""

from __future__ import annotations

import numpy as np


class Framer:
    """Streaming analysis framer over ``channels`` independent streams.

    ``buffer`` float32 ``[C, window]`` holds the previous ``window - hop`` samples followed by the samples of the
    hop being filled; :meth:`push` fills it, :meth:`emit` writes the analysis-windowed frame and slides by a hop.
    """

    def __init__(self, channels: int, window: int, hop: int, analysis: np.ndarray) -> None:
        self.window = window
        self.hop = hop
        self.analysis = analysis.astype(np.float32)
        self.buffer = np.zeros((channels, window), dtype=np.float32)
        self._keep = window - hop
        self._fill = 0

    @property
    def needed(self) -> int:
        """Samples still missing before the next frame is complete."""
        return self.hop - self._fill

    def push(self, samples: np.ndarray) -> None:
        """Append ``samples`` float32 ``[C, n]`` with ``n <= needed`` (the frame is complete when ``needed`` is 0)."""
        n = samples.shape[1]
        start = self._keep + self._fill
        self.buffer[:, start:start + n] = samples
        self._fill += n

    def emit(self, out: np.ndarray) -> None:
        """Write the complete frame times the analysis window into ``out`` ``[C, window]`` and slide by a hop."""
        np.multiply(self.buffer, self.analysis, out=out)
        if self._keep:
            self.buffer[:, :self._keep] = self.buffer[:, self.hop:]
        self._fill = 0

    def reset(self) -> None:
        self.buffer[...] = 0.0
        self._fill = 0


class OverlapAdd:
    """Streaming synthesis: multiply each model frame by the synthesis window and overlap-add it.

    Keeps the running sum of the ``window - hop`` samples that later frames still add to; each :meth:`add` makes
    one hop of samples final.
    """

    def __init__(self, channels: int, window: int, hop: int, synthesis: np.ndarray) -> None:
        self.window = window
        self.hop = hop
        self.synthesis = synthesis.astype(np.float32)
        self._tail = np.zeros((channels, window - hop), dtype=np.float32)
        self._tmp = np.zeros((channels, window), dtype=np.float32)

    def add(self, frame: np.ndarray, out: np.ndarray) -> None:
        """Add ``frame`` float32 ``[C, window]``; write the hop that is now final into ``out`` ``[C, hop]``."""
        tmp = self._tmp
        np.multiply(frame, self.synthesis, out=tmp)
        keep = self._tail.shape[1]
        if keep:
            tmp[:, :keep] += self._tail
            self._tail[...] = tmp[:, self.hop:]
        out[...] = tmp[:, :self.hop]

    def reset(self) -> None:
        self._tail[...] = 0.0


def frames_view(padded: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Read-only strided view of every hop-spaced frame of ``padded`` float32 ``[C, N]``: ``[C, F, window]``
    with ``F = (N - window) // hop + 1`` (no copy)."""
    return np.lib.stride_tricks.sliding_window_view(padded, window, axis=-1)[:, ::hop]


def overlap_add_into(out: np.ndarray, frames: np.ndarray, first: int, hop: int) -> None:
    """Add synthesis-windowed ``frames`` ``[C, F, window]`` (frame indices ``first .. first+F-1``) into ``out``
    ``[C, N]`` at ``frame index * hop``. ``window`` must be a multiple of ``hop`` (checked at model load)."""
    channels, count, window = frames.shape
    # Oldest frame first at every output sample, as the streaming OverlapAdd sums, so both round alike.
    for r in reversed(range(window // hop)):
        start = (first + r) * hop
        out[:, start:start + count * hop] += frames[:, :, r * hop:(r + 1) * hop].reshape(channels, count * hop)
