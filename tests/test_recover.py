"""Reading a generator back out of an exported ONNX model (``export/recover.py``, ``denoise train --init X.onnx``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from onnx import numpy_helper
from test_export import one_torch_thread, tiny_generator  # noqa: F401  (fixture re-used)
from train_helpers import make_data, tiny_config

from export.onnx_export import export_with_report, without_latent
from export.recover import generator_from_onnx
from realtime.errors import ModelError
from realtime.model import default_model_path
from training.models import build_generator, config_dict
from training.trainer import TrainingError, train

META = {"step": 321, "metrics": {"pesq": 2.0}, "config": {"loss": {"preemphasis": 0.95}}}


def export(gen: torch.nn.Module, path: Path, **options: Any) -> Path:
    return export_with_report(gen, META, path, **options).path


def assert_same_weights(got: torch.nn.Module, want: torch.nn.Module) -> None:
    a, b = got.state_dict(), want.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("values", [
    {},
    {"band_gru": 4},
    {"band_gru": 4, "past_frames": 2},
    {"band_gru": 4, "past_frames": 2, "lookahead_frames": 1},
    {"full_res_channels": 0, "gru_layers": 2},
])
def test_lowlat_weights_come_back_exactly(tmp_path: Path, values: dict[str, Any]) -> None:
    gen = tiny_generator("lowlat", seed=3, **values)
    got, meta = generator_from_onnx(export(gen, tmp_path / "m.onnx"))
    assert_same_weights(got, gen)
    assert meta["preset"] == "lowlat" and meta["step"] == 321 and meta["generator_config"] == config_dict(gen.cfg)


def test_untrained_layers_whose_initializers_the_exporter_merges_come_back(tmp_path: Path) -> None:
    # fresh zero-initialised fine-tuning paths: the exporter stores equal tensors once, under one name
    torch.manual_seed(0)
    gen = build_generator("lowlat", {"channels": [4, 8], "bottleneck": 16, "gru_hidden": 16, "band_gru": 8,
                                     "past_frames": 1, "lookahead_frames": 1}).eval()
    got, _ = generator_from_onnx(export(gen, tmp_path / "m.onnx"))
    assert_same_weights(got, gen)


def test_segan_comes_back_without_its_latent(tmp_path: Path) -> None:
    gen = tiny_generator("segan", seed=2)
    got, meta = generator_from_onnx(export(gen, tmp_path / "segan.onnx"))
    assert meta["generator_config"]["z_channels"] == 0
    assert_same_weights(got, without_latent(gen))


def test_the_shipped_default_model_can_be_read_back() -> None:
    gen, meta = generator_from_onnx(default_model_path())  # checked inside against weights_sha256 and ONNX Runtime
    assert meta["preset"] == "lowlat"
    assert sum(p.numel() for p in gen.parameters()) > 100_000


def test_an_exported_model_re_exports_at_another_precision(tmp_path: Path) -> None:
    from export.onnx_export import export_cli
    from realtime.model import load_model

    gen = tiny_generator("lowlat", band_gru=4)
    source = export(gen, tmp_path / "fp32.onnx")
    export_cli(source, tmp_path / "int8.onnx", quantize="int8")
    twin, original = load_model(tmp_path / "int8.onnx"), load_model(source)
    assert twin.spec.precision == "int8" and twin.spec.weights_sha256 == original.spec.weights_sha256


def test_the_shipped_int8_twin_holds_the_default_weights() -> None:
    from evaluation.metrics import si_sdr
    from realtime.engine import enhance_offline
    from realtime.fileio import read_audio
    from realtime.model import INT8_TWIN, load_model

    fp32 = load_model(default_model_path())
    twin = load_model(default_model_path().with_name(INT8_TWIN))
    assert twin.spec.precision == "int8" and twin.spec.weights_sha256 == fp32.spec.weights_sha256
    assert load_model(None, device="cpu").path == twin.path
    audio, rate = read_audio(Path(__file__).resolve().parents[1] / "examples" / "noisy.wav")  # [C, T]
    assert rate == fp32.spec.sample_rate
    assert si_sdr(enhance_offline(twin, audio[:1])[0], enhance_offline(fp32, audio[:1])[0]) > 30.0


def test_reduced_precision_and_foreign_files_are_refused(tmp_path: Path) -> None:
    gen = tiny_generator("lowlat", band_gru=4)
    with pytest.raises(ModelError, match="int8 weights.*float32 export"):
        generator_from_onnx(export(gen, tmp_path / "q.onnx", quantize="int8"))
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a protobuf at all" * 10)
    with pytest.raises(ModelError, match="not a readable ONNX file"):
        generator_from_onnx(tmp_path / "junk.onnx")
    with pytest.raises(ModelError, match="does not exist"):
        generator_from_onnx(tmp_path / "missing.onnx")


def test_an_edited_weight_is_refused(tmp_path: Path) -> None:
    path = export(tiny_generator("lowlat"), tmp_path / "m.onnx")
    model = onnx.load(str(path))
    target = next(t for t in model.graph.initializer if t.name.endswith("enc.0.0.weight"))
    values = numpy_helper.to_array(target).copy()
    values.flat[0] += 0.5
    target.CopyFrom(numpy_helper.from_array(values, target.name))
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="weights_sha256"):
        generator_from_onnx(path)


def test_training_starts_from_an_exported_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data(tmp_path)
    base = tmp_path / "base"
    train(tiny_config("run.max_steps=2"), data, base)
    from training.checkpoint import load_generator

    source, meta = load_generator(base)
    onnx_path = export_with_report(source, meta, tmp_path / "base.onnx").path
    tuned = tmp_path / "tuned"
    # a learning rate of ~0 keeps the copied weights visibly equal after one step
    train(tiny_config("run.max_steps=1", "optim.lr_g=1e-12", "optim.lr_d=1e-12", f"run.init={onnx_path}"),
          data, tuned)
    tuned_gen, tuned_meta = load_generator(tuned / "checkpoints" / "latest.pt")
    assert tuned_meta["step"] == 1
    for key, value in source.state_dict().items():
        torch.testing.assert_close(tuned_gen.state_dict()[key], value, atol=1e-6, rtol=0)
    note = re.search(r"initialised from .*base\.onnx .* generator (\d+)/(\d+) tensors, discriminator 0/\d+",
                     capsys.readouterr().err)
    assert note is not None and note.group(1) == note.group(2)
    with pytest.raises(TrainingError, match="run.init: .*not a readable ONNX"):
        (tmp_path / "bad.onnx").write_bytes(b"garbage")
        train(tiny_config("run.max_steps=1", f"run.init={tmp_path / 'bad.onnx'}"), data, tmp_path / "bad")
