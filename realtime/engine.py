"""The streaming denoiser and its offline twin.

Stages, in this order, for both: pre-emphasis on the stream -> framer (analysis window) -> ONNX frame model
(state carried from hop to hop) -> synthesis window + overlap-add -> de-emphasis on the summed stream, then, with an
attenuation limit, the input delayed by the latency mixed back in (``realtime.dsp.dry_share``).

:class:`StreamingEngine` takes blocks of any length and returns every sample that is final; its output stream
``y`` satisfies ``y[m] = enhanced(x)[m - latency_samples]``. :func:`enhance_offline` computes the same samples in
one pass (stateless models: all frames in a few batched ONNX calls) and returns them latency-compensated, so
``stream_output[latency : latency + T] == enhance_offline(x)`` up to float rounding.
"""

from __future__ import annotations

import math

import numpy as np

from realtime.dsp import DeEmphasis, DelayLine, PreEmphasis, deemphasis, dry_share, preemphasis
from realtime.errors import AudioFormatError
from realtime.framing import Framer, OverlapAdd, frames_view, overlap_add_into
from realtime.model import FrameModel

# Offline batches hold about this many float32 samples of frames per ONNX call (8 MiB) so long files stay bounded.
_OFFLINE_BATCH_SAMPLES = 1 << 21


def channels_first(audio: np.ndarray, channels: int | None, what: str) -> tuple[np.ndarray, bool]:
    """``[C, n]`` (or ``[n]`` for one channel) -> contiguous float32 ``[C, n]`` and whether the input was 1-D."""
    a = np.asarray(audio, dtype=np.float32)
    squeeze = a.ndim == 1
    if squeeze:
        a = a[None, :]
    if a.ndim != 2 or (channels is not None and a.shape[0] != channels):
        expected = f"[{channels}, n]" if channels is not None else "[C, n]"
        if channels == 1:
            expected += " or [n]"
        raise AudioFormatError(f"{what} has shape {np.shape(audio)}, expected {expected} (channels first).",
                               "pass channels-first float32 audio with the channel count the engine was built for.")
    if not np.isfinite(a.sum()):  # one reduction instead of a boolean array: NaN and Inf both survive a sum
        raise AudioFormatError(f"{what} contains NaN or Inf samples.",
                               "feed finite audio (check the source, or replace NaN/Inf with 0).")
    return np.ascontiguousarray(a), squeeze


class StreamingEngine:
    """Streaming denoiser over ``channels`` independent streams, batched as one model call per hop.

    ``process(block)`` takes float32 ``[C, n]`` (or ``[n]`` when C == 1), any ``n >= 0``, and returns the samples
    that became final: a multiple of ``hop`` samples per channel. ``flush()`` returns the rest, so the total output
    is the total input plus ``latency_samples``, and resets the engine for a new stream. ``atten_lim_db`` caps the
    suppression (see :func:`realtime.dsp.dry_share`); None removes all the noise the model can.
    """

    def __init__(self, model: FrameModel, channels: int = 1, atten_lim_db: float | None = None) -> None:
        self.dry = dry_share(atten_lim_db)
        model.check_batch(channels)
        spec = model.spec
        self.model = model
        self.spec = spec
        self.channels = channels
        self.sample_rate: int = spec.sample_rate
        self.latency_samples: int = spec.latency_samples
        self.window = spec.window
        self.hop = spec.hop
        self._pre = PreEmphasis(spec.preemphasis, channels)
        self._de = DeEmphasis(spec.preemphasis, channels)
        self._framer = Framer(channels, spec.window, spec.hop, model.analysis)
        self._ola = OverlapAdd(channels, spec.window, spec.hop, model.synthesis)
        self.stepper = model.stepper(channels)
        # the input, delayed by the latency, mixed back in under an attenuation limit
        self._dry_line = DelayLine(channels, self.latency_samples) if self.dry else None
        self._consumed = 0
        self._produced = 0
        self._squeeze = False

    def output_lag(self, block: int) -> int:
        """For a stream fed ``block`` samples at a time: how far the output can trail the input beyond the
        least it does (the max - min over the stream of input so far - output so far). The engine returns
        whole hops, so after ``k`` blocks it has returned ``hop * floor(k * block / hop)``: the lag is
        ``hop - gcd(block, hop)``. A jitter buffer sized from it never runs dry (see
        :func:`realtime.audio_io.jitter_target`)."""
        return self.hop - math.gcd(block, self.hop)

    def process(self, block: np.ndarray) -> np.ndarray:
        """Feed float32 ``[C, n]`` (or ``[n]``); returns float32 ``[C, k*hop]`` (or ``[k*hop]``) final samples."""
        x, self._squeeze = channels_first(block, self.channels, "audio block")
        n = x.shape[1]
        hop = self.hop
        framer = self._framer
        stepper = self.stepper
        hops = (hop - framer.needed + n) // hop
        out = np.empty((self.channels, hops * hop), dtype=np.float32)
        pre = self._pre(x)
        pos = 0
        for j in range(hops):
            take = framer.needed
            framer.push(pre[:, pos:pos + take])
            pos += take
            framer.emit(stepper.frame)
            stepper.step()
            self._ola.add(stepper.enhanced, out[:, j * hop:(j + 1) * hop])
        if pos < n:
            framer.push(pre[:, pos:])
        self._consumed += n
        self._produced += out.shape[1]
        y = self._de(out)
        if self._dry_line is not None:
            y = (1.0 - self.dry) * y + self.dry * self._dry_line(x, y.shape[1])
        return y[0] if self._squeeze else y

    def flush(self) -> np.ndarray:
        """End the stream: the remaining ``latency_samples`` (+ the partial hop) samples, then :meth:`reset`."""
        owed = self._consumed + self.latency_samples - self._produced
        zeros_needed = -(-(self._consumed + self.latency_samples) // self.hop) * self.hop - self._consumed
        squeeze = self._squeeze
        tail = self.process(np.zeros((self.channels, max(zeros_needed, 0)), dtype=np.float32))
        self.reset()
        tail = tail[..., :owed]
        return tail[0] if squeeze and tail.ndim == 2 else tail

    def reset(self) -> None:
        """Forget the stream: filters, buffers and model state back to their initial (zero) values."""
        self._pre.reset()
        self._de.reset()
        self._framer.reset()
        self._ola.reset()
        self.stepper.reset()
        if self._dry_line is not None:
            self._dry_line.reset()
        self._consumed = 0
        self._produced = 0


def enhance_offline(model: FrameModel, audio: np.ndarray, atten_lim_db: float | None = None) -> np.ndarray:
    """Denoise a whole signal: float32 ``[C, T]`` (or ``[T]``) -> the same shape, latency-compensated.

    Runs exactly the streaming stages on the streaming timeline (``window - hop`` zeros in front, zeros after to
    finish the last frames), then drops the first ``latency_samples`` samples.
    """
    dry = dry_share(atten_lim_db)
    x, squeeze = channels_first(audio, None, "audio")
    channels, length = x.shape
    spec = model.spec
    win, hop, latency = spec.window, spec.hop, spec.latency_samples
    model.check_batch(channels)
    needed = latency + length  # overlap-add samples [0, latency + T) are needed
    count = -(-needed // hop)  # frame k makes samples [k*hop, (k+1)*hop) final
    total = (count - 1) * hop + win
    raw = np.zeros((channels, total), dtype=np.float32)
    raw[:, win - hop:win - hop + length] = x
    frames = frames_view(preemphasis(raw, spec.preemphasis), win, hop)  # [C, count, W]
    summed = np.zeros((channels, total), dtype=np.float32)
    if model.stateful or model.fixed_batch is not None:
        stepper = model.stepper(channels)
        windowed = np.empty((channels, win), dtype=np.float32)
        for k in range(count):
            np.multiply(frames[:, k], model.analysis, out=stepper.frame)
            stepper.step()
            np.multiply(stepper.enhanced, model.synthesis, out=windowed)
            summed[:, k * hop:k * hop + win] += windowed
    else:
        per_call = max(1, _OFFLINE_BATCH_SAMPLES // (win * channels))
        for first in range(0, count, per_call):
            chunk = frames[:, first:first + per_call] * model.analysis  # [C, n, W]
            n = chunk.shape[1]
            enhanced, _ = model.run(chunk.reshape(channels * n, win), [])
            enhanced = enhanced.reshape(channels, n, win) * model.synthesis
            overlap_add_into(summed, enhanced, first, hop)
    y = deemphasis(summed[:, :needed], spec.preemphasis)[:, latency:]
    if dry:
        y = (1.0 - dry) * y + dry * x
    return y[0] if squeeze else y
