"""The streaming engine, its offline twin and model loading, on tiny ONNX models (no trained model needed)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx_models import ema_model, gain_model, identity_model, lookahead_model, make_spec

from realtime import model as model_module
from realtime.engine import StreamingEngine, enhance_offline
from realtime.errors import AudioFormatError, ConfigError, DeviceError, ModelError
from realtime.model import FrameModel, load_model
from realtime.spec import StateSpec

_MODELS: dict[str, FrameModel] = {}


def _model(name: str) -> FrameModel:
    """Tiny models, built once per session in a temporary folder (hypothesis forbids function-scoped fixtures)."""
    if name not in _MODELS:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="denoise-engine-"))
        makers = {
            "identity": lambda p: identity_model(p),
            "gain_bias": lambda p: gain_model(p, gain=0.7, bias=0.01),
            "ema": lambda p: ema_model(p, decay=0.8),
            "ema_ones_hann": lambda p: ema_model(p, decay=0.6, spec=make_spec(64, 32, analysis="ones",
                                                                              synthesis="hann", preemphasis=0.9)),
            "gain_no_overlap": lambda p: gain_model(p, gain=1.5, bias=-0.02, spec=make_spec(
                32, 32, analysis="ones", synthesis="ones", preemphasis=0.0)),
        }
        _MODELS[name] = load_model(makers[name](folder / f"{name}.onnx"))
    return _MODELS[name]


def _stream(engine: StreamingEngine, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Feed ``x`` [C, T] in blocks of the given sizes (cycled), then flush: the whole output stream [C, T + L]."""
    outs, pos, i = [], 0, 0
    while pos < x.shape[1]:
        n = sizes[i % len(sizes)]
        outs.append(engine.process(x[:, pos:pos + n]))
        pos += n
        i += 1
    outs.append(engine.flush())
    return np.concatenate(outs, axis=1)


def _reference(x: np.ndarray, name: str) -> np.ndarray:
    """The whole pipeline written out sample by sample in float64, independent of the engine's code: [T] -> [T]."""
    fm = _model(name)
    spec = fm.spec
    w, h, a, lat = spec.window, spec.hop, spec.preemphasis, spec.latency_samples
    t = len(x)
    count = -(-(lat + t) // h)
    raw = np.zeros(count * h)  # the input, then the zeros that finish the last frame
    raw[:t] = x
    pre = np.array([raw[n] - a * (raw[n - 1] if n else 0.0) for n in range(len(raw))])
    padded = np.concatenate([np.zeros(w - h), pre])
    ana, syn = fm.analysis.astype(np.float64), fm.synthesis.astype(np.float64)
    ola = np.zeros(len(padded))
    state = np.zeros(w)
    for k in range(count):
        frame = padded[k * h:k * h + w] * ana
        if name.startswith("ema"):
            decay = 0.8 if name == "ema" else 0.6
            state = decay * state + (1.0 - decay) * frame
            out = state
        elif name == "gain_bias":
            out = 0.7 * frame + 0.01
        elif name == "gain_no_overlap":
            out = 1.5 * frame - 0.02
        else:
            out = frame
        ola[k * h:k * h + w] += out * syn
    y = np.zeros(lat + t)
    prev = 0.0
    for n in range(lat + t):
        prev = ola[n] + a * prev
        y[n] = prev
    return y[lat:]


def _noise(channels: int, length: int, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((channels, length))).astype(np.float32)


@pytest.mark.parametrize("name", ["identity", "gain_bias", "ema", "ema_ones_hann", "gain_no_overlap"])
def test_offline_matches_sample_by_sample_reference(name: str) -> None:
    x = _noise(1, 777, seed=1)[0]
    np.testing.assert_allclose(enhance_offline(_model(name), x), _reference(x.astype(np.float64), name), atol=2e-5)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(["identity", "gain_bias", "ema", "ema_ones_hann", "gain_no_overlap"]),
       channels=st.integers(1, 3), length=st.integers(0, 1500),
       sizes=st.lists(st.integers(1, 800), min_size=1, max_size=12), seed=st.integers(0, 2**16))
def test_streaming_equals_offline(name: str, channels: int, length: int, sizes: list[int], seed: int) -> None:
    fm = _model(name)
    x = _noise(channels, length, seed)
    engine = StreamingEngine(fm, channels)
    y = _stream(engine, x, sizes)
    lat = engine.latency_samples
    assert y.shape == (channels, length + lat)
    if length:
        assert np.max(np.abs(y[:, lat:] - enhance_offline(fm, x))) <= 1e-5


def test_identity_reconstructs_input_delayed_by_latency() -> None:
    fm = _model("identity")
    x = _noise(2, 3000, seed=2)
    engine = StreamingEngine(fm, 2)
    y = _stream(engine, x, [1, 7, 128, 300, 1000])
    lat = engine.latency_samples
    assert lat == 128
    np.testing.assert_allclose(y[:, lat:], x, atol=1e-5)
    np.testing.assert_allclose(y[:, :lat], 0.0, atol=1e-7)
    np.testing.assert_allclose(enhance_offline(fm, x), x, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(["gain_bias", "ema", "gain_no_overlap"]), lim=st.sampled_from([3.0, 12.0, 40.0]),
       length=st.integers(1, 1200), sizes=st.lists(st.integers(1, 500), min_size=1, max_size=6),
       seed=st.integers(0, 2**16))
def test_attenuation_limit_mixes_the_aligned_input_back_in_streaming_and_offline(
        name: str, lim: float, length: int, sizes: list[int], seed: int) -> None:
    fm = _model(name)
    x = _noise(2, length, seed)
    g = 10.0 ** (-lim / 20.0)
    expected = (1.0 - g) * enhance_offline(fm, x) + g * x  # the dry input, sample-aligned with the output
    np.testing.assert_allclose(enhance_offline(fm, x, atten_lim_db=lim), expected, atol=1e-5)
    engine = StreamingEngine(fm, 2, atten_lim_db=lim)
    engine.process(_noise(2, 300, seed + 1))
    engine.reset()  # a stream cut short leaves nothing behind
    for _ in range(2):  # flush resets: a second stream through the same engine gives the same samples
        y = _stream(engine, x, sizes)
        lat = engine.latency_samples
        assert y.shape == (2, length + lat)
        assert np.max(np.abs(y[:, lat:] - expected)) <= 1e-5


def test_attenuation_limit_is_the_stated_mix_and_bad_limits_are_refused() -> None:
    fm = _model("gain_no_overlap")  # 20 dB: 10 % of the input, 90 % of the model output
    x = _noise(1, 4000, seed=9)[0]
    plain, limited = enhance_offline(fm, x), enhance_offline(fm, x, atten_lim_db=20.0)
    np.testing.assert_allclose(limited - 0.9 * plain, 0.1 * x, atol=1e-5)
    for bad in (0.0, -6.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="attenuation limit"):
            StreamingEngine(fm, 1, atten_lim_db=bad)
        with pytest.raises(ConfigError, match="--atten-lim"):
            enhance_offline(fm, x, atten_lim_db=bad)


def test_lookahead_is_part_of_the_latency(tmp_path: Path) -> None:
    fm = load_model(lookahead_model(tmp_path / "la.onnx", lookahead=20))
    assert fm.spec.latency_samples == 20  # window == hop: the model's lookahead is all the latency
    x = _noise(2, 1000, seed=6)
    engine = StreamingEngine(fm, 2)
    y = _stream(engine, x, [1, 13, 64, 200])
    assert engine.latency_samples == 20 and y.shape == (2, 1020)
    np.testing.assert_allclose(y[:, 20:], x, atol=1e-5)
    np.testing.assert_allclose(enhance_offline(fm, x), x, atol=1e-5)


def test_process_returns_only_final_samples_in_whole_hops() -> None:
    engine = StreamingEngine(_model("identity"), 1)
    assert engine.process(np.zeros(100, np.float32)).shape == (0,)  # 1-D in, 1-D out
    assert engine.process(np.zeros(100, np.float32)).shape == (128,)
    assert engine.process(np.zeros((1, 0), np.float32)).shape == (1, 0)
    assert engine.process(np.zeros((1, 300), np.float32)).shape == (1, 256)
    assert engine.flush().shape == (1, 500 + 128 - 384)


def test_state_is_carried_and_reset_restores_initial_behaviour() -> None:
    fm = _model("ema")
    x = _noise(1, 2048, seed=3)
    engine = StreamingEngine(fm, 1)
    first = engine.process(x)
    again = engine.process(x)  # same input, different history
    assert np.max(np.abs(first - again)) > 1e-2
    engine.reset()
    np.testing.assert_array_equal(engine.process(x), first)
    # A constant frame-aligned input: the moving average ramps up frame after frame instead of jumping.
    engine.reset()
    ramp = engine.process(np.full((1, 128 * 12), 0.5, np.float32))
    hop_levels = np.abs(ramp[0, 128 * 2:].reshape(-1, 128)).mean(axis=1)
    assert np.all(np.diff(hop_levels[:6]) > 1e-4)


def test_flush_ends_the_stream_and_resets() -> None:
    fm = _model("gain_bias")
    x = _noise(1, 1000, seed=4)
    engine = StreamingEngine(fm, 1)
    y1 = _stream(engine, x, [333])
    y2 = _stream(engine, x, [64, 500])  # a second stream on the same engine behaves like a fresh one
    np.testing.assert_allclose(y1, y2, atol=1e-6)
    assert y1.shape[1] == 1000 + engine.latency_samples


def test_channels_are_independent_streams() -> None:
    fm = _model("ema")
    x = _noise(3, 2000, seed=5)
    together = _stream(StreamingEngine(fm, 3), x, [200, 37])
    for c in range(3):
        alone = _stream(StreamingEngine(fm, 1), x[c:c + 1], [91])
        np.testing.assert_allclose(together[c:c + 1], alone, atol=1e-6)


def test_bad_blocks_are_refused_with_typed_errors() -> None:
    engine = StreamingEngine(_model("identity"), 2)
    with pytest.raises(AudioFormatError, match=r"\[2, n\]"):
        engine.process(np.zeros((3, 10), np.float32))
    with pytest.raises(AudioFormatError, match="expected"):
        engine.process(np.zeros(10, np.float32))  # 1-D only for one channel
    bad = np.zeros((2, 10), np.float32)
    bad[1, 3] = np.nan
    with pytest.raises(AudioFormatError, match="NaN"):
        engine.process(bad)


def test_model_metadata_and_windows_are_read(tmp_path: Path) -> None:
    spec = make_spec(64, 32, analysis="ones", synthesis="hann", preemphasis=0.9)
    fm = load_model(ema_model(tmp_path / "m.onnx", decay=0.6, spec=spec))
    assert (fm.spec.window, fm.spec.hop, fm.spec.preemphasis) == (64, 32, 0.9)
    assert fm.spec.state[0].shape == (1, 64) and fm.stateful and fm.fixed_batch is None
    assert fm.device == "cpu" and fm.providers == ["CPUExecutionProvider"]
    frames = np.ones((2, 64), np.float32)
    out, state = fm.run(frames, fm.initial_state(2))
    np.testing.assert_allclose(out, 0.4 * frames, rtol=1e-6)
    out, _ = fm.run(frames, state)
    np.testing.assert_allclose(out, (0.6 * 0.4 + 0.4) * frames, rtol=1e-6)


def test_missing_and_non_onnx_files_raise_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf at all" * 10)
    with pytest.raises(ModelError, match="cannot be opened as an ONNX model.*denoise export"):
        load_model(junk)
    with pytest.raises(ModelError, match="not a file"):
        load_model(tmp_path)


def test_foreign_and_inconsistent_models_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a denoise model"):
        load_model(identity_model(tmp_path / "foreign.onnx", metadata={"author": "someone"}))
    with pytest.raises(ModelError, match=r"'frame' has shape \['B', 128\]"):
        load_model(identity_model(tmp_path / "short.onnx", graph_window=128))
    with pytest.raises(ModelError, match="overlap-add"):
        load_model(identity_model(tmp_path / "hann2.onnx", spec=make_spec(analysis="hann", synthesis="hann")))
    spec = make_spec()
    lying = dataclasses.replace(spec, state=(StateSpec("h_in", "h_out", (4,)),))
    with pytest.raises(ModelError, match="lacks the inputs/outputs"):
        load_model(identity_model(tmp_path / "nostate.onnx", metadata=lying.to_metadata()))


def test_fixed_batch_model_refuses_other_channel_counts(tmp_path: Path) -> None:
    fm = load_model(identity_model(tmp_path / "b1.onnx", batch=1))
    assert fm.fixed_batch == 1
    x = _noise(1, 500)
    np.testing.assert_allclose(enhance_offline(fm, x), x, atol=1e-5)  # the per-frame path serves fixed batches
    with pytest.raises(ModelError, match="fixed batch of 1"):
        StreamingEngine(fm, 2)


def test_default_model_missing_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(model_module, "default_model_path", lambda: tmp_path / "default.onnx")
    with pytest.raises(ModelError, match="--model"):
        load_model(None)


def test_the_default_runs_its_int8_twin_on_cpu_only_when_the_weights_match(monkeypatch: pytest.MonkeyPatch,
                                                                            tmp_path: Path) -> None:
    fp32, twin = tmp_path / "default.onnx", tmp_path / model_module.INT8_TWIN
    monkeypatch.setattr(model_module, "default_model_path", lambda: fp32)
    meta = make_spec().to_metadata()
    gain_model(fp32, gain=0.5)  # no weights_sha256 recorded: the twin cannot be proven to match
    gain_model(twin, gain=0.25)
    assert model_module.resolve_default(["CPUExecutionProvider"]) == fp32
    identity_model(fp32, metadata={**meta, "weights_sha256": "aa"})
    identity_model(twin, metadata={**meta, "weights_sha256": "aa", "precision": "int8"})
    assert model_module.resolve_default(["CPUExecutionProvider"]) == twin
    assert load_model(None, device="cpu").path == twin
    # on CUDA the fp32 file (ONNX Runtime has no integer matrix kernels there)
    assert model_module.resolve_default(["CUDAExecutionProvider", "CPUExecutionProvider"]) == fp32
    # a default replaced by another export never pairs with the old twin; a damaged twin is passed over
    identity_model(fp32, metadata={**meta, "weights_sha256": "bb"})
    assert load_model(None, device="cpu").path == fp32
    twin.write_bytes(b"not onnx")
    assert model_module.resolve_default(["CPUExecutionProvider"]) == fp32


def test_device_and_thread_options(tmp_path: Path) -> None:
    path = identity_model(tmp_path / "id.onnx")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(DeviceError, match="no CUDA provider"):
            load_model(path, device="cuda")
        assert load_model(path, device="auto").device == "cpu"
    with pytest.raises(DeviceError, match="Unknown device"):
        load_model(path, device="tpu")
    with pytest.raises(ConfigError, match="threads"):
        load_model(path, threads=-1)
    assert load_model(path, threads=0).spec.window == 256


@settings(max_examples=40, deadline=None)
@given(channels=st.integers(1, 3), sizes=st.lists(st.integers(0, 1500), min_size=1, max_size=8),
       coef=st.sampled_from([0.0, 0.5, 0.95]), seed=st.integers(0, 2**16))
def test_streaming_emphasis_filters_equal_the_offline_ones_for_any_blocks(channels: int, sizes: list[int],
                                                                          coef: float, seed: int) -> None:
    from realtime.dsp import DeEmphasis, PreEmphasis, deemphasis, preemphasis

    x = _noise(channels, sum(sizes), seed)
    pre, de = PreEmphasis(coef, channels), DeEmphasis(coef, channels)
    for _ in range(2):  # the second pass after reset() must repeat the first
        pieces = np.cumsum([0, *sizes])
        emphasised = np.concatenate([pre(x[:, a:b]) for a, b in itertools.pairwise(pieces)], axis=1)
        restored = np.concatenate([de(emphasised[:, a:b]) for a, b in itertools.pairwise(pieces)], axis=1)
        np.testing.assert_allclose(emphasised, preemphasis(x, coef), atol=1e-6)
        np.testing.assert_allclose(restored, deemphasis(emphasised, coef), atol=2e-5)
        np.testing.assert_allclose(restored, x, atol=5e-5)
        pre.reset()
        de.reset()
