"""`denoise eval` on a tiny synthetic pair folder with tiny ONNX frame models (no trained model needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from onnx_models import ema_model, gain_model
from synth_speech import add_noise, speechlike

from evaluation.evaluate import ClipEnhancer, find_pairs, run_eval
from realtime.errors import ConfigError, DataError
from realtime.model import load_model

SR = 16000
SNRS = (0, 5, 10)


def make_pairs(folder: Path, count: int = 4, seconds: float = 1.5, meta: bool = True) -> Path:
    """``folder/test/{noisy,clean}/pNN.wav`` (+ meta.jsonl); returns ``folder`` (a corpus-like root)."""
    test = folder / "test"
    (test / "noisy").mkdir(parents=True)
    (test / "clean").mkdir()
    lines = []
    for i in range(count):
        clean = speechlike(seconds, SR, seed=i)
        snr = SNRS[i % len(SNRS)]
        sf.write(test / "clean" / f"p{i:02d}.wav", clean, SR, subtype="FLOAT")
        sf.write(test / "noisy" / f"p{i:02d}.wav", add_noise(clean, snr, seed=100 + i), SR, subtype="FLOAT")
        lines.append(json.dumps({"name": f"p{i:02d}", "snr_db": snr, "noise_kind": "white" if i % 2 else "pink",
                                 "noise_category": "synthetic", "speaker": f"s{i % 2}"}))
    if meta:
        (test / "meta.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {"gain": gain_model(folder / "gain.onnx", gain=0.5), "ema": ema_model(folder / "ema.onnx", decay=0.6)}


def evaluate(data: Path, model: Path, **kwargs: object) -> dict:
    return run_eval(data=data, model=model, quiet=True, dnsmos=False, workers=1, **kwargs)


def test_gain_model_scores_like_its_input(pairs: Path, models: dict[str, Path]) -> None:
    """A pure gain leaves SI-SDR/STOI unchanged only if the enhanced clip is exactly aligned with the clean one."""
    result = evaluate(pairs, models["gain"])
    assert result["pairs"] == 4 and result["mode"] == "offline"
    overall = result["overall"]
    assert overall["delta"]["si_sdr"] == pytest.approx(0.0, abs=1e-3)
    assert overall["delta"]["stoi"] == pytest.approx(0.0, abs=1e-4)
    assert result["residual_lag"]["max_abs_samples"] == 0
    assert [f["noisy"] for f in result["residual_lag"]["files"]] == [0, 0, 0, 0]
    # The noisy SI-SDR of white noise at a known SNR is that SNR.
    assert result["by_snr"]["0"]["noisy"]["si_sdr"] == pytest.approx(0.0, abs=0.3)
    assert result["by_snr"]["10"]["noisy"]["si_sdr"] == pytest.approx(10.0, abs=0.3)
    assert list(result["by_snr"]) == ["0", "5", "10"]
    assert {k: v["n"] for k, v in result["by_noise_kind"].items()} == {"pink": 2, "white": 2}


def test_json_output_is_one_strict_object(pairs: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    run_eval(data=pairs / "test", model=models["ema"], as_json=True, dnsmos=False, workers=1, limit=3)
    out = capsys.readouterr().out
    result = json.loads(out)  # strict: NaN would have been written as null
    assert out.count("\n") == 1
    for key in ("data", "model", "preset", "sample_rate", "latency_ms", "mode", "pairs", "seconds", "enhance_rtf",
                "metrics", "residual_lag", "overall", "by_snr", "by_noise_kind", "notes", "per_file"):
        assert key in result, key
    assert result["pairs"] == 3 and len(result["per_file"]) == 3
    assert result["metrics"] == ["pesq", "stoi", "si_sdr"]
    assert set(result["overall"]["enhanced"]) == {"pesq", "stoi", "si_sdr"}
    assert result["per_file"][0]["name"] == "p00" and result["per_file"][0]["snr_db"] == 0


def test_streaming_agrees_with_offline(pairs: Path, models: dict[str, Path]) -> None:
    model = load_model(models["ema"])
    noisy = sf.read(pairs / "test" / "noisy" / "p01.wav", dtype="float32")[0]
    offline = ClipEnhancer(model, streaming=False)(noisy)
    for seed in (0, 1):
        streamed = ClipEnhancer(model, streaming=True, seed=seed)(noisy)
        np.testing.assert_allclose(streamed, offline, atol=1e-5)
    a = evaluate(pairs, models["ema"])
    b = evaluate(pairs, models["ema"], streaming=True)
    assert b["mode"] == "streaming"
    for metric in ("pesq", "stoi", "si_sdr"):
        assert b["overall"]["enhanced"][metric] == pytest.approx(a["overall"]["enhanced"][metric], abs=1e-3)


def test_report_writes_markdown_and_spectrograms(pairs: Path, models: dict[str, Path], tmp_path: Path) -> None:
    evaluate(pairs, models["gain"], report=tmp_path / "rep")
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "## Overall" in text and "## By SNR (dB)" in text and "| PESQ-WB |" in text
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert len(pngs) == 3  # lowest, middle and highest SNR
    for name in pngs:
        assert f"]({name})" in text
        assert (tmp_path / "rep" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_meta_only_overall(tmp_path: Path, models: dict[str, Path]) -> None:
    make_pairs(tmp_path, count=2, meta=False)
    result = evaluate(tmp_path / "test", models["gain"])
    assert "by_snr" not in result and "by_noise_kind" not in result
    assert any("meta.jsonl" in n for n in result["notes"])


def test_other_rates_are_resampled_to_the_model(tmp_path: Path, models: dict[str, Path]) -> None:
    for side in ("noisy", "clean"):
        (tmp_path / side).mkdir()
    clean = speechlike(1.5, 48000, seed=3)
    sf.write(tmp_path / "clean" / "a.wav", clean, 48000)
    sf.write(tmp_path / "noisy" / "a.wav", add_noise(clean, 5.0), 48000)
    result = evaluate(tmp_path, models["gain"])
    assert result["sample_rate"] == SR
    # Resampling 48 -> 16 kHz keeps the speech but only a third of the white noise's band: +4.8 dB.
    assert result["overall"]["noisy"]["si_sdr"] == pytest.approx(5.0 + 10 * np.log10(3.0), abs=0.5)
    assert any("resampled" in n for n in result["notes"])


def test_scoring_pool_matches_in_process(pairs: Path, models: dict[str, Path]) -> None:
    a = evaluate(pairs, models["gain"], limit=2)
    b = run_eval(data=pairs, model=models["gain"], quiet=True, dnsmos=False, workers=2, limit=2)
    assert a["per_file"] == b["per_file"]


def _write(path: Path, seconds: float = 0.5, sr: int = SR, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = speechlike(seconds, sr)
    sf.write(path, np.stack([x] * channels, axis=1) if channels > 1 else x, sr)


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda d: None, "does not exist"),
        (lambda d: (d.mkdir(), (d / "x.wav").touch()), "neither noisy"),
        (lambda d: (_write(d / "noisy" / "a.wav"), _write(d / "clean" / "b.wav")), "no clean twin"),
        (lambda d: (_write(d / "noisy" / "a.wav"), _write(d / "clean" / "a.wav", sr=8000)), "8000 Hz"),
        (lambda d: (_write(d / "noisy" / "a.wav"), _write(d / "clean" / "a.wav", seconds=0.6)), "samples"),
        (lambda d: (_write(d / "noisy" / "a.wav", channels=2), _write(d / "clean" / "a.wav")), "mono"),
        (lambda d: ((d / "noisy").mkdir(parents=True), (d / "clean").mkdir()), "no audio files"),
        (lambda d: (_write(d / "noisy" / "a.wav"), (d / "clean").mkdir(),
                    (d / "clean" / "a.wav").write_bytes(b"not a wav")), "cannot be read"),
    ],
    ids=["missing", "no-subfolders", "unpaired", "rate", "length", "stereo", "empty", "corrupt"],
)
def test_bad_folders_raise_data_errors(tmp_path: Path, setup, match: str) -> None:
    data = tmp_path / "set"
    setup(data)
    with pytest.raises(DataError, match=match) as info:
        find_pairs(data)
    assert "Fix:" in str(info.value)


def test_bad_limit_is_refused(pairs: Path) -> None:
    with pytest.raises(ConfigError, match="--limit"):
        find_pairs(pairs, limit=0)


def test_speaker_keeps_only_that_voices_pairs(pairs: Path, tmp_path: Path) -> None:
    assert [p.name for p in find_pairs(pairs, speaker="s1").pairs] == ["p01", "p03"]
    assert [p.name for p in find_pairs(pairs, limit=1, speaker="s1").pairs] == ["p01"]
    with pytest.raises(DataError, match=r"speaker 'nobody'.*Fix: use one of \['s0', 's1'\]"):
        find_pairs(pairs, speaker="nobody")
    with pytest.raises(DataError, match="no meta.jsonl"):
        find_pairs(make_pairs(tmp_path / "bare", count=2, meta=False), speaker="s0")


def test_cli_bad_folder_is_one_line(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "cli", "eval", "--data", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error:") and "nope" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_cli_json_end_to_end(pairs: Path, models: dict[str, Path]) -> None:
    res = subprocess.run([sys.executable, "-m", "cli", "eval", "--data", str(pairs), "--model", str(models["ema"]),
                          "--json", "--limit", "2", "--streaming"], capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["pairs"] == 2 and result["mode"] == "streaming"
    from evaluation.dnsmos import dnsmos_available

    if dnsmos_available()[0]:
        assert "dnsmos_ovrl" in result["metrics"] and result["overall"]["enhanced"]["dnsmos_ovrl"] is not None
