"""Sample-rate conversion around the model: offline with soxr, streaming with a low-latency polyphase FIR.

Files are converted in one piece with ``soxr.resample`` (HQ, zero delay). Streams are not converted with
``soxr.ResampleStream``: libsoxr filters in large DFT blocks and holds samples back until a block is full, which
measured 15 ms (48 kHz -> 16 kHz) plus 30 ms (16 kHz -> 48 kHz) of buffering at hop-sized blocks (HQ; LQ/MQ were
no better), several times the model's own 8 ms. :class:`StreamResampler` is a Kaiser-windowed-sinc polyphase
filter (80 dB stopband, passband to 84% of the lower Nyquist) that emits every output sample as soon as its last
input sample arrives, with a delay of about 2 ms that is known exactly, so :class:`ResamplingEngine` reports its
true latency.
"""

from __future__ import annotations

import math

import numpy as np
import soxr
from scipy.signal import firwin, kaiserord

from realtime.engine import StreamingEngine, channels_first
from realtime.errors import AudioFormatError

_STOPBAND_DB = 80.0
_PASSBAND = 0.84  # passband edge as a fraction of the lower rate's Nyquist; the stopband starts at that Nyquist
# Blocks counted by ResamplingEngine.output_lag: a whole period at 44.1 kHz (56448 blocks at most, ~2 ms).
_LAG_BLOCKS = 65536


def _check_rate(rate: int, what: str) -> None:
    if int(rate) != rate or rate < 1000:
        raise AudioFormatError(f"{what} is {rate} Hz, expected an integer rate >= 1000 Hz.",
                               "pass a real sample rate such as 16000, 44100 or 48000.")


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Offline conversion of float32 ``[C, T]`` from ``rate_in`` to ``rate_out`` (soxr HQ, time-aligned):
    float32 ``[C, round(T * rate_out / rate_in)]``."""
    _check_rate(rate_in, "input sample rate")
    _check_rate(rate_out, "output sample rate")
    if rate_in == rate_out:
        return np.asarray(audio, dtype=np.float32)
    y = soxr.resample(np.ascontiguousarray(np.asarray(audio, dtype=np.float32).T), rate_in, rate_out, quality="HQ")
    return np.ascontiguousarray(y.T)


class StreamResampler:
    """Streaming rational resampler ``rate_in -> rate_out`` over ``channels`` streams (float32 ``[C, n]`` blocks).

    Output sample ``j`` is the band-limited input at output time ``j - delay``; ``delay`` (output samples) is a
    whole number plus ``extra_delay`` (in ``[0, 1)``, realised to 1/``down`` of a sample), so a chain of
    resamplers can be made to delay by a whole number of samples.
    """

    def __init__(self, rate_in: int, rate_out: int, channels: int, extra_delay: float = 0.0) -> None:
        _check_rate(rate_in, "input sample rate")
        _check_rate(rate_out, "output sample rate")
        g = math.gcd(rate_in, rate_out)
        self.up = rate_out // g
        self.down = rate_in // g
        self.channels = channels
        self.identity = self.up == self.down
        self.delay = 0.0
        if self.identity:
            return
        hi_rate = rate_in * self.up  # rate of the zero-stuffed signal the prototype filter runs at
        nyquist = min(rate_in, rate_out) / 2.0
        taps, beta = kaiserord(_STOPBAND_DB, (1.0 - _PASSBAND) * nyquist / (hi_rate / 2.0))
        # Odd length 2*down*q + 1 makes the group delay, (length - 1) / 2, exactly q output samples.
        q = math.ceil((taps - 1) / (2 * self.down))
        length = 2 * self.down * q + 1
        proto = firwin(length, (_PASSBAND + 1.0) / 2.0 * nyquist, window=("kaiser", beta), fs=hi_rate)
        proto *= self.up / proto.sum()  # zero-stuffing divides the level by `up`
        self._k = -(-length // self.up)  # taps per phase
        padded = np.zeros(self._k * self.up)
        padded[:length] = proto
        poly = padded.reshape(self._k, self.up).T[:, ::-1]  # [up, K]: phase p, taps oldest input first
        # Consecutive outputs step through the phases in the order (i * down) % up; the coefficient rows are stored
        # in that order, twice over, so a block's rows are one contiguous slice instead of a gather.
        order = (np.arange(self.up) * self.down) % self.up
        self._coefs = np.ascontiguousarray(np.tile(poly[order], (2, 1)), dtype=np.float32)  # [2*up, K]
        self._position = np.empty(self.up, dtype=np.int64)
        self._position[order] = np.arange(self.up)  # phase -> its row in `order`
        # Starting the output grid `shift` high-rate samples early delays every output by shift/down samples;
        # the earliest outputs then reach up to `lead` samples before the first input, so keep that much more history.
        self._shift = round(extra_delay * self.down) % self.down
        self._lead = -(-self._shift // self.up)
        self._hist = self._k - 1 + self._lead
        self.delay = q + self._shift / self.down
        # Input buffer [C, hist + n]: history, then the current block; its K-sample windows are a fixed strided view.
        self._buf = np.zeros((channels, self._hist + 1024), dtype=np.float32)
        self._windows = np.lib.stride_tricks.sliding_window_view(self._buf, self._k, axis=1)
        self.reset()

    def reset(self) -> None:
        if self.identity:
            return
        self._buf[...] = 0.0
        self._next = -self._shift  # high-rate index of the next output, relative to the next input sample

    def total_out(self, total_in: np.ndarray) -> np.ndarray:
        """How many samples :meth:`process` has returned in all, from a reset, once ``total_in`` (int64, each
        >= 1) samples have gone in, in any blocks: the outputs whose high-rate index ``j * down - shift`` lies
        below ``total_in * up``. Counts only, no audio."""
        if self.identity:
            return total_in
        return np.maximum(0, (total_in * self.up - 1 + self._shift) // self.down + 1)

    def process(self, block: np.ndarray) -> np.ndarray:
        """float32 ``[C, n]`` -> float32 ``[C, m]``: every output sample whose inputs have all arrived."""
        if self.identity:
            return block
        n = block.shape[1]
        hist = self._hist
        if hist + n > self._buf.shape[1]:  # grow (only for a block longer than any before)
            grown = np.zeros((self.channels, hist + n), dtype=np.float32)
            grown[:, :hist] = self._buf[:, :hist]
            self._buf = grown
            self._windows = np.lib.stride_tricks.sliding_window_view(grown, self._k, axis=1)
        buf = self._buf
        buf[:, hist:hist + n] = block
        count = max(0, (n * self.up - 1 - self._next) // self.down + 1)
        first = int(self._position[self._next % self.up])
        if count <= self.up:
            coefs = self._coefs[first:first + count]
        else:
            coefs = self._coefs[(first + np.arange(count)) % self.up]
        # Output j uses the K inputs ending at input (next + j*down) // up, i.e. window row (that + lead) of `buf`.
        starts = (self._next + self.down * np.arange(count)) // self.up + self._lead
        out = np.einsum("cmk,mk->cm", self._windows[:, starts], coefs)
        self._next += count * self.down - n * self.up
        buf[:, :hist] = buf[:, n:n + hist]
        return out


class ResamplingEngine:
    """A :class:`StreamingEngine` run at another sample rate: the same ``process``/``flush``/``reset`` API, with
    blocks and ``latency_samples`` at the outer ``rate``.

    ``latency_samples`` counts both resamplers and the engine, exactly: output ``y[m]`` is the enhanced input
    at ``m - latency_samples`` (the up-resampler adds the fraction of a sample that makes the total whole).
    """

    def __init__(self, engine: StreamingEngine, rate: int) -> None:
        _check_rate(rate, "sample rate")
        self.engine = engine
        self.channels = engine.channels
        self.sample_rate = int(rate)
        inner = engine.sample_rate
        self._down = StreamResampler(rate, inner, engine.channels)
        through = (self._down.delay + engine.latency_samples) * rate / inner  # outer samples, maybe fractional
        whole = math.ceil(through - 1e-9)
        self._up = StreamResampler(inner, rate, engine.channels, extra_delay=whole - through)
        self.latency_samples: int = round(through + self._up.delay)
        self._consumed = 0
        self._produced = 0
        self._squeeze = False

    def output_lag(self, block: int) -> int:
        """As :meth:`StreamingEngine.output_lag`, at the outer rate: counted exactly, without audio, over one
        period of the block pattern. Output comes in whole inner hops (``hop * rate / inner`` outer samples, a
        fraction at 44.1 kHz) and each resampler rounds, so the lag is about a hop for most blocks, and 0 for a
        block of a whole number of hops at a multiple of the inner rate (384 samples at 48 kHz)."""
        hop = self.engine.hop
        # After P blocks the down-resampler has made a whole number of hops' worth that the up-resampler
        # maps back to exactly P * block: the pattern of the lag repeats with period P.
        cycle = self._down.down * hop * self._up.down
        period = cycle // math.gcd(block * self._down.up, cycle)
        k = np.arange(1, min(period, _LAG_BLOCKS) + 1, dtype=np.int64)
        inner = self._down.total_out(k * block)
        hops = inner // hop * hop  # the engine returns whole hops
        out = np.where(hops > 0, self._up.total_out(np.maximum(hops, 1)), 0)
        behind = k * block - out
        return int(behind.max() - behind.min())

    def process(self, block: np.ndarray) -> np.ndarray:
        """float32 ``[C, n]`` (or ``[n]``) at the outer rate -> the final samples at the outer rate."""
        x, self._squeeze = channels_first(block, self.channels, "audio block")
        y = self._up.process(self.engine.process(self._down.process(x)))
        self._consumed += x.shape[1]
        self._produced += y.shape[1]
        return y[0] if self._squeeze else y

    def flush(self) -> np.ndarray:
        """End the stream: the rest, so the total output is the total input plus ``latency_samples``; then reset."""
        squeeze = self._squeeze
        owed = self._consumed + self.latency_samples - self._produced
        chunk = np.zeros((self.channels, owed + math.ceil(self.engine.hop * self.sample_rate / self.engine.sample_rate)
                          + 1), dtype=np.float32)
        parts = []
        got = 0
        while got < owed:
            part = self.process(chunk)
            parts.append(part)
            got += part.shape[1]
        self.reset()
        tail = np.concatenate(parts, axis=1)[:, :owed] if parts else np.zeros((self.channels, 0), np.float32)
        return tail[0] if squeeze else tail

    def reset(self) -> None:
        self._down.reset()
        self._up.reset()
        self.engine.reset()
        self._consumed = 0
        self._produced = 0
