"""Streaming resampling around the engine: exact reported latency at 48 and 44.1 kHz, filter quality, API parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx_models import ema_model, identity_model

from realtime.engine import StreamingEngine
from realtime.errors import AudioFormatError
from realtime.model import load_model
from realtime.resample import ResamplingEngine, StreamResampler, resample


def _band_limited(channels: int, length: int, rate: int, seed: int = 0) -> np.ndarray:
    """Noise low-passed to 6 kHz (inside every resampler's passband here), float32 [C, T]."""
    rng = np.random.default_rng(seed)
    x = 0.3 * rng.standard_normal((channels, length)).astype(np.float32)
    return resample(resample(x, rate, 12000), 12000, rate)[:, :length]


def _stream(engine: ResamplingEngine, x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    outs, pos = [], 0
    while pos < x.shape[1]:
        n = int(rng.integers(1, 1500))
        outs.append(engine.process(x[:, pos:pos + n]))
        pos += n
    outs.append(engine.flush())
    return np.concatenate(outs, axis=1)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_identity_through_resampling_engine_is_delayed_by_reported_latency(tmp_path: Path, rate: int) -> None:
    fm = load_model(identity_model(tmp_path / "id.onnx"))
    engine = ResamplingEngine(StreamingEngine(fm, 2), rate)
    x = _band_limited(2, rate // 2, rate)
    y = _stream(engine, x, seed=rate)
    lat = engine.latency_samples
    assert y.shape == (2, x.shape[1] + lat)
    # The lag of best alignment is the reported latency (to a sample) ...
    lags = np.arange(lat - 20, lat + 21)
    core = x[0, 1000:-1000]
    score = [float(np.dot(y[0, 1000 + lag:1000 + lag + core.size], core)) for lag in lags]
    assert abs(int(lags[int(np.argmax(score))]) - lat) <= 1
    # ... and at that latency the waveform comes back (passband ripple and float rounding only).
    np.testing.assert_allclose(y[:, lat + 200:lat + x.shape[1] - 200], x[:, 200:-200], atol=2e-3)
    # Total latency stays near the model's 8 ms: the resamplers add ~2 ms each way, not soxr's ~45 ms of buffering.
    assert 8.0 < 1000.0 * lat / rate < 13.0


def test_same_rate_is_the_bare_engine(tmp_path: Path) -> None:
    fm = load_model(ema_model(tmp_path / "ema.onnx"))
    x = _band_limited(1, 4000, 16000)
    wrapped = ResamplingEngine(StreamingEngine(fm, 1), 16000)
    bare = StreamingEngine(fm, 1)
    assert wrapped.latency_samples == bare.latency_samples == 128
    y = _stream(wrapped, x, seed=1)
    z = np.concatenate([bare.process(x), bare.flush()], axis=1)
    np.testing.assert_allclose(y, z, atol=1e-6)


def test_resampling_engine_reset_and_state(tmp_path: Path) -> None:
    fm = load_model(ema_model(tmp_path / "ema.onnx"))
    engine = ResamplingEngine(StreamingEngine(fm, 1), 48000)
    x = _band_limited(1, 9600, 48000, seed=3)
    first = engine.process(x)
    engine.reset()
    np.testing.assert_array_equal(engine.process(x), first)
    with pytest.raises(AudioFormatError):
        engine.process(np.zeros((2, 10), np.float32))


@pytest.mark.parametrize(("rate_in", "rate_out"), [(48000, 16000), (44100, 16000), (16000, 48000), (16000, 44100)])
def test_stream_resampler_passband_stopband_and_block_independence(rate_in: int, rate_out: int) -> None:
    t = np.arange(rate_in // 2) / rate_in
    low = min(rate_in, rate_out)
    tone = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)[None]
    r = StreamResampler(rate_in, rate_out, 1)
    y = r.process(tone)
    expected = np.sin(2 * np.pi * 1000.0 * (np.arange(y.shape[1]) - r.delay) / rate_out)
    np.testing.assert_allclose(y[0, 300:-300], expected[300:-300], atol=1e-3)
    if rate_in > rate_out:  # tones above the output Nyquist must not fold back into the band
        for freq in (low / 2 + 1000.0, 0.75 * rate_in / 2):
            r.reset()
            folded = r.process(np.sin(2 * np.pi * freq * t).astype(np.float32)[None])
            assert 20 * np.log10(np.abs(folded[0, 300:]).max()) < -70
    # Block boundaries do not matter.
    r.reset()
    rng = np.random.default_rng(0)
    parts, pos = [], 0
    while pos < tone.shape[1]:
        n = int(rng.integers(1, 700))
        parts.append(r.process(tone[:, pos:pos + n]))
        pos += n
    np.testing.assert_allclose(np.concatenate(parts, axis=1), y, atol=1e-6)


def test_offline_resample_keeps_alignment_and_refuses_bad_rates() -> None:
    x = _band_limited(2, 44100, 44100)
    y = resample(resample(x, 44100, 16000), 16000, 44100)
    assert y.shape == x.shape
    np.testing.assert_allclose(y[:, 500:-500], x[:, 500:-500], atol=2e-3)
    with pytest.raises(AudioFormatError, match="sample rate"):
        resample(x, 0, 16000)
