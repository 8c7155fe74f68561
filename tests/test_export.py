"""``denoise export``: ONNX parity with PyTorch through the engine, self-describing metadata, refusals, int8/fp16.

Tiny untrained generators keep every export to a second or two; parity does not need trained weights.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from evaluation.metrics import si_sdr
from export.onnx_export import export_cli, export_with_report, without_latent
from export.verify import ExportError, speech_like, verify_export
from realtime.dsp import deemphasis, preemphasis
from realtime.engine import enhance_offline
from realtime.errors import CheckpointError, ConfigError, ModelError
from realtime.model import load_model
from realtime.spec import parse_metadata, weights_digest
from training.checkpoint import save_checkpoint
from training.models import build_generator, config_dict, frame_signal, overlap_add

TINY_LOWLAT = {"channels": [4, 8], "bottleneck": 16, "gru_hidden": 16}
TINY_SEGAN = {"channels": [4, 8, 8, 16], "window": 1024, "hop": 512, "z_channels": 8}
HOPS = 240


def tiny_generator(preset: str, seed: int = 0, **values: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    gen = build_generator(preset, {**(TINY_LOWLAT if preset == "lowlat" else TINY_SEGAN), **values})
    with torch.no_grad():  # non-zero biases everywhere, so no path of the graph is trivially zero
        for name, p in gen.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
            elif name in ("band_out.weight", "ctx_inp.weight", "df_head.weight", "fut_inp.weight", "fut_head.weight"):
                p.normal_(0.0, 0.3)  # zero-initialised for fine-tuning; give the path a say
    return gen.eval()


def write_checkpoint(path: Path, gen: torch.nn.Module, step: int = 1234, preemphasis_coef: float = 0.9,
                     **overrides: Any) -> Path:
    ckpt = {"format": "denoise-checkpoint", "format_version": 1, "preset": gen.preset,
            "generator_config": config_dict(gen.cfg), "generator": gen.state_dict(), "step": step, "epoch": 3,
            "config": {"loss": {"preemphasis": preemphasis_coef}},
            "metrics": {"pesq": 2.5, "stoi": 0.91, "si_sdr": 12.25, "l1": 0.0123}, "denoise_version": "0.0.9"}
    ckpt.update(overrides)
    save_checkpoint(path, ckpt)
    return path


def metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def torch_frames(gen: torch.nn.Module, audio: np.ndarray, coef: float) -> torch.Tensor:
    frames, _ = frame_signal(torch.from_numpy(preemphasis(audio, coef)), gen.window, gen.hop, gen.lookahead)
    return frames * gen.win_a


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Any:
    """Tiny models run fastest on one thread, and the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lowlat(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, Path, Any]:
    """(generator, checkpoint, fp32 export, export report) of a tiny lowlat model, exported once via the CLI path."""
    root = tmp_path_factory.mktemp("lowlat")
    gen = tiny_generator("lowlat")
    ckpt = write_checkpoint(root / "ckpt.pt", gen)
    from training.checkpoint import load_generator

    loaded, meta = load_generator(ckpt)
    report = export_with_report(loaded, meta, root / "out" / "model.onnx")
    return gen, ckpt, report.path, report


def test_lowlat_export_runs_in_the_engine_and_matches_torch_over_many_hops(lowlat: Any) -> None:
    gen, _, path, report = lowlat
    assert report.verify is not None and report.verify.hops >= 200
    assert max(report.verify.max_err_step, report.verify.max_err_frames) <= 1e-4
    model = load_model(path, device="cpu", threads=1)
    assert model.spec.state[0].input == "h_in" and model.spec.state[0].shape == (1, 16)
    audio = speech_like(HOPS * gen.hop, gen.sample_rate)[None]
    frames = torch_frames(gen, audio, model.spec.preemphasis)
    state = model.initial_state(1)
    got = []
    for k in range(frames.shape[1]):
        out, state = model.run(frames[:, k].numpy(), state)
        got.append(out)
    got_frames = np.stack(got, 1)
    with torch.no_grad():
        ref_state = gen.initial_state(1)
        ref = []
        for k in range(frames.shape[1]):
            out, *ref_state = gen.step(frames[:, k], *ref_state)
            ref.append(out.numpy())
        full, _ = gen.forward_frames(frames)
    assert frames.shape[1] >= 200
    np.testing.assert_allclose(got_frames, np.stack(ref, 1), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_frames, full.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(state[0], ref_state[0].numpy(), atol=1e-4, rtol=0)
    assert np.abs(got_frames).max() > 1e-2  # the comparison is not between two near-zero signals


@pytest.mark.parametrize("past_frames, lookahead", [(0, 0), (2, 0), (2, 1)])
def test_band_memory_exports_its_states_and_matches_torch_over_many_hops(tmp_path: Path, past_frames: int,
                                                                        lookahead: int) -> None:
    gen = tiny_generator("lowlat", band_gru=6, past_frames=past_frames, lookahead_frames=lookahead)
    from training.checkpoint import load_generator

    loaded, meta = load_generator(write_checkpoint(tmp_path / "ckpt.pt", gen))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = export_with_report(loaded, meta, tmp_path / "band.onnx")
    # a tracer warning from the generator would mean a shape baked into the graph (and it would be shown to users)
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)], [str(w.message) for w in caught]
    assert report.verify is not None and max(report.verify.max_err_step, report.verify.max_err_frames) <= 1e-4
    model = load_model(report.path, device="cpu", threads=1)
    expected = [("h_in", (1, 16)), ("hb_in", (gen.lengths[-1], 6))]
    expected += [("past_in", (past_frames + lookahead, 2 * gen.bins))] if past_frames + lookahead else []
    assert [(s.input, s.shape) for s in model.spec.state] == expected
    assert model.spec.lookahead == lookahead * gen.hop and model.spec.latency_samples == gen.latency_samples
    frames = torch_frames(gen, speech_like(HOPS * gen.hop, gen.sample_rate)[None], model.spec.preemphasis)
    state = model.initial_state(1)
    got = []
    for k in range(frames.shape[1]):
        out, state = model.run(frames[:, k].numpy(), state)
        got.append(out)
    with torch.no_grad():
        full, ref_state = gen.forward_frames(frames)
    np.testing.assert_allclose(np.stack(got, 1), full.numpy(), atol=1e-4, rtol=0)
    for ours, ref in zip(state, ref_state):
        np.testing.assert_allclose(ours, ref.numpy(), atol=1e-4, rtol=0)
    assert all(np.abs(s).max() > 1e-3 for s in state[1:])


def test_exported_reshapes_have_constant_targets_and_any_batch_runs(lowlat: Any) -> None:
    gen, _, path, _ = lowlat
    graph = onnx.load(str(path)).graph
    constants = {t.name for t in graph.initializer}
    reshapes = [n for n in graph.node if n.op_type == "Reshape"]
    assert reshapes and all(n.input[1] in constants for n in reshapes)  # no Shape/Gather/Concat chain per hop
    model = load_model(path, device="cpu", threads=1)
    rng = np.random.default_rng(4)
    frames = (0.1 * rng.standard_normal((5, gen.window))).astype(np.float32)
    one_by_one = [model.run(frames[k:k + 1], model.initial_state(1))[0] for k in range(5)]
    together, _ = model.run(frames, model.initial_state(5))  # the batch axis is still dynamic
    np.testing.assert_allclose(together, np.concatenate(one_by_one), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("values", "expected"), [
    ([[1, 3, 129], [2, 3, 129], [3, 3, 129]], [-1, 3, 129]),  # the batch entry becomes -1
    ([[4, 8], [4, 8], [4, 8]], [4, 8]),  # fixed entirely
    ([[1, 1, 8], [2, 2, 8], [3, 3, 8]], None),  # two entries follow the batch: -1 can stand for one only
    ([[1, -1], [2, -1], [3, -1]], None),  # already has a -1
    ([[1, 0], [2, 0], [3, 0]], None),  # 0 copies an input dimension
])
def test_reshape_target_folding_rule(values: list[list[int]], expected: list[int] | None) -> None:
    from export.shapes import _folded_target

    got = _folded_target([np.array(v, dtype=np.int64) for v in values])
    assert (got is None) if expected is None else (got is not None and got.tolist() == expected)


def test_engine_offline_output_equals_the_torch_generator_on_the_whole_signal(lowlat: Any) -> None:
    gen, _, path, _ = lowlat
    model = load_model(path)
    audio = speech_like(16000, gen.sample_rate, seed=3)
    ours = enhance_offline(model, audio[None])[0]
    # The torch reference on the engine's timeline: the zeros that finish the last frame are pre-emphasised with
    # the signal (the first becomes -a * x[T-1]), and de-emphasis runs over the pre-roll (the first
    # window - hop output samples, non-zero for zero input) before it is dropped. Training's ``forward`` trims
    # first, which differs from the stream in the first ~30 and last samples only.
    padded = np.concatenate([audio, np.zeros(gen.hop, dtype=np.float32)])
    with torch.no_grad():
        frames, length = frame_signal(torch.from_numpy(preemphasis(padded, 0.9))[None], gen.window, gen.hop)
        out, _ = gen.forward_frames(frames * gen.win_a)
        full = overlap_add(out * gen.win_s, gen.hop, length).numpy()
    lat = gen.latency_samples
    ref = deemphasis(full, 0.9)[0, lat:lat + audio.size]
    assert ours.shape == audio.shape
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    assert si_sdr(ref, ours) > 60.0


def test_metadata_round_trips_and_equals_the_checkpoint(lowlat: Any) -> None:
    gen, _, path, _ = lowlat
    md = metadata(path)
    spec = parse_metadata(md)
    assert parse_metadata(spec.to_metadata()) == spec
    assert (spec.preset, spec.sample_rate, spec.window, spec.hop, spec.lookahead) == ("lowlat", 16000, 256, 128, 0)
    assert spec.latency_samples == 128 and md["algorithmic_latency_samples"] == "128"
    assert (spec.analysis_window, spec.synthesis_window) == (gen.analysis_window, gen.synthesis_window)
    assert spec.preemphasis == 0.9  # from the checkpoint's loss config, not the 0.95 default
    assert [(s.input, s.output, s.shape) for s in spec.state] == gen.state_spec()
    assert spec.train_step == 1234
    assert dict(spec.metrics) == {"pesq": 2.5, "stoi": 0.91, "si_sdr": 12.25, "l1": 0.0123}
    assert spec.precision == "fp32"
    assert spec.weights_sha256 == weights_digest([t.numpy() for t in gen.state_dict().values()])
    assert json.loads(md["config"]) == config_dict(gen.cfg)
    assert md["denoise_version"] and spec.extra["trained_with"] == "0.0.9"
    assert spec.extra["checkpoint"] == "ckpt.pt"
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["frame", "h_in"]
    assert [o.name for o in graph.output] == ["enhanced", "h_out"]
    for value in [*graph.input, *graph.output]:  # dynamic batch axis everywhere
        assert value.type.tensor_type.shape.dim[0].dim_param == "B"


def _rewrite(src: Path, dst: Path, change: dict[str, str | None]) -> Path:
    model = onnx.load(str(src))
    md = {p.key: p.value for p in model.metadata_props}
    for key, value in change.items():
        if value is None:
            md.pop(key)
        else:
            md[key] = value
    del model.metadata_props[:]
    helper.set_model_props(model, md)
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("change, message", [
    ({"window": "512"}, "inconsistent"),  # latency no longer equals window - hop + lookahead
    ({"format": None}, "not a denoise model"),
    ({"state": None}, "lacks metadata"),
    ({"state": json.dumps([{"input": "h_in", "output": "h_out", "shape": [1, 17]}])}, "h_in"),
])
def test_tampered_exports_are_refused(lowlat: Any, tmp_path: Path, change: dict[str, str | None],
                                      message: str) -> None:
    path = _rewrite(lowlat[2], tmp_path / "tampered.onnx", change)
    with pytest.raises(ModelError, match=message):
        load_model(path)


def test_a_foreign_onnx_model_is_refused(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("frame", TensorProto.FLOAT, ["B", 256])
    y = helper.make_tensor_value_info("enhanced", TensorProto.FLOAT, ["B", 256])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["frame"], ["enhanced"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "foreign.onnx"))
    with pytest.raises(ModelError, match="not a denoise model"):
        load_model(tmp_path / "foreign.onnx")


def test_export_from_a_run_folder_uses_best_pt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    best, latest = tiny_generator("lowlat", seed=1), tiny_generator("lowlat", seed=2)
    write_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", best, step=700)
    write_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt", latest, step=900)
    export_cli(tmp_path / "run", tmp_path / "m.onnx", opset=17, quantize=None, fp16=False, verify=True)
    spec = parse_metadata(metadata(tmp_path / "m.onnx"))
    assert spec.train_step == 700 and spec.extra["checkpoint"] == "best.pt"
    assert spec.weights_sha256 == weights_digest([t.numpy() for t in best.state_dict().values()])
    out = capsys.readouterr().out
    assert "best.pt" in out and "lowlat (fp32)" in out and "8 ms" in out and "parity vs PyTorch" in out


def test_segan_exports_without_latent_or_state_and_matches(tmp_path: Path) -> None:
    gen = tiny_generator("segan")
    ckpt = write_checkpoint(tmp_path / "segan.pt", gen)
    export_cli(ckpt, tmp_path / "segan.onnx", opset=17, quantize=None, fp16=False, verify=True)
    model = load_model(tmp_path / "segan.onnx")
    spec = model.spec
    assert (spec.preset, spec.window, spec.hop, spec.state) == ("segan", 1024, 512, ())
    assert (spec.analysis_window, spec.synthesis_window, spec.latency_samples) == ("ones", "hann", 512)
    assert "zeros" in spec.extra["latent"]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "segan.onnx")).graph.node}
    assert not ops & {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}
    frames = torch_frames(gen, speech_like(8 * 512, 16000)[None], spec.preemphasis)
    got, state = model.run(frames[0].numpy(), [])  # the windows of one signal as a batch
    with torch.no_grad():
        ref, _ = gen.forward_frames(frames, z=gen.latent(frames.shape[1]))  # the original, z = zeros
    assert state == []
    np.testing.assert_allclose(got, ref[0].numpy(), atol=1e-4, rtol=0)
    assert np.abs(got).max() > 1e-3


def test_segan_latent_fold_is_exact() -> None:
    gen = tiny_generator("segan")
    folded = without_latent(gen)
    assert folded.cfg.z_channels == 0 and gen.cfg.z_channels == 8
    frames = torch.randn(1, 3, 1024)
    with torch.no_grad():
        torch.testing.assert_close(folded.forward_frames(frames)[0], gen.forward_frames(frames)[0])


def test_checkpoint_from_an_older_generator_config_takes_defaults(tmp_path: Path) -> None:
    gen = tiny_generator("lowlat")
    ckpt_config = {k: v for k, v in config_dict(gen.cfg).items() if k not in ("mask_bound", "dropout")}
    ckpt = write_checkpoint(tmp_path / "old.pt", gen, generator_config=ckpt_config, config={})
    export_cli(ckpt, tmp_path / "old.onnx", opset=17, quantize=None, fp16=False, verify=True)
    md = metadata(tmp_path / "old.onnx")
    assert json.loads(md["config"])["mask_bound"] == 1.0  # the missing key took its default
    assert parse_metadata(md).preemphasis == 0.95  # no training config: the default coefficient


@pytest.mark.parametrize("version", [0, None])
def test_checkpoint_of_another_format_version_is_refused_with_the_reason(tmp_path: Path, version: int | None) -> None:
    gen = tiny_generator("lowlat")
    ckpt = write_checkpoint(tmp_path / "v.pt", gen)
    raw = torch.load(ckpt, weights_only=True)
    if version is None:
        del raw["format_version"]
    else:
        raw["format_version"] = version
    torch.save(raw, ckpt)
    with pytest.raises(CheckpointError, match="format version"):
        export_cli(ckpt, tmp_path / "v.onnx", opset=17, quantize=None, fp16=False, verify=True)
    assert not (tmp_path / "v.onnx").exists()


def _engine_output(path: Path, audio: np.ndarray) -> np.ndarray:
    return enhance_offline(load_model(path), audio[None])[0]


def test_int8_export_loads_and_reports_its_quality(lowlat: Any, tmp_path: Path) -> None:
    _gen, ckpt, fp32_path, _ = lowlat
    from training.checkpoint import load_generator

    report = export_with_report(*load_generator(ckpt), tmp_path / "int8.onnx", quantize="int8")
    assert report.spec.precision == "int8"
    assert report.verify is not None and set(report.verify.si_sdr_db) == set(report.verify.signals)
    assert len(report.verify.signals) == 2 and report.verify.signals[0] == "random"
    assert min(report.verify.si_sdr_db.values()) >= 20.0
    assert report.verify.reference_per_hop_us and report.verify.per_hop_us > 0  # the speed-up is measured
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    assert "GRU" not in ops  # the recurrent matrices are written out as MatMuls, so they are int8 too
    model = load_model(tmp_path / "int8.onnx")
    assert model.spec.precision == "int8" and model.spec.weights_sha256 == parse_metadata(
        metadata(fp32_path)).weights_sha256
    audio = speech_like(32000, 16000, seed=5)
    assert si_sdr(_engine_output(tmp_path / "int8.onnx", audio), _engine_output(fp32_path, audio)) >= 20.0


def test_fp16_export_stores_half_weights_keeps_float_io(lowlat: Any, tmp_path: Path) -> None:
    _gen, ckpt, fp32_path, _ = lowlat
    from training.checkpoint import load_generator

    report = export_with_report(*load_generator(ckpt), tmp_path / "fp16.onnx", fp16=True)
    assert report.verify is not None and min(report.verify.si_sdr_db.values()) >= 30.0
    model_proto = onnx.load(str(tmp_path / "fp16.onnx"))
    big = [i for i in model_proto.graph.initializer if numpy_helper.to_array(i).size >= 256]
    assert big and all(i.data_type == TensorProto.FLOAT16 for i in big)
    model = load_model(tmp_path / "fp16.onnx")  # the engine's own I/O checks: float32 frame, state, output
    assert model.spec.precision == "fp16"
    audio = speech_like(32000, 16000, seed=6)
    assert si_sdr(_engine_output(tmp_path / "fp16.onnx", audio), _engine_output(fp32_path, audio)) >= 30.0


def test_refuses_to_overwrite_the_checkpoint(tmp_path: Path) -> None:
    gen = tiny_generator("lowlat")
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", gen)
    write_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt", gen)
    before = ckpt.read_bytes()
    with pytest.raises(ExportError, match="checkpoint being exported"):
        export_cli(ckpt, ckpt, opset=17, quantize=None, fp16=False, verify=False)
    with pytest.raises(ExportError, match="PyTorch checkpoint"):  # another checkpoint of the run
        export_cli(tmp_path / "run", tmp_path / "run" / "checkpoints" / "latest.pt", opset=17, quantize=None,
                   fp16=False, verify=False)
    assert ckpt.read_bytes() == before


def test_a_failed_verification_leaves_no_file(lowlat: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from export import onnx_export
    from training.checkpoint import load_generator

    def failing(path: Path, generator: torch.nn.Module, **kwargs: Any) -> None:
        raise ExportError("parity 1.0 > 1e-4")

    monkeypatch.setattr(onnx_export, "verify_export", failing)
    (tmp_path / "out").mkdir()
    with pytest.raises(ExportError, match="parity"):
        export_with_report(*load_generator(lowlat[1]), tmp_path / "out" / "m.onnx")
    assert list((tmp_path / "out").iterdir()) == []  # neither the model nor a temporary file


def test_verification_catches_a_model_that_differs_from_torch(lowlat: Any) -> None:
    other = tiny_generator("lowlat", seed=7)
    with pytest.raises(ExportError, match=r"differs from PyTorch by [0-9.e+-]+ \(step loop\)"):
        verify_export(lowlat[2], other)


def test_export_is_reproducible(lowlat: Any, tmp_path: Path) -> None:
    from training.checkpoint import load_generator

    export_with_report(*load_generator(lowlat[1]), tmp_path / "again.onnx", verify=False)
    assert (tmp_path / "again.onnx").read_bytes() == lowlat[2].read_bytes()


@pytest.mark.parametrize("options, message", [
    ({"opset": 9}, "opset"),
    ({"quantize": "int4"}, "int4"),
    ({"quantize": "int8", "fp16": True}, "choose one"),
])
def test_bad_options_are_refused_before_loading(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    args = {"opset": 17, "quantize": None, "fp16": False, "verify": True, **options}
    with pytest.raises(ConfigError, match=message):
        export_cli(tmp_path / "missing.pt", tmp_path / "m.onnx", **args)


def test_segan_int8_quantizes_its_encoder_convolutions(tmp_path: Path) -> None:
    gen = tiny_generator("segan")
    ckpt = write_checkpoint(tmp_path / "segan.pt", gen)
    from training.checkpoint import load_generator

    report = export_with_report(*load_generator(ckpt), tmp_path / "segan8.onnx", quantize="int8")
    assert report.verify is not None and min(report.verify.si_sdr_db.values()) >= 20.0
    assert "ConvInteger" in {n.op_type for n in onnx.load(str(tmp_path / "segan8.onnx")).graph.node}
    assert load_model(tmp_path / "segan8.onnx").spec.precision == "int8"


def test_the_denoise_export_command(lowlat: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["export", str(lowlat[1]), "-o", str(tmp_path / "sub" / "m.onnx"),
                                      "--quantize", "int8", "--opset", "13"])
    assert result.exit_code == 0, result.output
    assert "lowlat (int8)" in result.output and "SI-SDR vs float32" in result.output and "speed-up" in result.output
    md = metadata(tmp_path / "sub" / "m.onnx")
    assert md["precision"] == "int8" and md["onnx_opset"] == "13"
    assert {o.domain: o.version for o in onnx.load(str(tmp_path / "sub" / "m.onnx")).opset_import}[""] == 13


def test_a_lookahead_model_streams_through_the_engine_as_its_offline_output_and_as_torch(tmp_path: Path) -> None:
    from realtime.engine import StreamingEngine
    from training.checkpoint import load_generator

    gen = tiny_generator("lowlat", band_gru=6, past_frames=2, lookahead_frames=1)
    loaded, meta = load_generator(write_checkpoint(tmp_path / "ckpt.pt", gen))
    model = load_model(export_with_report(loaded, meta, tmp_path / "ahead.onnx").path, device="cpu", threads=1)
    assert model.spec.latency_samples == gen.window  # 128 + one hop of lookahead: 16 ms at 16 kHz
    audio = speech_like(8000 + 77, gen.sample_rate, seed=5)
    offline = enhance_offline(model, audio[None])[0]
    engine = StreamingEngine(model)
    blocks = [engine.process(audio[None, i:i + 160]) for i in range(0, audio.size, 160)]
    streamed = np.concatenate([*blocks, engine.flush()], 1)[0]
    assert streamed.size == audio.size + model.spec.latency_samples
    np.testing.assert_allclose(streamed[model.spec.latency_samples:], offline, atol=1e-5, rtol=0)
    # and both are the torch generator's output (up to the stream's edges, as for the causal model above)
    padded = np.concatenate([audio, np.zeros(gen.hop, dtype=np.float32)])
    with torch.no_grad():
        frames, length = frame_signal(torch.from_numpy(preemphasis(padded, 0.9))[None], gen.window, gen.hop,
                                      gen.lookahead)
        out, _ = gen.forward_frames(frames * gen.win_a)
        full = overlap_add(out * gen.win_s, gen.hop, length).numpy()
    lat = gen.latency_samples
    ref = deemphasis(full, 0.9)[0, lat:lat + audio.size]
    np.testing.assert_allclose(offline, ref, atol=1e-4, rtol=0)
    assert np.abs(offline).max() > 1e-2
