"""``denoise enhance`` and the audio file layer, on generated files and tiny ONNX models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from onnx_models import ema_model, gain_model, identity_model
from typer.testing import CliRunner

from cli import app
from realtime import fileio
from realtime.batch import enhance_audio, enhance_paths
from realtime.errors import AudioFormatError, ConfigError, DataError, DenoiseError
from realtime.fileio import read_audio, write_audio
from realtime.model import load_model


def _tones(channels: int, seconds: float, rate: int, level: float = 0.3) -> np.ndarray:
    """Band-limited test audio (tones under 4 kHz, a different mix per channel), float32 [C, T]."""
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([level * (np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.5 * np.sin(2 * np.pi * 3100 * t + c))
                     / 1.5 for c in range(channels)]).astype(np.float32)


def _write(path: Path, audio: np.ndarray, rate: int, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.T, rate, subtype=subtype)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {"identity": identity_model(folder / "identity.onnx"), "half": gain_model(folder / "half.onnx", gain=0.5),
            "loud": gain_model(folder / "loud.onnx", gain=4.0), "ema": ema_model(folder / "ema.onnx")}


@pytest.mark.parametrize(("rate", "channels", "ext", "subtype"), [
    (16000, 1, ".wav", "PCM_16"),
    (44100, 2, ".wav", "FLOAT"),
    (48000, 1, ".flac", "PCM_24"),
    (22050, 3, ".wav", "PCM_24"),
])
def test_identity_round_trip_keeps_rate_channels_length_subtype(tmp_path: Path, models: dict[str, Path], rate: int,
                                                               channels: int, ext: str, subtype: str) -> None:
    x = _tones(channels, 0.7, rate)
    src = _write(tmp_path / f"in{ext}", x, rate, subtype)
    dst = tmp_path / f"out{ext}"
    enhance_paths([src], dst, model=models["identity"])
    info = sf.info(str(dst))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (rate, channels, x.shape[1], subtype)
    y, _ = read_audio(dst)
    x = read_audio(src)[0]
    if rate == 16000:  # the model's own rate: no resampling at all
        np.testing.assert_allclose(y, x, atol=1e-4)
    else:  # soxr there and back: band-limiting ripples where the file starts and ends abruptly, exact inside
        np.testing.assert_allclose(y[:, 200:-200], x[:, 200:-200], atol=2e-3)


def test_model_is_applied_and_streaming_gives_the_same_result(tmp_path: Path, models: dict[str, Path]) -> None:
    x = _tones(2, 1.0, 16000)
    src = _write(tmp_path / "in.wav", x, 16000, "FLOAT")
    enhance_paths([src], tmp_path / "off.wav", model=models["half"])
    enhance_paths([src], tmp_path / "str.wav", model=models["half"], streaming=True)
    off, _ = read_audio(tmp_path / "off.wav")
    np.testing.assert_allclose(off, 0.5 * x, atol=1e-5)  # emphasis, windows and overlap-add are all linear
    np.testing.assert_allclose(read_audio(tmp_path / "str.wav")[0], off, atol=1e-5)


def test_atten_lim_keeps_that_share_of_the_input_in_files_and_on_the_command_line(
        tmp_path: Path, models: dict[str, Path]) -> None:
    x = _tones(2, 1.0, 16000)
    src = _write(tmp_path / "in.wav", x, 16000, "FLOAT")
    enhance_paths([src], tmp_path / "off.wav", model=models["half"], atten_lim_db=20.0)
    enhance_paths([src], tmp_path / "str.wav", model=models["half"], streaming=True, atten_lim_db=20.0)
    off, _ = read_audio(tmp_path / "off.wav")
    np.testing.assert_allclose(off, (0.9 * 0.5 + 0.1) * x, atol=1e-5)  # 20 dB: 10 % of the input stays
    np.testing.assert_allclose(read_audio(tmp_path / "str.wav")[0], off, atol=1e-5)
    res = CliRunner().invoke(app, ["enhance", str(src), "-o", str(tmp_path / "cli.wav"), "--model",
                                   str(models["half"]), "--atten-lim", "20"])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(read_audio(tmp_path / "cli.wav")[0], off, atol=1e-5)
    res = CliRunner().invoke(app, ["enhance", str(src), "-o", str(tmp_path / "bad.wav"), "--model",
                                   str(models["half"]), "--atten-lim", "0"])
    assert isinstance(res.exception, ConfigError) and "--atten-lim" in str(res.exception)
    assert not (tmp_path / "bad.wav").exists()


def test_streaming_and_offline_agree_at_other_rates(models: dict[str, Path]) -> None:
    fm = load_model(models["ema"])
    x = _tones(1, 0.5, 48000)
    off = enhance_audio(fm, x, 48000, streaming=False)
    stream = enhance_audio(fm, x, 48000, streaming=True)
    assert off.shape == stream.shape == x.shape
    # Different resamplers (soxr offline, polyphase streaming), same alignment and level away from the abrupt ends.
    assert np.max(np.abs(off - stream)[:, 300:-300]) < 0.02 * np.max(np.abs(off))


def test_mono_downmixes(tmp_path: Path, models: dict[str, Path]) -> None:
    x = _tones(2, 0.5, 16000)
    src = _write(tmp_path / "st.wav", x, 16000, "FLOAT")
    enhance_paths([src], tmp_path / "mono.wav", model=models["identity"], mono=True)
    y, rate = read_audio(tmp_path / "mono.wav")
    assert y.shape == (1, x.shape[1]) and rate == 16000
    np.testing.assert_allclose(y[0], x.mean(axis=0), atol=1e-5)


def test_existing_output_is_refused_unless_overwrite(tmp_path: Path, models: dict[str, Path]) -> None:
    src = _write(tmp_path / "in.wav", _tones(1, 0.3, 16000), 16000)
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"keep me")
    with pytest.raises(DenoiseError, match="already exist.*--overwrite"):
        enhance_paths([src], dst, model=models["identity"])
    assert dst.read_bytes() == b"keep me"
    enhance_paths([src], dst, model=models["identity"], overwrite=True)
    assert sf.info(str(dst)).frames == int(0.3 * 16000)


def test_input_is_never_overwritten(tmp_path: Path, models: dict[str, Path]) -> None:
    src = _write(tmp_path / "in.wav", _tones(1, 0.3, 16000), 16000)
    before = src.read_bytes()
    with pytest.raises(DenoiseError, match="never overwrites its input"):
        enhance_paths([src], src, model=models["identity"], overwrite=True)
    folder = tmp_path / "set"
    _write(folder / "a.wav", _tones(1, 0.3, 16000), 16000)
    with pytest.raises(DenoiseError, match="never overwrites its input"):
        enhance_paths([folder], folder, model=models["identity"], overwrite=True)
    assert src.read_bytes() == before


def test_folder_recursion_mirrors_relative_paths(tmp_path: Path, models: dict[str, Path]) -> None:
    root = tmp_path / "in"
    _write(root / "a.wav", _tones(1, 0.3, 16000), 16000)
    _write(root / "sub" / "b.flac", _tones(2, 0.2, 44100), 44100)
    _write(root / "sub" / "deeper" / "c.ogg", _tones(1, 0.25, 48000), 48000)
    (root / "notes.txt").write_text("not audio")
    out = root / "enhanced"  # inside the input folder: must not be scanned as input on a second run
    enhance_paths([root], out, model=models["identity"])
    produced = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert produced == ["a.wav", "sub/b.flac", "sub/deeper/c.ogg"]
    assert sf.info(str(out / "sub" / "b.flac")).channels == 2
    assert sf.info(str(out / "sub" / "deeper" / "c.ogg")).samplerate == 48000
    enhance_paths([root], out, model=models["identity"], overwrite=True)
    assert not (out / "enhanced").exists()


def test_several_inputs_go_into_a_folder(tmp_path: Path, models: dict[str, Path]) -> None:
    a = _write(tmp_path / "a.wav", _tones(1, 0.2, 16000), 16000)
    set1 = tmp_path / "set1"
    _write(set1 / "x.wav", _tones(1, 0.2, 16000), 16000)
    out = tmp_path / "out"
    enhance_paths([a, set1], out, model=models["identity"])
    assert (out / "a.wav").is_file() and (out / "set1" / "x.wav").is_file()
    with pytest.raises(DataError, match="is a file"):
        enhance_paths([a, set1], out / "a.wav", model=models["identity"], overwrite=True)


@pytest.mark.parametrize("kind", ["missing", "empty", "corrupt", "nan", "no_samples"])
def test_bad_files_raise_audio_format_error_naming_the_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4)
    elif kind == "nan":
        x = _tones(1, 0.1, 16000)
        x[0, 10] = np.nan
        _write(path, x, 16000, "FLOAT")
    elif kind == "no_samples":
        _write(path, np.zeros((1, 0), np.float32), 16000)
    with pytest.raises(AudioFormatError, match=f"{kind}.wav") as info:
        read_audio(path)
    assert "Fix:" in str(info.value)


def test_a_bad_file_in_a_batch_does_not_stop_the_others(tmp_path: Path, models: dict[str, Path]) -> None:
    root = tmp_path / "in"
    _write(root / "good.wav", _tones(1, 0.2, 16000), 16000)
    (root / "bad.wav").write_bytes(b"garbage" * 20)
    with pytest.raises(AudioFormatError, match="1 of 2 file.*bad.wav"):
        enhance_paths([root], tmp_path / "out", model=models["identity"])
    assert (tmp_path / "out" / "good.wav").is_file()
    assert not (tmp_path / "out" / "bad.wav").exists()


def test_clipping_is_guarded_and_reported(tmp_path: Path, models: dict[str, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(tmp_path / "in.wav", _tones(1, 0.5, 16000, level=0.6), 16000, "PCM_16")
    enhance_paths([src], tmp_path / "out.wav", model=models["loud"])
    y, _ = read_audio(tmp_path / "out.wav")
    assert np.abs(y).max() <= 1.0 and np.abs(y).max() > 0.99  # clipped, not wrapped around
    assert "clipped" in capsys.readouterr().err


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"previous")

    def failing_write(path: str, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(fileio.sf, "write", failing_write)
    with pytest.raises(DenoiseError, match="disk full"):
        write_audio(dst, np.zeros((1, 10), np.float32), 16000)
    assert dst.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["out.wav"]  # no temporary file left behind


def test_unknown_output_extension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AudioFormatError, match=r"\.xyz"):
        write_audio(tmp_path / "out.xyz", np.zeros((1, 10), np.float32), 16000)


def test_cli_enhance(tmp_path: Path, models: dict[str, Path]) -> None:
    src = _write(tmp_path / "in.wav", _tones(1, 0.3, 16000), 16000)
    res = CliRunner().invoke(app, ["enhance", str(src), "-o", str(tmp_path / "out.wav"),
                                   "--model", str(models["identity"])])
    assert res.exit_code == 0, res.output
    assert sf.info(str(tmp_path / "out.wav")).frames == int(0.3 * 16000)


def test_cli_refusal_exits_non_zero_with_one_line(tmp_path: Path, models: dict[str, Path]) -> None:
    src = _write(tmp_path / "in.wav", _tones(1, 0.3, 16000), 16000)
    (tmp_path / "out.wav").write_bytes(b"x")
    res = subprocess.run([sys.executable, "-m", "cli", "enhance", str(src), "-o", str(tmp_path / "out.wav"),
                          "--model", str(models["identity"])], check=False, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2
    assert res.stderr.startswith("error:") and "--overwrite" in res.stderr and "Traceback" not in res.stderr
